"""Pure ASGI middlewares that act before routing or before a route reads the request body.

Pure ASGI (no BaseHTTPMiddleware): they sit on the search hot path, and BaseHTTPMiddleware costs a task and a
stream per request. Those that answer do so with the API's JSON error shape `{"error": ...}`, and under
/v1 (the OpenAI-compatible API) with OpenAI's `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import auth_enabled, bearer_token, key_error
from app.api.openai_schemas import is_openai_path, openai_error_response
from app.settings import Settings

UPLOAD_PATH = "/api/v1/documents"
MCP_PATH = "/mcp"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def route_path(scope: Scope) -> str:
    """The path the app routes on (without a --root-path prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def keyed_path(path: str) -> bool:
    """The paths that take the API's keys: the REST API, the OpenAI-compatible API and the MCP endpoint."""
    return path.startswith("/api/") or is_openai_path(path) or path == MCP_PATH or path.startswith(MCP_PATH + "/")


def routable(scope: Scope) -> bool:
    """Whether a route of the app takes this path with this method (else the router answers 404 or 405).
    `scope["app"]` is the application: Starlette sets it before the middleware stack runs (without one, every
    request counts as routable, so the keys are checked)."""
    app = scope.get("app")
    if app is None:
        return True
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def _json_error(exc: HTTPException, scope: Scope) -> JSONResponse:
    if is_openai_path(route_path(scope)):
        return openai_error_response(exc.status_code, str(exc.detail), headers=exc.headers)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


class KeyGuard:
    """401/403 for an `/api/`, `/v1/` or `/mcp` request before anything reads its body.

    The key dependencies only run after FastAPI has parsed the body: a 900 MB upload without a key used to be
    read whole (45 s) before its 401. Here the same rules (deps.key_error) run on the headers alone. Writes to
    /api/v1/documents (upload, delete) are checked for an admin key here too, so a read-only key cannot make
    the server spool a large upload either. OPTIONS passes: it reveals only the methods, like /openapi.json.

    A request no route takes (a method the path does not have, a path that does not exist) passes too, so the
    router answers 405 (with Allow) or 404: a member key's POST to a page image used to get 403 "may not upload
    or delete", as if the method existed. Every path and method is public in /openapi.json, so this tells a
    client without a key nothing new. Only a request that is refused pays for the route lookup."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS" and auth_enabled(self.settings):
            path = route_path(scope)
            if keyed_path(path):
                token = bearer_token(Headers(scope=scope).get("authorization"))
                write = scope["method"] in WRITE_METHODS and path.startswith(UPLOAD_PATH)
                if (error := key_error(token, self.settings, write=write)) and routable(scope):
                    await _json_error(error, scope)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class HeadAsGet:
    """HEAD answered wherever GET is (RFC 9110 9.3.2: the same status and headers, no body).

    FastAPI's routes take only the methods they declare, so HEAD on a GET route was 405. A HEAD request is routed
    as GET (routes, keys and errors alike: HEAD on a POST-only path is still 405) and its body dropped on the way
    out; Content-Length stays that of the GET. Outermost, so the other middlewares see GET as well."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(msg: Message) -> None:
            if msg["type"] == "http.response.body":
                msg = {**msg, "body": b""}
            await send(msg)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes its limit. An HTTPException, so FastAPI's body parsing passes it
    on untouched (anything else it reports as a 400 "error parsing the body") to the app's JSON error handler."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    """413 for a request body over its route's limit, before or while it is read.

    Uploads (POST /api/v1/documents) may carry up to `upload_limit` bytes (per-file limit times the most files a
    request may carry, plus multipart slack); every other request `json_limit` (search and ask bodies are a
    few KB; a 10 MB `history` is refused here before any JSON parsing). A declared Content-Length over the limit
    is refused without reading; a chunked body (no Content-Length) is counted as it arrives and refused once
    over. If the response had already started, the request is aborted instead."""

    def __init__(self, app: ASGIApp, *, upload_limit: int, json_limit: int, per_file_mb: float) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit
        self.per_file_mb = per_file_mb

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and route_path(scope) == UPLOAD_PATH:
            return self.upload_limit, f"the upload is over the limit ({self.per_file_mb:g} MiB a file)"
        return self.json_limit, f"the request body is over the limit of {self.json_limit / 2**20:g} MiB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message = self._limit(scope)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _json_error(BodyTooLarge(message), scope)(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(message)
            return msg

        async def watched_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:  # raised where no handler answered it (outside a route)
            if started:
                raise  # too late for a 413: the server aborts the connection
            await _json_error(exc, scope)(scope, receive, send)
