"""One h2oGPTe async client on a private event loop thread, shared by the h2oGPTe answerer and store.

The h2ogpte package (~250 MB, ~4 s to import) is imported only when an h2oGPTe backend is configured. Every
call goes through `call()`: our own timeout around it (the client's own is an hour), and bounded retries with
backoff on 429/5xx (a coroutine cannot be awaited twice, so callers pass a factory).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from app.qa.retry import RETRY_STATUS, with_retries

T = TypeVar("T")
INSTALL_HINT = "the h2oGPTe backend needs the h2ogpte client: pip install h2ogpte==1.7.5"


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an h2ogpte client error (its error classes carry it in different ways)."""
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    named = {"InternalServerError": 500, "UnauthorizedError": 401, "ObjectNotFoundError": 404,
             "InvalidArgumentError": 400, "FailedError": 409, "RateLimitError": 429}
    return named.get(type(exc).__name__)


class H2OGPTeConnection:
    def __init__(self, address: str, api_key: str, *, timeout: float = 60.0, retries: int = 2) -> None:
        if not address or not api_key:
            raise RuntimeError("an h2oGPTe backend needs H2OGPTE_ADDRESS and H2OGPTE_API_KEY "
                               "(in h2oGPTe: APIs -> New API key)")
        try:
            from h2ogpte import H2OGPTEAsync
        except ImportError as exc:
            raise RuntimeError(INSTALL_HINT) from exc
        self.timeout = timeout
        self.retries = retries
        self.closed = False
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="h2ogpte-loop", daemon=True).start()

        async def make() -> Any:  # the async client binds to the loop it is created on
            return H2OGPTEAsync(address=address, api_key=api_key)

        self.client: Any = self.submit(make(), timeout=10)

    def submit(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run one coroutine on the private loop, abandoned after `timeout` seconds."""
        limit = self.timeout if timeout is None else timeout
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, limit), self.loop)
        return future.result(limit + 5)

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        """submit() with retries on 429/5xx."""
        return with_retries(lambda: self.submit(factory(), timeout), self.retries,
                            lambda exc: status_of(exc) in RETRY_STATUS)

    def close(self) -> None:
        """Shared by the store and the answerers, so each may close it: the first call does."""
        if self.closed:
            return
        self.closed = True
        try:
            self.submit(self.client.close(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
