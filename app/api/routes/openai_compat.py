"""The OpenAI-compatible API: GET /v1/models and POST /v1/chat/completions (plain and streamed), for chat
clients that speak OpenAI's protocol (Open WebUI, LibreChat, the `openai` SDK). One model, `lecture-qa`: the
last user message is the question, the earlier user messages its history, and the reply is QAService's answer
with its `[n]` markers and a Markdown list of the sources (app.qa.reply). Errors are OpenAI's shape (the app's
handlers switch to it under /v1: app.factory); keys are the API's (Bearer), and a member key may ask."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from app.api.deps import KeyDep, ServiceDep, require_known_documents
from app.api.openai_schemas import (
    MAX_HISTORY,
    MODEL_CREATED,
    MODEL_ID,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    ModelCard,
    ModelList,
    is_openai_path,
    openai_error_body,
    openai_error_responses,
)
from app.api.schemas import MAX_TEXT
from app.qa.reply import reply_markdown, sources_markdown
from app.qa.types import AskResult

router = APIRouter(prefix="/v1", tags=["openai"])
log = logging.getLogger("lecture_qa")
MODEL = ModelCard(id=MODEL_ID, created=MODEL_CREATED, owned_by="lecture-qa")


def invalid(status_code: int, message: str, *, param: str | None = None, code: str | None = None) -> HTTPException:
    """An HTTPException the app's handler answers in OpenAI's shape, with its `param` and `code`."""
    return HTTPException(status_code, {"message": message, "param": param, "code": code})


def conversation(messages: list[ChatMessage]) -> tuple[str, list[str]]:
    """The question (the last message, which must be the user's) and the history (earlier user messages, oldest
    first, the last MAX_HISTORY, each cut to MAX_TEXT characters: retrieval reads only the previous question)."""
    last = messages[-1]
    if last.role != "user":
        raise invalid(400, f"the last message must be the user's question (role 'user'), not {last.role!r}",
                      param="messages")
    question = last.text()
    if not question:
        raise invalid(400, "the last user message has no text", param="messages")
    if len(question) > MAX_TEXT:
        raise invalid(400, f"the question (the last user message) is {len(question)} characters; at most {MAX_TEXT}",
                      param="messages", code="context_length_exceeded")
    history = [text[:MAX_TEXT] for m in messages[:-1] if m.role == "user" and (text := m.text())]
    return question, history[-MAX_HISTORY:]


def without_validation_422(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI without the 422 FastAPI lists on every operation that has parameters: under /v1 a body or
    parameter that fails validation is OpenAI's 400, which the operations list."""
    for path, item in schema.get("paths", {}).items():
        if is_openai_path(path):
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
    return schema


def lecture_qa_extra(result: AskResult) -> dict[str, Any]:
    public = result.public()
    return {key: public[key] for key in ("grounded", "answered_by", "citations", "sources", "llm_error")
            if key in public}


@router.get("/models", response_model=ModelList, summary="The model list (OpenAI-compatible): one model, lecture-qa",
            responses=openai_error_responses(401))
async def list_models(_: KeyDep) -> Any:
    return {"object": "list", "data": [MODEL.model_dump()]}


@router.get("/models/{model}", response_model=ModelCard, summary="One model (OpenAI-compatible)",
            responses=openai_error_responses(401, 404))
async def get_model(model: str, _: KeyDep) -> Any:
    if model != MODEL_ID:
        raise invalid(404, f"the model {model!r} does not exist; this server has one model: {MODEL_ID!r}",
                      param="model", code="model_not_found")
    return MODEL.model_dump()


@router.post("/chat/completions", response_model=ChatCompletion,
             summary="Answer the conversation's last question from the lectures (OpenAI-compatible)",
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "A chat.completion, or with stream=true server-sent "
                              "chat.completion.chunk events ending with `data: [DONE]`"},
                        **openai_error_responses(400, 401, 404, 413, 503)})
async def chat_completions(body: ChatCompletionRequest, service: ServiceDep, _: KeyDep) -> Any:
    if body.model != MODEL_ID:
        raise invalid(404, f"the model {body.model!r} does not exist; this server has one model: {MODEL_ID!r} "
                      "(GET /v1/models)", param="model", code="model_not_found")
    question, history = conversation(body.messages)
    try:
        await require_known_documents(service, body.document_ids)
    except HTTPException as exc:
        detail: Any = exc.detail
        raise invalid(exc.status_code, detail["message"] if isinstance(detail, dict) else str(detail),
                      param="document_ids", code="document_not_found") from None
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        result = await run_in_threadpool(service.ask, question, body.top_k, body.document_ids, history)
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": MODEL_ID,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply_markdown(result),
                                                     "refusal": None},
                             "finish_reason": "stop", "logprobs": None}],
                "lecture_qa": lecture_qa_extra(result)}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events() -> AsyncIterator[str]:
        """The role at once; the answer when it is final, then its sources; `stop`; `[DONE]`. The answer is
        not relayed delta by delta: an LLM backend's deltas are checked only after the model has finished
        (markers added, an unsupported answer replaced by the refusal: LLMAnswerer.checked), and an OpenAI
        stream cannot take back text it has sent. The extractive default makes its answer in one piece anyway."""
        yield chunk({"role": "assistant", "content": ""})
        try:
            result: AskResult | None = None
            items = service.ask_stream(question, body.top_k, body.document_ids, history)
            async for item in iterate_in_threadpool(items):
                if isinstance(item, AskResult):
                    result = item
            assert result is not None, "the answer stream ended without a result"
            yield chunk({"content": result.answer.text})
            if sources := sources_markdown(result):
                yield chunk({"content": f"\n\n{sources}"})
            yield chunk({}, "stop", lecture_qa=lecture_qa_extra(result))
        except Exception as exc:  # the stream has started: report in-band (OpenAI's shape), never a traceback
            log.exception("the streamed chat completion failed")
            error = openai_error_body(status.HTTP_500_INTERNAL_SERVER_ERROR,
                                      f"the answer failed: {type(exc).__name__}")
            yield f"data: {json.dumps(error)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
