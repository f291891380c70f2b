"""Which files of an ingested folder are not lecture material: `.lectureqaignore` files and `--exclude` globs.

A folder of course material often holds files that are not lectures (a `README.md`, a `SOURCE.txt` saying where
the slides came from, drafts). They are left out with gitignore-like patterns, one a line, in a file named
IGNORE_FILE in the folder given or any folder below it (its patterns are relative to that folder), and with
`lecture-qa ingest --exclude GLOB` (repeatable, relative to each folder given):

- blank lines and lines starting with `#` are ignored;
- a pattern without a `/` (other than a trailing one) matches a file or folder name at any depth: `README.md`,
  `*.txt`, `SOURCE.*`;
- a pattern with a `/` at its start or in its middle is matched against the path below the ignore file's folder:
  `/notes.txt` (only the top one), `week1/draft.pdf`, `archive/**/old-*.pdf`;
- `*` matches within one name, `?` one character, `[abc]` one of them, `**` any number of folders;
- a trailing `/` matches folders only (`drafts/`): everything below a matched folder is left out;
- `!pattern` takes a file back in; the last pattern that matches decides, deeper ignore files after shallower.

`--exclude` patterns always leave a file out (an ignore file cannot take it back). Only folder walks are
filtered: a file named on the command line is read, as the user chose it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IGNORE_FILE = ".lectureqaignore"


def _translate(glob: str) -> str:
    """A gitignore glob (no leading or trailing '/') as a regular expression over a '/'-separated path."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        ch = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = glob[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif ch == "\\" and i + 1 < len(glob):
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Rule:
    pattern: str  # as written, for messages
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    base: tuple[str, ...]  # the folder (below the ingested one) whose ignore file holds the rule

    @classmethod
    def parse(cls, line: str, base: tuple[str, ...] = ()) -> Rule | None:
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        negate = text.startswith("!")
        if negate or text.startswith(("\\!", "\\#")):  # "\\!name": a name that starts with "!"
            text = text[1:]
        dir_only = text.endswith("/")
        body = text.strip("/")
        if not body:
            return None
        anchored = "/" in body or text.startswith("/")
        regex = _translate(body) if anchored else "(?:.*/)?" + _translate(body)
        return cls(line.strip(), re.compile(regex, re.DOTALL), negate, dir_only, base)

    def matches(self, parts: tuple[str, ...]) -> bool:
        """Whether the rule matches the file at `parts` (below the ingested folder) or a folder above it."""
        n = len(self.base)
        if parts[:n] != self.base or len(parts) <= n:
            return False
        rel = parts[n:]
        for depth in range(1, len(rel) + 1):
            is_dir = depth < len(rel)
            if (is_dir or not self.dir_only) and self.regex.fullmatch("/".join(rel[:depth])):
                return True
        return False


def read_rules(path: Path, base: tuple[str, ...] = ()) -> list[Rule]:
    """The rules of one ignore file (unreadable or not UTF-8: none, nothing fails)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    return [r for r in (Rule.parse(line, base) for line in text.splitlines()) if r is not None]


class Ignore:
    """The ignore files of one ingested folder, read as the walk meets them, plus the `--exclude` globs."""

    def __init__(self, root: Path, exclude: Sequence[str] = ()) -> None:
        self.root = root
        self.exclude = [r for r in (Rule.parse(g) for g in exclude) if r is not None and not r.negate]
        self._files: dict[tuple[str, ...], list[Rule]] = {}

    def _rules_at(self, folder: tuple[str, ...]) -> list[Rule]:
        rules = self._files.get(folder)
        if rules is None:
            f = self.root.joinpath(*folder, IGNORE_FILE)
            rules = self._files[folder] = read_rules(f, folder) if f.is_file() else []
        return rules

    def excluded(self, rel: PurePosixPath | str) -> bool:
        parts = PurePosixPath(rel).parts
        if any(r.matches(parts) for r in self.exclude):
            return True
        out = False
        for depth in range(len(parts)):  # the folder's own ignore file first, deeper ones after
            for rule in self._rules_at(parts[:depth]):
                if rule.matches(parts):
                    out = not rule.negate
        return out
