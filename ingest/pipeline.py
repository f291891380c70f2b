"""ingest(files) -> Report: read, check, parse, chunk, fold repeats, embed (with a cache), commit once.

Identity (see ingest.library): a file's name (its path below the common folder of the paths given, or the
uploaded name, as normalised by ingest.names) names one document; the document is the parse of the file's bytes
as the type its name asks for. So the same name with the same bytes is `unchanged`, with other bytes `replaced`;
the same bytes under another name are the same document, listed under both names; and the same bytes under a
name of another type (lecture5.txt re-uploaded as lecture5.md) are a new parse, a document of their own, so a
user can fix a wrong type without deleting first, and a folder holding both keeps both names. The old parse
stays until it is deleted or its name is given other bytes: replacing it instead would make one name silently
stand for a parse of another type. Two different files with one name in one batch (two uploads named alike;
files given to the CLI are named below their common folder and do not clash): the first is ingested, the others
are skipped with a reason; nothing is replaced silently.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest import token_vectors
from ingest.chunking import Chunker
from ingest.dedupe import NearDuplicates, link_near_duplicates, numbers_agree, word_bags
from ingest.embedding import Embedder, PassageEncoder
from ingest.errors import FileTooLarge, IngestError, StorageUnavailable
from ingest.ignore import Ignore
from ingest.library import ChunkRow, DocumentRecord, Library, Writer, now_iso
from ingest.loaders import SUPPORTED_SUFFIXES, kind_for_name
from ingest.names import display_name
from ingest.originals import Originals, StagedOriginal
from ingest.parse_job import FileParser, ParseSettings
from ingest.pg_library import PgLibrary

Progress = Callable[[str, int, int], None]  # (stage, done, total)
REUSE_JACCARD = 0.8  # the cross-file dedupe threshold: a chunk that will collapse into its twin


@dataclass
class SourceFile:
    name: str  # the document's name in the library (path below the batch's common folder, or the uploaded name)
    data: bytes | None = None
    path: Path | None = None
    source: str = ""


@dataclass
class FileResult:
    name: str
    status: str  # ingested | unchanged | replaced | skipped
    document_id: str | None = None
    reason: str | None = None
    units: int = 0
    chunks: int = 0
    replaced: list[str] = field(default_factory=list)
    same_as: str | None = None  # another name of the same bytes: this name was added to that document

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "document_id": self.document_id,
                               "units": self.units, "chunks": self.chunks}
        if self.reason:
            out["reason"] = self.reason
        if self.replaced:
            out["replaced"] = self.replaced
        if self.same_as:
            out["same_as"] = self.same_as
        return out


@dataclass
class Report:
    files: list[FileResult] = field(default_factory=list)
    documents: int = 0
    units: int = 0
    chunks: int = 0
    embedded: int = 0
    collapsed: int = 0
    seconds: float = 0.0
    generation: int = 0
    error: str | None = None
    storage_unavailable: bool = False  # the error: the library's database could not be reached (not the files')

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    def finish(self, start: float) -> Report:
        """Files in name order, and the totals of those ingested or replaced."""
        self.files.sort(key=lambda r: r.name)
        done = [f for f in self.files if f.status in ("ingested", "replaced")]
        self.documents = len(done)
        self.units = sum(f.units for f in done)
        self.chunks = sum(f.chunks for f in done)
        self.seconds = time.perf_counter() - start
        return self

    def public(self) -> dict[str, Any]:
        return {"documents": self.documents, "units": self.units, "chunks": self.chunks,
                "embedded": self.embedded, "duplicates_collapsed": self.collapsed,
                "seconds": round(self.seconds, 3), "chunks_per_second": round(self.chunks_per_second, 1),
                "generation": self.generation, "files": [f.public() for f in self.files]}


def naming_folder(paths: Iterable[str | Path]) -> Path | None:
    """The folder every name of one batch is relative to: the deepest folder holding everything given (a folder
    given holds itself, a file its parent), as absolute paths without resolving links; None when nothing given
    exists. One folder alone is named below itself and one file by its file name, as before; `a/index.md
    b/index.md` are `a/index.md` and `b/index.md`, so files named on the command line never clash by name."""
    homes = [os.path.abspath(p) if Path(p).is_dir() else os.path.dirname(os.path.abspath(p))
             for p in paths if Path(p).is_dir() or Path(p).is_file()]
    if not homes:
        return None
    try:
        return Path(os.path.commonpath(homes))
    except ValueError:  # different drives (Windows): no common folder, each file named below its own
        return None


def collect_paths(paths: Iterable[str | Path], *, root: str | Path | None = None, exclude: Sequence[str] = (),
                  excluded: list[str] | None = None) -> tuple[list[SourceFile], list[FileResult]]:
    """Files and folders (recursive) -> supported files named by their path below the common folder of
    everything given (`naming_folder`), or below `root` when given (`lecture-qa ingest --root`), normalised by
    ingest.names; the rest reported. The same file given twice (a folder and a file in it) is read once.
    A folder's files never lead out of it: a symbolic link that resolves outside the folder is skipped with a
    reason, and links to folders are not followed. A file named on the command line is read wherever it points:
    the user chose it. In folders, files matched by a `.lectureqaignore` or an `exclude` glob (ingest.ignore)
    are left out, their paths appended to `excluded` when given."""
    paths = list(paths)
    base = Path(os.path.abspath(root)) if root is not None else naming_folder(paths)
    found: list[SourceFile] = []
    skipped: list[FileResult] = []
    seen: set[str] = set()

    def below_base(p: Path) -> Path | None:
        """`p` relative to `base` (itself when there is none); None, reported, when it is not below it."""
        full = Path(os.path.abspath(p))
        if base is None:
            return Path(p.name) if p.is_file() else Path()
        if full.is_relative_to(base):
            return full.relative_to(base)
        skipped.append(FileResult(str(p), "skipped", reason=f"not below {base}, the folder given to name "
                                  "the files by (--root)"))
        return None

    def add(f: Path, rel: Path) -> None:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            found.append(SourceFile(name=display_name(rel.as_posix()) or f"unnamed{f.suffix.lower()}", path=f,
                                    source=str(f)))

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            if (home := below_base(p)) is None:
                continue
            folder = Path(os.path.realpath(p))
            ignore = Ignore(p, exclude)
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if any(part.startswith(".") for part in rel.parts) or f.suffix.lower() not in SUPPORTED_SUFFIXES:
                    continue
                if ignore.excluded(rel.as_posix()):
                    if excluded is not None:
                        excluded.append(str(f))
                    continue
                target = Path(os.path.realpath(f))
                if f.is_symlink() and not target.is_relative_to(folder):
                    name = display_name((home / rel).as_posix()) or f"unnamed{f.suffix.lower()}"
                    skipped.append(FileResult(name, "skipped", reason=f"a symbolic link to {target}, outside "
                                              f"{p}: links that leave the folder are not followed"))
                elif f.is_file():
                    add(f, home / rel)
        elif p.is_file():
            if (named := below_base(p)) is not None:
                add(p, named)
        else:
            skipped.append(FileResult(name=str(raw), status="skipped", reason="no such file or folder"))
    return found, skipped


def identity(name: str, data: bytes) -> tuple[str, str, str]:
    """(document id, content, parsed_as): the id of the parse of `data` as the type `name` asks for."""
    parsed_as = kind_for_name(name)
    content = hashlib.sha256(data).hexdigest()[:16]
    return hashlib.sha256(parsed_as.encode() + b"\0" + data).hexdigest()[:16], content, parsed_as


def skipped(name: str, exc: Exception) -> FileResult:
    """A file that could not be ingested: an IngestError says why in plain words; anything else is a parser bug."""
    reason = str(exc) if isinstance(exc, IngestError) else f"the file could not be parsed ({type(exc).__name__}: {exc})"
    return FileResult(name, "skipped", reason=reason)


def for_each_file(files: list[SourceFile], report: Report, handle: Callable[[SourceFile], None],
                  progress: Progress | None = None) -> None:
    """`handle` each file; one that raises is reported skipped with the reason (a parser bug on a hostile file
    must not sink the batch either). The loop of every store's ingest."""
    for i, f in enumerate(files):
        try:
            handle(f)
        except Exception as exc:
            report.files.append(skipped(f.name, exc))
        if progress:
            progress("parse", i + 1, len(files))


