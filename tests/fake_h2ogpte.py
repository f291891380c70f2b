"""A local fake of the h2oGPTe endpoints that `H2OGPTEAsync.get_llm_names` and `answer_question` use.

Faithful to what the real h2ogpte 1.7.5 client sends and validates (../shared/docs/h2ogpte-client.md): the
`/rpc/meta` version check with every required Meta field, `/api/v1` error bodies `{"code", "message"}`, `/rpc`
error bodies `{"error"}`, bearer auth on every call. `mode` scripts failures: "ok", "429-once", "500",
"hang", "refuse" (the model answers NOT_IN_SOURCES).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.server import free_port

META = {
    "version": "1.7.5", "build": "fake", "username": "student", "user_id": "u1", "subject": "u1",
    "email": "student@example.edu", "is_guest": False, "license_expired": False, "license_expiry_date": "2099-01-01",
    "global_configs": [], "user_configs": [], "picture": None, "groups": None, "workspaces": None, "permissions": [],
    "ui_config": {"logo": "", "chat_logo": "", "primary_color": "", "chat_name": "", "greeting": "",
                  "show_private_button": False, "show_workers_status": False, "show_live_logs": False,
                  "show_eval": False, "show_extractors": False, "public_mode": False},
}


class FakeH2OGPTe:
    def __init__(self, api_key: str = "sk-good") -> None:
        self.api_key = api_key
        self.mode = "ok"
        self.calls: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[
            Route("/rpc/meta", self.meta),
            Route("/api/v1/models", self.models),
            Route("/api/v1/models/{model}/answer_question", self.answer_question, methods=["POST"]),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeH2OGPTe:
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            assert time.time() < deadline, "fake h2oGPTe did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def meta(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "invalid API key"}, status_code=401)
        return JSONResponse(META)

    async def models(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"code": 401, "message": "invalid API key"}, status_code=401)
        return JSONResponse([{"id": "m-1", "display_name": "fake-llm"}, {"id": "m-2", "display_name": "other-llm"}])

    async def answer_question(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"code": 401, "message": "invalid API key"}, status_code=401)
        body = await request.json()
        self.calls.append({"model": request.path_params["model"], **body})
        if self.mode == "429-once":
            self.mode = "ok"
            return JSONResponse({"code": 429, "message": "rate limited"}, status_code=429)
        if self.mode == "500":
            return JSONResponse({"code": 500, "message": "boom"}, status_code=500)
        if self.mode == "hang":
            await asyncio.sleep(30)
        if self.mode == "refuse":
            content = "NOT_IN_SOURCES"
        else:  # cite the first source by number, and one number that does not exist
            context = "\n".join(body.get("text_context_list") or [])
            first = re.search(r'<source n="1"[^>]*>\n(.*?)(?:\n|</source>)', context, re.S)
            sentence = first.group(1).split(". ")[0] if first else "nothing"
            content = f"{sentence} [1]. This also holds [7]."
        return JSONResponse({"content": content, "error": "", "llm": request.path_params["model"],
                             "input_tokens": 100, "output_tokens": 20})
