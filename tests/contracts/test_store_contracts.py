"""The Store contract run against every store: the local library and an h2oGPTe collection (the REAL h2ogpte
client against the local fake server) and PostgreSQL + pgvector (a real server from the pgserver wheel)."""

from __future__ import annotations

import uuid

import pytest

from tests.contracts.stores import StoreContract


class TestLocalStore(StoreContract):
    @pytest.fixture()
    def store(self, tmp_path, embedder):
        from app.backends import build_local_store
        from app.settings import Settings

        store = build_local_store(Settings(data_dir=tmp_path / "data"), embedder)
        store.warm_up()
        yield store
        store.close()


class TestH2OGPTeStore(StoreContract):
    @pytest.fixture()
    def store(self, fake_h2ogpte):
        from app.qa.h2ogpte_conn import H2OGPTeConnection
        from app.qa.stores.h2ogpte import H2OGPTeStore

        fake_h2ogpte.mode = fake_h2ogpte.chat_mode = "ok"
        store = H2OGPTeStore(H2OGPTeConnection(fake_h2ogpte.url, "sk-good", timeout=10),
                             f"contract-{uuid.uuid4().hex[:8]}", ingest_timeout=30)
        store.warm_up()
        yield store
        store.close()


class TestPostgresStore(StoreContract):
    @pytest.fixture()
    def store(self, tmp_path, embedder, pg_url):
        from app.backends import build_postgres_store
        from app.settings import Settings

        store = build_postgres_store(Settings(store="postgres", database_url=pg_url, data_dir=tmp_path / "scratch"),
                                     embedder)
        store.warm_up()
        yield store
        store.close()
