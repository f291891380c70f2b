"""The service writes nothing under the home directory (onnxruntime's telemetry wrote a database there)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, SAMPLES


def test_cli_ingest_and_search_write_nothing_under_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    data = tmp_path / "data"
    for args in (["ingest", str(SAMPLES / "01-recurrent-networks.md"), "--quiet"], ["search", "hidden state"]):
        r = subprocess.run([sys.executable, "-m", "app.cli", *args, "--data-dir", str(data)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
