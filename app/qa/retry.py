"""One retry policy for the remote backends (OpenAI-compatible HTTP, the h2oGPTe client): a few attempts with
exponential backoff, only for errors worth repeating (429 and 5xx); anything else is raised at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def backoff_seconds(attempt: int) -> float:
    return min(0.5 * 2**attempt, 4.0)


def with_retries(call: Callable[[], T], retries: int, retryable: Callable[[Exception], bool]) -> T:
    """`call()`, repeated up to `retries` more times while it raises an error `retryable` accepts."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if attempt < retries and retryable(exc):
                time.sleep(backoff_seconds(attempt))
                continue
            raise
    raise AssertionError("unreachable")
