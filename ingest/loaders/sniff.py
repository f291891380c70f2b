"""Content checks before parsing: is the file what its name says, and can its text be decoded?"""

from __future__ import annotations

import codecs
import zipfile
from io import BytesIO

from ingest.errors import FileTooLarge, IngestError

_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")


def _looks_like_html(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return any(head.startswith(m) or m in head[:512] for m in _HTML_MARKERS)


def detect_kind(kind: str, data: bytes) -> None:
    """Raise IngestError when the bytes do not match the declared kind (a `.pdf` that is really HTML...)."""
    if kind == "pdf":
        if b"%PDF-" not in data[:1024]:
            what = "an HTML page" if _looks_like_html(data) else "not a PDF"
            raise IngestError(f"the file is named .pdf but its content is {what}")
    elif kind in ("pptx", "docx"):
        if not data.startswith(b"PK"):
            if data.startswith(b"\xd0\xcf\x11\xe0"):
                raise IngestError(
                    f"this is an old binary Office file (or an encrypted one), not .{kind}; save it as .{kind} first"
                )
            what = "an HTML page" if _looks_like_html(data) else "not a zip-based Office file"
            raise IngestError(f"the file is named .{kind} but its content is {what}")
    elif kind in ("markdown", "text", "html") and (data.startswith(b"%PDF-") or data.startswith(b"PK\x03\x04")):
        raise IngestError(f"the file is named as {kind} but its content is binary (a PDF or zip archive)")


def check_zip(data: bytes, *, max_unpacked_bytes: int, required: str) -> None:
    """Refuse zip bombs and broken archives before an Office library inflates them."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > max_unpacked_bytes:
                raise FileTooLarge(
                    f"the archive would unpack to {total // (1024 * 1024)} MiB, over the limit of "
                    f"{max_unpacked_bytes // (1024 * 1024)} MiB (zip bomb?)"
                )
            for i in infos:
                if i.compress_size and i.file_size / max(i.compress_size, 1) > 1000 and i.file_size > 10_000_000:
                    raise FileTooLarge(f"archive member {i.filename!r} has a suspicious compression ratio (zip bomb?)")
            names = {i.filename for i in infos}
            if required not in names:
                raise IngestError(f"the archive is not a valid Office document (no {required})")
            bad = zf.testzip()
            if bad is not None:
                raise IngestError(f"the archive is damaged (bad CRC in {bad!r})")
    except zipfile.BadZipFile as exc:
        raise IngestError(f"the file is truncated or not a valid zip archive ({exc})") from exc


def decode_text(data: bytes) -> str:
    """Decode text of unknown encoding: BOMs first, then UTF-8, then a statistical guess."""
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(enc, errors="replace")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        matches = list(from_bytes(data[:200_000]))
        encoding = matches[0].encoding if matches else "cp1252"
        if matches:  # among equally plausible guesses, prefer the most common Western encoding
            tied = [m.encoding for m in matches if m.chaos <= matches[0].chaos + 1e-9]
            encoding = "cp1252" if "cp1252" in tied else encoding
        try:
            text = data.decode(encoding, errors="replace")
        except LookupError:
            text = data.decode("cp1252", errors="replace")
    if "\x00" in text:
        if text.count("\x00") > len(text) // 20:
            raise IngestError("the file looks binary, not text")
        text = text.replace("\x00", "")
    return text
