"""Least-recently-used eviction for the in-memory caches (uploaded images, explore recordings)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def evict_lru(cache: OrderedDict[K, V], nbytes: Callable[[V], int], max_bytes: int,
              max_items: int | None = None) -> None:
    """Drop entries from the front (least recently used) until ``cache`` fits; the newest entry always stays."""
    total = sum(nbytes(v) for v in cache.values())
    while len(cache) > 1 and (total > max_bytes or (max_items is not None and len(cache) > max_items)):
        _, dropped = cache.popitem(last=False)
        total -= nbytes(dropped)
