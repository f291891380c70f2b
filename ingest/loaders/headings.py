"""The heading path of a sectioned document (Markdown, HTML, DOCX): the headings above the current line,
outermost first; a unit's location is that path ("LSTM > Forget gate")."""

from __future__ import annotations

from ingest.units import Unit


class HeadingPath:
    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> None:
        """A heading closes every open one at its level or deeper."""
        self._stack = [p for p in self._stack if p[0] < level] + [(level, title)]

    def clear(self) -> None:
        self._stack = []

    @property
    def titles(self) -> list[str]:
        return [t for _, t in self._stack]

    def unit(self, text: str, fallback: str) -> Unit:
        """`text` as a unit of the current section (named `fallback` above the first heading)."""
        titles = self.titles
        return Unit(text=text, location={"section": " > ".join(titles) or fallback},
                    title=titles[-1] if titles else "")
