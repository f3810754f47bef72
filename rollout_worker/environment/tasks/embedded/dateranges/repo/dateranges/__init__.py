"""dateranges: iterate and compare ranges of dates."""

from .ranges import date_range, month_starts, overlaps

__all__ = ["date_range", "month_starts", "overlaps"]
__version__ = "1.1.0"
