"""Hybrid retrieval and the grounding rules, on a small real library."""

from __future__ import annotations

import pytest

from app.qa.answer.extractive import ExtractiveAnswerer, sentences_of
from app.qa.grounding import Vocabulary
from app.qa.retrieve import Retriever
from app.qa.service import QAService
from app.qa.stores.local import LocalStore
from ingest.pipeline import SourceFile
from tests.conftest import SAMPLES


@pytest.fixture()
def store(pipeline, library, embedder):
    files = [SourceFile(name=p.name, path=p) for p in sorted(SAMPLES.iterdir())]
    assert pipeline.ingest(files).error is None
    return LocalStore(library, embedder, pipeline, Retriever(library, embedder))


def test_dense_and_keyword_both_contribute(store):
    # a paraphrase with no shared rare term still finds the forget-gate slide (dense) ...
    top = store.search("which part of the LSTM decides what memory to erase?", 3)
    assert top[0].location == {"slide": 3}
    # ... and an exact rare term finds its passage (keyword)
    top = store.search("Bahdanau", 3)
    assert "Bahdanau" in top[0].text
    assert all(a.score >= b.score for a, b in zip(top, top[1:], strict=False))


def test_document_filter_and_large_library_path(store, library):
    docs = {d.name: d.id for d in library.documents()}
    only = docs["02-bptt-and-vanishing-gradients.html"]
    hits = store.search("forget gate", 5, document_ids=[only])
    assert hits and {h.document.id for h in hits} == {only}
    assert store.search("forget gate", 5, document_ids=["no-such-doc"]) == []
    exhaustive = [h.chunk_id for h in store.search("truncated backpropagation through time", 5)]
    store.retriever.max_exhaustive = 0  # the FAISS top-k regime used beyond 50k passages
    store.retriever.candidates = 8
    approximate = [h.chunk_id for h in store.search("truncated backpropagation through time", 5)]
    assert approximate[0] == exhaustive[0]


def test_unknown_terms():
    vocab = Vocabulary(["lstm", "gate", "parallelization"], frozenset({"what", "compare", "rotary", "fraction"}))
    assert vocab.unknown_terms("How does Mamba compare with an LSTM gate?") == ["mamba"]
    assert vocab.unknown_terms("What fraction of parallelism?") == []  # a model word; a 6-letter prefix
    # an acronym must be in the library itself: the model knowing "rope" or "rotary" is not enough
    vocab.model = vocab.model | {"position", "embedding", "work", "rope"}
    assert vocab.unknown_terms("How does rotary position embedding (RoPE) work?") == ["rope"]
    assert vocab.unknown_terms("Why do LSTMs have a gate?") == []


def test_refusal_and_grounded_answer(store, embedder):
    service = QAService(store, ExtractiveAnswerer(embedder))
    ok = service.ask("What is teacher forcing?")
    assert ok.answer.grounded and "teacher forcing" in ok.answer.text
    off = service.ask("What is the capital of Australia?")
    assert not off.answer.grounded and off.answer.citations == [] and off.sources


def test_sentences_join_wrapped_lines_and_skip_code():
    text = "The forget gate\nlooks at the previous state.\n```python\nx = f(y)\n```\n- Bullet one has words here"
    assert sentences_of(text) == ["The forget gate looks at the previous state.", "Bullet one has words here"]


def test_token_vectors_pack_and_maxsim():
    import numpy as np

    from ingest.token_vectors import TokenIndex, pack, unpack

    rng = np.random.default_rng(0)
    passages = [rng.standard_normal((n, 384)).astype(np.float32) for n in (5, 1, 9)]
    passages = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in passages]
    values, scales = unpack(pack(passages[0]), 384)
    assert values.dtype == np.int8 and values.shape == (5, 384)
    assert np.abs(values * scales[:, None].astype(np.float32) - passages[0]).max() < 0.01
    index = TokenIndex.build([pack(p) for p in passages], 384)
    assert index is not None and list(index.offsets) == [0, 5, 6, 15]
    query = passages[2][:3]  # three of the last passage's own tokens: a perfect match there
    got = index.maxsim(query, np.array([2, 0, 1]))
    want = [(query @ passages[i].T).max(axis=1).mean() for i in (2, 0, 1)]
    assert got is not None and np.allclose(got, want, atol=0.02) and got[0] == got.max()
    assert TokenIndex.build([pack(passages[0]), None], 384) is None  # a library from before token vectors


def test_late_interaction_reranks_and_is_stored(store, library, embedder):
    snap = library.snapshot(force_check=True)
    assert snap.tokens is not None and snap.tokens.offsets[-1] == len(snap.tokens.values) > 100
    gdir = library.index_dir / f"g{snap.generation}"
    assert (gdir / "tokens.npy").exists()
    library._snapshot = None  # read back from the derived files, memory-mapped
    reread = library.snapshot(force_check=True)
    assert reread.tokens is not None and reread.tokens.values.shape == snap.tokens.values.shape
    question = "which part of the LSTM decides what memory to erase?"
    late = store.search(question, 5)
    reread.tokens = None  # without token vectors the fused order stands, with other scores
    plain = store.search(question, 5)
    assert late[0].location == plain[0].location == {"slide": 3}
    assert [h.score for h in late] != [h.score for h in plain]
    assert all(a.score >= b.score for a, b in zip(late, late[1:], strict=False))


