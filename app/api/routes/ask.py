from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from app.api.deps import KeyDep, ServiceDep, require_known_documents
from app.api.schemas import AskRequest, AskResponse, ModelsPublic, error_responses
from app.qa.service import AskResult

router = APIRouter(prefix="/api/v1", tags=["ask"])


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/ask", response_model=AskResponse, summary="Answer a question from the lectures, with citations",
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or server-sent events when stream is true"},
                        **error_responses(401, 404, 413, 422, 503, e404="An id in document_ids is unknown")})
async def ask(body: AskRequest, request: Request, service: ServiceDep, _: KeyDep) -> Any:
    await require_known_documents(service, body.document_ids)
    wants_stream = body.stream or "text/event-stream" in request.headers.get("accept", "")
    if not wants_stream:
        result = await run_in_threadpool(service.ask, body.question, body.top_k, body.document_ids, body.history)
        return result.public()

    async def events() -> AsyncIterator[str]:
        items = service.ask_stream(body.question, body.top_k, body.document_ids, body.history)
        try:
            async for item in iterate_in_threadpool(items):
                if isinstance(item, AskResult):
                    yield _sse("done", item.public())
                else:
                    yield _sse("delta", {"text": item})
        except Exception as exc:  # the stream has started: report in-band, never a traceback
            yield _sse("error", {"error": f"the answer failed: {type(exc).__name__}"})

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/models", response_model=ModelsPublic, summary="Models of the configured answer backend",
            responses=error_responses(401, 502, 503))
async def models(service: ServiceDep, _: KeyDep) -> dict[str, Any]:
    try:
        names = await run_in_threadpool(service.models)
    except Exception as exc:  # the LLM endpoint is down: say so, as a 502
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"the model list could not be fetched: {exc}") from exc
    return {"backend": service.backend, "models": names}
