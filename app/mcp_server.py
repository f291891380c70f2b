"""The lectures as a Model Context Protocol server (the official `mcp` SDK, 2.x): tools to search, ask, list the
documents and see a slide or page, for assistants such as Claude Desktop and IDE agents.

Two transports, one set of tools over QAService:
- streamable HTTP at `/mcp` on the API's own app (app.factory mounts it and runs its session manager in the
  app's lifespan), behind the same keys (Bearer; a member key may use every tool: none changes documents);
- stdio: `lecture-qa mcp --data-dir DIR` (app.cli), for clients that start the server themselves.

The HTTP endpoint is stateless (every request stands alone, answered as JSON): the service runs as several
uvicorn workers and replicas (README, "Running for a whole department"), and a session kept in one worker's
memory would be unknown to the next worker a client's connection reaches; no tool here needs a session (no
sampling, no elicitation, no notifications)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.api.middleware import MCP_PATH
from app.api.schemas import MAX_TEXT
from app.previews import NoPreview, NotReady
from app.qa.errors import BackendUnavailable
from app.qa.reply import reply_markdown, source_label
from ingest.errors import StorageUnavailable
from ingest.units import location_label

if TYPE_CHECKING:
    from fastapi import FastAPI
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from app.qa.service import QAService
    from app.settings import Settings

INSTRUCTIONS = (
    "Course lecture material (slides, notes, papers). Use search_lectures to find passages (each with its "
    "document and slide/page/section), ask for a cited answer ([n] markers and the sources they name; it says "
    "so when the lectures do not cover a question), list_documents for what is indexed, and page_image to see a "
    "slide or page of a PDF, PPTX or DOCX document (document_id and the page or slide number of a location).")
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

Question = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, description="The question, in plain words.")]
Query = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, description="What to look for.")]
TopK = Annotated[int, Field(ge=1, le=50, description="How many passages.")]
DocumentIds = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]] | None,
                        Field(max_length=500, description="Only these documents (ids from list_documents).")]
History = Annotated[list[Annotated[str, Field(max_length=MAX_TEXT)]] | None,
                    Field(max_length=20, description="Earlier questions of this conversation, oldest first: a "
                          "follow-up ('and the GRU?') is retrieved with the previous question as context.")]


@contextmanager
def backend_errors() -> Iterator[None]:
    """A backend that is down (h2oGPTe, PostgreSQL) is a tool error saying so, as the routes answer 503 with
    the reason; anything else stays a crash (the SDK tells the client only that the tool failed)."""
    try:
        yield
    except (BackendUnavailable, StorageUnavailable) as exc:
        raise ToolError(f"the lecture library is unavailable: {exc}") from None


def _text(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def build_mcp_server(service: Callable[[], QAService], *,
                     lifespan: Callable[[MCPServer[Any]], AbstractAsyncContextManager[Any]] | None = None,
                     ) -> MCPServer[Any]:
    """The server and its tools; `service()` gives the QAService for each call (or raises ToolError). Tools
    are plain functions: the SDK runs them on a worker thread, as the HTTP routes run QAService's calls."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        server: MCPServer[Any] = MCPServer(
            "lecture-qa", title="Lecture Q&A", instructions=INSTRUCTIONS, version="0.1.0", lifespan=lifespan,
            log_level="WARNING")
    finally:  # MCPServer() calls logging.basicConfig (a RichHandler on the root logger): the host's logging
        root.handlers[:] = handlers  # (uvicorn's, the CLI's) stays as it was
        root.setLevel(level)

    def known(svc: QAService, document_ids: list[str] | None) -> None:
        if document_ids and (unknown := svc.unknown_documents(document_ids)):
            raise ToolError(f"no document with id {', '.join(repr(i) for i in unknown[:5])} "
                            "(list_documents gives the ids)")

    def not_blank(text: str, what: str) -> str:
        if not text.strip():
            raise ToolError(f"{what} must not be blank")
        return text.strip()

    @server.tool(annotations=READ_ONLY, structured_output=False)
    def search_lectures(query: Query, top_k: TopK = 5, document_ids: DocumentIds = None) -> CallToolResult:
        """Search the lecture material (hybrid dense + keyword retrieval). Each result is a passage with its
        document, its slide/page/section and a score; structured content has the full results."""
        svc = service()
        with backend_errors():
            known(svc, document_ids)
            results = svc.search(not_blank(query, "query"), top_k, document_ids)
        blocks = [f"[{i}] {source_label(s)} (document_id {s.document.id}, score {s.score:.3f})\n{s.text}"
                  for i, s in enumerate(results, 1)]
        return _text("\n\n".join(blocks) or "no passage found", {"results": [s.public() for s in results]})

    @server.tool(annotations=READ_ONLY, structured_output=False)
    def ask(question: Question, history: History = None, top_k: Annotated[int | None, Field(ge=1, le=50)] = None,
            document_ids: DocumentIds = None) -> CallToolResult:
        """Answer a question from the lectures: sentences of the lecture material, each cited [n], then the
        sources they name (document, slide/page/section). When the lectures do not cover the question it says so
        (structured content: grounded false) and lists the closest passages."""
        svc = service()
        with backend_errors():
            known(svc, document_ids)
            result = svc.ask(not_blank(question, "question"), top_k, document_ids, history)
        return _text(reply_markdown(result), result.public())

    @server.tool(annotations=READ_ONLY, structured_output=False)
    def list_documents() -> CallToolResult:
        """The indexed lecture documents: id, type, pages/slides/sections, name."""
        with backend_errors():
            docs = service().documents()
        lines = [f"{d.id}  {d.type}  {d.units} {d.unit_label}  {d.name}" for d in docs]
        return _text("\n".join(lines) or "no documents are indexed",
                     {"documents": [d.public() for d in docs], "count": len(docs)})

    @server.tool(annotations=READ_ONLY, structured_output=False)
    def page_image(document_id: Annotated[str, Field(min_length=1, max_length=64)],
                   page: Annotated[int, Field(ge=1, le=100_000, description="1-based page or slide number, as "
                                              "in a location's page or slide")],
                   size: Literal["thumb", "full"] = "full") -> CallToolResult:
        """A slide or page of a PDF, PPTX or DOCX document as a PNG image (full: 1600 px on the long edge,
        thumb: 320 px). Markdown, HTML and text documents have no pages."""
        svc = service()
        with backend_errors():
            try:
                image = svc.page_image(document_id, page, size)
            except NoPreview as exc:
                raise ToolError(str(exc)) from None
            except NotReady as exc:
                raise ToolError(f"{exc}; retry in {exc.retry_after} s") from None
            doc = svc.document(document_id)
        unit = "slide" if doc is not None and doc.type == "pptx" else "page"
        caption = f"{doc.name if doc else document_id}, {location_label({unit: page})}"
        return CallToolResult(content=[Image(data=image.data, format="png").to_image_content(),
                                       TextContent(type="text", text=caption)])

    return server


