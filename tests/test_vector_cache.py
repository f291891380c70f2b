"""The sentence-vector cache of extractive answers: same vectors, fewer encodes, bounded, thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from app.qa.answer.extractive import ExtractiveAnswerer
from app.qa.answer.vector_cache import VectorCache
from app.qa.service import QAService
from tests.test_retrieval import store  # noqa: F401  (fixture: the sample lectures in a real library)


class Counting:
    """The real embedder, counting the texts it is asked to encode."""

    def __init__(self, inner) -> None:
        self.inner, self.dim, self.encoded = inner, inner.dim, 0
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        with self._lock:
            self.encoded += len(texts)
        return self.inner.encode(texts, batch_size=batch_size)


SENTENCES = ["The forget gate erases parts of the cell state.", "GRUs merge the input and forget gates.",
             "Attention weights sum to one over the encoder states.", "Gradients vanish over long sequences."]


def test_cached_vectors_equal_fresh_ones_and_are_not_encoded_again(embedder):
    counting = Counting(embedder)
    cache = VectorCache(counting, max_entries=100)
    first = cache.encode(SENTENCES + SENTENCES[:1])  # a repeat inside one call is encoded once
    assert counting.encoded == 4 and first.shape == (5, embedder.dim)
    again = cache.encode(list(reversed(SENTENCES)))
    assert counting.encoded == 4
    fresh = embedder.encode(SENTENCES, batch_size=16)
    assert np.allclose(again[::-1], fresh, atol=1e-5) and np.allclose(first[:4], fresh, atol=1e-5)
    assert cache.encode([]).shape == (0, embedder.dim)
    assert all(v.base is None for v in cache._items.values())  # own rows, not views of a whole batch


def test_least_recently_used_are_dropped_and_zero_turns_it_off(embedder):
    counting = Counting(embedder)
    cache = VectorCache(counting, max_entries=2)
    cache.encode(SENTENCES[:2])
    cache.encode(SENTENCES[:1])  # touch the first: the second is now the oldest
    cache.encode(SENTENCES[2:3])
    assert len(cache) == 2 and counting.encoded == 3
    cache.encode(SENTENCES[:1])
    assert counting.encoded == 3  # kept
    cache.encode(SENTENCES[1:2])
    assert counting.encoded == 4  # dropped, encoded again
    off = VectorCache(Counting(embedder), max_entries=0)
    off.encode(SENTENCES[:2])
    off.encode(SENTENCES[:2])
    assert len(off) == 0 and off.embedder.encoded == 4  # type: ignore[attr-defined]


def test_threads_share_the_cache(embedder):
    cache = VectorCache(Counting(embedder), max_entries=100)
    expected = embedder.encode(SENTENCES, batch_size=16)
    errors: list[str] = []

    def ask(i: int) -> None:
        order = SENTENCES[i % 4:] + SENTENCES[: i % 4]
        got = cache.encode(order)
        if not np.allclose(got, np.roll(expected, -(i % 4), axis=0), atol=1e-5):
            errors.append(f"thread {i}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 4


def test_answers_are_the_same_with_a_warm_cache(store, embedder):  # noqa: F811
    answerer = ExtractiveAnswerer(Counting(embedder))
    service = QAService(store, answerer)
    cold = service.ask("What does the forget gate in an LSTM do?")
    encoded = answerer.vectors.embedder.encoded  # type: ignore[attr-defined]
    warm = service.ask("What does the forget gate in an LSTM do?")
    assert answerer.vectors.embedder.encoded == encoded  # type: ignore[attr-defined]
    assert cold.answer.grounded and warm.answer.text == cold.answer.text
    assert [c.quote for c in warm.answer.citations] == [c.quote for c in cold.answer.citations]
