"""Both embedding backends load the packaged all-MiniLM-L6-v2 offline and agree with each other."""

from __future__ import annotations

import numpy as np

from ingest.embedding import MINILM, default_model_path, make_embedder


def test_sentence_transformers_and_onnx_int8_agree(embedder, st_embedder):
    texts = ["The forget gate decides what to erase from the cell state.",
             "Truncated BPTT cuts the sequence into windows.", "x" * 3000]
    a = embedder.encode(texts)
    b = st_embedder.encode(texts)
    assert a.shape == b.shape == (3, 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)
    assert (a * b).sum(axis=1).min() > 0.98  # int8 vs float: the same model
    assert embedder.name == st_embedder.name == MINILM
    assert st_embedder.max_tokens == embedder.max_tokens == 254
    assert embedder.count_tokens(texts[:1]) == st_embedder.count_tokens(texts[:1])


def test_a_model_directory_selects_sentence_transformers():
    emb = make_embedder("onnx-int8", default_model_path())
    assert type(emb).__name__ == "SentenceTransformerEmbedder"
