"""Per-token vectors of each chunk, kept for late-interaction (MaxSim) reranking of the top search candidates.

The embedding model already computes a vector per word piece before it mean-pools them into the chunk vector;
keeping them costs no encoding time. Scoring a passage by the mean, over the query's word pieces, of the best
cosine to any of the passage's word pieces (ColBERT's MaxSim, here with the untuned all-MiniLM-L6-v2) finds
the passage that answers a paraphrased question more often than the pooled vector does: measured on the dev
set, see docs/retrieval.md. Stored as int8 with one float16 scale per token (385 bytes a word piece, a quarter
of float32); the MaxSim ranking agreed with float32 on the dev set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pack(tokens: np.ndarray) -> bytes:
    """L2-normalised float32 token vectors [T, d] -> float16 scales [T] followed by int8 values [T, d]."""
    tokens = np.asarray(tokens, dtype=np.float32)
    scales = np.abs(tokens).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    values = np.round(tokens / scales[:, None]).astype(np.int8)
    return scales.astype(np.float16).tobytes() + values.tobytes()


def unpack(blob: bytes, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values [T, d], float16 scales [T]) of a packed blob."""
    count = len(blob) // (2 + dim)
    scales = np.frombuffer(blob, dtype=np.float16, count=count)
    values = np.frombuffer(blob, dtype=np.int8, offset=2 * count).reshape(count, dim)
    return values, scales


@dataclass
class TokenIndex:
    """Token vectors of every passage, concatenated: passage i owns rows offsets[i]:offsets[i + 1]."""

    values: np.ndarray  # int8 [T, d] (may be a read-only memory map)
    scales: np.ndarray  # float16 [T]
    offsets: np.ndarray  # int64 [passages + 1]

    @classmethod
    def build(cls, blobs: list[bytes | None], dim: int) -> TokenIndex | None:
        """From one blob per passage; None when any passage has none (a library from before token vectors)."""
        if not blobs or any(b is None for b in blobs):
            return None
        parts = [unpack(b, dim) for b in blobs if b is not None]
        lengths = [len(s) for _, s in parts]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)
        values = np.concatenate([v for v, _ in parts]) if parts else np.zeros((0, dim), dtype=np.int8)
        scales = np.concatenate([s for _, s in parts]) if parts else np.zeros(0, dtype=np.float16)
        return cls(values, scales, offsets)

    def maxsim(self, query_tokens: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        """Mean over query tokens of the best cosine to each passage's tokens; None if a passage has no tokens."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        if len(rows) == 0 or (lengths <= 0).any() or len(query_tokens) == 0:
            return None
        idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        sims = query_tokens @ self.values[idx].astype(np.float32).T
        sims *= self.scales[idx].astype(np.float32)
        bounds = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return np.asarray(np.maximum.reduceat(sims, bounds, axis=1).mean(axis=0), dtype=np.float32)