def test_library_from_before_token_vectors_still_opens(tmp_path, embedder):
    import sqlite3

    from ingest.library import Library
    from ingest.pipeline import Pipeline

    data = tmp_path / "old"
    lib = Library(data, dim=embedder.dim)
    Pipeline(lib, embedder).ingest([SourceFile(name=p.name, path=p) for p in sorted(SAMPLES.iterdir())][:2])
    with sqlite3.connect(data / "library.sqlite3") as conn:  # what an older version wrote: no tokens column
        conn.execute("ALTER TABLE chunks DROP COLUMN tokens")
    for g in (data / "index").iterdir():
        (g / "groups.json").unlink()
    reopened = Library(data, dim=embedder.dim)
    snap = reopened.snapshot(force_check=True)
    assert snap.passages and snap.tokens is None
    hits = Retriever(reopened, embedder).search(snap, "recurrent hidden state", 3)
    assert len(hits) == 3


def test_answer_scores_follow_the_hit_rule_and_ignore_citation_markers():
    from app.qa.evaluate import answer_scores

    item = {"answer": "The forget gate erases parts of the cell state.",
            "evidence": [{"doc": "d", "quote": "decides what to erase from the cell-state"}]}
    has, recall = answer_scores(item, "It decides what to erase [1] from the cell state [2].")
    assert has and recall is not None and 0 < recall < 1  # "forget", "gate" missing; "erase", "cell", "state" in
    has, recall = answer_scores(item, "The forget gate erases parts of the cell state. [1]")
    assert not has and recall == 1.0
    assert answer_scores(item, "") == (False, 0.0)


def test_headings_are_evidence_but_never_answer_sentences(embedder):
    from app.qa.types import DocumentRef, Source

    doc = DocumentRef("d1", "02-bptt.html", "Lecture 2")
    text = ("Vanishing and exploding gradients\n"
            "The gradient from step t back to step k is a product of t - k Jacobians of the recurrence. "
            "When the largest singular value of the recurrent matrix is below one, the product shrinks "
            "exponentially and the gradient vanishes.")
    src = Source("c1", text, 1.0, doc, {"section": "Lecture 2 > Vanishing and exploding gradients"}, dense=0.6)
    answer = ExtractiveAnswerer(embedder).answer("Why do gradients vanish?", [src])
    assert answer.grounded and "gradient vanishes" in answer.text
    assert "Vanishing and exploding gradients" not in answer.text
    only_heading = Source("c2", "Vanishing and exploding gradients\nSee above", 1.0, doc,
                          {"section": "Lecture 2 > Vanishing and exploding gradients"}, dense=0.6)
    assert not ExtractiveAnswerer(embedder).answer("Why do gradients vanish?", [only_heading]).grounded


def test_rrf_fuses_any_number_of_lists_by_rank():
    import numpy as np

    from app.qa.retrieve import rrf

    tie = np.arange(6)
    dense, keyword, third = np.array([0, 1, 2]), np.array([3, 1]), np.array([4, 1, 0])
    keys, scores = rrf([(dense, 1.0), (keyword, 0.5), (third, 1.0)], 60, tie)
    assert keys[0] == 1  # second in all three lists beats first in one
    assert list(keys) == sorted(keys, key=lambda k: -scores[list(keys).index(k)])
    assert abs(scores[0] - (1 / 62 + 0.5 / 62 + 1 / 62)) < 1e-12
    assert set(keys) == {0, 1, 2, 3, 4}
    only_two, _ = rrf([(dense, 1.0), (keyword, 0.5)], 60, tie)
    assert 4 not in only_two  # a list with weight adds its passages; without it they are absent


def test_a_read_passage_carries_its_next_passage_as_context(store, library, embedder):
    from ingest import reader_models
    from ingest.cross_encoder import CrossEncoder

    if reader_models.available() is not None:
        pytest.skip(reader_models.available())
    store.retriever.reader = CrossEncoder().load()
    snap = library.snapshot()
    nxt = store.retriever.neighbours(snap)
    rows = {p.chunk_id: i for i, p in enumerate(snap.passages)}
    deck = [i for i, p in enumerate(snap.passages) if p.doc_id == snap.passages[rows[next(
        p.chunk_id for p in snap.passages if p.location == {"slide": 2})]].doc_id]
    slides = {snap.passages[i].location["slide"]: i for i in deck}
    assert nxt[slides[2]] == slides[3] and nxt[slides[max(slides)]] == -1  # the next slide; none after the last
    results = store.search("What problem does the LSTM forget gate solve?", 5)
    assert all(r.reader is not None for r in results)
    with_context = [r for r in results if r.context]
    assert with_context
    for r in with_context:
        assert r.context == snap.passages[nxt[rows[r.chunk_id]]].text  # the next passage of its document
    assert "context" in with_context[0].public() and "context" not in {k for r in results if not r.context
                                                                       for k in r.public()}
