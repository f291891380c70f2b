"""Units -> chunks that fit the embedder's token window, split at paragraph/line/sentence boundaries.

A chunk's size is what the model reads of it (its `prose_for_embedding`: long code blocks cut to their first
lines), counted with the model's own tokenizer, and at most `max_chars` characters of shown text, so results
stay as long as a 1000-character splitter's. WordPiece splits on whitespace first, so the count of "a\nb" is
count(a) + count(b): pieces are counted once and summed.

Linear in the input: only texts that can fit a chunk (at most max_chars characters) are ever tokenized, in
batches of COUNT_BATCH; a longer text is sized by its characters alone, which already exceeds every budget.
Tokenizing whole units, and then every word of a 10 MB one-line page in one batch, took minutes and gigabytes
(issue 10: a 50 MiB text, 441 s and 6.9 GB); every text is now tokenized at most once per level of splitting
(block, line, sentence, word), so the tokenizer reads each character at most four or five times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from ingest.errors import TooComplex
from ingest.sentences import CLAUSES
from ingest.units import Chunk, ParsedDocument, Unit

TokenCounter = Callable[[Sequence[str]], list[int]]

_WORD = re.compile(r"\w+", re.U)
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
COUNT_BATCH = 1024
"""Texts per tokenizer call: 1,024 texts of at most ~1,000 characters keep each call's encodings to a few MB."""


def blocks_of(text: str) -> list[str]:
    """Paragraphs, with fenced code and $$ math kept whole, even across blank lines."""
    blocks: list[str] = []
    cur: list[str] = []
    in_fence = False
    in_math = False
    for line in text.split("\n"):
        fence = bool(_FENCE.match(line))
        math = line.strip().startswith("$$") and not (line.strip().endswith("$$") and len(line.strip()) > 2)
        if in_fence or in_math:
            cur.append(line)
            if (in_fence and fence) or (in_math and line.strip().endswith("$$")):
                in_fence = in_math = False
                blocks.append("\n".join(cur))
                cur = []
            continue
        if fence or math:
            if cur:
                blocks.append("\n".join(cur))
            cur = [line]
            in_fence, in_math = fence, math
            continue
        if not line.strip():
            if cur:
                blocks.append("\n".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        blocks.append("\n".join(cur))
    return [b for b in blocks if b.strip()]


CODE_LINES = 4
_CODE_BLOCK = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M)


def prose_for_embedding(text: str, code_lines: int = CODE_LINES) -> str:
    """Long code blocks keep only their first lines in the dense vector; keyword search still sees all the code.

    Code is 14% of the shared corpus's tokens (d2l ships each listing in four frameworks), questions are asked
    in prose, and encoding is nearly all of the ingest time.
    """

    def head(m: re.Match[str]) -> str:
        lines = [ln for ln in m.group(2).split("\n") if ln.strip() and not ln.strip().startswith("%")]
        return "\n".join(["```", *lines[:code_lines], "```"])

    return _CODE_BLOCK.sub(head, text)


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


