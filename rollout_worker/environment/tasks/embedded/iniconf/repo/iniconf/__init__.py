"""iniconf: a tiny INI parser."""

from .parser import ParseError, parse

__all__ = ["ParseError", "parse"]
__version__ = "0.3.1"
