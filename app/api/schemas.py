"""Request and response bodies (the public contract); examples work against the bundled sample lectures."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ingest.public import DocumentInfo, DocumentRefInfo, LocationInfo, Place

MAX_TEXT = 2000
MAX_FILES_PER_UPLOAD = 20  # files in one upload request (minItems 1, maxItems 20 in the schema)
# Blank is what either side calls whitespace: Python's str.isspace() (which adds \x1c-\x1f and \x85) and
# ECMAScript's \s, the regex dialect of JSON Schema's `pattern` (which adds \ufeff). A `\S` pattern let "\x1c"
# through the published schema and then failed the route's strip(); spelt out as one class, the pattern and the
# validator agree on every character in both engines.
BLANK = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
        "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, json_schema_extra={"pattern": NOT_BLANK})]
HistoryEntry = Annotated[str, Field(max_length=MAX_TEXT)]
DocumentId = Annotated[str, Field(min_length=1, max_length=64)]  # ours are 16 hex digits, h2oGPTe's UUIDs


def _not_blank(value: str) -> str:
    stripped = value.strip(BLANK)
    if not stripped:
        raise ValueError("must not be blank")
    return stripped


def integral(value: Any) -> Any:
    """JSON Schema's "integer" is any number with a zero fractional part, so `14.0` is valid where the published
    schema says integer (and clients serialising numbers as doubles send it): it is taken as 14. `14.5`, `"14"`
    and `true` still get a 422 (the models are strict)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Constraints before the validator: after it, pydantic publishes them as "ge"/"le" instead of minimum/maximum.
TopK = Annotated[int, Field(ge=1, le=50), BeforeValidator(integral)]


# Request models are strict: JSON gives every field its real type, so `"top_k": "5"` or `"stream": 0` is a
# client bug to report (422), not a value to guess at. JSON strings still validate as str fields; integral
# numbers (14.0) as integers, as JSON Schema's "integer" says.
class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"query": "what does the forget gate in an LSTM do?", "top_k": 5}]})

    query: Text = Field(..., description="What to look for.")
    top_k: TopK = 5
    document_ids: list[DocumentId] | None = Field(None, max_length=500,
                                                  description="Only search these documents (404 if one is unknown).")

    _query_not_blank = field_validator("query")(_not_blank)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"question": "What does the forget gate in an LSTM do?"},
                     {"question": "and what about the GRU?", "history": ["What does the forget gate in an LSTM do?"]},
                     {"question": "Why do vanilla RNNs suffer from vanishing gradients?", "stream": True}]})

    question: Text
    top_k: TopK | None = None
    document_ids: list[DocumentId] | None = Field(None, max_length=500,
                                                  description="Only use these documents (404 if one is unknown).")
    history: list[HistoryEntry] | None = Field(None, max_length=20,
                                               description="Earlier questions of this conversation, oldest first.")
    stream: bool = Field(False, description="Stream server-sent events: answer deltas, then one final event.")

    _question_not_blank = field_validator("question")(_not_blank)


DocumentPublic = DocumentInfo  # one shape, built by every store (ingest.public)


class DocumentsPublic(BaseModel):
    documents: list[DocumentPublic]
    count: int


class SearchResultPublic(BaseModel):
    chunk_id: str
    text: str
    score: float
    document: DocumentRefInfo
    location: LocationInfo
    also_at: list[Place]
    context: str | None = Field(None, description="The next passage of the same document, read with this one by "
                                "the cross-encoder, when it may hold the evidence (not counted in `text`).")


class SearchResponse(BaseModel):
    results: list[SearchResultPublic]
    timings_ms: dict[str, float]


class CitationPublic(BaseModel):
    n: int
    chunk_id: str
    document: DocumentRefInfo
    location: LocationInfo
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


JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"


class JobPublic(BaseModel):
    """A queued ingestion (store=postgres): an upload answers 202 with this; GET /api/v1/jobs/{id} follows it."""

    id: str = Field(pattern=JOB_ID_PATTERN, description="Random and URL-safe; only the key that queued the job "
                    "and admin keys may read it.")
    state: Literal["queued", "running", "done", "failed"]
    attempts: int = Field(description="Times a worker took it (a worker that died leaves it to the next one).")
    max_attempts: int
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    worker: str | None = None
    progress: dict[str, Any] = Field(description="stage (queued|parse|embed|done|failed), done, total")
    files: list[str] = Field(description="The names of the job's files.")
    report: UploadResponse | None = Field(None, description="When done: what the upload would have answered.")
    error: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer of the API."""

    error: str = Field(description="What went wrong, in one sentence.")
    detail: Any = Field(None, description="Structured detail where there is some: the validation errors of a 422, "
                        "the per-file reasons of an upload that ingested nothing, the unknown document ids of a 404.")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    """GET /readyz when ready: the process id and the store's own figures (documents, chunks, ...)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready"]
    pid: int


class ModelsPublic(BaseModel):
    backend: str
    models: list[str]


class WhoAmI(BaseModel):
    auth_required: bool = Field(description="Whether /api routes need a key on this server.")
    can_write: bool = Field(description="Whether this key may upload and delete documents.")


class Deleted(BaseModel):
    deleted: str = Field(description="The id of the deleted document.")


class NotReady(BaseModel):
    status: Literal["loading", "failed"]
    error: str | None


ERRORS: dict[int, str] = {
    401: "No API key, or an unknown one (only when LECTURE_QA_API_KEYS or LECTURE_QA_ADMIN_KEYS is set)",
    403: "This key may not upload or delete documents (LECTURE_QA_ADMIN_KEYS)",
    404: "Not found",
    413: "The request body is over this route's limit",
    415: "Unsupported file type",
    422: "The body or a parameter is malformed or invalid",
    502: "The answer backend could not be reached",
    503: "The service is still loading, or its backend is unavailable (see Retry-After)",
}


def error_responses(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, all with the ErrorResponse shape; `described` overrides a
    description by code (`e404="No such document"`)."""
    return {code: {"model": ErrorResponse, "description": described.get(f"e{code}", ERRORS[code])}
            for code in codes}
