"""intervals: closed numeric intervals."""

from .merge import contains, merge, total_length

__all__ = ["contains", "merge", "total_length"]
__version__ = "0.3.0"
