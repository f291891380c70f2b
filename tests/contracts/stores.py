"""The Store contract (app.qa.ports.Store): every backend that holds documents passes these. A backend's test
class inherits StoreContract and provides a `store` fixture over an empty library or collection."""

from __future__ import annotations

from app.qa.ports import Store
from ingest.pipeline import SourceFile
from tests.conftest import SAMPLES

NOTES = SAMPLES / "01-recurrent-networks.md"
DECK = SAMPLES / "03-lstm-and-gru.pptx"


def _file(path, data: bytes | None = None) -> SourceFile:
    return SourceFile(path.name, data=path.read_bytes() if data is None else data)


class StoreContract:
    def test_ingest_reports_ingested_unchanged_replaced_and_skipped(self, store: Store):
        broken = SourceFile("broken.pdf", data=b"%PDF-1.7\n this is not really a pdf")
        first = {f.name: f for f in store.ingest([_file(NOTES), _file(DECK), broken]).files}
        assert first[NOTES.name].status == first[DECK.name].status == "ingested"
        assert first["broken.pdf"].status == "skipped" and "PDF" in first["broken.pdf"].reason
        assert {d.name for d in store.documents()} == {NOTES.name, DECK.name}

        again = store.ingest([_file(NOTES)]).files
        assert [(f.status, f.document_id) for f in again] == [("unchanged", first[NOTES.name].document_id)]

        changed = store.ingest([_file(NOTES, NOTES.read_bytes() + b"\n\nA closing remark on recurrence.\n")])
        (result,) = changed.files
        assert result.status == "replaced" and result.replaced == [first[NOTES.name].document_id]
        assert {d.name for d in store.documents()} == {NOTES.name, DECK.name}
        assert store.document(first[NOTES.name].document_id) is None

    def test_documents_have_the_public_shape(self, store: Store):
        (deck,) = [f for f in store.ingest([_file(DECK)]).files if f.status == "ingested"]
        info = store.document(deck.document_id)
        assert info is not None and info.name == DECK.name and info.unit_label == "slides"
        assert info.units == deck.units > 0 and info.public()["slides"] == info.units
        assert [d.id for d in store.documents()] == [deck.document_id]

    def test_delete_removes_the_document_and_its_passages(self, store: Store):
        ids = {f.name: f.document_id for f in store.ingest([_file(NOTES), _file(DECK)]).files}
        assert store.delete(ids[DECK.name]) is True
        assert store.delete(ids[DECK.name]) is False
        assert store.document(ids[DECK.name]) is None
        assert all(s.document.id != ids[DECK.name] for s in store.search("forget gate cell state", 10))

    def test_search_shape_and_document_filter(self, store: Store):
        ids = {f.name: f.document_id for f in store.ingest([_file(NOTES), _file(DECK)]).files}
        hits = store.search("forget gate cell state", 3)
        assert hits and len(hits) <= 3
        known = {d.id for d in store.documents()}
        for h in hits:
            assert h.chunk_id and h.text.strip() and h.document.id in known and h.document.name
            assert {"page", "slide", "section"} & set(h.location)
        assert hits[0].document.name == DECK.name and "slide" in hits[0].location
        only = store.search("forget gate cell state", 5, document_ids=[ids[NOTES.name]])
        assert only and {h.document.id for h in only} == {ids[NOTES.name]}
