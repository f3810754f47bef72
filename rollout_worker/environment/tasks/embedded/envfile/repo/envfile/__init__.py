"""envfile: .env parsing."""

from .parser import parse_env

__all__ = ["parse_env"]
__version__ = "0.2.0"