class MCPEndpoint:
    """/mcp on the API's app: an ASGI endpoint over the SDK's streamable HTTP session manager, which needs a task
    group for its life (`running()`, entered in the app's lifespan; a manager runs once, so each run makes its
    own and a second lifespan of the same app still works).

    GET /mcp answers 405 here, as the streamable HTTP transport allows a server that offers no stream of its
    own. The SDK's stateless transport instead held every GET open and silent (measured: a plain GET, with or
    without `Accept: text/event-stream`, never answered), a connection per client spent on messages this server
    never sends. The SDK's DNS-rebinding check (a Host allow-list it turns on for 127.0.0.1) is off: /mcp follows
    the API's rules (keys, LECTURE_QA_CORS_ORIGINS), and the service is also served on other hosts behind a load
    balancer, whose Host names the SDK cannot know."""

    def __init__(self, server: MCPServer[Any]) -> None:
        self.server = server
        self.manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        from mcp.server.transport_security import TransportSecuritySettings

        self.server.streamable_http_app(  # makes the session manager; its Starlette app is not used
            stateless_http=True, json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        manager = self.server.session_manager
        async with manager.run():
            self.manager = manager
            try:
                yield
            finally:
                self.manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            refusal = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Method Not Allowed: this "
                       "server has no event stream of its own; send requests with POST"}}
            await JSONResponse(refusal, status_code=405, headers={"Allow": "POST"})(scope, receive, send)
            return
        if self.manager is None:  # outside the app's lifespan
            await JSONResponse({"error": "the MCP endpoint is not running"}, status_code=503)(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)


def mount_mcp(app: FastAPI, server: MCPServer[Any]) -> MCPEndpoint:
    """Serve `server` at /mcp (outside the OpenAPI); the caller enters `endpoint.running()` in its lifespan."""
    from starlette.routing import Route

    endpoint = MCPEndpoint(server)
    app.router.routes.append(Route(MCP_PATH, endpoint=endpoint, include_in_schema=False))
    return endpoint


def app_service(app: FastAPI) -> Callable[[], QAService]:
    """The app's QAService for a tool call, or a ToolError while it loads (or when it failed to start)."""

    def get() -> QAService:
        service = getattr(app.state, "service", None)
        if service is None:
            error = getattr(app.state, "startup_error", None)
            raise ToolError(f"the service failed to start: {error}" if error
                            else "the service is still loading; retry shortly")
        return service  # type: ignore[no-any-return]

    return get


def run_stdio(settings: Settings) -> None:
    """`lecture-qa mcp`: the tools over stdin/stdout. The service opens inside the server's lifespan, after
    the SDK's stdio transport has moved file descriptor 1 to stderr, so nothing printed while the model loads
    can reach the protocol stream."""
    import anyio

    from app.backends import build_service

    opened: list[QAService] = []

    def open_service() -> QAService:
        service = build_service(settings)
        service.warm_up()
        return service

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        opened.append(await anyio.to_thread.run_sync(open_service))
        try:
            yield {}
        finally:
            opened.pop().close()

    def current() -> QAService:
        if not opened:
            raise ToolError("the service is still loading; retry shortly")
        return opened[0]

    anyio.run(build_mcp_server(current, lifespan=lifespan).run_stdio_async)
