from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import KeyDep, ServiceDep
from app.api.schemas import AskRequest, AskResponse

router = APIRouter(prefix="/api/v1", tags=["ask"])


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/ask", response_model=AskResponse, summary="Answer a question from the lectures, with citations",
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or server-sent events when stream is true"}})
async def ask(body: AskRequest, request: Request, service: ServiceDep, _: KeyDep) -> Any:
    wants_stream = body.stream or "text/event-stream" in request.headers.get("accept", "")
    if not wants_stream:
        result = await run_in_threadpool(service.ask, body.question, body.top_k, body.document_ids, body.history)
        return result.public()

    async def events() -> AsyncIterator[str]:
        try:
            result = await run_in_threadpool(service.ask, body.question, body.top_k, body.document_ids, body.history)
        except Exception as exc:  # the stream has started: report in-band, never a traceback
            yield _sse("error", {"error": f"the answer failed: {type(exc).__name__}"})
            return
        payload = result.public()
        yield _sse("delta", {"text": payload["answer"]})
        yield _sse("done", payload)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
