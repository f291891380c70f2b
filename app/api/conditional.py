"""Conditional requests (RFC 9110 section 13): the one precondition the API answers, If-None-Match."""

from __future__ import annotations

import re
from collections.abc import Sequence

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, where etagc may be a comma: a list is read tag by tag, not split
# on commas. Empty list elements are skipped (RFC 9110 5.6.1).
ENTITY_TAG = re.compile(r'(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
SEPARATORS = re.compile(r"[\s,]*")


def none_match(fields: Sequence[str], etag: str) -> bool:
    """Whether the If-None-Match fields of a request (several fields are one comma-joined list) match the current
    representation's `etag`, so the answer is 304 Not Modified.

    RFC 9110 13.1.2: `*` matches any current representation; otherwise the field is a list of entity-tags, each
    compared with the weak comparison (8.8.3.2: `W/"x"` equals `"x"`). A field that is not a valid list matches
    nothing (a 200 is always a safe answer). Before, only the exact strong tag did: a browser or proxy sending
    the weak `W/"..."` it keeps, or several tags, got the whole PNG again."""
    header = ", ".join(fields).strip()
    if header == "*":
        return True
    ours = etag.removeprefix("W/")
    found = False
    pos = SEPARATORS.match(header).end()  # type: ignore[union-attr]  # matches the empty string at least
    while pos < len(header):
        tag = ENTITY_TAG.match(header, pos)
        if tag is None:
            return False
        found |= tag.group(1) == ours
        pos = SEPARATORS.match(header, tag.end()).end()  # type: ignore[union-attr]
    return found
