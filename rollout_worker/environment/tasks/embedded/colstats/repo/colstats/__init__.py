"""colstats: statistics for CSV columns."""

from .stats import median, read_column, summarize

__all__ = ["median", "read_column", "summarize"]
__version__ = "0.2.4"
