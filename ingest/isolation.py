"""Parse files in worker processes with a memory cap and a time limit: a hostile file costs a worker, not the server.

A worker is a fresh interpreter (`python -c ...`) that imports the loaders' libraries and nothing else (no
torch, no onnxruntime, not the program's main module): forking the threaded server is unsafe, and
multiprocessing's forkserver and spawn both re-import the main module in every worker (uvicorn's, a script's).
A worker serves file after file, so its start-up is paid once, and again only after a worker was stopped; it is
replaced when it was stopped, when it still holds RECYCLE_MB more than at its start after a file (its garbage
collected and its heap trimmed), or after RECYCLE_CALLS files.

- memory: the worker's address space (RLIMIT_AS) may grow `memory_mb` beyond its size after start-up. Python
  code past it raises MemoryError (the worker reports it and exits); a C library that aborts instead kills the
  worker, which the parent reports the same way when the worker's size had come near the cap.
- time: a call that has not answered after `timeout_s` gets its worker killed (SIGKILL); the worker also arms
  an alarm of its own, so it ends even when its parent is gone.
Either way the call raises ParseLimitExceeded, whose message names the limit and its setting.

Defaults (Settings): 60 s, where the slowest file of the shared corpus (the 86-slide Harvard lecture 24 deck) parses
and chunks in 1.5 s, 4 s on the loaded dev machine; 1024 MiB, where the most a worker grew over the corpus was
193 MB (that deck, before its garbage was collected), and the 1 GiB flate stream of issue 10 does not fit.

Cost, measured with bench/parse_isolation.py (the 52 files of the shared corpus parsed and chunked in this process
and in a worker, alternating, three rounds each, in one run on the shared 2-core dev machine): best round 7.08 s
isolated against 7.12 s in process (ratio 1.00; mean 8.0 s against 7.3 s, 1.09), identical 1,631 chunks; plus
the worker's start, 1.2-2.2 s, once per process (and after a worker was stopped). Two things made it so: the
worker tokenizes with the tokenizer's own thread pool, as the process does, and it collects python-pptx's cyclic
garbage after a big file (without, it held 190 MB, got recycled and paid the start again: ratio 1.4).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from ingest.errors import IngestError, ParseLimitExceeded, TimeLimitExceeded

log = logging.getLogger(__name__)
R = TypeVar("R")

PRELOAD = ["ingest.parse_job", "pypdfium2", "pptx", "docx", "bs4", "lxml.etree", "lxml.html", "charset_normalizer",
           "tokenizers", "numpy"]
"""Imported by each worker before it says it is ready, so that no file waits for them."""
RECYCLE_MB = 256
TRIM_MB = 64
RECYCLE_CALLS = 500
START_TIMEOUT_S = 120.0
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MIB = 2**20
_ROOT = str(Path(__file__).resolve().parents[1])  # where `ingest` (and the callers' modules) import from


def _statm(pid: int | str = "self") -> tuple[int, int]:
    """(address space, resident) of a process in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            size, resident = fh.read().split()[:2]
        return int(size) * _PAGE, int(resident) * _PAGE
    except (OSError, ValueError):
        return 0, 0


def _looks_like_memory(exc: BaseException) -> bool:
    """libxml2 and others report a failed allocation as their own error ("Memory allocation failed")."""
    text = str(exc).lower()
    return "memory" in text and ("alloc" in text or "out of" in text)


def _trim(base_rss: int) -> None:
    """After a file that left the worker more than TRIM_MB bigger: free its objects (python-pptx's are cyclic:
    190 MB live after an 86-slide deck until the collector runs) and give the heap back to the system, so that
    the worker's size says what it holds. A full collection costs 50-100 ms, so small files skip it."""
    if _statm()[1] - base_rss < TRIM_MB * _MIB:
        return
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _worker_entry() -> None:
    """`python -c` entry point of a worker: argv = [read fd, write fd]."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it stops the workers
    inbox = Connection(int(sys.argv[1]), writable=False)
    outbox = Connection(int(sys.argv[2]), readable=False)
    initializer, init_arg, memory_bytes, timeout_s, preload = inbox.recv()
    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    state = initializer(init_arg) if initializer is not None else None
    base, base_rss = _statm()
    if memory_bytes > 0:
        limit = base + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outbox.send(("ready", base))
    while True:
        try:
            job = inbox.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        fn, args = job
        signal.alarm(math.ceil(timeout_s) + 5)  # the parent kills at timeout_s; this is for an orphan
        try:
            result = fn(state, *args)
            signal.alarm(0)
            _trim(base_rss)
            outbox.send(("ok", result, _statm()[1]))
        except MemoryError:
            with contextlib.suppress(Exception):
                outbox.send(("memory", None, 0))
            return  # the heap is in an unknown state: this worker is done
        except Exception as exc:  # noqa: BLE001 - everything goes back to the parent, as plain data
            signal.alarm(0)
            if _looks_like_memory(exc):
                with contextlib.suppress(Exception):
                    outbox.send(("memory", None, 0))
                return
            payload = exc if isinstance(exc, IngestError) else (type(exc).__name__, str(exc))
            try:
                outbox.send(("error", payload, _statm()[1]))
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                outbox.send(("error", (type(exc).__name__, str(exc)), _statm()[1]))


class _Worker:
    def __init__(self, initializer: Callable[[Any], Any] | None, init_arg: Any, memory_bytes: int,
                 timeout_s: float, preload: list[str]) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p),
               "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true")}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from ingest.isolation import _worker_entry; _worker_entry()",
                 str(to_child), str(from_child)],
                pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL, env=env, close_fds=True)
        finally:
            os.close(to_child)
            os.close(from_child)
        self.conn = Connection(from_parent, readable=False)
        self.replies = Connection(to_parent, writable=False)
        self.calls = 0
        self.base_vm = 0
        self.base_rss = 0
        try:
            self.conn.send((initializer, init_arg, memory_bytes, timeout_s, preload))
            if not self.replies.poll(START_TIMEOUT_S):
                raise RuntimeError(f"the parse worker did not start within {START_TIMEOUT_S:g} s")
            _, self.base_vm = self.replies.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise RuntimeError(f"the parse worker failed to start (exit code {self.proc.poll()})") from exc
        except BaseException:
            self.kill()
            raise
        self.base_rss = _statm(self.pid)[1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
            self.proc.wait(5)
        for conn in (self.__dict__.get("conn"), self.__dict__.get("replies")):
            with contextlib.suppress(Exception):
                if conn is not None:
                    conn.close()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(None)
            self.proc.wait(1)
        self.kill()


def _stop_all(workers: list[_Worker]) -> None:
    while workers:
        workers.pop().stop()


class CallCancelled(Exception):
    """The caller's cancel event was set while its call ran: the worker was stopped."""


