"""Annotated dependency aliases: the service, the settings, and the key checks."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.qa.service import QAService
from app.settings import Settings


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


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str, keys: set[str]) -> bool:
    found = False
    for key in keys:  # compare against every key, in constant time each
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def require_key(request: Request, settings: SettingsDep) -> str | None:
    keys = settings.api_key_set | settings.admin_key_set
    if not settings.api_key_set:
        return _bearer(request)
    token = _bearer(request)
    if token is None or not _matches(token, keys):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid API key is required: Authorization: Bearer <key>",
                            headers={"WWW-Authenticate": "Bearer"})
    return token


def can_write(token: str | None, settings: Settings) -> bool:
    admins = settings.admin_key_set
    if not admins:
        return True
    return token is not None and _matches(token, admins)


def require_admin(request: Request, settings: SettingsDep) -> None:
    token = require_key(request, settings)
    if not settings.admin_key_set:
        return
    if token is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an admin API key is required to change documents",
                            headers={"WWW-Authenticate": "Bearer"})
    if not can_write(token, settings):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this API key may not upload or delete documents")


KeyDep = Annotated[str | None, Depends(require_key)]
AdminDep = Annotated[None, Depends(require_admin)]
