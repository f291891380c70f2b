"""create_app(): settings in, FastAPI out. Heavy loading happens in a lifespan thread, never at import."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.routes import ask, documents, health, search
from app.components import build_service
from app.qa.errors import BackendUnavailable
from app.settings import Settings

log = logging.getLogger("lecture_qa")
WEB_DIR = Path(__file__).parent / "web"
MAX_FILES_PER_UPLOAD = 20


class BodyLimit:
    """Refuse an over-long request body by its Content-Length before reading it (pure ASGI: no per-request cost
    of BaseHTTPMiddleware on the search hot path)."""

    def __init__(self, app: ASGIApp, limit: int, per_file_mb: float) -> None:
        self.app = app
        self.limit = limit
        self.per_file_mb = per_file_mb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    message = f"the request body is over the limit ({self.per_file_mb:g} MiB a file)"
                    await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _single_threaded_math() -> None:
    """A request's vector math is tiny (one query against a few thousand rows); BLAS and OpenMP thread pools
    only spin and contend with the other requests' threads. Measured: 26% of server CPU under 8 clients."""
    import faiss
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    faiss.omp_set_num_threads(1)


def _load(app: FastAPI, settings: Settings) -> None:
    try:
        _single_threaded_math()
        service = build_service(settings)
        service.store.stats()  # opens the index: ready means searchable
        app.state.service = service
        log.info("lecture-qa ready: %s", service.store.stats())
    except Exception as exc:  # reported by /readyz and the log, not a crash loop
        app.state.startup_error = f"{type(exc).__name__}: {exc}"
        log.error("lecture-qa failed to start: %s", app.state.startup_error)


def create_app(settings: Settings | None = None, *, load_in_background: bool = True, **overrides: Any) -> FastAPI:
    settings = settings or Settings(**overrides)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if load_in_background:
            threading.Thread(target=_load, args=(app, settings), name="lecture-qa-load", daemon=True).start()
        else:
            _load(app, settings)
        yield

    app = FastAPI(
        title="lecture-qa",
        version="0.1.0",
        summary="Ask questions about your course's lecture material; every answer cites slides and pages.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = None
    app.state.startup_error = None

    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes * MAX_FILES_PER_UPLOAD + 2**20,
                       per_file_mb=settings.max_upload_mb)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        message = detail.get("message") if isinstance(detail, dict) else str(detail)
        body: dict[str, Any] = {"error": message}
        if isinstance(detail, dict):
            body["detail"] = detail
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return JSONResponse({"error": f"invalid request: {where}: {first['msg']}", "detail": errors},
                            status_code=422)

    @app.exception_handler(BackendUnavailable)
    async def backend_unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the request was not completed"}, status_code=500)

    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(ask.router)
    app.include_router(documents.router)

    if (WEB_DIR / "index.html").exists():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(WEB_DIR / "index.html")

    return app
