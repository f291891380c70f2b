"""Request and response bodies (the public contract); examples work against the bundled sample lectures."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"query": "what does the forget gate in an LSTM do?", "top_k": 5}]})

    query: str = Field(..., min_length=1, max_length=2000, description="What to look for.")
    top_k: int = Field(5, ge=1, le=50)
    document_ids: list[str] | None = Field(None, max_length=500, description="Only search these documents.")


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"question": "What does the forget gate in an LSTM do?"},
                     {"question": "and what about the GRU?", "history": ["What does the forget gate in an LSTM do?"]},
                     {"question": "Why do vanilla RNNs suffer from vanishing gradients?", "stream": True}]})

    question: str = Field(..., min_length=1, max_length=2000)
    top_k: int | None = Field(None, ge=1, le=50)
    document_ids: list[str] | None = Field(None, max_length=500)
    history: list[str] | None = Field(None, max_length=20,
                                      description="Earlier questions of this conversation, oldest first.")
    stream: bool = Field(False, description="Stream server-sent events: answer deltas, then one final event.")


class DocumentPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    title: str
    type: str
    size: int
    units: int
    unit_label: str
    chunks: int
    ingested_at: str


class DocumentsPublic(BaseModel):
    documents: list[DocumentPublic]
    count: int


class SearchResultPublic(BaseModel):
    chunk_id: str
    text: str
    score: float
    document: dict[str, Any]
    location: dict[str, Any]
    also_at: list[dict[str, Any]]


class SearchResponse(BaseModel):
    results: list[SearchResultPublic]
    timings_ms: dict[str, float]


class CitationPublic(BaseModel):
    n: int
    chunk_id: str
    document: dict[str, Any]
    location: dict[str, Any]
    quote: str


class AskResponse(BaseModel):
    answer: str
    grounded: bool
    citations: list[CitationPublic]
    sources: list[SearchResultPublic]
    answered_by: str
    llm_error: str | None = None
    timings_ms: dict[str, float]


class UploadResponse(BaseModel):
    files: list[dict[str, Any]] = Field(description="Per file: name, status (ingested|unchanged|replaced|skipped), "
                                        "document_id, reason when skipped")
    documents: int
    units: int
    chunks: int
    embedded: int
    duplicates_collapsed: int
    seconds: float
    generation: int


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None
