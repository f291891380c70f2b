"""`lecture-qa reindex`: re-embed a library for another `LECTURE_QA_DENSE_MODEL` choice, in one commit.

A library records the dense-model choice it was embedded for (`meta.dense_model`). A process configured for
another choice does not open it (ingest.library.Library.ensure_dense_model / PgLibrary's: a clear error naming
this command), and no commit can leave a passage without a vector of a model the choice needs (Writer.check_vectors),
so a search never ranks passages with a mix of models' vectors. Re-embedding is not done at `serve` or `ingest`
start: bge-small encodes about 37 passages a second on 2 cores, so a library of 100,000 passages takes most of an
hour, which a server (or several replicas at once) should not spend silently before it is ready.

The passages lacking a vector are encoded first, without the library lock (searches and ingests go on with the
old choice); then one writer transaction stores them, encodes what was added meanwhile, drops the vectors of
models the new choice no longer needs, and records the choice. A crash before the commit leaves the library as
it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.embedding import PassageEncoder, extra_models

Progress = Callable[[str, int, int], None]


@dataclass
class ReindexReport:
    before: str
    after: str
    encoded: dict[str, int]  # model -> chunks given a vector (texts that occur twice are encoded once)
    dropped: list[str]


def _encode(encoder: PassageEncoder, todo: list[tuple[str, str]], model: str, progress: Progress | None,
            batch: int = 64) -> dict[str, np.ndarray]:
    # one encode per distinct text; similar lengths share a batch, ties by text, so two stores holding the same
    # chunks get the same batches (the int8 graph quantises its activations per batch: a vector depends slightly
    # on its batch-mates)
    by_text: dict[str, list[str]] = {}
    for cid, text in todo:
        by_text.setdefault(text, []).append(cid)
    texts = sorted(by_text, key=lambda t: (len(t), t))
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        vecs = encoder.encode(part, batch_size=16)
        for text, v in zip(part, vecs, strict=True):
            out.update((cid, v) for cid in by_text[text])
        if progress:
            progress(model, min(start + batch, len(texts)), len(texts))
    if progress and not texts:
        progress(model, 0, 0)
    return out


def reindex(library: Any, choice: str, encoders: Mapping[str, PassageEncoder],
            progress: Progress | None = None) -> ReindexReport:
    """Re-embed `library` (ingest.library.Library or ingest.pg_library.PgLibrary) for `choice`."""
    need = extra_models(choice)
    before = library.dense_model()
    missing = [m for m in need if m not in encoders]
    if missing:
        raise ValueError(f"no encoder for {', '.join(missing)}")
    computed = {m: _encode(encoders[m], library.missing_vectors(m), m, progress) for m in need}
    encoded = {m: len(v) for m, v in computed.items()}
    dropped = [m for m in extra_models(before) if m not in need]
    with library.writer() as w:
        for model in dropped:
            w.drop_vectors(model)
        for model in need:
            now_missing = w.missing_vectors(model)  # the rows as this transaction sees them
            ready = [(cid, computed[model][cid]) for cid, _ in now_missing if cid in computed[model]]
            late = [(cid, text) for cid, text in now_missing if cid not in computed[model]]
            if late:  # ingested while the rest was encoded
                extra = _encode(encoders[model], late, model, None)
                ready.extend(extra.items())
                encoded[model] += len(extra)
            if ready:
                w.set_vectors(model, ready)
        if before != choice or dropped or any(encoded.values()):
            w.set_dense_model(choice)
    return ReindexReport(before, choice, encoded, dropped)
