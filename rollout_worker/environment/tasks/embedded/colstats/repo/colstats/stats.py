"""Read a numeric column from CSV text and summarize it."""

import csv
import io
import math


def read_column(text, column):
    """Return the values of ``column`` as floats; empty cells are skipped. Raises KeyError for unknown columns."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise KeyError(column)
    values = []
    for row in reader:
        cell = (row.get(column) or "").strip()
        if cell:
            values.append(float(cell))
    return values


def median(values):
    """The middle value of ``values``."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of empty data")
    return ordered[len(ordered) // 2]


def summarize(values):
    """Count, mean, median, min, max and sample standard deviation of ``values``."""
    if not values:
        raise ValueError("no values")
    count = len(values)
    mean = sum(values) / count
    variance = sum((v - mean) ** 2 for v in values) / (count - 1) if count > 1 else 0.0
    return {
        "count": count,
        "mean": mean,
        "median": median(values),
        "min": min(values),
        "max": max(values),
        "stdev": math.sqrt(variance),
    }
