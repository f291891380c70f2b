"""Codecs for a chunk's word-piece vectors (late-interaction MaxSim reranking), measured in docs/token-compression.md.

Each codec turns a chunk's L2-normalised float32 word-piece vectors [T, d] into one `bytes` blob of a fixed size
a piece (so T is the blob length over `bytes_per_piece`), decodes a blob to the float32 pieces [T, d] a query is
scored against, and says how the float32 query pieces are scored (`query`: as they are, or their signs).
`similarities`, `maxsim` and `CodedTokens` (a drop-in for `ingest.token_vectors.TokenIndex.maxsim`) are the
same for every codec.

    Float32Codec      4d bytes a piece (1536 at d = 384): the upper bound, no loss.
    Int8Codec         d + 2 (386): int8 values and one float16 scale a piece, `token_vectors.pack`; what the
                      local store keeps.
    Int4Codec         d / 2 + 2 (194): the same with 4-bit values (-7..7), two to a byte.
    SignCodec         d / 8 (48): one sign bit a dimension. scoring="asymmetric" dots the float query with the
                      +-1 vector (over sqrt(d), a unit vector); scoring="hamming" compares signs with signs.
    ResidualCodec     id + d * nbits / 8 (1 + 48 = 49 for 256 centroids and 1 bit, 2 + 96 = 98 for 1024-65536
                      centroids and 2 bits): ColBERTv2/PLAID residual compression. The nearest centroid's id, then
                      each dimension of (piece - centroid) quantised to 2**nbits buckets (cutoffs at the quantiles
                      of the residuals of the training sample, every bucket decoded as the mean of its values);
                      decoded as centroid + residual, renormalised. Needs a codebook (`ResidualCodec.fit`, k-means
                      over a sample of word pieces) stored beside the codes, and the codes mean nothing without
                      the exact codebook they were made with.

All of it is numpy; `ResidualCodec.fit` uses faiss (already a dependency) for k-means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

from ingest import token_vectors


class Codec(Protocol):
    name: str
    dim: int

    @property
    def bytes_per_piece(self) -> int: ...

    def encode(self, tokens: np.ndarray) -> bytes:
        """L2-normalised float32 word-piece vectors [T, d] -> one blob of T * bytes_per_piece bytes."""
        ...

    def decode(self, blob: bytes) -> np.ndarray:
        """The blob's pieces in the float32 form the query is scored against [T, d]."""
        ...

    def query(self, query_tokens: np.ndarray) -> np.ndarray:
        """The float32 query word pieces [Q, d] as this codec scores them (as they are, or their signs)."""
        ...


def pieces(codec: Codec, blob: bytes) -> int:
    """How many word pieces a blob holds."""
    if len(blob) % codec.bytes_per_piece:
        raise ValueError(f"a {codec.name} blob is a multiple of {codec.bytes_per_piece} bytes, not {len(blob)}")
    return len(blob) // codec.bytes_per_piece


def _normalised(tokens: np.ndarray) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float32)
    norms = np.linalg.norm(tokens, axis=1, keepdims=True)
    return np.asarray(tokens / np.clip(norms, 1e-12, None), dtype=np.float32)


class Float32Codec:
    """The vectors as they are: the reference the others are measured against."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.name = "float32"

    @property
    def bytes_per_piece(self) -> int:
        return 4 * self.dim

    def encode(self, tokens: np.ndarray) -> bytes:
        return np.ascontiguousarray(tokens, dtype=np.float32).tobytes()

    def decode(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.float32).reshape(-1, self.dim)

    def query(self, query_tokens: np.ndarray) -> np.ndarray:
        return np.asarray(query_tokens, dtype=np.float32)


class Int8Codec:
    """`ingest.token_vectors.pack`: float16 scales [T] then int8 values [T, d]; value * scale = the vector."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.name = "int8+fp16 scale"

    @property
    def bytes_per_piece(self) -> int:
        return self.dim + 2

    def encode(self, tokens: np.ndarray) -> bytes:
        return token_vectors.pack(tokens)

    def decode(self, blob: bytes) -> np.ndarray:
        values, scales = token_vectors.unpack(blob, self.dim)
        return values.astype(np.float32) * scales.astype(np.float32)[:, None]

    def query(self, query_tokens: np.ndarray) -> np.ndarray:
        return np.asarray(query_tokens, dtype=np.float32)


