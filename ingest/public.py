"""The public shapes, built by every store (the local library, h2oGPTe) and returned as they are by the API and
the CLI: a document, and where a passage sits in one (one definition each instead of a dict per backend)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict


@with_config(ConfigDict(extra="allow"))
class LocationInfo(TypedDict, total=False):
    """The typed public form of ingest.units.Location (a plain dict inside ingestion): where a passage sits, a PDF
    page, a slide or a heading section ("LSTM > Forget gate"); `pages`/`slides` when it spans several; `ocr` when
    its text was read from images. Keys not listed here are passed through."""

    page: int
    pages: list[int]
    slide: int
    slides: list[int]
    section: str
    ocr: bool


class DocumentRefInfo(TypedDict):
    id: str
    name: str
    title: str


class Place(TypedDict):
    """Another place the same passage appears (a collapsed duplicate)."""

    document: DocumentRefInfo
    location: LocationInfo


class DocumentInfo(BaseModel):
    id: str
    name: str
    title: str
    type: str = Field(description="pdf, pptx, docx, markdown, html or text")
    size: int = Field(description="bytes of the original file")
    units: int = Field(description="pages, slides or sections, as unit_label says")
    unit_label: str
    pages: int | None = None
    slides: int | None = None
    sections: int | None = None
    chunks: int
    ingested_at: str
    also_named: list[str] = Field(default_factory=list,
                                  description="other names of the same content (one document under each)")
    status: str | None = Field(None, description="the backend's own state of the document (h2oGPTe)")

    @classmethod
    def of(cls, *, unit_label: str, units: int, **fields: Any) -> DocumentInfo:
        """`units` also filed under its label ("slides": 12), as the API has always shown it."""
        label = {unit_label: units} if unit_label in ("pages", "slides", "sections") else {}
        return cls(unit_label=unit_label, units=units, **label, **fields)

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
