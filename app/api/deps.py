"""Annotated dependency aliases: the service, the settings, the key checks, and the document-id check.

The key rules live in `key_error`, used twice: by the `KeyGuard` middleware, which refuses a request before its
body is read, and by the dependencies, which declare the bearer scheme in the OpenAPI (Swagger's Authorize
button) and keep the routes safe when they are called without the middleware (tests, other mounts)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from app.qa.service import QAService
from app.settings import Settings

KEY_REQUIRED = "a valid API key is required: Authorization: Bearer <key>"
ADMIN_KEY_REQUIRED = "an admin API key is required to change documents"
ADMIN_KEY_FORBIDDEN = "this API key may not upload or delete documents"
BEARER = {"WWW-Authenticate": "Bearer"}

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="A key from LECTURE_QA_API_KEYS (uploads and deletes: LECTURE_QA_ADMIN_KEYS). "
    "Not needed when the server has no keys configured.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_service(request: Request) -> QAService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        error = getattr(request.app.state, "startup_error", None)
        detail = f"the service failed to start: {error}" if error else "the service is still loading; retry shortly"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "2"})
    return service  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[QAService, Depends(get_service)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def bearer_token(authorization: str | None) -> str | None:
    """The key from an `Authorization: Bearer <key>` header value, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str, keys: set[str]) -> bool:
    found = False
    for key in keys:  # compare against every key, in constant time each
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def auth_enabled(settings: Settings) -> bool:
    return bool(settings.api_key_set or settings.admin_key_set)


def key_error(token: str | None, settings: Settings, *, write: bool) -> HTTPException | None:
    """The 401/403 this request earns, or None. Reads need an API key when LECTURE_QA_API_KEYS is set; writes
    (upload, delete) need an admin key when LECTURE_QA_ADMIN_KEYS is set."""
    if settings.api_key_set and (token is None or not _matches(token, settings.api_key_set | settings.admin_key_set)):
        return HTTPException(status.HTTP_401_UNAUTHORIZED, KEY_REQUIRED, headers=BEARER)
    if write and settings.admin_key_set:
        if token is None:
            return HTTPException(status.HTTP_401_UNAUTHORIZED, ADMIN_KEY_REQUIRED, headers=BEARER)
        if not _matches(token, settings.admin_key_set):
            return HTTPException(status.HTTP_403_FORBIDDEN, ADMIN_KEY_FORBIDDEN)
    return None


def require_key(request: Request, settings: SettingsDep, _: BearerDep) -> str | None:
    token = bearer_token(request.headers.get("authorization"))
    if error := key_error(token, settings, write=False):
        raise error
    return token


def can_write(token: str | None, settings: Settings) -> bool:
    admins = settings.admin_key_set
    if not admins:
        return True
    return token is not None and _matches(token, admins)


def require_admin(request: Request, settings: SettingsDep, _: BearerDep) -> None:
    if error := key_error(bearer_token(request.headers.get("authorization")), settings, write=True):
        raise error


def key_fingerprint(token: str) -> str:
    """What a job keeps of the key that queued it: a SHA-256 of the key, never the key."""
    return hashlib.sha256(b"lecture-qa job owner\0" + token.encode()).hexdigest()


def job_owner(token: str | None, settings: Settings) -> str | None:
    """The owner to record on a new job: the key's fingerprint when the service has keys, else None."""
    return key_fingerprint(token) if token is not None and auth_enabled(settings) else None


def may_read_job(owner: str | None, token: str | None, settings: Settings) -> bool:
    """A job belongs to the key that queued it, and admin keys read every job. Without keys (an open service)
    everyone reads every job, as before. A job queued from the command line (no key) is an admin's."""
    if not auth_enabled(settings):
        return True
    if token is None:
        return False
    if _matches(token, settings.admin_key_set):
        return True
    return owner is not None and hmac.compare_digest(owner, key_fingerprint(token))


KeyDep = Annotated[str | None, Depends(require_key)]
AdminDep = Annotated[None, Depends(require_admin)]

async def require_known_documents(service: QAService, ids: Sequence[str] | None) -> None:
    """404 naming the unknown ids: a filter on a deleted or mistyped document would otherwise search nothing and
    answer "the lectures do not cover this" as if that were true."""
    if not ids:
        return
    unknown = await run_in_threadpool(service.unknown_documents, ids)
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        what = "no document with id" if len(unknown) == 1 else "no documents with ids"
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            {"message": f"document_ids: {what} {shown}", "unknown_document_ids": unknown})
