"""Answers from any OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp server, h2oGPT), streamed.

The model sees only the retrieved, numbered sources; its citations are checked against them and sentences it
left unmarked are attributed to the source that supports them (attribution.py); any failure or timeout falls
back to the extractive answer and says why (`answered_by`, `llm_error`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import httpx

from app.qa.answer.extractive import ExtractiveAnswerer
from app.qa.answer.llm_base import LLMAnswerer
from app.qa.answer.prompting import build_messages
from app.qa.retry import RETRY_STATUS, with_retries
from app.qa.types import Answer, Source


class LLMUnavailable(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OpenAICompatAnswerer(LLMAnswerer):
    name = "openai"

    def __init__(self, base_url: str, model: str, fallback: ExtractiveAnswerer, *, api_key: str = "",
                 timeout: float = 60.0, retries: int = 2, context_chars: int = 4000, max_tokens: int = 400) -> None:
        if not base_url:
            raise RuntimeError("LECTURE_QA_LLM=openai needs OPENAI_BASE_URL (e.g. http://127.0.0.1:11434/v1)")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.fallback = fallback
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.retries = retries
        self.context_chars = context_chars
        self.max_tokens = max_tokens

    def models(self) -> list[str]:
        r = httpx.get(f"{self.base_url}/models", headers=self.headers, timeout=self.timeout)
        r.raise_for_status()
        return [m["id"] for m in r.json().get("data", [])]

    def generate(self, question: str, sources: list[Source], unknown_terms: Sequence[str]) -> Iterator[str | Answer]:
        """Text deltas as the model produces them, then the checked Answer."""
        parts: list[str] = []
        try:
            for delta in self._chat(build_messages(question, sources, self.context_chars)):
                parts.append(delta)
                yield delta
        except (httpx.HTTPError, LLMUnavailable, ValueError) as exc:
            if parts:
                yield "\n\n"
            yield from self.extractive(question, sources, unknown_terms, exc)
            return
        yield self.checked("".join(parts), sources, f"openai:{self.model}")

    def _chat(self, messages: list[dict[str, str]]) -> Iterator[str]:
        body = {"model": self.model, "messages": messages, "stream": True, "temperature": 0,
                "max_tokens": self.max_tokens}
        with httpx.Client(timeout=self.timeout) as client:
            r = with_retries(lambda: self._open(client, body), self.retries,
                             lambda exc: isinstance(exc, LLMUnavailable) and exc.status in RETRY_STATUS)
            try:
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    choice = (json.loads(data).get("choices") or [{}])[0]
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        yield delta
            finally:
                r.close()

    def _open(self, client: httpx.Client, body: dict[str, object]) -> httpx.Response:
        request = client.build_request("POST", f"{self.base_url}/chat/completions", json=body, headers=self.headers)
        r = client.send(request, stream=True)
        if r.status_code != 200:
            r.read()
            r.close()
            raise LLMUnavailable(f"HTTP {r.status_code}: {r.text[:200]}", status=r.status_code)
        return r
