"""The one factory that turns Settings into a ready QAService (used by the app lifespan and the CLI)."""

from __future__ import annotations

from app.qa.answer import Answerer
from app.qa.retrieve import Retriever
from app.qa.service import QAService
from app.qa.store import LocalStore, Store
from app.settings import Settings
from ingest.embedding import Embedder, make_embedder
from ingest.library import Library
from ingest.pipeline import Pipeline


def build_embedder(settings: Settings) -> Embedder:
    return make_embedder(settings.embedding_backend, settings.embedding_model, settings.embedding_threads)


def build_store(settings: Settings, embedder: Embedder) -> Store:
    library = Library(settings.data_dir, dim=embedder.dim, refresh_seconds=settings.refresh_seconds)
    library.ensure_embedder(embedder.name)
    pipeline = Pipeline(library, embedder, max_file_bytes=settings.max_upload_bytes,
                        max_unpacked_bytes=settings.max_unpacked_bytes)
    return LocalStore(library, embedder, pipeline, Retriever(library, embedder))


def build_answerer(settings: Settings, embedder: Embedder) -> Answerer:
    from app.qa.answer.extractive import ExtractiveAnswerer

    extractive = ExtractiveAnswerer(embedder, min_evidence=settings.min_evidence)
    if settings.llm == "openai":
        from app.qa.answer.openai_compat import OpenAICompatAnswerer

        return OpenAICompatAnswerer(settings.openai_base_url, settings.llm_model, extractive,
                                    api_key=settings.openai_api_key.get_secret_value(), timeout=settings.llm_timeout,
                                    context_chars=settings.llm_context_chars)
    if settings.llm == "h2ogpte":
        from app.qa.answer.h2ogpte_llm import H2OGPTeAnswerer

        answerer = H2OGPTeAnswerer(settings.h2ogpte_address, settings.h2ogpte_api_key.get_secret_value(), extractive,
                                   llm=settings.h2ogpte_llm, timeout=settings.llm_timeout,
                                   context_chars=settings.llm_context_chars)
        answerer.warm_up()
        return answerer
    return extractive


def build_service(settings: Settings, embedder: Embedder | None = None) -> QAService:
    embedder = embedder or build_embedder(settings)
    store = build_store(settings, embedder)
    return QAService(store, build_answerer(settings, embedder), default_top_k=settings.top_k)