class Int4Codec:
    """4 bits a dimension and one float16 scale a piece: float16 scales [T], then values in -7..7 stored as
    value + 8, two to a byte (the even dimension in the high nibble): d / 2 + 2 bytes a piece (194)."""

    def __init__(self, dim: int = 384) -> None:
        if dim % 2:
            raise ValueError("int4 codes need an even dimension")
        self.dim = dim
        self.name = "int4+fp16 scale"

    @property
    def bytes_per_piece(self) -> int:
        return self.dim // 2 + 2

    def encode(self, tokens: np.ndarray) -> bytes:
        tokens = np.asarray(tokens, dtype=np.float32)
        scales = np.abs(tokens).max(axis=1) / 7.0
        scales[scales == 0] = 1.0
        nibbles = (np.clip(np.round(tokens / scales[:, None]), -7, 7) + 8).astype(np.uint8)
        packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
        return scales.astype(np.float16).tobytes() + packed.tobytes()

    def decode(self, blob: bytes) -> np.ndarray:
        count = pieces(self, blob)
        scales = np.frombuffer(blob, dtype=np.float16, count=count).astype(np.float32)
        packed = np.frombuffer(blob, dtype=np.uint8, offset=2 * count).reshape(count, self.dim // 2)
        values = np.empty((count, self.dim), dtype=np.float32)
        values[:, 0::2] = (packed >> 4).astype(np.float32) - 8
        values[:, 1::2] = (packed & 15).astype(np.float32) - 8
        return values * scales[:, None]

    def query(self, query_tokens: np.ndarray) -> np.ndarray:
        return np.asarray(query_tokens, dtype=np.float32)


class SignCodec:
    """One bit a dimension: set where the component is positive (np.packbits order, d / 8 bytes a piece).

    asymmetric: query (float) . sign vector / sqrt(d), the cosine to the unit vector of signs.
    hamming:    sign(query) . sign vector / d = 1 - 2 * hamming distance / d (both sides binary).
    """

    def __init__(self, dim: int = 384, scoring: Literal["asymmetric", "hamming"] = "asymmetric") -> None:
        if dim % 8:
            raise ValueError("sign codes need a dimension that is a multiple of 8")
        self.dim = dim
        self.scoring = scoring
        self.name = f"sign bits, {scoring}"

    @property
    def bytes_per_piece(self) -> int:
        return self.dim // 8

    def encode(self, tokens: np.ndarray) -> bytes:
        return np.packbits(np.asarray(tokens) > 0, axis=1).tobytes()

    def decode(self, blob: bytes) -> np.ndarray:
        """The unit vectors of signs [T, d] (+-1 / sqrt(d))."""
        bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8).reshape(-1, self.bytes_per_piece), axis=1)
        return (bits.astype(np.float32) * 2 - 1) / np.float32(math.sqrt(self.dim))

    def query(self, query_tokens: np.ndarray) -> np.ndarray:
        if self.scoring == "hamming":
            return np.where(np.asarray(query_tokens) > 0, 1.0, -1.0).astype(np.float32) / np.float32(
                math.sqrt(self.dim))
        return np.asarray(query_tokens, dtype=np.float32)


