from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import KeyDep, ServiceDep, require_known_documents
from app.api.schemas import SearchRequest, SearchResponse, error_responses

router = APIRouter(prefix="/api/v1", tags=["search"])


@router.post("/search", response_model=SearchResponse, summary="Hybrid search over the lecture material",
             responses=error_responses(401, 404, 413, 422, 503, e404="An id in document_ids is unknown"))
async def search(body: SearchRequest, service: ServiceDep, _: KeyDep) -> JSONResponse:
    t0 = time.perf_counter()
    await require_known_documents(service, body.document_ids)
    results = await run_in_threadpool(service.search, body.query, body.top_k, body.document_ids)
    took = round((time.perf_counter() - t0) * 1000, 2)
    # built from typed dataclasses already: skip a second validation pass on the hot path
    return JSONResponse({"results": [r.public() for r in results], "timings_ms": {"total": took}})
