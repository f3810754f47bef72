"""lrukit: a small LRU cache."""

from .cache import LRUCache, lru_cached

__all__ = ["LRUCache", "lru_cached"]
__version__ = "0.9.2"