def fit_centroids(sample: np.ndarray, k: int, *, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """k unit centroids [k, d] of word pieces [N, d]: spherical k-means (faiss), at most 256 sample points a
    centroid."""
    import faiss

    sample = _normalised(sample)
    km = faiss.Kmeans(sample.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=256)
    km.train(sample)
    centroids = km.centroids
    if centroids is None:
        raise RuntimeError("k-means gave no centroids")
    return _normalised(np.asarray(centroids).reshape(k, -1))


class ResidualCodec:
    """Centroid id + nbits a dimension of residual (ColBERTv2 / PLAID), from a codebook fitted on word pieces.

    Blob layout per piece: the centroid id (uint8 when there are at most 256 centroids, else uint16,
    little-endian), then the residual bucket indices packed with np.packbits (d * nbits / 8 bytes). Ids of all
    pieces come first, then all packed residuals.
    """

    def __init__(self, centroids: np.ndarray, cutoffs: np.ndarray, weights: np.ndarray, nbits: int) -> None:
        if nbits not in (0, 1, 2, 4):
            raise ValueError("nbits is 0 (centroid alone), 1, 2 or 4")
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)  # [K, d], unit rows
        self.cutoffs = np.asarray(cutoffs, dtype=np.float32)  # [2**nbits - 1] ascending
        self.weights = np.asarray(weights, dtype=np.float32)  # [2**nbits] value each bucket decodes to
        self.nbits = nbits
        self.dim = int(self.centroids.shape[1])
        if len(self.centroids) > 65536:
            raise ValueError("at most 65536 centroids")
        self._id_dtype = np.dtype(np.uint8) if len(self.centroids) <= 256 else np.dtype("<u2")
        self.name = f"residual, {len(self.centroids)} centroids, {nbits} bit"

    @classmethod
    def fit(cls, sample: np.ndarray, k: int, nbits: int, *, iterations: int = 20, seed: int = 0,
            centroids: np.ndarray | None = None) -> ResidualCodec:
        """k-means (`fit_centroids`; skipped when `centroids` are given) over a sample of L2-normalised word
        pieces [N, d], then bucket cutoffs at the quantiles 1/2**nbits, 2/2**nbits, ... of the sample's residuals
        (all dimensions pooled) and each bucket's mean as its decoded value. The codebook depends on the sample:
        see docs/token-compression.md."""
        sample = _normalised(sample)
        if centroids is None:
            centroids = fit_centroids(sample, k, iterations=iterations, seed=seed)
        centroids = _normalised(centroids)
        probe = cls(centroids, np.zeros(max(2 ** nbits - 1, 0)), np.zeros(2 ** nbits), nbits)
        residuals = (sample - centroids[probe.assign(sample)]).ravel()
        buckets = 2 ** nbits
        cutoffs = np.quantile(residuals, np.arange(1, buckets) / buckets).astype(np.float32)
        index = np.searchsorted(cutoffs, residuals)
        weights = np.array([residuals[index == b].mean() if (index == b).any() else 0.0 for b in range(buckets)],
                           dtype=np.float32)
        return cls(centroids, cutoffs, weights, nbits)

    @property
    def bytes_per_piece(self) -> int:
        return self._id_dtype.itemsize + self.dim * self.nbits // 8

    @property
    def codebook_bytes(self) -> int:
        """Bytes of what must be stored once beside the codes (centroids as float32, cutoffs, weights)."""
        return int(self.centroids.nbytes + self.cutoffs.nbytes + self.weights.nbytes)

    def assign(self, tokens: np.ndarray) -> np.ndarray:
        """Nearest centroid (highest cosine) of each piece, in blocks to bound memory."""
        out = np.empty(len(tokens), dtype=np.int64)
        for start in range(0, len(tokens), 4096):
            out[start:start + 4096] = np.argmax(tokens[start:start + 4096] @ self.centroids.T, axis=1)
        return out

    def encode(self, tokens: np.ndarray) -> bytes:
        tokens = np.asarray(tokens, dtype=np.float32)
        ids = self.assign(tokens)
        head = ids.astype(self._id_dtype).tobytes()
        if self.nbits == 0:
            return head
        codes = np.searchsorted(self.cutoffs, tokens - self.centroids[ids]).astype(np.uint8)  # [T, d] buckets
        bits = (codes[:, :, None] >> np.arange(self.nbits - 1, -1, -1, dtype=np.uint8)) & 1  # [T, d, nbits]
        return head + np.packbits(bits.reshape(len(tokens), -1), axis=1).tobytes()

    def decode(self, blob: bytes) -> np.ndarray:
        count = pieces(self, blob)
        ids = np.frombuffer(blob, dtype=self._id_dtype, count=count)
        out = self.centroids[ids].copy()
        if self.nbits:
            packed = np.frombuffer(blob, dtype=np.uint8, offset=count * self._id_dtype.itemsize)
            bits = np.unpackbits(packed.reshape(count, -1), axis=1).reshape(count, self.dim, self.nbits)
            codes = (bits * (1 << np.arange(self.nbits - 1, -1, -1, dtype=np.uint8))).sum(axis=2)
            out += self.weights[codes]
        return _normalised(out)

    def query(self, query_tokens: np.ndarray) -> np.ndarray:
        return np.asarray(query_tokens, dtype=np.float32)


