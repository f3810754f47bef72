"""wraptext: greedy word wrapping."""

from .wrap import fill, shorten, wrap

__all__ = ["fill", "shorten", "wrap"]
__version__ = "0.1.6"
