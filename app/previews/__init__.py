"""Page previews: a document's page or slide as a PNG (docs/previews.md has the API contract and the figures)."""

from app.previews.pages import SIZES, NoPreview, NotReady, PageImage, Previews

__all__ = ["SIZES", "NoPreview", "NotReady", "PageImage", "Previews"]
