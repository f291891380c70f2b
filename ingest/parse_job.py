"""One file -> its chunks: load, check the passage limit, chunk, fold contained chunks. Runs in a parse worker
(ingest.isolation) when the embedder's tokenizer can travel there, else in this process.

The passage limit (LECTURE_QA_MAX_PASSAGES, default 5,000): the largest document of the shared corpus makes 114
passages (the DSA4213 lecture 5 deck); 5,000 is about 5 MB of text, a 2,000-page book, and about 2.5 minutes of
embedding on the 2-core dev machine (35 chunks/s, README). A document over it is skipped with its reason rather
than half-indexed. Its non-blank characters tell before chunking: a passage shows at most 1,000 characters and
every character lands in one, so a text with more than limit x 1,000 of them is refused without being chunked.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ingest.chunking import Chunker, TokenCounter
from ingest.dedupe import containment_links
from ingest.errors import IngestError, TooComplex
from ingest.isolation import IsolatedRunner
from ingest.loaders import load_document
from ingest.units import Chunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParseSettings:
    max_unpacked_bytes: int
    max_passages: int = 5_000
    chunk_tokens: int = 254
    chunk_chars: int = 1_000
    ocr: bool = False  # read the images of pages/slides without text (ingest.ocr; LECTURE_QA_OCR)
    ocr_seconds: float = 30.0  # OCR time per document; the pipeline passes half its parse timeout

    @property
    def max_chars(self) -> int:
        """Characters of text a loader may extract: twice what the passage limit can hold."""
        return 2 * self.max_passages * self.chunk_chars


@dataclass
class ParsedFile:
    title: str
    kind: str
    units: int
    unit_label: str
    chunks: list[Chunk]
    links: list[int | None]  # containment_links of the chunks


def parse_file(name: str, data: bytes, settings: ParseSettings, count_tokens: TokenCounter) -> ParsedFile:
    doc = load_document(name, data, max_unpacked_bytes=settings.max_unpacked_bytes, max_chars=settings.max_chars,
                        ocr=settings.ocr, ocr_seconds=settings.ocr_seconds)
    visible = sum(len("".join(u.text.split())) for u in doc.units)
    if visible > settings.max_passages * settings.chunk_chars:
        raise TooComplex(f"the document has {visible:,} characters of text: more than {settings.max_passages:,} "
                         f"passages of up to {settings.chunk_chars:,} characters, the limit per document "
                         "(LECTURE_QA_MAX_PASSAGES); split it into smaller files")
    chunker = Chunker(count_tokens, settings.chunk_tokens, max_chars=settings.chunk_chars)
    chunks = chunker.chunk_document(doc, max_chunks=settings.max_passages)
    if not chunks:
        raise IngestError("the document has no passage long enough to index (only titles or empty pages)")
    return ParsedFile(doc.title, doc.kind, len(doc.units), doc.unit_label, chunks,
                      containment_links([c.text for c in chunks]))


# -- in a parse worker ----------------------------------------------------------------------------------------
def worker_init(tokenizer_json: str) -> TokenCounter:
    """The worker's state: a token counter from the embedder's own tokenizer (sent as JSON)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)

    def count_tokens(texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)] if texts else []

    return count_tokens


def worker_parse(count_tokens: TokenCounter, name: str, data: bytes, settings: ParseSettings) -> ParsedFile:
    return parse_file(name, data, settings, count_tokens)


_runners: dict[tuple[str, float, int], IsolatedRunner] = {}
_runners_lock = threading.Lock()


def shared_runner(tokenizer: str, timeout_s: float, memory_mb: int) -> IsolatedRunner:
    """One pool of parse workers per (tokenizer, limits) in this process: pipelines built alike (each test, each
    request's store) share warm workers instead of paying a worker's start-up (imports: 1-2.5 s) each."""
    key = (hashlib.sha1(tokenizer.encode()).hexdigest(), timeout_s, memory_mb)
    with _runners_lock:
        runner = _runners.get(key)
        if runner is None:
            runner = _runners[key] = IsolatedRunner(worker_init, tokenizer, timeout_s=timeout_s, memory_mb=memory_mb)
        return runner


_ocr_warned = False


def _warn_once_without_ocr() -> None:
    """OCR is on but cannot run (no tesseract): said once per process, when the first file is parsed (not when a
    pipeline is built: every CLI command builds one, and `documents` or `ask` parse nothing)."""
    global _ocr_warned
    from ingest.ocr import unavailable_reason

    reason = unavailable_reason()
    if reason and not _ocr_warned:
        _ocr_warned = True
        log.warning(reason)


class FileParser:
    """parse(name, data) -> ParsedFile, in a parse worker with the given limits when `isolate` (and the embedder's
    tokenizer can be sent there), else in this process."""

    def __init__(self, settings: ParseSettings, count_tokens: TokenCounter, *, tokenizer: str | None,
                 isolate: bool = True, timeout_s: float = 60.0, memory_mb: int = 1024) -> None:
        self.settings = settings
        self.count_tokens = count_tokens
        self.runner = shared_runner(tokenizer, timeout_s, memory_mb) if isolate and tokenizer is not None else None
        if isolate and tokenizer is None:
            log.warning("the embedder has no tokenizers.Tokenizer: files are parsed in this process, unisolated")

    def parse(self, name: str, data: bytes) -> ParsedFile:
        if self.settings.ocr and not _ocr_warned:
            _warn_once_without_ocr()
        if self.runner is None:
            return parse_file(name, data, self.settings, self.count_tokens)
        return self.runner.call(worker_parse, name, data, self.settings)
