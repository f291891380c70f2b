"""The one factory that turns Settings into a QAService (the app lifespan and the CLI use it): which store and
which answerer, chosen by `LECTURE_QA_STORE` and `LECTURE_QA_LLM`. Heavy libraries load only when chosen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.previews import Previews
from app.qa.answer import BaseAnswerer
from app.qa.ports import Store
from app.qa.retrieve import Retriever
from app.qa.service import QAService
from app.qa.stores.local import LocalStore
from app.settings import Settings
from ingest import token_vectors
from ingest.embedding import Embedder, PassageEncoder, make_dense_encoders, make_embedder
from ingest.library import Library
from ingest.pg_conn import DbTimeouts
from ingest.pg_library import PgLibrary
from ingest.pipeline import Pipeline

if TYPE_CHECKING:
    from app.qa.h2ogpte_conn import H2OGPTeConnection
    from app.qa.stores.postgres import PostgresStore
    from ingest.cross_encoder import CrossEncoder


def build_reader(settings: Settings) -> CrossEncoder | None:
    """The cross-encoder, one per process (loaded by the store's warm_up), or None when turned off."""
    if not settings.reader:
        return None
    from ingest.cross_encoder import CrossEncoder

    return CrossEncoder(threads=settings.reader_threads)


def build_embedder(settings: Settings) -> Embedder:
    return make_embedder(settings.embedding_backend, settings.embedding_model, settings.embedding_threads)


def h2ogpte_connection(settings: Settings) -> H2OGPTeConnection:
    from app.qa.h2ogpte_conn import H2OGPTeConnection

    return H2OGPTeConnection(settings.h2ogpte_address, settings.h2ogpte_api_key.get_secret_value(),
                             timeout=settings.llm_timeout)


def build_dense_encoders(settings: Settings) -> dict[str, PassageEncoder]:
    """The dense models besides MiniLM that LECTURE_QA_DENSE_MODEL needs (loaded only when chosen)."""
    return dict(make_dense_encoders(settings.dense_model, settings.embedding_threads))


def build_pipeline(settings: Settings, library: Library | PgLibrary, embedder: Embedder,
                   dense_encoders: dict[str, PassageEncoder] | None = None) -> Pipeline:
    return Pipeline(library, embedder, max_file_bytes=settings.max_upload_bytes, dense_encoders=dense_encoders,
                    max_unpacked_bytes=settings.max_unpacked_bytes, max_passages=settings.max_passages,
                    parse_timeout=settings.parse_timeout, parse_memory_mb=settings.parse_memory_mb, ocr=settings.ocr,
                    pack_tokens=library.codec.encode if isinstance(library, PgLibrary) else token_vectors.pack)


def open_library(settings: Settings, dim: int = 384) -> Library | PgLibrary:
    """The configured store's library, opened without the model checks (for `lecture-qa reindex`)."""
    if settings.store == "postgres":
        if not settings.database_url:
            raise RuntimeError("LECTURE_QA_STORE=postgres needs LECTURE_QA_DATABASE_URL (postgresql://...)")
        return PgLibrary(settings.database_url, dim=dim, data_dir=settings.data_dir,
                         token_codec=settings.pg_token_codec)
    if settings.store == "h2ogpte":
        raise RuntimeError("the h2ogpte store embeds with h2oGPTe's own model: there is nothing to re-embed")
    return Library(settings.data_dir, dim=dim)


def build_local_store(settings: Settings, embedder: Embedder, reader: CrossEncoder | None = None) -> LocalStore:
    library = Library(settings.data_dir, dim=embedder.dim, refresh_seconds=settings.refresh_seconds)
    library.ensure_embedder(embedder.name)
    library.ensure_dense_model(settings.dense_model)
    encoders = build_dense_encoders(settings)
    reader = reader or build_reader(settings)
    return LocalStore(library, embedder, build_pipeline(settings, library, embedder, encoders),
                      Retriever(library, embedder, reader=reader, reader_depth=settings.reader_depth,
                                dense_encoders=encoders))


def db_timeouts(settings: Settings) -> DbTimeouts:
    return DbTimeouts(connect=settings.db_connect_timeout, checkout=settings.db_pool_timeout,
                      statement=settings.db_statement_timeout, lock=settings.db_lock_timeout,
                      write=settings.db_write_timeout)


def build_postgres_store(settings: Settings, embedder: Embedder,
                         reader: CrossEncoder | None = None) -> PostgresStore:
    """psycopg and pgvector load here, only when chosen. The schema is migrated when the library opens."""
    from app.qa.stores.postgres import PostgresStore

    if not settings.database_url:
        raise RuntimeError("LECTURE_QA_STORE=postgres needs LECTURE_QA_DATABASE_URL (postgresql://...)")
    library = PgLibrary(settings.database_url, dim=embedder.dim, data_dir=settings.data_dir,
                        token_codec=settings.pg_token_codec, timeouts=db_timeouts(settings))
    try:
        library.ensure_embedder(embedder.name)
        library.ensure_dense_model(settings.dense_model)
        encoders = build_dense_encoders(settings)
    except Exception:
        library.close()
        raise
    return PostgresStore(library, embedder, build_pipeline(settings, library, embedder, encoders),
                         keyword=settings.pg_keyword, dense_encoders=encoders,
                         reader=reader or build_reader(settings), reader_depth=settings.reader_depth)


def build_answerer(settings: Settings, embedder: Embedder, conn: H2OGPTeConnection | None = None,
                   store: Store | None = None) -> BaseAnswerer:
    from app.qa.answer.answerability import Answerability
    from app.qa.answer.extractive import ExtractiveAnswerer

    # the store's cross-encoder (one per process): its logits of the sources are signals; an h2oGPTe source has none
    reader = getattr(store, "reader", None)
    answerability = Answerability.load(with_reader=reader is not None)
    if settings.answer_threshold is not None:
        answerability.threshold = settings.answer_threshold
    extractive = ExtractiveAnswerer(embedder, cache_sentences=settings.sentence_cache, answerability=answerability,
                                    rarity=store.rarity if store is not None else None, reader=reader)
    if settings.llm == "openai":
        from app.qa.answer.openai_compat import OpenAICompatAnswerer

        return OpenAICompatAnswerer(settings.openai_base_url, settings.llm_model, extractive,
                                    api_key=settings.openai_api_key.get_secret_value(), timeout=settings.llm_timeout,
                                    context_chars=settings.llm_context_chars)
    if settings.llm == "h2ogpte" or conn is not None:
        from app.qa.answer.h2ogpte_llm import H2OGPTeAnswerer

        conn = conn or h2ogpte_connection(settings)
        return H2OGPTeAnswerer(conn, extractive, llm=settings.h2ogpte_llm, context_chars=settings.llm_context_chars)
    return extractive


def build_service(settings: Settings, embedder: Embedder | None = None) -> QAService:
    """store=local: our library, answered by the chosen LLM (default extractive). store=h2ogpte: the h2oGPTe
    collection answers through its chat; the answerer (h2oGPTe's LLM unless LECTURE_QA_LLM=openai) serves
    document-filtered questions and stands in when the chat fails. Call `warm_up()` before serving."""
    embedder = embedder or build_embedder(settings)
    if settings.store == "h2ogpte":
        from app.qa.answer.h2ogpte_chat import H2OGPTeChatAnswerer
        from app.qa.stores.h2ogpte import H2OGPTeStore

        conn = h2ogpte_connection(settings)
        remote = H2OGPTeStore(conn, settings.h2ogpte_collection, max_file_bytes=settings.max_upload_bytes,
                              max_unpacked_bytes=settings.max_unpacked_bytes,
                              ingest_timeout=settings.h2ogpte_ingest_timeout)
        chat = H2OGPTeChatAnswerer(remote, build_answerer(settings, embedder, conn), llm=settings.h2ogpte_llm)
        return QAService(remote, chat, default_top_k=settings.top_k)
    if settings.store == "postgres":
        from ingest.pg_jobs import JobQueue

        pg = build_postgres_store(settings, embedder)
        return QAService(pg, build_answerer(settings, embedder, store=pg), default_top_k=settings.top_k,
                         jobs=JobQueue(pg.library, lease=settings.job_lease))
    store = build_local_store(settings, embedder)
    return QAService(store, build_answerer(settings, embedder, store=store), default_top_k=settings.top_k,
                     previews=build_previews(settings, store))


def build_previews(settings: Settings, store: LocalStore) -> Previews:
    """Page images from the originals the store's pipeline keeps; new ones are prepared as they are kept."""
    return Previews(store.library, store.pipeline.originals, enabled=settings.previews, soffice=settings.soffice,
                    convert_timeout_s=settings.preview_timeout, convert_memory_mb=settings.preview_memory_mb,
                    max_unpacked_bytes=settings.max_unpacked_bytes, draws=settings.preview_draws,
                    draw_timeout_s=settings.preview_draw_timeout, draw_memory_mb=settings.preview_draw_memory_mb,
                    max_megapixels=settings.preview_max_megapixels)