@dataclass(frozen=True)
class Labels:
    """How the limit errors name the work and its settings (parsing by default; page drawing has its own)."""

    doing: str = "parsing"
    doer: str = "the parser"
    timeout_setting: str = "LECTURE_QA_PARSE_TIMEOUT"
    memory_setting: str = "LECTURE_QA_PARSE_MEMORY_MB"
    crash_outcome: str = "it was skipped"


class IsolatedRunner:
    """Calls `fn(state, *args)` in a worker (state = initializer(init_arg), made once per worker), at most
    `parallel` at a time; `fn` and `initializer` must be module-level functions (they are sent by name).
    `preload`: modules each worker imports before it says it is ready (default: the loaders' PRELOAD)."""

    def __init__(self, initializer: Callable[[Any], Any] | None = None, init_arg: Any = None, *,
                 timeout_s: float = 60.0, memory_mb: int = 1024, parallel: int = 2, idle: int = 2,
                 preload: list[str] | None = None, labels: Labels = Labels()) -> None:
        self.initializer = initializer
        self.init_arg = init_arg
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.preload = PRELOAD if preload is None else preload
        self.labels = labels
        self._slots = threading.BoundedSemaphore(max(parallel, 1))
        self._idle: list[_Worker] = []
        self._max_idle = idle
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_all, self._idle)

    def close(self) -> None:
        with self._lock:
            _stop_all(self._idle)

    def _checkout(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._new_worker()

    def _new_worker(self) -> _Worker:
        return _Worker(self.initializer, self.init_arg, self.memory_mb * _MIB, self.timeout_s, self.preload)

    def _checkin(self, worker: _Worker, rss: int) -> None:
        worker.calls += 1
        if rss - worker.base_rss > RECYCLE_MB * _MIB or worker.calls >= RECYCLE_CALLS:
            worker.stop()
            return
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(worker)
                return
        worker.stop()

    def call(self, fn: Callable[..., R], *args: Any, cancel: threading.Event | None = None) -> R:
        """`fn(state, *args)` in a worker; `cancel`: when set during the call, the worker is killed and
        CallCancelled raised (within 50 ms)."""
        with self._slots:
            worker = self._checkout()
            try:
                worker.conn.send((fn, args))
            except (OSError, ValueError):  # died while idle (killed from outside): one fresh try
                worker.kill()
                worker = self._new_worker()
                worker.conn.send((fn, args))
            return self._wait(worker, cancel)

    def _wait(self, worker: _Worker, cancel: threading.Event | None = None) -> Any:
        deadline = time.monotonic() + self.timeout_s
        peak = 0
        labels = self.labels
        while not worker.replies.poll(min(max(deadline - time.monotonic(), 0.0), 0.05)):
            peak = max(peak, _statm(worker.pid)[0])
            if cancel is not None and cancel.is_set():
                worker.kill()
                raise CallCancelled(f"{labels.doing} was cancelled")
            if time.monotonic() >= deadline:
                worker.kill()
                raise TimeLimitExceeded(f"{labels.doing} took longer than {self.timeout_s:g} s, the limit "
                                         f"({labels.timeout_setting}); {labels.doer} was stopped")
        try:
            kind, payload, rss = worker.replies.recv()
        except (EOFError, OSError):
            try:
                code = worker.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            worker.kill()
            near_cap = peak - worker.base_vm > 0.5 * self.memory_mb * _MIB
            if near_cap or code == -signal.SIGKILL:
                raise self._memory_error() from None
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            raise ParseLimitExceeded(f"{labels.doer} crashed on this file ({how}); {labels.crash_outcome}") from None
        if kind == "memory":
            worker.kill()
            raise self._memory_error()
        self._checkin(worker, rss)
        if kind == "error":
            if isinstance(payload, BaseException):
                raise payload
            name, message = payload
            raise IngestError(f"the file could not be parsed ({name}: {message})")
        return payload

    def _memory_error(self) -> ParseLimitExceeded:
        labels = self.labels
        return ParseLimitExceeded(f"{labels.doing} needed more than {self.memory_mb} MiB of memory, the limit "
                                  f"({labels.memory_setting}); {labels.doer} was stopped")
