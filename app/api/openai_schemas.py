"""The OpenAI-compatible API's bodies (`/v1/models`, `/v1/chat/completions`) and its error shape.

Requests follow OpenAI's chat-completions contract as far as this service can honour it: the fields it reads
are typed and checked (a wrong type is a 400, as OpenAI answers), the sampling parameters clients always send
(`temperature`, `max_tokens`, `stream_options`, ...) are accepted and ignored: the answer is made of lecture
sentences, not sampled. Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`, which the
`openai` SDK and chat clients such as Open WebUI read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.api.schemas import MAX_TEXT, CitationPublic, DocumentId, SearchResultPublic, TopK, integral

OPENAI_PREFIX = "/v1"
MODEL_ID = "lecture-qa"
MODEL_CREATED = 1796342400  # 2026-12-04, when this API was added: a model card's `created` (Unix seconds)
MAX_HISTORY = 20  # earlier user messages kept as the conversation's history, as /api/v1/ask takes it


def is_openai_path(path: str) -> bool:
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


# -- requests --
class ContentPart(BaseModel):
    """One part of a message's content. Only `text` parts are read; image, audio and file parts are accepted and
    not used (the lectures are searched with text)."""

    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content.strip()
        parts = [p.text for p in self.content or () if p.type == "text" and p.text]
        return "\n".join(parts).strip()


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra={"examples": [
        {"model": MODEL_ID, "messages": [{"role": "user", "content": "What does the forget gate in an LSTM do?"}]},
        {"model": MODEL_ID, "stream": True, "messages": [
            {"role": "user", "content": "What does the forget gate in an LSTM do?"},
            {"role": "assistant", "content": "The forget gate decides ... [1]"},
            {"role": "user", "content": "and what about the GRU?"}]}]})

    model: str = Field(description=f"The one model this server has: {MODEL_ID!r} (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1, description=(
        "The conversation, oldest first. The last message is the question and must have role `user` (at most "
        f"{MAX_TEXT} characters of text); the earlier user messages are the conversation's history (the last "
        f"{MAX_HISTORY}), used for retrieval; system, assistant and tool messages are not read."))
    stream: bool = Field(False, description="Server-sent `chat.completion.chunk` events, ending with `data: [DONE]`.")
    n: Annotated[int, Field(ge=1, le=1), BeforeValidator(integral)] | None = Field(
        None, description="Only one choice is made.")
    top_k: TopK | None = Field(None, description="Extension: how many passages to retrieve (default "
                               "LECTURE_QA_TOP_K). The openai SDK sends it with extra_body.")
    document_ids: list[DocumentId] | None = Field(None, max_length=500, description="Extension: only use these "
                                                  "documents (404 if one is unknown).")


# -- responses --
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = Field(description="The answer with its [n] markers, then a Markdown list of the sources they "
                         "name (document, slide/page/section); for a question the lectures do not cover, the "
                         "service's refusal and the closest passages.")
    refusal: None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop"]
    logprobs: None = None


class LectureQAResult(BaseModel):
    """Extension: what /api/v1/ask answers besides the text, for programs (the openai SDK: `model_extra`)."""

    grounded: bool
    answered_by: str
    citations: list[CitationPublic]
    sources: list[SearchResultPublic]
    llm_error: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    lecture_qa: LectureQAResult


# -- errors --
class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """Every 4xx/5xx answer of /v1, in OpenAI's shape."""

    error: OpenAIErrorDetail


ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error"}
ERROR_CODES = {401: "invalid_api_key", 405: "method_not_allowed", 413: "request_too_large",
               503: "service_unavailable"}
OPENAI_ERRORS = {
    400: "The body is malformed or invalid (OpenAI answers 400 where the rest of this API answers 422)",
    401: "No API key, or an unknown one (only when LECTURE_QA_API_KEYS or LECTURE_QA_ADMIN_KEYS is set)",
    404: "No such model, or an id in document_ids is unknown",
    413: "The request body is over 1 MiB",
    503: "The service is still loading, or its backend is unavailable (see Retry-After)",
}


def openai_error_body(status_code: int, message: str, *, param: str | None = None,
                      code: str | None = None) -> dict[str, Any]:
    error_type = ERROR_TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param,
                      "code": code if code is not None else ERROR_CODES.get(status_code)}}


def openai_error_response(status_code: int, message: str, *, param: str | None = None, code: str | None = None,
                          headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error of the OpenAI-compatible API; a 422 of the shared handlers becomes OpenAI's 400."""
    status_code = 400 if status_code == 422 else status_code
    return JSONResponse(openai_error_body(status_code, message, param=param, code=code), status_code=status_code,
                        headers=headers)


def openai_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these codes, all with the OpenAIError shape."""
    return {code: {"model": OpenAIError, "description": OPENAI_ERRORS[code]} for code in codes}
