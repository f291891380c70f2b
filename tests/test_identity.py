"""Document identity: a name (relative path or uploaded name) names one document; nothing ingested is dropped.

Also: names normalised for display, files given to the CLI named below their common folder, CLI roots never
left through links, the document filter seeing every place of a collapsed passage, and libraries of the
previous schema opening in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.api.routes.documents import safe_name
from app.qa.retrieve import Retriever
from app.qa.stores.local import LocalStore
from ingest.library import Library
from ingest.names import display_name
from ingest.pipeline import SourceFile, collect_paths
from tests.conftest import CORPUS, ROOT, SAMPLES, needs_shared
from tests.server import Server

LECTURE = (SAMPLES / "01-recurrent-networks.md").read_bytes()
D2L_INDEXES = ["chapter_recurrent-neural-networks/index.md", "chapter_recurrent-modern/index.md",
               "chapter_attention-mechanisms-and-transformers/index.md"]


def _src(name: str, data: bytes) -> SourceFile:
    return SourceFile(name=name, data=data, source="test")


def _statuses(report) -> dict[str, str]:
    return {f.name: f.status for f in report.files}


# ---- 5: one normalisation for uploads and the CLI ---------------------------------------------------------
def test_names_are_normalised_for_display_and_keep_their_extension():
    long = "lecture " * 40 + "on attention.pdf"
    assert len(long) > 200
    assert safe_name(long).endswith(".pdf") and len(safe_name(long)) == 200
    assert safe_name("evil\u202egpj.pdf") == "evilgpj.pdf"  # RTL override: it would display as "evilfdp.jpg"
    assert safe_name("zero\u200bwidth\ufeff.md") == "zerowidth.md"
    assert safe_name("two\nlines\r\n\tname.md") == "two lines name.md"
    assert safe_name("Cafe\u0301.md") == "Caf\u00e9.md"  # NFC
    assert safe_name("../../etc/passwd.txt") == "etc/passwd.txt"
    assert safe_name("/abs/week2//./slides.pdf") == "abs/week2/slides.pdf"
    assert safe_name("C:\\Users\\me\\week2\\slides.pdf") == "Users/me/week2/slides.pdf"
    assert safe_name(".hidden.md") == "hidden.md" and safe_name("") == safe_name(None) == "upload"
    assert safe_name("week2/slides.pdf") == "week2/slides.pdf"
    deep = "/".join(["folder" * 30] * 10) + "/deck.pptx"
    assert display_name(deep).endswith("/deck.pptx") and len(display_name(deep)) <= 1000


def test_cli_names_are_normalised_the_same_way(tmp_path):
    root = tmp_path / "course"
    (root / "week\n2").mkdir(parents=True)
    (root / "week\n2" / "intro\u200b\u202e.md").write_bytes(LECTURE)
    found, _ = collect_paths([root])
    assert [f.name for f in found] == ["week 2/intro.md"]
    r = subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(root), "--data-dir", str(tmp_path / "data"),
                        "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    listed = subprocess.run([sys.executable, "-m", "app.cli", "documents", "--data-dir", str(tmp_path / "data")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert listed.splitlines()[0].endswith("week 2/intro.md") and listed.splitlines()[1] == "1 documents"


# ---- 4: the CLI never leaves its roots -------------------------------------------------------------------------
def test_links_out_of_the_folder_are_skipped_with_a_reason(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n" * 20)
    root = tmp_path / "x"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "notes.md").write_bytes(LECTURE)
    (root / "p.txt").symlink_to(outside)
    (root / "inside.md").symlink_to(root / "sub" / "notes.md")  # a link within the folder is fine
    (root / "etc").symlink_to(tmp_path, target_is_directory=True)  # a folder link is not followed
    found, skipped = collect_paths([root])
    assert sorted(f.name for f in found) == ["inside.md", "sub/notes.md"]
    assert [(s.name, s.status) for s in skipped] == [("p.txt", "skipped")]
    assert "outside" in (skipped[0].reason or "") and str(outside) in (skipped[0].reason or "")


# ---- 6: nothing is dropped: the name is the identity -------------------------------------------------------
def test_same_file_name_in_two_folders_is_two_documents(tmp_path, pipeline, library):
    week1 = LECTURE
    week2 = LECTURE.replace(b"hidden state", b"hidden vector")
    first = pipeline.ingest([_src("week1/index.md", week1), _src("week2/index.md", week2)])
    assert _statuses(first) == {"week1/index.md": "ingested", "week2/index.md": "ingested"}
    assert sorted(d.name for d in library.documents()) == ["week1/index.md", "week2/index.md"]
    # the same bytes again: unchanged; new bytes under one name: that one replaced, the other kept
    assert set(_statuses(pipeline.ingest([_src("week1/index.md", week1)])).values()) == {"unchanged"}
    week1b = week1 + b"\n## Extra\n\nAn extra closing section about gated units and their gates.\n"
    again = pipeline.ingest([_src("week1/index.md", week1b)])
    assert _statuses(again) == {"week1/index.md": "replaced"}
    assert sorted(d.name for d in library.documents()) == ["week1/index.md", "week2/index.md"]


def test_two_different_files_with_one_name_in_one_batch_are_never_silently_replaced(pipeline, library):
    a, b = LECTURE, LECTURE.replace(b"hidden state", b"hidden vector")
    report = pipeline.ingest([_src("index.md", a), _src("index.md", b)])
    results = sorted((f.status, f.reason or "") for f in report.files)
    assert [s for s, _ in results] == ["ingested", "skipped"]
    assert "same name" in results[1][1]
    (doc,) = library.documents()
    assert doc.id == next(f.document_id for f in report.files if f.status == "ingested")


def test_same_bytes_under_two_paths_is_one_document_listing_both(pipeline, library):
    report = pipeline.ingest([_src("a/rnn.md", LECTURE), _src("b/rnn-copy.md", LECTURE)])
    assert _statuses(report) == {"a/rnn.md": "ingested", "b/rnn-copy.md": "ingested"}
    (doc,) = library.documents()
    assert doc.name == "a/rnn.md" and doc.also_named == ["b/rnn-copy.md"]
    assert doc.info().also_named == ["b/rnn-copy.md"]
    assert len({f.document_id for f in report.files}) == 1
    # a third name later: the stored document gets it, nothing is parsed again
    third = pipeline.ingest([_src("c/rnn.md", LECTURE)])
    assert third.files[0].status == "ingested" and third.files[0].same_as == "a/rnn.md"
    assert third.chunks == 0 and library.document(doc.id).also_named == ["b/rnn-copy.md", "c/rnn.md"]
    # other bytes under one of its names take only that name away
    other = pipeline.ingest([_src("a/rnn.md", LECTURE.replace(b"hidden state", b"hidden vector"))])
    assert other.files[0].status == "replaced" and other.files[0].replaced == [doc.id]
    docs = {d.name: d for d in library.documents()}
    assert sorted(docs) == ["a/rnn.md", "b/rnn-copy.md"]
    assert docs["b/rnn-copy.md"].id == doc.id and docs["b/rnn-copy.md"].also_named == ["c/rnn.md"]


def test_uploads_keep_their_folder_and_never_replace_silently(tmp_path):
    week2 = LECTURE.replace(b"hidden state", b"hidden vector")
    long = "a very long lecture name " * 10 + ".md"
    srv = Server(tmp_path / "data")
    try:
        srv.wait_ready()
        files = [("files", ("week1/index.md", LECTURE)), ("files", ("week2/index.md", week2)),
                 ("files", ("index.md", LECTURE)), ("files", ("index.md", week2)), ("files", (long, week2 + b"x"))]
        r = httpx.post(f"{srv.url}/api/v1/documents", files=files, timeout=120)
        assert r.status_code == 200, r.text
        statuses = sorted((f["name"], f["status"]) for f in r.json()["files"])
        short = safe_name(long)
        assert statuses == sorted([("week1/index.md", "ingested"), ("week2/index.md", "ingested"),
                                   ("index.md", "ingested"), ("index.md", "skipped"), (short, "ingested")])
        listed = httpx.get(f"{srv.url}/api/v1/documents").json()["documents"]
        names = sorted(n for d in listed for n in [d["name"], *d["also_named"]])
        assert names == sorted(["index.md", "week1/index.md", "week2/index.md", short])
        assert len(listed) == 3 and short.endswith(".md")
    finally:
        srv.stop()


# ---- 7: the same bytes as another type is a new parse ---------------------------------------------------------
def test_reupload_as_another_type_is_a_new_parse(pipeline, library):
    text = (SAMPLES / "04-attention-notes.txt").read_bytes()
    first = pipeline.ingest([_src("lecture5.txt", text)])
    assert first.files[0].status == "ingested"
    second = pipeline.ingest([_src("lecture5.md", text)])
    assert second.files[0].status == "ingested" and second.files[0].chunks > 0
    assert second.files[0].document_id != first.files[0].document_id
    docs = {d.name: d for d in library.documents()}
    assert set(docs) == {"lecture5.txt", "lecture5.md"} and docs["lecture5.md"].kind == "markdown"
    assert pipeline.ingest([_src("lecture5.md", text)]).files[0].status == "unchanged"


# ---- 8: one document per distinct file ---------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)


@needs_shared
def test_three_d2l_index_files_are_three_documents(tmp_path):
    root = tmp_path / "d2l"
    for rel in D2L_INDEXES:
        (root / rel).parent.mkdir(parents=True)
        shutil.copyfile(CORPUS / "d2l" / rel, root / rel)
    data = tmp_path / "data"
    r = _cli("ingest", str(root), "--data-dir", str(data), "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(f["name"] for f in json.loads(r.stdout)["files"]) == sorted(D2L_INDEXES)
    listed = json.loads(_cli("documents", "--json", "--data-dir", str(data)).stdout)
    assert sorted(d["name"] for d in listed) == sorted(D2L_INDEXES)


@needs_shared
@pytest.mark.slow
def test_corpus_files_named_one_by_one_are_one_document_each(tmp_path):
    """Every corpus file named on the command line (the three d2l `index.md`, the five `SOURCE.txt`): one
    document each, named by its path below the corpus; the folder ingested afterwards changes nothing."""
    data = tmp_path / "data"
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    r = _cli("ingest", *map(str, files), "--data-dir", str(data), "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert not [f for f in report["files"] if f["status"] != "ingested"]
    distinct = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    listed = json.loads(_cli("documents", "--json", "--data-dir", str(data)).stdout)
    assert len(listed) == len(distinct) == len(files)
    assert sorted(n for d in listed for n in [d["name"], *d["also_named"]]) == \
        sorted(p.relative_to(CORPUS).as_posix() for p in files)
    lectures = [d for d in listed if not d["name"].endswith(("SOURCE.txt", "README.md"))]
    assert len(lectures) == 46  # the corpus README's table (48 with the two files held back for blind testing)
    again = json.loads(_cli("ingest", str(CORPUS), "--data-dir", str(data), "--quiet", "--json").stdout)
    assert {f["status"] for f in again["files"]} == {"unchanged"} and len(again["files"]) == len(files)


# ---- 9: files named on the command line are named below the common folder of everything given ----------------
def _three_index_files(root: Path) -> list[Path]:
    """chapter_a/index.md, chapter_b/index.md, chapter_c/notes/index.md: one name, three different files."""
    out = []
    for n, rel in enumerate(["chapter_a/index.md", "chapter_b/index.md", "chapter_c/notes/index.md"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(LECTURE.replace(b"hidden state", f"hidden state {n}".encode()))
        out.append(root / rel)
    return out


def test_same_named_files_given_one_by_one_are_named_below_their_common_folder(tmp_path):
    a, b, c = _three_index_files(tmp_path / "course")
    found, skipped = collect_paths([a, b, c])
    assert [f.name for f in found] == ["chapter_a/index.md", "chapter_b/index.md", "chapter_c/notes/index.md"]
    assert not skipped
    # files and folders mixed: the common folder of both; a file given again inside a folder given is read once
    found, _ = collect_paths([c.parent, a, a.parent, b])
    assert [f.name for f in found] == ["chapter_c/notes/index.md", "chapter_a/index.md", "chapter_b/index.md"]
    assert len({f.path for f in found}) == 3
    # one folder is named below itself, one file by its name (as before); --root names below a chosen folder
    assert [f.name for f in collect_paths([a.parent])[0]] == ["index.md"]
    assert [f.name for f in collect_paths([c])[0]] == ["index.md"]
    assert [f.name for f in collect_paths([c], root=tmp_path / "course")[0]] == ["chapter_c/notes/index.md"]
    outside, why = collect_paths([tmp_path / "course", SAMPLES / "01-recurrent-networks.md"],
                                 root=tmp_path / "course")
    assert len(outside) == 3 and len(why) == 1 and "not below" in (why[0].reason or "")


def test_cli_ingests_three_same_named_files_as_three_documents_and_the_folder_after_is_unchanged(tmp_path):
    root = tmp_path / "course"
    files = _three_index_files(root)
    data = tmp_path / "data"
    r = _cli("ingest", *map(str, files), "--data-dir", str(data), "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _names_statuses(r) == {"chapter_a/index.md": "ingested", "chapter_b/index.md": "ingested",
                                  "chapter_c/notes/index.md": "ingested"}
    listed = json.loads(_cli("documents", "--json", "--data-dir", str(data)).stdout)
    assert sorted(d["name"] for d in listed) == ["chapter_a/index.md", "chapter_b/index.md",
                                                 "chapter_c/notes/index.md"]
    assert len({d["id"] for d in listed}) == 3
    # the folder afterwards: the same names, nothing to do; one file again below --root: unchanged too
    again = _cli("ingest", str(root), "--data-dir", str(data), "--quiet", "--json")
    assert set(_names_statuses(again).values()) == {"unchanged"} and len(_names_statuses(again)) == 3
    one = _cli("ingest", "--root", str(root), str(files[2]), "--data-dir", str(data), "--quiet", "--json")
    assert _names_statuses(one) == {"chapter_c/notes/index.md": "unchanged"}


def test_folder_first_then_its_files_one_by_one_is_unchanged(tmp_path, pipeline, library):
    root = tmp_path / "course"
    files = _three_index_files(root)
    folder, _ = collect_paths([root])
    assert set(_statuses(pipeline.ingest(folder)).values()) == {"ingested"}
    one_by_one, _ = collect_paths(files)
    assert _statuses(pipeline.ingest(one_by_one)) == {f.name: "unchanged" for f in folder}
    assert len(library.documents()) == 3


def _names_statuses(r: subprocess.CompletedProcess) -> dict[str, str]:
    assert r.returncode == 0, r.stderr[-2000:]
    return {f["name"]: f["status"] for f in json.loads(r.stdout)["files"]}


# ---- 1: the document filter sees every place of a collapsed passage ------------------------------------------
def _resaved(pptx: bytes) -> bytes:
    from pptx import Presentation

    out = io.BytesIO()
    Presentation(io.BytesIO(pptx)).save(out)  # what "save as" in a tool does: other bytes, the same slides
    return out.getvalue()


def test_document_filter_finds_passages_collapsed_into_another_document(pipeline, library, embedder):
    deck = (SAMPLES / "03-lstm-and-gru.pptx").read_bytes()
    copy = _resaved(deck)
    assert copy != deck
    report = pipeline.ingest([_src("03-lstm-and-gru.pptx", deck), _src("copy/03-lstm-and-gru.pptx", copy)])
    assert report.error is None and report.collapsed > 0
    store = LocalStore(library, embedder, pipeline, Retriever(library, embedder))
    for f in report.files:  # whichever copy holds the canonical text, each one can be searched alone
        hits = store.search("what does the forget gate in an LSTM do?", 3, document_ids=[f.document_id])
        assert hits, f.name
        assert {h.document.id for h in hits} == {f.document_id}  # the result cites the document asked for
        assert hits[0].location == {"slide": 3}
        assert all(a["document"]["id"] != f.document_id for a in hits[0].also_at)


@needs_shared
def test_document_filter_on_a_deck_exported_to_pdf_and_pptx(tmp_path, pipeline, library, embedder):
    base = CORPUS / "slides" / "harvard-cs109b-2019_asec4_rnn-gradients-reservoir_slides"
    report = pipeline.ingest([SourceFile(name=p.name, path=p) for p in (base.with_suffix(".pdf"),
                                                                        base.with_suffix(".pptx"))])
    assert report.error is None and report.collapsed > 5
    store = LocalStore(library, embedder, pipeline, Retriever(library, embedder))
    snap = library.snapshot()
    for f in report.files:
        elsewhere = [p for p in snap.passages
                     if p.doc_id != f.document_id and any(a["document_id"] == f.document_id for a in p.also_at)]
        assert elsewhere, f.name  # this document has passages that only live in the other one's also_at
        hits = store.search(elsewhere[0].text[:200], 5, document_ids=[f.document_id])
        assert hits and {h.document.id for h in hits} == {f.document_id}
        found = [h for h in hits if h.chunk_id == elsewhere[0].chunk_id]
        assert found, f.name  # the collapsed passage itself, cited in the document asked for
        assert {a["document"]["id"] for a in found[0].also_at} >= {elsewhere[0].doc_id}


# ---- schema: a library of the previous version opens in place -------------------------------------------------
def _downgrade_to_version_1(data: Path, contents: dict[str, bytes]) -> None:
    """What the previous release wrote: no names table or identity columns, ids = SHA-256 of the bytes."""
    with contextlib.closing(sqlite3.connect(data / "library.sqlite3")) as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        for name, data_bytes in contents.items():
            old_id = hashlib.sha256(data_bytes).hexdigest()[:16]
            (new_id,) = conn.execute("SELECT id FROM documents WHERE name=?", (name,)).fetchone()
            conn.execute("UPDATE documents SET id=? WHERE id=?", (old_id, new_id))
            conn.execute("UPDATE chunks SET doc_id=? WHERE doc_id=?", (old_id, new_id))
        conn.execute("DROP TABLE names")
        conn.execute("DROP TABLE vectors")
        conn.execute("DROP INDEX documents_content")
        conn.execute("ALTER TABLE documents DROP COLUMN content")
        conn.execute("ALTER TABLE documents DROP COLUMN parsed_as")
        conn.execute("DELETE FROM meta WHERE key='schema'")
        conn.commit()


def test_library_of_the_previous_schema_is_migrated_in_place(tmp_path, pipeline, library, embedder):
    from ingest.pipeline import Pipeline

    contents = {"rnn.md": LECTURE, "notes.txt": (SAMPLES / "04-attention-notes.txt").read_bytes()}
    pipeline.ingest([_src(n, d) for n, d in contents.items()])
    _downgrade_to_version_1(library.data_dir, contents)
    reopened = Library(library.data_dir, dim=embedder.dim)
    with contextlib.closing(reopened._connect()) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("3",)
        assert conn.execute("SELECT count(*) FROM vectors").fetchone() == (0,)
    assert sorted(d.name for d in reopened.documents()) == ["notes.txt", "rnn.md"]
    pipe = Pipeline(reopened, embedder)
    assert set(_statuses(pipe.ingest([_src(n, d) for n, d in contents.items()])).values()) == {"unchanged"}
    changed = pipe.ingest([_src("rnn.md", LECTURE + b"\n## More\n\nA further section about gradient clipping.\n")])
    assert _statuses(changed) == {"rnn.md": "replaced"}
    assert sorted(d.name for d in reopened.documents()) == ["notes.txt", "rnn.md"]
    assert Library(library.data_dir, dim=embedder.dim).snapshot().passages  # and it opens again as version 3
    with contextlib.closing(sqlite3.connect(library.data_dir / "library.sqlite3")) as conn, conn:
        conn.execute("UPDATE meta SET value='4' WHERE key='schema'")
    with pytest.raises(RuntimeError, match="newer lecture-qa"):
        Library(library.data_dir, dim=embedder.dim)
