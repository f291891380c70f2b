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
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from app.api.deps import auth_enabled
from app.api.middleware import BodyLimit, HeadAsGet, KeyGuard, route_path
from app.api.openai_schemas import is_openai_path, openai_error_response
from app.api.routes import ask, documents, health, jobs, openai_compat, pages, search
from app.api.schemas import MAX_FILES_PER_UPLOAD
from app.backends import build_service
from app.mcp_server import app_service, build_mcp_server, mount_mcp
from app.qa.errors import BackendUnavailable
from app.settings import Settings
from ingest.errors import StorageUnavailable

log = logging.getLogger("lecture_qa")
WEB_DIR = Path(__file__).parent / "web"
# Search and ask bodies are a few KB; the largest valid one (question, 20 history entries, 500 document ids, every
# character a \u-escaped astral one) is under 0.9 MiB.
JSON_BODY_LIMIT = 2**20


# The docs pages may load only from this server: ReDoc's bundle shows a logo from cdn.redoc.ly (it hides
# itself when blocked), and nothing else should reach out either. Inline script and styles: FastAPI's page
# template and the bundles' CSS-in-JS; blob: workers: ReDoc's search.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")
PROBED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods this path really answers, for `Allow`. Starlette's 405 names the methods of the first route
    whose path matched (`GET` for /api/v1/documents, which also takes POST); here every route is asked, through
    the public BaseRoute.matches, whether it takes the path with each method (FastAPI's included routers do not
    expose their routes' methods). The one mount, /static, is StaticFiles: GET and HEAD."""
    probe = {"type": "http", "path": scope["path"], "root_path": scope.get("app_root_path", scope.get("root_path", ""))}
    methods: set[str] = set()
    for route in app.router.routes:
        for method in PROBED_METHODS:
            if route.matches({**probe, "method": method})[0] is Match.FULL:
                methods |= {"GET", "HEAD"} if isinstance(route, Mount) else {method}
    if "GET" in methods:
        methods.add("HEAD")  # HeadAsGet answers HEAD wherever GET is
    return sorted(methods | {"OPTIONS"}) if methods else []


def error_answer(request: Request, status_code: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's error `{"error": message, "detail": ...}`; under /v1 OpenAI's shape, where a 422 is a 400 and
    a detail dict's `param` and `code` (set by the OpenAI routes) fill those fields."""
    if is_openai_path(route_path(request.scope)):
        detail = body.get("detail")
        param = code = None
        if isinstance(detail, dict):
            param, code = detail.get("param"), detail.get("code")
        elif isinstance(detail, list) and detail and isinstance(detail[0], dict):  # validation errors
            loc = [p for p in detail[0].get("loc", []) if p != "body"]
            param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None
        return openai_error_response(status_code, str(body["error"]), param=param, code=code, headers=headers)
    return JSONResponse(body, status_code=status_code, headers=headers)


def keys_optional_in_openapi(app: FastAPI) -> None:
    """Without keys configured, every operation also accepts no credentials: its security list gains `{}` (an
    OpenAPI requirement that is always met). Published as required, it told clients and schemathesis a request
    without a key would be refused, which such a server never does. The bearer scheme stays listed first, so
    Swagger UI still offers Authorize and sends the key it is given."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    if isinstance(operation, dict) and operation.get("security"):
                        operation["security"].append({})
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to change the schema


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
        service.warm_up()  # opens the index (and the remote collection): ready means searchable
        app.state.service = service
        log.info("lecture-qa ready: %s", service.stats())
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
        async with mcp_endpoint.running():  # the MCP endpoint's task group (app.mcp_server), for the app's life
            yield
        if app.state.service is not None:
            app.state.service.close()

    app = FastAPI(
        title="lecture-qa",
        version="0.1.0",
        summary="Ask questions about your course's lecture material; every answer cites slides and pages.",
        lifespan=lifespan,
        docs_url=None,  # served below from vendored assets: the default pages load them from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = None
    app.state.startup_error = None

    # add_middleware wraps: the last added runs first. HEAD becomes GET; CORS answers preflights and labels every
    # answer (401s included); then keys, then body limits, all before a route reads the body.
    app.add_middleware(BodyLimit, upload_limit=settings.max_upload_bytes * MAX_FILES_PER_UPLOAD + 2**20,
                       json_limit=JSON_BODY_LIMIT, per_file_mb=settings.max_upload_mb)
    app.add_middleware(KeyGuard, settings=settings)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Accept"],
                           expose_headers=["Retry-After"], max_age=600)
    app.add_middleware(HeadAsGet)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail
        status_code = exc.status_code
        headers = dict(getattr(exc, "headers", None) or {})
        if status_code == 405:
            allow = ", ".join(allowed_methods(app, request.scope))
            if request.method == "OPTIONS" and allow:
                return Response(status_code=204, headers={"Allow": allow})
            headers["Allow"] = allow
        if status_code == 400 and not isinstance(detail, dict):
            # only body parsing raises a 400 with a text detail (FastAPI: "There was an error parsing the body",
            # e.g. JSON that is not UTF-8; Starlette: a malformed multipart body; the OpenAI routes raise theirs
            # with a dict). The API answers every malformed body 422, in the shape of a validation error (under
            # /v1 OpenAI's 400).
            reason = str(detail).rstrip(".")
            return error_answer(request, 422, {"error": f"invalid request body: {reason[:1].lower()}{reason[1:]}",
                                               "detail": [{"loc": ["body"], "msg": reason, "type": "body_unparsable"}]})
        message = detail.get("message") if isinstance(detail, dict) else str(detail)
        body: dict[str, Any] = {"error": message}
        if isinstance(detail, dict):
            body["detail"] = detail
        return error_answer(request, status_code, body, headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request", "type": ""}
        if first["type"] == "json_invalid":
            message = "invalid request: the body is not valid JSON"
        elif first["loc"] == ["body"] and first["type"] in ("model_attributes_type", "dict_type"):
            message = "invalid request: the body must be a JSON object sent as Content-Type: application/json"
        else:
            where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
            message = f"invalid request: {where}: {first['msg']}"
        return error_answer(request, 422, {"error": message, "detail": errors})

    @app.exception_handler(BackendUnavailable)
    @app.exception_handler(StorageUnavailable)
    async def backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return error_answer(request, 503, {"error": str(exc)}, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_answer(request, 500, {"error": "internal error; the request was not completed"})

    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(ask.router)
    app.include_router(documents.router)
    app.include_router(pages.router)
    app.include_router(jobs.router)
    app.include_router(openai_compat.router)
    default_openapi = app.openapi
    app.openapi = lambda: openai_compat.without_validation_422(default_openapi())  # type: ignore[method-assign]
    mcp_endpoint = mount_mcp(app, build_mcp_server(app_service(app)))  # /mcp: streamable HTTP, outside the OpenAPI
    if not auth_enabled(settings):
        keys_optional_in_openapi(app)

    if (WEB_DIR / "index.html").exists():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(WEB_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        """Swagger UI from app/web/vendor (swagger-ui-dist): works offline, no request leaves the server."""
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}/static/vendor/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/static/vendor/swagger-ui.css",
            swagger_favicon_url=f"{root}/static/vendor/swagger-favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})  # the default badge calls validator.swagger.io
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        """ReDoc from app/web/vendor (redoc 2's standalone bundle), without Google Fonts."""
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}/static/vendor/redoc.standalone.js",
                              redoc_favicon_url=f"{root}/static/vendor/swagger-favicon-32x32.png",
                              with_google_fonts=False)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    return app
