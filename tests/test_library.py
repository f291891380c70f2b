"""The library on disk: idempotent, incremental, deduplicating, crash-safe and lock-protected."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ingest.library import Library
from ingest.pipeline import SourceFile, collect_paths
from tests.builders import LSTM_SLIDES, make_pdf, make_pptx
from tests.conftest import ROOT

LECTURE = (
    "# RNN basics\n\nA recurrent network carries a hidden state from one time step to the next, "
    "so the output can depend on everything seen so far.\n\n"
    "## Vanishing gradients\n\nRepeated multiplication by the recurrent Jacobian shrinks the gradient "
    "exponentially, which stops learning of long-range dependencies.\n"
)


def _files(tmp_path: Path, **contents: bytes | str) -> list[SourceFile]:
    out = []
    for name, data in contents.items():
        p = tmp_path / name.replace("__", ".")
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        out.append(SourceFile(name=p.name, path=p, source=str(p)))
    return out


def test_ingest_then_unchanged_then_replaced_then_deleted(tmp_path, pipeline, library):
    files = _files(tmp_path, rnn__md=LECTURE, deck__pptx=make_pptx(LSTM_SLIDES))
    first = pipeline.ingest(files)
    assert first.error is None
    assert sorted(f.status for f in first.files) == ["ingested", "ingested"]
    snap = library.snapshot(force_check=True)
    chunk_count = snap.raw_chunks
    assert len(snap.documents) == 2 and chunk_count >= 3

    again = pipeline.ingest(files)
    assert [f.status for f in again.files] == ["unchanged", "unchanged"]
    assert library.snapshot(force_check=True).generation == snap.generation  # nothing rewritten

    (tmp_path / "rnn.md").write_text(LECTURE + "\n## GRU\n\nThe GRU merges the cell state and hidden state into one.\n")
    changed = pipeline.ingest(files[:1])
    assert changed.files[0].status == "replaced"
    docs = library.documents()
    assert len(docs) == 2 and sorted(d.name for d in docs) == ["deck.pptx", "rnn.md"]
    snap = library.snapshot(force_check=True)
    assert any("merges the cell state" in p.text for p in snap.passages)
    assert not any(p.doc_id == first.files[1].document_id for p in snap.passages if "rnn" in p.chunk_id)
    # re-embedding reused the cache for the unchanged sections
    assert changed.embedded < changed.chunks

    rnn_id = next(d.id for d in docs if d.name == "rnn.md")
    assert pipeline.delete(rnn_id)
    snap = library.snapshot(force_check=True)
    assert list(snap.documents) == [d.id for d in docs if d.name == "deck.pptx"]
    assert all(p.doc_id != rnn_id for p in snap.passages)
    assert not pipeline.delete(rnn_id)


def test_no_sequence_of_reingests_leaves_duplicates(tmp_path, pipeline, library):
    files = _files(tmp_path, a__md=LECTURE)
    for i in range(3):
        (tmp_path / "a.md").write_text(LECTURE + f"\n## Extra {i % 2}\n\nVersion {i % 2} of the extra section text.\n")
        pipeline.ingest(files)
        pipeline.ingest(files)
    with library._connect() as conn:
        (n_docs,) = conn.execute("SELECT COUNT(*) FROM documents").fetchone()
        (n_chunks,) = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()
        (n_distinct,) = conn.execute("SELECT COUNT(DISTINCT text) FROM chunks").fetchone()
    assert n_docs == 1 and n_chunks == n_distinct


def test_near_duplicate_groups_do_not_chain():
    from ingest.dedupe import NearDuplicates

    dups = NearDuplicates(4)
    dups.link(0, 1)
    dups.link(1, 2)  # 0 ~ 1 ~ 2, but 0 and 2 share too little: 2 must keep its own text searchable
    dups.link(2, 3)
    assert dups.groups([0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert dups.groups([1, 0, 2, 3]) == [[1, 0, 2], [3]]
    assert dups.groups([3, 2, 1]) == [[3, 2], [1]]  # items outside the order (0) never join


def test_incremental_build_slides_and_same_deck_as_pdf_collapse(tmp_path, pipeline, library):
    build = [
        {"title": "Attention for every time step", "bullets": ["The decoder scores every encoder state."]},
        {"title": "Attention for every time step",
         "bullets": ["The decoder scores every encoder state.", "A softmax turns the scores into weights."]},
        {"title": "Attention for every time step",
         "bullets": ["The decoder scores every encoder state.", "A softmax turns the scores into weights.",
                     "The weighted average of encoder states is the new context vector."]},
    ]
    pptx = make_pptx(build)
    pdf = make_pdf(["Attention for every time step\nThe decoder scores every encoder state.\n"
                    "A softmax turns the scores into weights.\n"
                    "The weighted average of encoder states is the new context vector."])
    report = pipeline.ingest(_files(tmp_path, deck__pptx=pptx, deck__pdf=pdf))
    assert report.error is None
    snap = library.snapshot(force_check=True)
    assert snap.raw_chunks == 4 and len(snap.passages) == 1
    assert report.collapsed == 3
    (passage,) = snap.passages
    assert "new context vector" in passage.text
    every = [passage.location] + [a["location"] for a in passage.also_at]
    assert sorted(json.dumps(x, sort_keys=True) for x in every) == sorted(
        json.dumps(x, sort_keys=True) for x in [{"slide": 1}, {"slide": 2}, {"slide": 3}, {"page": 1}])
    # deleting the deck that holds the canonical text keeps the other copy searchable
    canonical_doc = passage.doc_id
    pipeline.delete(canonical_doc)
    snap = library.snapshot(force_check=True)
    assert len(snap.passages) == 1 and snap.passages[0].doc_id != canonical_doc


def test_bad_files_are_reported_and_the_batch_goes_on(tmp_path, pipeline, library):
    files = _files(tmp_path, good__md=LECTURE, fake__pdf=b"<html><body>404</body></html>", empty__txt=b"",
                   big__txt=b"x " * (3 * 2**20))
    files.append(SourceFile(name="missing.md", path=tmp_path / "missing.md"))
    report = pipeline.ingest(files)
    by_name = {f.name: f for f in report.files}
    assert by_name["good.md"].status == "ingested"
    assert "HTML" in by_name["fake.pdf"].reason
    assert "empty" in by_name["empty.txt"].reason
    assert "over the limit" in by_name["big.txt"].reason
    assert "cannot be read" in by_name["missing.md"].reason
    assert len(library.documents()) == 1


def test_collect_paths_recurses_and_names_relative(tmp_path):
    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / "index.md").write_text("# A\n\ntext here for the index\n")
    (tmp_path / "w2").mkdir()
    (tmp_path / "w2" / "index.md").write_text("# B\n\nother text here\n")
    (tmp_path / "w2" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.md").write_text("# hidden")
    found, missing = collect_paths([tmp_path, tmp_path / "nope"])
    assert [f.name for f in found] == ["w1/index.md", "w2/index.md"]
    assert missing[0].reason == "no such file or folder"


def test_damaged_derived_files_are_rebuilt_from_sqlite(tmp_path, pipeline, library, embedder):
    pipeline.ingest(_files(tmp_path, rnn__md=LECTURE))
    gen = library.generation()
    gdir = library.index_dir / f"g{gen}"
    (gdir / "dense.faiss").write_bytes(b"garbage")
    fresh = Library(library.data_dir, dim=embedder.dim)
    snap = fresh.snapshot()
    assert snap.generation == gen and len(snap.passages) == 2



def test_bm25_files_of_an_older_keyword_scheme_are_rebuilt(tmp_path, pipeline, library, embedder):
    from ingest.textnorm import keyword_tokens

    pipeline.ingest(_files(tmp_path, rnn__md=LECTURE))
    gen = library.generation()
    manifest_path = library.index_dir / f"g{gen}" / "groups.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["keywords"] >= 2
    with contextlib.closing(library._connect()) as conn:
        assert library._read_derived(conn, gen) is not None
        del manifest["keywords"]  # as written before the scheme had a version
        manifest_path.write_text(json.dumps(manifest))
        assert library._read_derived(conn, gen) is None
    snap = Library(library.data_dir, dim=embedder.dim).snapshot()  # rebuilt in memory from SQLite
    assert snap.generation == gen and snap.bm25 is not None
    assert keyword_tokens("vanishes vanishing vanish matches gates") == ["vanish"] * 3 + ["match", "gate"]


CRASHER = textwrap.dedent(
    """
    import sys, time, pathlib
    sys.path.insert(0, {root!r})
    from ingest.embedding import make_embedder
    from ingest.library import Library
    from ingest.pipeline import Pipeline, SourceFile
    data_dir, marker, hold = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3])
    emb = make_embedder("onnx-int8")
    pipe = Pipeline(Library(data_dir, dim=emb.dim), emb)
    files = [SourceFile(name=n, data=pathlib.Path(n2).read_bytes()) for n, n2 in zip(sys.argv[4::2], sys.argv[5::2])]
    def hold_lock():  # hold < 0: until the test creates <marker>.go
        marker.write_text("committing")
        go = pathlib.Path(str(marker) + ".go")
        deadline = time.time() + (600 if hold < 0 else hold)
        while time.time() < deadline and not (hold < 0 and go.exists()):
            time.sleep(0.05)
    report = pipe.ingest(files, _before_commit=hold_lock,
                         on_lock_wait=lambda: print("waiting for the library lock", flush=True))
    print("done", report.error, [f.status for f in report.files], flush=True)
    """
)


def _crasher(tmp_path: Path, data_dir: Path, marker: Path, hold: float, *files: Path) -> subprocess.Popen:
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER.format(root=str(ROOT)))
    args = [sys.executable, str(script), str(data_dir), str(marker), str(hold)]
    for f in files:
        args += [f.name, str(f)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.time() < deadline, "the ingest never reached its commit"
        time.sleep(0.05)


def test_kill_during_commit_leaves_previous_version(tmp_path, pipeline, library, embedder):
    first = _files(tmp_path, rnn__md=LECTURE)
    pipeline.ingest(first)
    before = library.snapshot(force_check=True)
    extra = tmp_path / "deck.pptx"
    extra.write_bytes(make_pptx(LSTM_SLIDES))
    marker = tmp_path / "marker"
    proc = _crasher(tmp_path, library.data_dir, marker, 60, extra)
    _wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)  # the new generation's files exist, SQLite is not yet committed
    proc.wait()

    reopened = Library(library.data_dir, dim=embedder.dim)
    snap = reopened.snapshot()
    assert snap.generation == before.generation
    assert [d.name for d in reopened.documents()] == ["rnn.md"]
    assert len(snap.passages) == len(before.passages)

    marker.unlink()
    proc = _crasher(tmp_path, library.data_dir, marker, 0, extra)
    out, _ = proc.communicate(timeout=300)
    assert "done None ['ingested']" in out
    after = Library(library.data_dir, dim=embedder.dim)
    assert sorted(d.name for d in after.documents()) == ["deck.pptx", "rnn.md"]
    assert after.snapshot().generation == before.generation + 1


def test_concurrent_ingests_wait_for_the_lock(tmp_path, library):
    a = tmp_path / "a.md"
    a.write_text(LECTURE)
    b = tmp_path / "b.md"
    b.write_text(LECTURE.replace("RNN basics", "RNN recap") + "\nA different closing paragraph about GRUs.\n")
    marker_a, marker_b = tmp_path / "ma", tmp_path / "mb"
    pa = _crasher(tmp_path, library.data_dir, marker_a, -1, a)  # holds the lock until released below
    _wait_for(marker_a, pa)
    pb = _crasher(tmp_path, library.data_dir, marker_b, 0, b)
    assert pb.stdout is not None
    seen = ""
    for line in pb.stdout:  # however long B takes to load, it reaches the lock while A holds it
        seen += line
        if line.startswith("waiting for the library lock"):
            break
    Path(str(marker_a) + ".go").write_text("")
    rest, _ = pb.communicate(timeout=300)
    out_b = seen + rest
    out_a, _ = pa.communicate(timeout=300)
    assert "waiting for the library lock" in seen, (out_a, out_b)
    assert "done None ['ingested']" in out_a and "done None ['ingested']" in out_b
    assert sorted(d.name for d in library.documents()) == ["a.md", "b.md"]
    assert library.snapshot(force_check=True).generation == 2


def test_library_refuses_a_different_embedding_model(tmp_path):
    import pytest

    lib = Library(tmp_path / "data")
    lib.ensure_embedder("sentence-transformers/all-MiniLM-L6-v2")
    lib.ensure_embedder("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(RuntimeError, match="indexed with the embedding model"):
        Library(tmp_path / "data").ensure_embedder("/models/other-model")
