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

from app.api.routes import ask, documents, health, search
from app.components import build_service
from app.settings import Settings

log = logging.getLogger("lecture_qa")
WEB_DIR = Path(__file__).parent / "web"
MAX_FILES_PER_UPLOAD = 20


def _load(app: FastAPI, settings: Settings) -> None:
    try:
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

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes * MAX_FILES_PER_UPLOAD + 2**20:
            return JSONResponse({"error": f"the request body is over the limit ({settings.max_upload_mb:g} MiB a file)"},
                                status_code=413)
        return await call_next(request)

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
