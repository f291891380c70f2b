"""Document names as shown to people: one normalisation for uploads (`safe_name`) and the CLI (`collect_paths`).

A name is a relative path ("week2/slides.pdf"): it identifies a document in the library, so two files in two
folders never share one. Normalised: NFC; backslashes become "/"; every whitespace run (newlines and tabs
included) becomes one space; control and format characters (Unicode categories Cc and Cf: NUL, ESC, the bidi
overrides U+202A..U+202E and isolates U+2066..U+2069, zero-width spaces and joiners, BOM) are dropped, so a
name cannot break a listing line or display as something it is not; empty, "." and ".." components are
dropped (no way out of the library's name space, no leading "/"), as are leading dots (no hidden names) and
a leading Windows drive ("C:").
Each component is cut to MAX_COMPONENT characters keeping its extension (the type is read from the
extension), and the whole name to MAX_NAME characters by dropping leading folders.
"""

from __future__ import annotations

import re
import unicodedata

MAX_COMPONENT = 200
MAX_NAME = 1000
MAX_SUFFIX = 16  # a longer ".something" is part of the stem, not a file type
DRIVE = re.compile(r"[A-Za-z]:")


def _clean(part: str) -> str:
    part = "".join(" " if ch.isspace() else ch for ch in part)
    part = "".join(ch for ch in part if unicodedata.category(ch) not in ("Cc", "Cf"))
    return " ".join(part.split()).lstrip(".").strip()


def _cut(part: str, limit: int) -> str:
    if len(part) <= limit:
        return part
    stem, dot, suffix = part.rpartition(".")
    if not dot or not stem or len(suffix) + 1 > MAX_SUFFIX:
        return part[:limit].rstrip()
    return part[: limit - len(suffix) - 1].rstrip() + "." + suffix


def display_name(raw: str) -> str:
    """The normalised relative path; "" when nothing printable is left."""
    text = unicodedata.normalize("NFC", raw.replace("\\", "/"))
    parts = [_cut(part, MAX_COMPONENT) for part in map(_clean, text.split("/")) if part]  # "..", "." -> ""
    if len(parts) > 1 and DRIVE.fullmatch(parts[0]):
        parts.pop(0)  # C:\Users\... as some browsers send it
    while len(parts) > 1 and len("/".join(parts)) > MAX_NAME:
        parts.pop(0)
    return "/".join(parts)
