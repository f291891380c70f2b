"""A PostgreSQL of a test's own, which it may stop, start, restart and freeze (SIGSTOP) without disturbing the
session's shared server (tests/conftest.py's pg_server): the pgserver wheel's binaries and its initdb, then
`pg_ctl` on that data directory, listening by TCP on 127.0.0.1 at a port that stays the same across restarts
(the URL the service was given keeps pointing at it).

Its data directory is a fresh folder directly under the system's temporary directory, not pytest's tmp_path:
when we are root the server runs as pgserver's own user, which must traverse every parent folder at each
start, and every pytest session resets /tmp/pytest-of-root to mode 700."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.server import free_port


class OwnPostgres:
    def __init__(self) -> None:
        import pgserver
        import psutil

        self._psutil = psutil
        self.root = Path(tempfile.mkdtemp(prefix="lecture-qa-pg-"))
        self.root.chmod(0o755)
        self.pgdata = self.root / "pgdata"
        # pgserver runs initdb (as its own system user when we are root: PostgreSQL refuses root), starts the
        # server on a Unix socket, and gets the vector extension's files in place; we stop that one and run our own
        server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        server.cleanup()
        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.user = "pgserver" if os.geteuid() == 0 else None
        self.port = free_port()
        self.log = self.pgdata / "own.log"
        self.frozen: list[int] = []
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), *args], check=True, user=self.user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)

    def start(self) -> None:
        self._pg_ctl("-w", "-l", str(self.log), "-o", f"-h 127.0.0.1 -p {self.port} -k ''", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "-l", str(self.log), "-o", f"-h 127.0.0.1 -p {self.port} -k ''",
                     "restart")

    def psql(self, sql: str, database: str = "postgres") -> None:
        subprocess.run([str(self.bin / "psql"), self.url(database), "-v", "ON_ERROR_STOP=1", "-c", sql],
                       check=True, stdout=subprocess.DEVNULL, timeout=60)

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name};")
        return self.url(name)

    def postmaster(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def freeze(self, *, everything: bool) -> None:
        """SIGSTOP the postmaster (it accepts connections into its backlog and never answers them); with
        `everything`, its backends and helpers too (a hung database: no query is answered)."""
        main = self._psutil.Process(self.postmaster())
        procs = [main, *(main.children(recursive=True) if everything else [])]
        for p in procs:
            if p.pid not in self.frozen:
                os.kill(p.pid, signal.SIGSTOP)
                self.frozen.append(p.pid)

    def thaw(self) -> None:
        while self.frozen:
            pid = self.frozen.pop()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        self.thaw()
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
