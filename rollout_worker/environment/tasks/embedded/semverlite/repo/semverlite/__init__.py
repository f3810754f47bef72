"""semverlite: semantic versions without dependencies."""

from .version import Version

__all__ = ["Version"]
__version__ = "1.4.0"
