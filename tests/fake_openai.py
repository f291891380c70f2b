"""A local fake OpenAI-compatible chat server: streams a scripted `reply` word by word (SSE, like llama.cpp
and vLLM) and records every request body in `calls`. Deterministic: the reply is whatever the test set."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tests.server import free_port


class FakeOpenAI:
    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.reply = ""
        self.calls: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(routes=[Route("/v1/models", self.models),
                                Route("/v1/chat/completions", self.chat, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            assert time.time() < deadline, "fake OpenAI server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True  # idle keep-alive and websocket connections get 1 s, not a 10 s wait
        self._thread.join(timeout=10)

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def chat(self, request: Request) -> StreamingResponse:
        self.calls.append(await request.json())
        return StreamingResponse(self._frames(self.reply), media_type="text/event-stream")

    def _frames(self, reply: str) -> Iterator[str]:
        for piece in re.findall(r"\s*\S+", reply):
            chunk = {"object": "chat.completion.chunk", "model": self.model,
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"
