"""Leaving what is not lecture material out of a folder ingest: `.lectureqaignore` files and `--exclude` globs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ingest.ignore import IGNORE_FILE, Ignore, Rule
from ingest.pipeline import collect_paths
from tests.conftest import ROOT


def tree(root, files):
    for rel in files:
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"# {rel}\n\nSome lecture text about recurrent networks.\n")
    return root


@pytest.mark.parametrize(("pattern", "path", "hit"), [
    ("README.md", "README.md", True),
    ("README.md", "week1/README.md", True),  # no slash: a name at any depth
    ("README.md", "README.md.txt", False),
    ("*.txt", "week1/notes.txt", True),
    ("SOURCE.*", "SOURCE.txt", True),
    ("/notes.txt", "notes.txt", True),  # a leading slash: only at the top
    ("/notes.txt", "week1/notes.txt", False),
    ("week1/draft.md", "week1/draft.md", True),
    ("week1/draft.md", "other/week1/draft.md", False),  # a middle slash anchors too
    ("drafts/", "drafts/a.md", True),  # a folder: everything below it
    ("drafts/", "week2/drafts/b/c.md", True),
    ("drafts/", "drafts", False),  # a trailing slash: folders only
    ("archive/**/old-*.pdf", "archive/old-1.pdf", True),
    ("archive/**/old-*.pdf", "archive/2023/spring/old-2.pdf", True),
    ("archive/**/old-*.pdf", "archive/2023/new.pdf", False),
    ("lecture?.md", "lecture1.md", True),
    ("lecture?.md", "lecture10.md", False),
    ("lecture[0-4].md", "lecture3.md", True),
    ("lecture[!0-4].md", "lecture3.md", False),
    ("*.md", "week1/notes.txt", False),
])
def test_gitignore_like_patterns(pattern, path, hit):
    rule = Rule.parse(pattern)
    assert rule is not None
    assert rule.matches(tuple(path.split("/"))) is hit


def test_comments_blank_lines_and_negation(tmp_path):
    (tmp_path / IGNORE_FILE).write_text("# not lectures\n\n*.txt\n!keep.txt\n")
    ignore = Ignore(tmp_path)
    assert ignore.excluded("SOURCE.txt") and ignore.excluded("week1/notes.txt")
    assert not ignore.excluded("keep.txt")  # the last matching pattern decides
    assert not ignore.excluded("lecture.md")


def test_ignore_files_and_excludes_leave_files_out_of_a_folder(tmp_path):
    root = tree(tmp_path / "course", ["01-rnn.md", "README.md", "SOURCE.txt", "week2/02-lstm.md",
                                      "week2/draft-notes.md", "week2/README.md", "drafts/03-old.md"])
    (root / IGNORE_FILE).write_text("README.md\nSOURCE.txt\ndrafts/\n")
    (root / "week2" / IGNORE_FILE).write_text("draft-*.md\n")  # relative to its own folder
    excluded: list[str] = []
    found, skipped = collect_paths([root], excluded=excluded)
    assert [f.name for f in found] == ["01-rnn.md", "week2/02-lstm.md"]
    assert not skipped
    assert sorted(excluded) == sorted(str(root / p) for p in ["README.md", "SOURCE.txt", "week2/draft-notes.md",
                                                             "week2/README.md", "drafts/03-old.md"])
    found, _ = collect_paths([root], exclude=["week2/"])
    assert [f.name for f in found] == ["01-rnn.md"]
    (root / IGNORE_FILE).write_text("!*.md\n")  # an ignore file cannot take back what --exclude leaves out
    found, _ = collect_paths([root], exclude=["README.md"])
    assert "README.md" not in [f.name for f in found] and "SOURCE.txt" in [f.name for f in found]
    found, _ = collect_paths([root / "README.md"], exclude=["README.md"])  # a file named on its own is read
    assert len(found) == 1


def test_cli_ingest_exclude(tmp_path):
    root = tree(tmp_path / "course", ["01-rnn.md", "README.md", "SOURCE.txt", "notes/extra.md"])
    (root / IGNORE_FILE).write_text("SOURCE.txt\n")
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(root), "--exclude", "README.md",
                          "--exclude", "notes/", "--quiet", "--data-dir", str(data)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "left out 3 files (.lectureqaignore or --exclude)" in run.stderr
    assert "documents: 1 ingested" in run.stdout
    listed = subprocess.run([sys.executable, "-m", "app.cli", "documents", "--json", "--data-dir", str(data)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert [d["name"] for d in json.loads(listed.stdout)] == ["01-rnn.md"]
