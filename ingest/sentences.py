"""Every sentence splitter of the project, side by side: each reader needs a slightly different cut, and keeping
them here makes the differences visible (each was chosen by measurement where it mattered; see the users).

- PLAIN: any ".", "!" or "?" then space. Matching an LLM's sentence to its source (prompting, the h2oGPTe chat).
- STARTS: the next sentence starts like one (capital, digit, quote, bracket, "$" or "\\"), so "e.g. the" and
  "Fig. 3a" stay whole. Answer sentences of the extractive answerer.
- CLAUSES: STARTS, plus ";" and ":" as ends. Chunk boundaries: a long enumeration splits at its clauses.
- LINES: a line break, or an end mark before anything but a lower-case word. The units an LLM answer is
  attributed by (a bullet list is one claim a line).
"""

from __future__ import annotations

import re

PLAIN = re.compile(r"(?<=[.!?])\s+")
STARTS = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9$\\])")
CLAUSES = re.compile(r"(?<=[.!?;:])\s+(?=[\"'(\[A-Z0-9$\\])")
LINES = re.compile(r"\n+|(?<=[.!?])[ \t]+(?=[^a-z\s])")
