"""Page previews: a document's page or slide as a PNG (docs/previews.md has the API contract and the figures).

The names below load app.previews.pages on first use, so that a drawing worker, which imports only
app.previews.render (ingest.isolation), does not pay for the library and its dependencies (0.85 s, 13 MB)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.previews.pages import SIZES, NoPreview, NotReady, PageImage, Previews

__all__ = ["SIZES", "NoPreview", "NotReady", "PageImage", "Previews"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from app.previews import pages

        return getattr(pages, name)
    raise AttributeError(f"module 'app.previews' has no attribute {name!r}")
