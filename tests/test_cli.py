"""The lecture-qa command line, run as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.conftest import ROOT, SAMPLES


def cli(*args: str, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args, "--data-dir", str(data_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_ingest_documents_ask_delete(tmp_path):
    data = tmp_path / "data"
    course = tmp_path / "course"
    shutil.copytree(SAMPLES, course / "lectures")
    (course / "bad.pdf").write_bytes(b"<html>not a pdf</html>")
    # a folder and a file: each named by its path below their common folder
    r = cli("ingest", str(course / "lectures"), str(course / "bad.pdf"), data_dir=data)
    assert r.returncode == 0, r.stderr
    n = len(list(SAMPLES.iterdir()))
    assert f"documents: {n} ingested, 0 unchanged, 1 skipped" in r.stdout
    assert "skipped   bad.pdf: the file is named .pdf but its content is an HTML page" in r.stdout
    assert "duplicates collapsed:" in r.stdout and "chunks/s:" in r.stdout
    assert "parse: 100%" in r.stderr  # progress bar

    again = cli("ingest", str(course), data_dir=data)  # their common folder: the same names
    assert f"documents: 0 ingested, {n} unchanged, 1 skipped" in again.stdout

    listed = json.loads(cli("documents", "--json", data_dir=data).stdout)
    assert sorted(d["name"] for d in listed) == sorted(f"lectures/{p.name}" for p in SAMPLES.iterdir())

    ask = cli("ask", "What does the forget gate in an LSTM do?", data_dir=data)
    assert ask.returncode == 0
    assert "[1] lectures/03-lstm-and-gru.pptx, slide 3" in ask.stdout

    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(q) for q in [
        {"id": "q1", "question": "Why does a recurrent network carry a hidden state?", "kind": "conceptual",
         "answer": "So the output at step t can depend on everything seen so far.",
         "evidence": [{"doc": "01-recurrent-networks.md", "quote": "carries a hidden state from step to step"}]},
        {"id": "q2", "question": "Who won the 1998 football world cup?", "answerable": False}]) + "\n")
    tables = cli("eval", str(qa), data_dir=data)
    assert tables.returncode == 0, tables.stderr
    lines = tables.stdout.splitlines()  # tables, as the README shows them, not JSON
    assert "| set | questions | answerable | recall@1 | recall@3 | recall@5 | recall@10 | MRR@10 |" in lines
    row = next(ln for ln in lines if ln.startswith("| qa.jsonl | 2 | 1 |"))
    assert row.endswith("| 1.00 | 1.00 |")  # hit within 10 (and MRR shown with two decimals)
    assert any(ln.startswith("| qa.jsonl | 1/1 | 1/1 |") for ln in lines), tables.stdout
    assert "| set | conceptual |" in lines
    machine = json.loads(cli("eval", str(qa), "--json", data_dir=data).stdout)
    assert machine["questions"] == 2 and machine["recall@10"] == 1.0 and machine["refused_unanswerable"] == "1/1"

    doc_id = next(d["id"] for d in listed if d["name"] == "lectures/03-lstm-and-gru.pptx")
    assert cli("delete", doc_id, data_dir=data).returncode == 0
    assert cli("delete", doc_id, data_dir=data).returncode == 1
    assert len(json.loads(cli("documents", "--json", data_dir=data).stdout)) == n - 1


def test_ingest_exit_status_when_nothing_ingests(tmp_path):
    (tmp_path / "empty.md").write_text("")
    r = cli("ingest", str(tmp_path / "empty.md"), str(tmp_path / "missing.pdf"), data_dir=tmp_path / "data")
    assert r.returncode == 1
    assert "skipped   empty.md: the file is empty" in r.stdout
    assert "skipped   " in r.stdout and "no such file or folder" in r.stdout