def similarities(codec: Codec, query_tokens: np.ndarray, blob: bytes) -> np.ndarray:
    """Query word pieces [Q, d] x the blob's pieces -> similarity matrix [Q, T] (float32)."""
    return np.asarray(codec.query(query_tokens) @ codec.decode(blob).T, dtype=np.float32)


def maxsim_decoded(query: np.ndarray, passages: Sequence[np.ndarray]) -> np.ndarray:
    """Per passage [T_i, d] (every T_i > 0): the mean over the query's pieces [Q, d] of the best dot product with
    any of the passage's pieces. One matrix product over all the passages together."""
    lengths = np.array([len(p) for p in passages])
    sims = query @ np.concatenate(passages).T
    bounds = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.asarray(np.maximum.reduceat(sims, bounds, axis=1).mean(axis=0), dtype=np.float32)


def maxsim(codec: Codec, query_tokens: np.ndarray, blobs: Sequence[bytes]) -> np.ndarray:
    """Per blob (each non-empty): the mean over the query's pieces of the best similarity to any of its pieces."""
    return maxsim_decoded(codec.query(query_tokens), [codec.decode(b) for b in blobs])


class CodedTokens:
    """Every passage's word pieces as one blob of `codec`: the `maxsim(query_tokens, rows)` of TokenIndex."""

    def __init__(self, codec: Codec, blobs: Sequence[bytes]) -> None:
        self.codec = codec
        self.blobs = list(blobs)

    @classmethod
    def from_vectors(cls, codec: Codec, per_passage: Sequence[np.ndarray]) -> CodedTokens:
        return cls(codec, [codec.encode(t) for t in per_passage])

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.blobs)

    def maxsim(self, query_tokens: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        """As TokenIndex.maxsim: None when there are no rows or query pieces, or a passage has no pieces."""
        if len(rows) == 0 or len(query_tokens) == 0:
            return None
        chosen = [self.blobs[int(r)] for r in rows]
        if any(not b for b in chosen):
            return None
        return maxsim(self.codec, np.asarray(query_tokens, dtype=np.float32), chosen)


CODECS = ("int8", "int4", "sign")
"""The codecs a database library may store its word pieces with (`LECTURE_QA_PG_TOKEN_CODEC`); the residual
codes need a fitted codebook and are not among them (docs/token-compression.md)."""


def codec_named(name: str, dim: int = 384) -> Codec:
    """The codec a library records by name: int8 (386 bytes a piece), int4 (194) or sign (48)."""
    if name == "int8":
        return Int8Codec(dim)
    if name == "int4":
        return Int4Codec(dim)
    if name == "sign":
        return SignCodec(dim, "asymmetric")
    raise ValueError(f"unknown word-piece codec {name!r}: one of {', '.join(CODECS)}")
