"""`lecture-qa serve` on a free port for a benchmark: started, waited for, stopped.

A benchmark must not measure a server that never became ready: when the server exits or is not ready within the
deadline, this stops with the tail of the server's log (the first bench loop measured anyway, silently).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(env: dict[str, str], *, workers: int = 1,
           ready_timeout: float = 300) -> Iterator[tuple[str, subprocess.Popen]]:
    """(base URL, server process) of a ready server on the data dir named in `env`."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w+", prefix="lecture-qa-bench-", suffix=".log") as log:
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port",
                                   str(port), "--workers", str(workers), "--log-level", "warning"],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"the server did not become ready: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.2)
            yield url, server
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