def read_source(f: SourceFile, max_bytes: int) -> bytes:
    """The file's bytes, after checking its type by name and its size (IngestError says what is wrong)."""
    kind_for_name(f.name)
    if f.data is not None:
        data = f.data
    else:
        assert f.path is not None
        try:
            size = f.path.stat().st_size
            if size > max_bytes:
                raise FileTooLarge(f"the file is {size / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.0f} MiB")
            data = f.path.read_bytes()
        except OSError as exc:
            raise IngestError(f"the file cannot be read ({exc.strerror or exc})") from exc
    if len(data) > max_bytes:
        raise FileTooLarge(f"the file is {len(data) / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.0f} MiB")
    return data


@dataclass
class _Staged:
    result: FileResult
    doc: DocumentRecord
    chunks: list[ChunkRow]


@dataclass
class _Named:
    """A file whose name is to point at the document (content, parsed_as): parsed here (`staged`), or stored
    already / parsed for an earlier file of the batch (same bytes, another name)."""

    result: FileResult
    key: tuple[str, str]
    staged: _Staged | None = None
    original: StagedOriginal | None = None  # the bytes, to keep (ingest.originals) unless kept already


class Pipeline:
    def __init__(self, library: Library | PgLibrary, embedder: Embedder, *, max_file_bytes: int = 100 * 2**20,
                 max_unpacked_bytes: int = 500 * 2**20, batch_size: int = 16,
                 chunk_tokens: int | None = None, max_passages: int = 5_000, parse_timeout: float = 60.0,
                 parse_memory_mb: int = 1024, isolate_parsing: bool = True, ocr: bool = True,
                 pack_tokens: Callable[[np.ndarray], bytes] = token_vectors.pack,
                 dense_encoders: Mapping[str, PassageEncoder] | None = None) -> None:
        self.library = library
        self.dense_encoders = dict(dense_encoders or {})  # other dense models' passage vectors (bge-small)
        self.pack_tokens = pack_tokens  # word-piece vectors -> the library's blob (int8; a database may choose)
        self.embedder = embedder
        self.chunker = Chunker(embedder.count_tokens, min(chunk_tokens or embedder.max_tokens, embedder.max_tokens))
        self.max_file_bytes = max_file_bytes
        self.max_unpacked_bytes = max_unpacked_bytes
        self.batch_size = batch_size
        # parse + chunk in a worker with these limits (ingest.isolation); passages per document capped (parse_job)
        self.parser = FileParser(
            ParseSettings(max_unpacked_bytes, max_passages, self.chunker.max_tokens, self.chunker.max_chars,
                          ocr=ocr, ocr_seconds=parse_timeout / 2),  # OCR: ingest.ocr, at most half the timeout
            embedder.count_tokens, tokenizer=embedder.tokenizer_json(), isolate=isolate_parsing,
            timeout_s=parse_timeout, memory_mb=parse_memory_mb)
        # each document's bytes, for page previews; a database library's data_dir is only scratch space
        self.originals = Originals(library.data_dir, enabled=not isinstance(library, PgLibrary))

    # -- one file -> staged rows (no lock held) --
    def _stage(self, f: SourceFile, data: bytes, doc_id: str) -> _Staged:
        parsed = self.parser.parse(f.name, data)  # in a parse worker: time, memory and passages bounded
        chunks, links = parsed.chunks, parsed.links
        rows = [
            ChunkRow(id=f"{doc_id}-{c.order:05d}", doc_id=doc_id, order=c.order, text=c.text,
                     embed_text=c.embed_text, embed_hash=hashlib.sha1(c.embed_text.encode()).hexdigest(),
                     location=c.location, title=c.title, contained_in=None, embedding=None)
            for c in chunks
        ]
        for row, link in zip(rows, links, strict=True):
            if link is not None:
                row.contained_in = rows[link].id
        doc = DocumentRecord(id=doc_id, name=f.name, title=parsed.title, kind=parsed.kind, size=len(data),
                             units=parsed.units, unit_label=parsed.unit_label, chunks=len(rows),
                             ingested_at="", source=f.source)
        return _Staged(FileResult(f.name, "ingested", doc_id, units=parsed.units, chunks=len(rows)), doc, rows)

    def ingest(self, files: list[SourceFile], *, progress: Progress | None = None,
               on_lock_wait: Callable[[], None] | None = None, lock_timeout: float = 600.0,
               _before_commit: Callable[[], None] | None = None) -> Report:
        start = time.perf_counter()
        report = Report()
        plans = self._plan(files, report, progress)
        staged = [n.staged for n in plans if n.staged is not None]
        if staged:
            report.embedded = self._embed(staged, progress)
        try:
            with self.library.writer(timeout=lock_timeout, on_wait=on_lock_wait) as w:
                before = self.library.snapshot().collapsed if plans else 0
                for n in plans:
                    self._commit_name(w, n)
                placed = self.originals.place(n.original for n in plans if n.result.status != "skipped")
                w.on_after_commit(lambda: self.originals.committed(w.stored_keys(), placed))
                if _before_commit is not None:
                    w.on_before_commit(_before_commit)
            snap = w.snapshot or self.library.snapshot(force_check=True)
            report.collapsed = max(snap.collapsed - before, 0) if staged else 0
            report.generation = snap.generation
        except Exception as exc:
            report.error = f"the index could not be written: {exc}"
            report.storage_unavailable = isinstance(exc, StorageUnavailable)
            for n in plans:
                n.result.status = "skipped"
                n.result.reason = report.error
                n.result.units = n.result.chunks = 0
        self.originals.discard(n.original for n in plans)
        report.files.extend(n.result for n in plans)
        return report.finish(start)

    def _plan(self, files: list[SourceFile], report: Report, progress: Progress | None) -> list[_Named]:
        """Read every file and parse those whose (bytes, type) the library lacks; no lock held. Unchanged and
        unreadable files go straight into the report."""
        names = self.library.names()
        stored = {(d.content, d.parsed_as): d.id for d in self.library.documents()}
        batch: dict[str, tuple[str, str]] = {}  # name -> key, for this batch
        parsed: dict[tuple[str, str], _Staged] = {}
        plans: list[_Named] = []

        def plan(f: SourceFile) -> None:
            data = read_source(f, self.max_file_bytes)
            doc_id, content, parsed_as = identity(f.name, data)
            key = (content, parsed_as)
            if f.name in batch:
                if batch[f.name] != key:
                    raise IngestError("another file of this batch has the same name: ingest their common "
                                      "folder, or rename one (an upload may name a folder: folder/name)")
                report.files.append(FileResult(f.name, "unchanged", stored.get(key, doc_id)))
            elif key in stored and names.get(f.name) == stored[key] and self.originals.find(*key):
                report.files.append(FileResult(f.name, "unchanged", stored[key]))
            elif key in stored or key in parsed:
                plans.append(_Named(FileResult(f.name, "ingested", stored.get(key, doc_id)), key,
                                    original=self.originals.stage(data, *key)))
            else:
                s = self._stage(f, data, doc_id)
                s.doc.content, s.doc.parsed_as = key
                parsed[key] = s
                plans.append(_Named(s.result, key, s, self.originals.stage(data, *key)))
            batch[f.name] = key

        for_each_file(files, report, plan, progress)
        return plans

    @staticmethod
    def _commit_name(w: Writer, n: _Named) -> None:
        """Inside the write transaction: store the parse if no one has, then point the name at it."""
        r = n.result
        doc_id = w.document_with(*n.key)
        if doc_id is None and n.staged is None:
            r.status, r.reason = "skipped", "a document with the same content was deleted meanwhile; try again"
            return
        if doc_id is None:
            assert n.staged is not None
            n.staged.doc.ingested_at = now_iso()
            w.add_document(n.staged.doc, n.staged.chunks)
            doc_id = n.staged.doc.id
        else:
            r.units = r.chunks = 0  # stored before: by an earlier file of this batch, or a concurrent writer
        if w.document_named(r.name) == doc_id:
            r.status = "unchanged"
        else:
            others = w.names_of(doc_id)
            old = w.name_document(r.name, doc_id)
            if old is not None:
                r.status = "replaced"
                r.replaced.append(old)
            if others:
                r.same_as = others[0]
        r.document_id = doc_id

    def _embed(self, staged: list[_Staged], progress: Progress | None) -> int:
        todo: dict[str, list[ChunkRow]] = {}
        for s in staged:
            for c in s.chunks:
                if c.contained_in is None:
                    todo.setdefault(c.embed_hash, []).append(c)
        cached = self.library.cached_embeddings(list(todo))
        for h, (blob, tokens) in cached.items():
            for c in todo.pop(h, []):
                c.embedding = np.frombuffer(blob, dtype=np.float32)
                c.tokens = tokens
        self._reuse_near_duplicates(todo)
        hashes = sorted(todo, key=lambda h: len(todo[h][0].embed_text))  # similar lengths share a batch
        texts = [todo[h][0].embed_text for h in hashes]
        step = max(self.batch_size * 8, 1)
        for i in range(0, len(texts), step):
            part = texts[i : i + step]
            vecs, token_vecs = self.embedder.encode_with_tokens(part, batch_size=self.batch_size)
            packed: list[bytes | None] = ([None] * len(part) if token_vecs is None
                                          else [self.pack_tokens(t) for t in token_vecs])
            for h, v, t in zip(hashes[i : i + step], vecs, packed, strict=True):
                for c in todo[h]:
                    c.embedding = v
                    c.tokens = t
            if progress:
                progress("embed", min(i + step, len(texts)), len(texts))
        for model, encoder in self.dense_encoders.items():
            self._embed_with(model, encoder, staged, progress)
        return len(texts)

    def _embed_with(self, model: str, encoder: PassageEncoder, staged: list[_Staged],
                    progress: Progress | None) -> None:
        """Another dense model's vector of every embedded chunk: stored ones by embed-text hash, the rest encoded."""
        todo: dict[str, list[ChunkRow]] = {}
        for s in staged:
            for c in s.chunks:
                if c.contained_in is None:
                    todo.setdefault(c.embed_hash, []).append(c)
        for h, blob in self.library.cached_vectors(model, list(todo)).items():
            for c in todo.pop(h, []):
                c.vectors[model] = np.frombuffer(blob, dtype=np.float32)
        hashes = sorted(todo, key=lambda h: len(todo[h][0].embed_text))
        texts = [todo[h][0].embed_text for h in hashes]
        step = max(self.batch_size * 8, 1)
        for i in range(0, len(texts), step):
            vecs = encoder.encode(texts[i : i + step], batch_size=self.batch_size)
            for h, v in zip(hashes[i : i + step], vecs, strict=True):
                for c in todo[h]:
                    c.vectors[model] = v
            if progress:
                progress(model, min(i + step, len(texts)), len(texts))

    def _reuse_near_duplicates(self, todo: dict[str, list[ChunkRow]]) -> None:
        """A chunk whose words nearly equal those of another (the same slide exported to PDF and to PPTX) gets
        that chunk's vector instead of a fresh encode: the two collapse into one search result anyway, and
        encoding is nearly all of the ingest time. Word-set Jaccard >= REUSE_JACCARD, 8+ distinct words."""
        if not todo:
            return
        reps = sorted(todo, key=lambda h: -len(todo[h][0].text))  # longest first: it becomes the one encoded
        stored = self.library.embedded_texts()
        bags = word_bags([todo[h][0].text for h in reps] + [t for _, t, _ in stored])
        twins = NearDuplicates(len(bags))
        link_near_duplicates(bags, twins.link, keep=lambda a, b: numbers_agree(bags[a], bags[b]),
                             threshold=REUSE_JACCARD)
        old_first = list(range(len(reps), len(bags))) + list(range(len(reps)))  # a stored vector, else the longest
        groups = [g for g in twins.groups(old_first) if any(m < len(reps) for m in g[1:])]
        tokens_of = self.library.chunk_tokens([stored[g[0] - len(reps)][0] for g in groups if g[0] >= len(reps)])
        for members in groups:
            head, new = members[0], [m for m in members[1:] if m < len(reps)]
            if head >= len(reps):  # a stored twin already has a vector
                twin_id, _, blob = stored[head - len(reps)]
                vec, tokens = np.frombuffer(blob, dtype=np.float32), tokens_of.get(twin_id)
                for m in new:
                    for c in todo.pop(reps[m]):
                        c.embedding, c.tokens = vec, tokens
            else:  # all new: encoded once, with the longest
                for m in new:
                    todo[reps[head]].extend(todo.pop(reps[m]))

    def delete(self, doc_id: str) -> bool:
        with self.library.writer() as w:
            w.on_after_commit(lambda: self.originals.committed(w.stored_keys()))  # its original, if unused now
            return w.delete_document(doc_id)
