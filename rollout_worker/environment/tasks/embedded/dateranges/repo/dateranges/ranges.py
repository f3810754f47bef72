"""Date range helpers. All ranges are closed: both ``start`` and ``end`` are included."""

from datetime import date, timedelta


def date_range(start, end, step_days=1):
    """Yield dates from ``start`` to ``end`` inclusive, ``step_days`` apart."""
    if step_days < 1:
        raise ValueError("step_days must be >= 1")
    current = start
    while current < end:
        yield current
        current += timedelta(days=step_days)


def month_starts(start, end):
    """Return the first day of every month that begins within [start, end]."""
    year, month = start.year, start.month
    if start.day != 1:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    result = []
    while date(year, month, 1) <= end:
        result.append(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return result


def overlaps(first_start, first_end, second_start, second_end):
    """True when the closed ranges share at least one day."""
    return first_start <= second_end and second_start <= first_end
