"""Each ingested file's bytes, kept content-addressed: `<data_dir>/originals/<content>.<ext>`.

`content` is the library's own content key (the first 16 hex digits of the bytes' SHA-256, ingest.library), and
`ext` the type the name asked for (`parsed_as`), so the document (content, parsed_as) finds its original without a
new column, and identical bytes ingested under several names share one file. Page previews (app.previews) are
made from these files.

Crash safety, with the library's write lock (ingest.library.Library.writer):
- `stage` writes the bytes to a temporary file in the folder and fsyncs it, before the lock is taken;
- `place` renames staged files into place (and fsyncs the folder) inside the write transaction, before the
  document rows commit: a committed document always has its original;
- `prune` runs after the commit, still under the lock (Writer.on_after_commit): an original that no document
  uses any more (deleted, or its name given to other bytes) is removed, and the `on_removed` listeners are told
  (previews delete theirs). Running it under the lock matters: another writer may be about to commit a document
  with the same bytes, and its original must not be pruned between its `place` and its commit.
A kill -9 anywhere leaves at worst a temporary file or an unused original, both removed by a later `prune`.

Staged files of a dead writer (issue 19: after a kill -9 during ingest they stayed for an hour, STALE_TEMP_S): a
staged file is held with an exclusive flock from its creation until it is placed or discarded, and the kernel
drops the lock with the process that held it. So a `.tmp-` file whose lock can be taken belongs to nobody and is
removed, at once, by `sweep_staged`: when an Originals is made (every start of a server, worker or CLI that opens
the library) and on every `prune`. A live writer's file, in this process or another sharing the data dir, is never
touched. (The file is made as `.stage-`, locked, then renamed to `.tmp-`: no other process can find a `.tmp-`
file before its lock is held; a `.stage-` file is left only by a kill between two system calls, and removed after
STALE_TEMP_S as before.)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ingest.library import fsync_dir

log = logging.getLogger(__name__)

EXTENSIONS = {"pdf": "pdf", "pptx": "pptx", "docx": "docx", "markdown": "md", "html": "html", "text": "txt"}
"""parsed_as -> the extension of its kept original."""
_ORIGINAL = re.compile(r"^([0-9a-f]{16,64})\.([a-z]+)$")
STALE_TEMP_S = 3600  # a temporary file this old belongs to a writer that died

Key = tuple[str, str]  # (content, parsed_as)
Listener = Callable[[Path], None]


@dataclass
class StagedOriginal:
    tmp: Path
    final: Path
    fd: int = -1  # holds the flock that says a live writer owns `tmp`

    def __post_init__(self) -> None:
        self._release = weakref.finalize(self, _close, self.fd)

    def release(self) -> None:
        """Drop the lock (placed or discarded); also done when the object is collected."""
        self._release()


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


class Originals:
    def __init__(self, data_dir: str | Path, *, enabled: bool = True) -> None:
        """enabled=False (the postgres store, whose data_dir is a machine's scratch space, not the library):
        nothing is kept, and `find` reports every original as present."""
        self.dir = Path(data_dir) / "originals"
        self.enabled = enabled
        self._kept: list[Listener] = []
        self._removed: list[Listener] = []
        if enabled:
            self.sweep_staged()

    def path(self, content: str, parsed_as: str) -> Path:
        return self.dir / f"{content}.{EXTENSIONS.get(parsed_as, 'bin')}"

    def find(self, content: str, parsed_as: str) -> Path | None:
        p = self.path(content, parsed_as)
        return p if p.is_file() or not self.enabled else None

    # -- listeners (called under the write lock: they must only note things down) --
    def on_kept(self, fn: Listener) -> None:
        """`fn(path)` after a commit made `path` the original of a new document."""
        self._kept.append(fn)

    def on_removed(self, fn: Listener) -> None:
        """`fn(path)` after `path` was removed: no document uses it any more."""
        self._removed.append(fn)

    # -- writing --
    def stage(self, data: bytes, content: str, parsed_as: str) -> StagedOriginal | None:
        """The bytes in a fsynced temporary file next to their final place; None when that place is taken."""
        final = self.path(content, parsed_as)
        if not self.enabled or final.is_file():
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, made = tempfile.mkstemp(prefix=".stage-", dir=self.dir)
        tmp = os.path.join(self.dir, ".tmp-" + os.path.basename(made)[len(".stage-"):])
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(made, tmp)
            with os.fdopen(os.dup(fd), "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            for p in (made, tmp):
                with contextlib.suppress(OSError):
                    os.unlink(p)
            os.close(fd)
            raise
        return StagedOriginal(Path(tmp), final, fd)

    def place(self, staged: Iterable[StagedOriginal | None]) -> list[Path]:
        """Rename staged files into place (under the write lock, before the commit); the paths placed."""
        placed = []
        for s in staged:
            if s is not None and s.tmp.exists():
                os.replace(s.tmp, s.final)
                placed.append(s.final)
            if s is not None:
                s.release()
        if placed:
            fsync_dir(self.dir)
        return placed

    def discard(self, staged: Iterable[StagedOriginal | None]) -> None:
        """Remove staged files that were not placed (the write failed)."""
        for s in staged:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.tmp.unlink()
                s.release()

    def committed(self, stored: set[Key], placed: Iterable[Path] = ()) -> list[Path]:
        """After a commit, under the write lock: prune what `stored` (every document's key) no longer uses, then
        tell the listeners what is new. Returns the removed paths."""
        removed = self.prune(stored)
        for p in placed:
            if p.is_file():
                _tell(self._kept, p)
        return removed

    def sweep_staged(self) -> list[Path]:
        """Remove staged files whose writer is gone (no lock held on them); the paths removed."""
        if not self.dir.is_dir():
            return []
        removed = []
        for p in self.dir.iterdir():
            if p.name.startswith(".tmp-") and not _owned(p):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
        if removed:
            log.info("removed %d staged original(s) of a writer that died", len(removed))
        return removed

    def prune(self, stored: set[Key]) -> list[Path]:
        """Remove originals no document uses, and temporary files of writers that died."""
        if not self.dir.is_dir():
            return []
        wanted = {self.path(c, p).name for c, p in stored}
        removed: list[Path] = []
        now = time.time()
        self.sweep_staged()
        for p in self.dir.iterdir():
            try:
                if p.name.startswith(".stage-"):
                    if now - p.stat().st_mtime > STALE_TEMP_S:
                        p.unlink()
                elif _ORIGINAL.match(p.name) and p.name not in wanted:
                    p.unlink()
                    removed.append(p)
            except OSError as exc:
                log.warning("could not remove %s: %s", p, exc)
        if removed:
            fsync_dir(self.dir)
        for p in removed:
            _tell(self._removed, p)
        return removed


def _owned(path: Path) -> bool:
    """Whether a live writer holds the staged file's lock (a file that is gone counts as owned: nothing to do)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the lock this call may have taken
    return False


def _tell(listeners: list[Listener], path: Path) -> None:
    for fn in listeners:
        try:
            fn(path)
        except Exception:
            log.exception("a listener of the originals failed on %s", path)
