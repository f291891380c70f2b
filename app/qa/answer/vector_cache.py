"""Sentence vectors already computed, kept in memory (least recently used out first).

Extractive answers embed every sentence of the top sources on each question: most of /ask's time. Students ask
about the same slides again and again, and a vector is a pure function of its text and the model, so a cached
one is never stale: no invalidation when documents change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ingest.embedding import Embedder


class VectorCache:
    def __init__(self, embedder: Embedder, max_entries: int) -> None:
        self.embedder = embedder
        self.max_entries = max_entries
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # requests answer on several threads

    def encode(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for t in texts:
                v = self._items.get(t)
                if v is not None:
                    self._items.move_to_end(t)
                    found[t] = v
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            vecs = self.embedder.encode(missing, batch_size=batch_size)
            found.update(zip(missing, vecs, strict=True))
            if self.max_entries > 0:
                with self._lock:
                    for t, v in zip(missing, vecs, strict=True):
                        self._items[t] = v.copy()  # a row of its own: a view would keep its whole batch alive
                        self._items.move_to_end(t)
                    while len(self._items) > self.max_entries:
                        self._items.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def __len__(self) -> int:
        return len(self._items)
