"""urlquery: query strings and URLs."""

from .query import build_query, build_url

__all__ = ["build_query", "build_url"]
__version__ = "0.7.1"
