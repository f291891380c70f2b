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


def _compose_config(*profile_args: str) -> dict:
    cmd = _compose()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    r = subprocess.run(
        [*cmd, "-f", "docker-compose.yml", *profile_args, "config"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> str:
    command = service.get("command") or ""
    return " ".join(command) if isinstance(command, list) else str(command)


def test_compose_without_profile_starts_only_the_single_machine_service():
    # docker-compose 1.29 `config` prints every service, profiled or not; `docker compose` v2 prints only the
    # enabled ones. Either way, the services `up` starts without a profile are those with no `profiles` key.
    services = _compose_config()["services"]
    assert sorted(name for name, s in services.items() if not s.get("profiles")) == ["lecture-qa"]
    default = services["lecture-qa"]
    assert "LECTURE_QA_STORE" not in _env(default) and "command" not in default  # the image's CMD, local store


def test_compose_scale_profile_has_db_two_api_replicas_and_a_worker():
    config = _compose_config("--profile", "scale")
    services = config["services"]
    scale = {name: s for name, s in services.items() if "scale" in (s.get("profiles") or [])}
    assert set(scale) == {"db", "api-1", "api-2", "worker"}

    db = scale["db"]
    assert db["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in str(db["healthcheck"]["test"])
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(_env(db))
    named = [str(v).split(":", 1)[0] for v in db["volumes"]]
    assert any(name in config["volumes"] for name in named)  # a named volume, not the container's layer

    ports = set()
    for name in ("api-1", "api-2", "worker"):
        service = scale[name]
        env = _env(service)
        assert env["LECTURE_QA_STORE"] == "postgres", name
        assert env["LECTURE_QA_DATABASE_URL"].startswith("postgresql://"), name
        assert "@db:5432/" in env["LECTURE_QA_DATABASE_URL"], name
        assert service["depends_on"]["db"]["condition"] == "service_healthy", name
        assert "build" in service, name  # the project's Dockerfile
        if name == "worker":
            assert _command(service) == "lecture-qa worker"
            assert "ports" not in service
        else:
            assert _command(service).startswith("lecture-qa serve") and "0.0.0.0" in _command(service)
            assert "/readyz" in str(service["healthcheck"]["test"])
            ports |= {str(p) for p in service["ports"]}
    assert len(ports) == 2  # the replicas publish different host ports
