from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus"
DEV_QA = SHARED / "eval" / "dev.jsonl"
SAMPLES = ROOT / "examples" / "lectures"

needs_shared = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present")


@pytest.fixture(scope="session")
def embedder():
    from ingest.embedding import make_embedder

    return make_embedder("onnx-int8")


@pytest.fixture(scope="session")
def st_embedder():
    from ingest.embedding import make_embedder

    return make_embedder("sentence-transformers")


@pytest.fixture()
def library(tmp_path, embedder):
    from ingest.library import Library

    return Library(tmp_path / "data", dim=embedder.dim)


@pytest.fixture()
def pipeline(library, embedder):
    from ingest.pipeline import Pipeline

    return Pipeline(library, embedder, max_file_bytes=5 * 2**20, max_unpacked_bytes=50 * 2**20)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A real PostgreSQL 16 with pgvector, from the `pgserver` wheel (a dev dependency); the tests that need it
    skip, saying why, where it cannot be had."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    pytest.importorskip("pgvector")
    try:
        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    except Exception as exc:  # no binaries for this platform, or no way to start them
        pytest.skip(f"PostgreSQL (pgserver) could not start: {exc}")
    yield server
    server.cleanup()


@pytest.fixture()
def pg_url(pg_server):
    """A new, empty database on the test server (each test its own: no order dependence)."""
    import uuid

    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name};")
    return pg_server.get_uri(name)
