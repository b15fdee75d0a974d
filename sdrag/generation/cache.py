"""Stage caching: results of expensive pipeline stages kept by key, with hit and miss counts."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class StageCache:
    """A small LRU store per stage (canny, prompt, style); counts prove what was reused."""

    def __init__(self, size: int = 64):
        """Keep at most `size` entries per stage."""
        self.size = size
        self._stores: dict[str, OrderedDict] = {}
        self.hits: Counter = Counter()
        self.misses: Counter = Counter()

    def get(self, stage: str, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the cached value of (stage, key), computing and storing it on a miss."""
        store = self._stores.setdefault(stage, OrderedDict())
        if key in store:
            self.hits[stage] += 1
            store.move_to_end(key)
            return store[key]
        self.misses[stage] += 1
        value = store[key] = compute()
        if len(store) > self.size:
            store.popitem(last=False)
        return value

    def clear(self) -> None:
        """Drop every stored value (counts are kept)."""
        self._stores.clear()

    def stats(self) -> dict[str, dict[str, int]]:
        """Hits and misses per stage."""
        stages = sorted(set(self.hits) | set(self.misses))
        return {s: {"hits": self.hits[s], "misses": self.misses[s]} for s in stages}
