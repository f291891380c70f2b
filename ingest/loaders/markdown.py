"""Markdown -> one unit per heading section (front matter stripped; code fences and LaTeX kept intact).

Cleaning is linear in the text: tags, links and images are matched with possessive runs that stop at the next
opening bracket, comments and dropped blocks are found with one forward search per end marker, and heading lines
are at most 300 characters. The unbounded `.*?` / `[^]]*` patterns before rescanned the rest of the text from
every unclosed `<!--`, `<script` or `[`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ingest.loaders.headings import HeadingPath
from ingest.loaders.sniff import decode_text
from ingest.units import ParsedDocument, Unit

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(---|\.\.\.)[ \t]*\n", re.S)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_MAX_HEADING = 300  # a longer "# ..." line is prose (and the lazy pattern above is quadratic in line length)
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_DROP_OPEN = re.compile(r"<(script|style|video|audio|iframe|svg)\b", re.I)
# Possessive runs that stop at the next opening bracket: the scans from two openers never overlap.
_TAG = re.compile(r"</?[A-Za-z][^<>\n]*+>")
_IMAGE = re.compile(r"!\[([^\[\]]*+)\]\((?>[^()]++|\([^()]*+\))*+\)")
_LINK = re.compile(r"\[([^\[\]]++)\]\((?>[^()]++|\([^()]*+\))*+\)")
_D2L_LINE = re.compile(r"^[ \t]*(:(label|width|begin_tab|end_tab)|%%tab|#@(tab|save)).*$", re.M)
_D2L_ROLE = re.compile(r":(cite|citet|citep|ref):`[^`]*`")
_D2L_REF = re.compile(r":(numref|eqref):`(\w+?)_[^`]*`")
_REF_WORDS = {"fig": "the figure", "sec": "the section", "subsec": "the section", "chap": "the chapter",
              "tab": "the table", "eq": "the equation"}
_D2L_EMPHASIS = re.compile(r"\[\*\*|\*\*\]|\(\*\*|\*\*\)")  # d2l's [**key idea**] / (**key idea**)


_BLOCK_START = re.compile(r"^\s*([-*+>|#]|\d+[.)]\s|\$\$|:|\\\[|</?[a-z])")


def unwrap(text: str) -> str:
    """Join hard-wrapped lines of a paragraph (d2l wraps at ~60 chars); lists, tables and math stay as they are."""
    out: list[str] = []
    for line in text.split("\n"):
        if (out and out[-1].strip() and line.strip() and not _BLOCK_START.match(line)
                and not out[-1].rstrip().endswith(("$$", "|", "  ")) and not out[-1].lstrip().startswith(("#", "|"))):
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


def _drop_between(text: str, start: re.Pattern[str], end_of: Callable[[re.Match[str]], str]) -> str:
    """Remove each span from a `start` match to its end marker, in one left-to-right pass; an unclosed start
    stays (as the non-greedy regex it replaces left it). A marker once missing is never searched for again:
    that is what keeps a text full of unclosed `<!--` linear."""
    out: list[str] = []
    pos = 0
    missing: set[str] = set()
    while True:
        m = start.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return "".join(out)
        marker = end_of(m)
        found = None if marker in missing else re.compile(re.escape(marker), re.I).search(text, m.end())
        end = found.start() if found else -1
        if end < 0:
            missing.add(marker)
            out.append(text[pos : m.end()])
            pos = m.end()
            continue
        out.append(text[pos : m.start()])
        pos = end + len(marker)


_COMMENT_OPEN = re.compile(r"<!--")


def clean_prose(text: str) -> str:
    """Clean Markdown prose (never code): drop embedded media/HTML tags and link targets, keep the words."""
    text = _drop_between(text, _COMMENT_OPEN, lambda m: "-->")
    text = _drop_between(text, _DROP_OPEN, lambda m: f"</{m.group(1).lower()}>")
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _TAG.sub("", text)
    text = _D2L_LINE.sub("", text)
    text = _D2L_ROLE.sub("", text)
    text = _D2L_REF.sub(lambda m: _REF_WORDS.get(m.group(2), "the equation" if m.group(1) == "eqref" else "above"),
                        text)
    text = _D2L_EMPHASIS.sub("", text)
    text = text.replace("&nbsp;", " ").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = "\n".join(line.rstrip(" \t") for line in text.split("\n"))  # r"[ \t]+\n" is quadratic in a run of blanks
    return unwrap(re.sub(r"\n{3,}", "\n\n", text).strip())


def split_sections(text: str) -> list[tuple[list[str], str]]:
    """Split at ATX headings outside code fences: [(heading path, body including its heading line)]."""
    sections: list[tuple[list[str], str]] = []
    path = HeadingPath()
    body: list[str] = []
    in_fence = False
    fence = ""

    def flush() -> None:
        sections.append((path.titles, "\n".join(body)))
        body.clear()

    for line in text.split("\n"):
        m_f = _FENCE.match(line)
        if m_f:
            if not in_fence:
                in_fence, fence = True, m_f.group(1)
            elif m_f.group(1) == fence:
                in_fence = False
            body.append(line)
            continue
        m_h = None if in_fence or len(line) > _MAX_HEADING else _HEADING.match(line)
        if m_h:
            flush()
            level, title = len(m_h.group(1)), clean_prose(m_h.group(2)).strip("*_ ")
            path.enter(level, title)
            body.append(title)
            continue
        body.append(line)
    flush()
    return sections


def clean_outside_fences(text: str) -> str:
    out: list[str] = []
    prose: list[str] = []
    in_fence, fence = False, ""
    for line in text.split("\n"):
        m_f = _FENCE.match(line)
        if m_f and not in_fence:
            out.append(clean_prose("\n".join(prose)))
            prose = []
            in_fence, fence = True, m_f.group(1)
            out.append(line)
        elif in_fence:
            out.append(line)
            if m_f and m_f.group(1) == fence:
                in_fence = False
        else:
            prose.append(line)
    out.append(clean_prose("\n".join(prose)))
    return "\n".join(s for s in out if s is not None).strip()


def load_markdown(data: bytes, fallback_title: str) -> ParsedDocument:
    return parse_markdown(decode_text(data), fallback_title)


_ATX_BLOCK = re.compile(r"(?:\A|\n\n)#{1,6}[ \t]+\S[^\n]{0,200}(?=\n\n|\n?\Z)")
_MARKDOWN_SIGNS = re.compile(r"^(```|~~~|[-*+][ \t]+\S|\d{1,3}[.)][ \t]+\S|>[ \t])|\*\*\S|\]\(", re.M)


def looks_like_markdown(text: str) -> bool:
    """Markdown saved as .txt: at least two ATX headings standing as blocks of their own (a blank line, or the
    start or end of the text, on both sides), and a third one or other Markdown (fences, list items, quotes,
    bold, links). A code listing's "# comment" lines sit right above their code, so they do not count. Looks at
    the first 200,000 characters."""
    head = text[:200_000].replace("\r\n", "\n")
    headings = len(_ATX_BLOCK.findall(head))
    if headings < 2:
        return False
    return headings >= 3 or _MARKDOWN_SIGNS.search(head) is not None


def parse_markdown(text: str, fallback_title: str) -> ParsedDocument:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    title = ""
    m = _FRONT_MATTER.match(text)
    if m:
        t = re.search(r"^title:\s*['\"]?(.+?)['\"]?\s*$", m.group(1), re.M)
        title = t.group(1).strip() if t else ""
        text = text[m.end():]
    units: list[Unit] = []
    for path, body in split_sections(text):
        cleaned = clean_outside_fences(body)
        if not title and path:
            title = path[0]
        if not cleaned.strip():
            continue
        section = " > ".join(path) if path else (title or fallback_title)
        units.append(Unit(text=cleaned, location={"section": section}, title=path[-1] if path else ""))
    return ParsedDocument(title=title or fallback_title, kind="markdown", units=units, unit_label="sections")
