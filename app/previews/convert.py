"""PPTX/DOCX -> PDF with LibreOffice headless (`soffice --convert-to pdf`), once per file, off the request path.

Each run gets a fresh profile folder (`-env:UserInstallation`) and HOME in a temporary folder: two soffice runs on
one profile hand their work to each other or fail, and nothing may be written under the real home. The run is
bounded like a parse worker (ingest.isolation): an address-space cap (RLIMIT_AS, set by `ulimit -v` in a
`sh -c` that then execs soffice: a preexec_fn is unsafe in the threaded server), and a time limit after which its
whole process group (the soffice script, oosplash, soffice.bin) is killed.

What LibreOffice gets is a rewritten copy with no external link left (app.previews.sanitize), and it runs in a
network and mount namespace where the kernel allows them, with a locked-down profile (app.previews.sandbox):
issue 19 found it fetching linked pictures from 127.0.0.1 and local files and drawing them into previews.

Hidden slides: a PPTX citation numbers slides as python-pptx lists them, hidden ones included (tjuirlab_RNN.pptx
of the shared corpus has 15 slides, one hidden). LibreOffice's PDF export skips hidden slides by default (14
pages, so slide n was page n-1 after the hidden one); it is told to export them (ExportHiddenSlides, JSON filter
options, LibreOffice >= 7.4): 15 pages, slide n = page n.

Measured on the 2-core dev VM (LibreOffice 7.4.7, other jobs running): 3.7-3.9 s for the 15-slide TJU deck;
18 s and 890 MB resident for the 86-slide Harvard lecture 24 deck, whose conversion fails under a 1 GiB
address-space cap ("source file could not be loaded") and passes under 2 GiB: the default cap is 3 GiB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from app.previews.sandbox import wrap, write_profile
from app.previews.sanitize import UnsafePackage, neutralise

_log = logging.getLogger(__name__)
MAX_UNPACKED_BYTES = 500 * 2**20  # LECTURE_QA_MAX_UNPACKED_MB's default

FILTERS = {
    "pptx": 'pdf:impress_pdf_Export:{"ExportHiddenSlides":{"type":"boolean","value":"true"}}',
    "docx": "pdf:writer_pdf_Export",
}


class Cancel(Protocol):
    def is_set(self) -> bool: ...


class ConversionFailed(Exception):
    """LibreOffice could not make a PDF of the file; the message says why, for the user."""


class ConversionCancelled(Exception):
    """The process is shutting down (Previews.close): the file is converted another time."""


def find_soffice(setting: str) -> str | None:
    """The soffice executable the setting names (a path, or a name looked up on PATH), if it is there."""
    return shutil.which(setting) if setting else None


def _capped(cmd: list[str], memory_mb: int) -> list[str]:
    """`cmd` run with its address space capped at `memory_mb` MiB (0: no cap)."""
    if memory_mb <= 0:
        return cmd
    return ["/bin/sh", "-c", f'ulimit -v {memory_mb * 1024} && exec "$0" "$@"', *cmd]


def to_pdf(src: Path, kind: str, dest: Path, *, soffice: str, timeout_s: float, memory_mb: int,
           cancel: Cancel | None = None, max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
           data_dir: Path | None = None) -> None:
    """Convert `src` (a `kind` file: pptx or docx) to the PDF `dest`, written atomically (fsynced, renamed).
    LibreOffice gets a copy with its external links taken out (app.previews.sanitize), inside the namespaces and
    with the profile of app.previews.sandbox (`data_dir` is hidden from it). Raises ConversionFailed with the
    reason, or ConversionCancelled as soon as `cancel` is set."""
    if kind not in FILTERS:
        raise ConversionFailed(f"{kind} files are not converted")
    with tempfile.TemporaryDirectory(prefix="lecture-qa-soffice-") as work:
        home, out, inbox = Path(work) / "home", Path(work) / "out", Path(work) / "in"
        home.mkdir()
        inbox.mkdir()
        try:
            safe, removed = neutralise(src.read_bytes(), kind=kind, max_unpacked_bytes=max_unpacked_bytes)
        except (UnsafePackage, OSError) as exc:
            raise ConversionFailed(str(exc)) from exc
        if removed.changed:
            _log.info("%s: external links taken out before conversion: %d relationships, %d fields",
                      src.name, len(removed.relationships), len(removed.fields))
        copy = inbox / f"document.{kind}"
        copy.write_bytes(safe)
        profile = Path(work) / "profile"
        write_profile(profile)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
               "TMPDIR": work}
        cmd = [soffice, f"-env:UserInstallation={profile.as_uri()}", "--headless", "--norestore",
               "--nolockcheck", "--convert-to", FILTERS[kind], "--outdir", str(out), str(copy)]
        cmd = wrap(_capped(cmd, memory_mb), work=Path(work), data_dir=data_dir, keep=[Path(soffice).resolve()])
        log = Path(work) / "soffice.log"
        with open(log, "wb") as log_fh:  # a file, not a pipe: nothing to read while waiting
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_fh,
                                        stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)
            except OSError as exc:
                raise ConversionFailed(f"LibreOffice could not be started ({exc.strerror or exc})") from exc
        deadline = time.monotonic() + timeout_s
        try:
            while proc.poll() is None:
                if cancel is not None and cancel.is_set():
                    raise ConversionCancelled("the server is stopping")
                if time.monotonic() > deadline:
                    raise ConversionFailed(f"LibreOffice took longer than {timeout_s:g} s to convert the file "
                                           "(LECTURE_QA_PREVIEW_TIMEOUT)")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)
        finally:
            _kill_group(proc)  # soffice.bin may outlive the script that started it
        output = log.read_bytes()
        made = out / "document.pdf"
        if not made.is_file() or made.stat().st_size == 0:
            lines = [ln.strip() for ln in output.decode(errors="replace").splitlines()
                     if ln.strip() and "javaldx" not in ln]
            why = lines[-1] if lines else f"exit status {proc.returncode}"
            if any("soffice.bin(" in ln for ln in lines) or proc.returncode < 0:  # a backtrace, or a signal
                why = (f"it crashed (exit status {proc.returncode}; it may have reached its memory cap of "
                       f"{memory_mb} MiB, LECTURE_QA_PREVIEW_MEMORY_MB)")
            raise ConversionFailed(f"LibreOffice could not convert the file to PDF: {why}")
        tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")  # /tmp may be another file system: copy
        if cancel is not None and cancel.is_set():
            raise ConversionCancelled("the document was deleted or the server is stopping")
        try:  # the folder is not made again: gone means the document was deleted meanwhile
            with open(made, "rb") as src_fh, open(tmp, "wb") as fh:
                shutil.copyfileobj(src_fh, fh, 2**20)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ConversionCancelled("the document's preview folder is gone (deleted)") from exc


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