class Chunker:
    """Pack the blocks of each unit into chunks of at most `max_tokens` (context header included)."""

    def __init__(self, count_tokens: TokenCounter, max_tokens: int = 254, overlap_tokens: int = 32,
                 min_words: int = 4, max_chars: int = 1000) -> None:
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.max_chars = max_chars
        self.overlap_tokens = overlap_tokens
        self.min_words = min_words

    def header(self, doc: ParsedDocument, unit: Unit) -> str:
        """Document title, then the section path (or the slide/page title)."""
        section = unit.location.get("section") if "section" in unit.location else unit.title
        parts = [doc.title]
        if section and section != doc.title:
            parts.append(str(section))
        return " > ".join(parts)[:300]

    def count(self, texts: Sequence[str]) -> list[int]:
        """Size in tokens of the model's view of each text, or of its characters at max_chars per chunk.

        Counting only what the embedding reads lets a chunk hold a whole code listing with its prose; the
        character side keeps every chunk under about max_chars (dev set: recall@5 0.84 -> 0.85, docs/retrieval.md).
        """
        per_char = self.max_tokens / self.max_chars
        out = [math.ceil(len(t) * per_char) for t in texts]
        short = [i for i, n in enumerate(out) if n <= self.max_tokens]  # the rest can fit no budget anyway
        for start in range(0, len(short), COUNT_BATCH):
            idx = short[start : start + COUNT_BATCH]
            for i, n in zip(idx, self.count_tokens([prose_for_embedding(texts[i]) for i in idx]), strict=True):
                out[i] = max(out[i], n)
        return out

    def _count_headers(self, headers: list[str]) -> list[int]:
        out: list[int] = []
        for start in range(0, len(headers), COUNT_BATCH):
            out.extend(self.count_tokens(headers[start : start + COUNT_BATCH]))
        return out

    def chunk_document(self, doc: ParsedDocument, max_chunks: int | None = None) -> list[Chunk]:
        """The document's chunks; TooComplex as soon as there would be more than `max_chunks`."""
        chunks: list[Chunk] = []
        units = [u for u in doc.units if word_count(u.text) - word_count(u.title) >= self.min_words]
        headers = [self.header(doc, u) for u in units]  # title-only and near-empty units are dropped above
        counts = self._count_headers(headers) + self.count([u.text for u in units])  # most units fit whole
        for i, (unit, header) in enumerate(zip(units, headers, strict=True)):
            budget = max(self.max_tokens - counts[i], 64)
            fits = counts[len(units) + i] <= budget
            for piece in (["\n\n".join(blocks_of(unit.text))] if fits else self.split(unit.text, budget)):
                chunks.append(Chunk(text=piece, embed_text=f"{header}\n{prose_for_embedding(piece)}",
                                    location=dict(unit.location),
                                    order=len(chunks), title=unit.title))
            if max_chunks is not None and len(chunks) > max_chunks:
                raise TooComplex(f"the document makes more than {max_chunks:,} passages, over the limit of "
                                 f"{max_chunks:,} per document (LECTURE_QA_MAX_PASSAGES); split it into smaller "
                                 "files")
        return chunks

    def split(self, text: str, budget: int) -> list[str]:
        pieces = self._pieces(blocks_of(text), budget)
        counts = self.count(pieces)
        if sum(counts) <= budget:
            return ["\n\n".join(pieces)] if pieces else []
        out: list[str] = []
        cur: list[tuple[str, int]] = []
        for piece, n in zip(pieces, counts, strict=True):
            if cur and sum(c for _, c in cur) + n > budget:
                out.append(_join(cur))
                carry = self._overlap(cur[-1][0])
                cur = carry if carry and carry[0][1] + n <= budget else []
            cur.append((piece, n))
        if cur:
            out.append(_join(cur))
        return out

    def _overlap(self, piece: str) -> list[tuple[str, int]]:
        """The trailing sentences of `piece` that fit in overlap_tokens, to open the next chunk with context."""
        if _FENCE.match(piece) or piece.lstrip().startswith("$$"):
            return []
        sentences = [x for x in CLAUSES.split(piece.replace("\n", " ")) if x.strip()]
        counts = self.count(sentences)
        taken: list[str] = []
        total = 0
        for sent, c in zip(reversed(sentences), reversed(counts), strict=True):
            if total + c > self.overlap_tokens:
                break
            taken.insert(0, sent)
            total += c
        return [(" ".join(taken), total)] if taken else []

    def _pieces(self, blocks: list[str], budget: int) -> list[str]:
        """Break blocks until every piece fits: block -> lines -> sentences -> word windows."""
        out: list[str] = []
        counts = self.count(blocks) if blocks else []
        for block, n in zip(blocks, counts, strict=True):
            if n <= budget:
                out.append(block)
                continue
            lines = block.split("\n")
            parts, sep = (lines, "\n") if len(lines) > 1 else (CLAUSES.split(block), " ")
            if len(parts) > 1:
                out.extend(self._pieces(_regroup(parts, sep, self.count, budget), budget))
                continue
            out.extend(self._word_windows(block, budget))
        return out

    def _word_windows(self, text: str, budget: int) -> list[str]:
        words = text.split(" ")
        counts = self.count(words)
        out: list[str] = []
        cur: list[str] = []
        total = chars = 0
        for w, n in zip(words, counts, strict=True):
            # the character guard only ever trips on runs of spaces (empty words count 0 tokens): real words
            # under the token budget stay far below twice max_chars
            if cur and (total + n > budget or chars + len(w) + 1 > 2 * self.max_chars):
                out.append(" ".join(cur))
                cur, total, chars = [], 0, 0
            if n > budget:  # one absurd "word" (a base64 blob): cut it by characters
                step = max(budget, 16)
                out.extend(w[i : i + step] for i in range(0, len(w), step))
                continue
            cur.append(w)
            total += n
            chars += len(w) + 1
        if cur:
            out.append(" ".join(cur))
        return [piece for piece in out if piece.strip()]


def _regroup(parts: list[str], sep: str, count: TokenCounter, budget: int) -> list[str]:
    """Re-join lines/sentences greedily into groups under budget, so pieces stay as large as allowed."""
    counts = count(parts)
    groups: list[str] = []
    cur: list[str] = []
    total = 0
    for p, n in zip(parts, counts, strict=True):
        if cur and total + n > budget:
            groups.append(sep.join(cur))
            cur, total = [], 0
        cur.append(p)
        total += n
    if cur:
        groups.append(sep.join(cur))
    # a single group equal to the input would recurse forever: fall back to the raw parts
    return parts if len(groups) == 1 and len(parts) > 1 else groups


def _join(items: list[tuple[str, int]]) -> str:
    return "\n\n".join(p for p, _ in items)
