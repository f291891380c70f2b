"""Run the real service (uvicorn, real model, real index on disk) in a subprocess on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "LECTURE_QA_DATA_DIR": str(data_dir), "LECTURE_QA_REFRESH_SECONDS": "0.5",
                    **(env or {})}
        self.log = log or data_dir.parent / f"server-{self.port}.log"
        self._log_fh = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(workers), "--log-level", "warning"],
            cwd=ROOT, env=full_env, stdout=self._log_fh, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready: {self.log.read_text()[-3000:]}")

    def upload(self, *paths: Path, headers: dict[str, str] | None = None) -> httpx.Response:
        files = [("files", (p.name, p.read_bytes())) for p in paths]
        return httpx.post(f"{self.url}/api/v1/documents", files=files, headers=headers or {}, timeout=120)

    def ask(self, question: str, **body: object) -> dict:
        return httpx.post(f"{self.url}/api/v1/ask", json={"question": question, **body}, timeout=60).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log_fh.close()
