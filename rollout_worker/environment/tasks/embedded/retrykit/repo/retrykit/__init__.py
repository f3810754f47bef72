"""retrykit: retries with exponential backoff."""

from .retry import RetryError, backoff_delays, retry

__all__ = ["RetryError", "backoff_delays", "retry"]
__version__ = "1.0.3"
