"""An AskResult as one Markdown message for chat clients (the OpenAI-compatible API, the MCP `ask` tool): the
answer with its `[n]` markers, then the list of the sources they name, so a client that shows only text (Open
WebUI, Claude Desktop) still shows where each sentence comes from."""

from __future__ import annotations

import re

from app.qa.types import AskResult, Source
from ingest.units import location_label

SOURCES_HEADING = "**Sources**"
CLOSEST_HEADING = "**Closest passages**"  # after the refusal, which says they are listed
# Characters that change inline rendering mid-line (emphasis, code, links, HTML, strikethrough); "#", ">", "+"
# only act at a line's start, which a label never is.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<~])")


def markdown_escape(text: str) -> str:
    """Text shown literally by a Markdown renderer (document names are file names: `*` and `_` are common)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def source_label(source: Source) -> str:
    """`03-lstm-and-gru.pptx, slide 3` (document name, then slide, page or section)."""
    return f"{markdown_escape(source.document.name)}, {markdown_escape(location_label(source.location))}"


def sources_markdown(result: AskResult) -> str:
    """The bulleted source list: for an answer, each cited source under its marker (`- [2] notes.md, section:
    LSTM`: a `[n]` without a link definition stays text; bullets, because a Markdown renderer renumbers an
    ordered list 1, 3 as 1, 2); for a refusal, the closest passages, each place once. Empty when there are none."""
    if result.answer.grounded:
        cited = sorted({c.n for c in result.answer.citations if 0 < c.n <= len(result.sources)})
        lines = [f"- [{n}] {source_label(result.sources[n - 1])}" for n in cited]
        heading = SOURCES_HEADING
    else:
        lines = list(dict.fromkeys(f"- {source_label(s)}" for s in result.sources))  # two chunks, one place
        heading = CLOSEST_HEADING
    return "\n".join([heading, *lines]) if lines else ""


def reply_markdown(result: AskResult) -> str:
    """The answer text (markers as the service wrote them) and, after a blank line, its sources."""
    sources = sources_markdown(result)
    return f"{result.answer.text}\n\n{sources}" if sources else result.answer.text
