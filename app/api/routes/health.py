from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.schemas import Health, NotReady, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The index and the model are loaded",
            responses={200: {"model": Ready, "description": "Ready"},
                       503: {"model": NotReady, "description": "Still loading, or failed to start (with the error)"}})
def readyz(request: Request) -> Any:
    service = getattr(request.app.state, "service", None)
    if service is None:
        error = getattr(request.app.state, "startup_error", None)
        body = {"status": "failed" if error else "loading", "error": error}
        return JSONResponse(body, status_code=503)
    return {"status": "ready", "pid": os.getpid(), **service.stats()}
