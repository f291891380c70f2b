"""ingest.token_codes: shapes, sizes and MaxSim ranking of each word-piece codec, on random unit vectors."""

from __future__ import annotations

import numpy as np
import pytest

from ingest import token_codes as tc
from ingest.token_vectors import TokenIndex

DIM = 384


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def residual_centroids() -> np.ndarray:
    return tc.fit_centroids(unit(np.random.default_rng(1), 2048), 16, iterations=5)


def codecs(centroids: np.ndarray) -> list[tc.Codec]:
    sample = unit(np.random.default_rng(2), 2048)
    return [tc.Float32Codec(DIM), tc.Int8Codec(DIM), tc.Int4Codec(DIM), tc.SignCodec(DIM, "asymmetric"),
            tc.SignCodec(DIM, "hamming"),
            *(tc.ResidualCodec.fit(sample, 16, bits, centroids=centroids) for bits in (0, 1, 2, 4))]


def test_round_trip_shapes(residual_centroids: np.ndarray) -> None:
    tokens = unit(np.random.default_rng(3), 37)
    for codec in codecs(residual_centroids):
        blob = codec.encode(tokens)
        assert len(blob) == 37 * codec.bytes_per_piece, codec.name
        assert tc.pieces(codec, blob) == 37
        decoded = codec.decode(blob)
        assert decoded.shape == (37, DIM) and decoded.dtype == np.float32, codec.name
        assert tc.similarities(codec, tokens[:5], blob).shape == (5, 37)
        if codec.bytes_per_piece > 1:
            with pytest.raises(ValueError):
                tc.pieces(codec, blob + b"x")


def test_decoded_vectors_stay_close() -> None:
    rng = np.random.default_rng(4)
    tokens = unit(rng, 200)
    assert np.allclose(tc.Float32Codec().decode(tc.Float32Codec().encode(tokens)), tokens)
    int8 = tc.Int8Codec().decode(tc.Int8Codec().encode(tokens))
    assert (int8 * tokens).sum(axis=1).min() > 0.998
    int4 = tc.Int4Codec().decode(tc.Int4Codec().encode(tokens))
    assert ((int4 * tokens).sum(axis=1) / np.linalg.norm(int4, axis=1)).min() > 0.97
    signs = tc.SignCodec().decode(tc.SignCodec().encode(tokens))
    assert np.allclose(np.linalg.norm(signs, axis=1), 1.0, atol=1e-5)
    assert (signs * tokens).sum(axis=1).mean() > 0.75  # sqrt(2 / pi) = 0.80 for Gaussian directions
    # residual: more bits, closer (random vectors: the 16 centroids explain little, the residual does the work)
    sample = unit(rng, 2048)
    centroids = tc.fit_centroids(sample, 16, iterations=5)
    cos = [(tc.ResidualCodec.fit(sample, 16, b, centroids=centroids).decode(
        tc.ResidualCodec.fit(sample, 16, b, centroids=centroids).encode(tokens)) * tokens).sum(axis=1).mean()
        for b in (0, 1, 2, 4)]
    assert cos == sorted(cos) and cos[3] > 0.97


def test_maxsim_ranks_the_exact_match_first(residual_centroids: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    query = unit(rng, 9)
    match = np.concatenate([unit(rng, 40), query, unit(rng, 30)])  # the query's pieces among others
    distractors = [unit(rng, int(n)) for n in rng.integers(20, 120, size=30)]
    passages = [*distractors[:11], match, *distractors[11:]]
    for codec in codecs(residual_centroids):
        if isinstance(codec, tc.ResidualCodec) and codec.nbits == 0:
            continue  # centroids alone: 16 centroids cannot tell random vectors apart
        index = tc.CodedTokens.from_vectors(codec, passages)
        scores = index.maxsim(query, np.arange(len(passages)))
        assert scores is not None and scores.shape == (len(passages),)
        assert int(np.argmax(scores)) == 11, codec.name
        assert index.nbytes == sum(len(p) for p in passages) * codec.bytes_per_piece


def test_int8_codec_scores_as_token_index() -> None:
    rng = np.random.default_rng(6)
    passages = [unit(rng, n) for n in (5, 17, 3, 40)]
    query = unit(rng, 6)
    rows = np.array([3, 0, 2])
    reference = TokenIndex.build([tc.Int8Codec().encode(p) for p in passages], DIM)
    assert reference is not None
    expected = reference.maxsim(query, rows)
    got = tc.CodedTokens.from_vectors(tc.Int8Codec(), passages).maxsim(query, rows)
    assert expected is not None and got is not None
    assert np.allclose(got, expected, atol=1e-5)


def test_no_score_without_rows_or_pieces() -> None:
    rng = np.random.default_rng(7)
    index = tc.CodedTokens.from_vectors(tc.SignCodec(), [unit(rng, 4), np.zeros((0, DIM), dtype=np.float32)])
    assert index.maxsim(unit(rng, 3), np.array([], dtype=np.int64)) is None
    assert index.maxsim(np.zeros((0, DIM), dtype=np.float32), np.array([0])) is None
    assert index.maxsim(unit(rng, 3), np.array([0, 1])) is None


@pytest.mark.parametrize(("k", "bits", "size"), [(256, 0, 1), (256, 1, 49), (256, 2, 97), (1024, 1, 50),
                                                  (1024, 2, 98), (4096, 0, 2), (4096, 1, 50), (4096, 2, 98)])
def test_residual_bytes_per_piece(k: int, bits: int, size: int) -> None:
    codec = tc.ResidualCodec(unit(np.random.default_rng(8), k), np.zeros(2 ** bits - 1), np.zeros(2 ** bits), bits)
    assert codec.bytes_per_piece == size
    assert len(codec.encode(unit(np.random.default_rng(9), 3))) == 3 * size
    assert codec.codebook_bytes == k * DIM * 4 + (2 ** bits - 1) * 4 + 2 ** bits * 4


def test_documented_sizes() -> None:
    assert tc.Float32Codec().bytes_per_piece == 1536
    assert tc.Int8Codec().bytes_per_piece == 386
    assert tc.Int4Codec().bytes_per_piece == 194
    assert tc.SignCodec().bytes_per_piece == 48
    assert tc.SignCodec(scoring="hamming").bytes_per_piece == 48
