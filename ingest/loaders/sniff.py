"""Content checks before parsing: is the file what its name says, and can its text be decoded?"""

from __future__ import annotations

import codecs
import unicodedata
import zipfile
from io import BytesIO

from ingest.errors import FileTooLarge, IngestError, NotText

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


_BOMS = (  # UTF-32 before UTF-16: the UTF-32-LE BOM (FF FE 00 00) starts with the UTF-16-LE one (FF FE)
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SAMPLE = 32_768
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\x0b\x0c\x1b")
_BINARY_SHARE = 0.03
"""Text in any encoding of the shared corpus has no control bytes (0 of 1.3 MB; a stray form feed or ANSI
escape is allowed); random bytes have 11% (27 of 256 byte values), decoded random bytes 12-60% odd characters.
3% leaves room for a text file with a little binary junk and none for a binary file."""


def _samples(data: bytes | str, size: int = _SAMPLE) -> list:
    """The start, middle and end of `data`: binary appended to text, or text before binary, both show."""
    if len(data) <= 3 * size:
        return [data]
    mid = len(data) // 2
    return [data[:size], data[mid : mid + size], data[-size:]]


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 text without a BOM: mostly-ASCII text has a NUL in every other byte, on one side only."""
    head = data[:_SAMPLE] if len(data) % 2 == 0 else data[: min(len(data) - 1, _SAMPLE)]
    if len(head) < 8:
        return None
    even, odd = head[0::2].count(0) / (len(head) / 2), head[1::2].count(0) / (len(head) / 2)
    if odd > 0.3 and even < 0.01:
        return "utf-16-le"
    if even > 0.3 and odd < 0.01:
        return "utf-16-be"
    return None


def looks_binary(data: bytes) -> bool:
    """Control bytes (not tab, newline, CR, form feed, ESC) in more than 3% of a sample of the raw bytes."""
    parts = _samples(data)
    total = sum(len(p) for p in parts)
    controls = sum(len(p) - len(p.translate(None, _CONTROL_BYTES)) for p in parts)
    return total > 0 and controls / total > _BINARY_SHARE


def _odd_characters(text: str) -> float:
    """Share of characters no text contains: controls, replacement characters, unassigned, private use,
    surrogates (what a wrong guess at the encoding of binary data produces)."""
    parts = _samples(text)
    total = sum(len(p) for p in parts)
    odd = 0
    for part in parts:
        for ch in part:
            if ch in "\t\n\r\x0b\x0c\x1b":
                continue
            cat = unicodedata.category(ch)
            if cat in ("Cc", "Cn", "Co", "Cs") or ch == "\ufffd":
                odd += 1
    return odd / total if total else 0.0


def decode_text(data: bytes) -> str:
    """Decode text of unknown encoding: BOMs first, then UTF-16 without BOM, UTF-8, then a statistical guess.

    Raises NotText when the bytes (or the characters they decode to) look binary: random bytes named .md were
    once ingested as 4,426 chunks of noise."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            text = data.decode(enc, errors="replace")
            break
    else:
        utf16 = _utf16_without_bom(data)
        if utf16 is not None:
            text = data.decode(utf16, errors="replace")
        elif looks_binary(data):
            raise NotText("the file looks binary, not text")
        else:
            text = _decode_8bit(data)
    if _odd_characters(text) > _BINARY_SHARE:
        raise NotText("the file looks binary, not text")
    return text.replace("\x00", "")


def _decode_8bit(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        matches = list(from_bytes(data[:200_000]))
        encoding = matches[0].encoding if matches else "cp1252"
        if matches:  # among equally plausible guesses, prefer the most common Western encoding
            tied = [m.encoding for m in matches if m.chaos <= matches[0].chaos + 1e-9]
            encoding = "cp1252" if "cp1252" in tied else encoding
        try:
            return data.decode(encoding, errors="replace")
        except LookupError:
            return data.decode("cp1252", errors="replace")
