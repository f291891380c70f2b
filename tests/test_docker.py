"""The Dockerfile lints clean and docker-compose.yml validates (no Docker engine runs here)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT


def _compose() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    r = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in text and "/readyz" in text
    assert text.index("COPY pyproject.toml") < text.index("COPY app")  # dependencies before source
    assert "\nUSER " in text  # not root


def test_compose_config_validates():
    cmd = _compose()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    r = subprocess.run([*cmd, "-f", "docker-compose.yml", "config"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load(r.stdout)
    service = config["services"]["lecture-qa"]
    assert "healthcheck" in service and "lecture-data" in config["volumes"]
    assert any("/data" in str(v) for v in service["volumes"])
