"""Chunks fit the model's window (counted with the real tokenizer), split at boundaries, skip empty slides."""

from __future__ import annotations

from ingest.chunking import Chunker, blocks_of
from ingest.units import ParsedDocument, Unit


def test_blocks_keep_code_fences_and_math_whole():
    text = "Intro para.\n\n```python\na = 1\n\nb = 2\n```\n\n$$\nx = y\n\nz\n$$\n\nOutro."
    assert blocks_of(text) == ["Intro para.", "```python\na = 1\n\nb = 2\n```", "$$\nx = y\n\nz\n$$", "Outro."]


def test_long_unit_splits_within_window_with_overlap(embedder):
    sentences = [f"Sentence number {i} explains how the recurrent weight matrix shapes gradient flow."
                 for i in range(120)]
    paragraphs = ["  ".join(sentences[i : i + 6]) for i in range(0, 120, 6)]
    doc = ParsedDocument("Vanishing gradients", "markdown", [Unit("\n\n".join(paragraphs), {"section": "Proof"})])
    chunker = Chunker(embedder.count_tokens, embedder.max_tokens)
    chunks = chunker.chunk_document(doc)
    assert len(chunks) > 3
    counts = embedder.count_tokens([c.embed_text for c in chunks])
    assert max(counts) + 2 <= 256  # [CLS] and [SEP] included: nothing is truncated by the model
    joined = "\n".join(c.text for c in chunks)
    for s in sentences:  # every sentence survives
        assert s in joined
    # each chunk opens with the last sentence of the one before it (overlap)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        last_sentence = prev.text.rsplit("  ", 1)[-1].split("\n")[-1]
        head = nxt.text.split("\n\n", 1)[0]
        assert last_sentence in head and len(head) < 300
    assert all(c.embed_text.startswith("Vanishing gradients > Proof\n") for c in chunks)
    assert [c.order for c in chunks] == list(range(len(chunks)))


def test_one_giant_sentence_is_split_not_truncated(embedder):
    words = " ".join(f"token{i}" for i in range(2000))
    doc = ParsedDocument("T", "text", [Unit(words, {"section": "T"})])
    chunks = Chunker(embedder.count_tokens, embedder.max_tokens).chunk_document(doc)
    assert max(embedder.count_tokens([c.embed_text for c in chunks])) <= embedder.max_tokens
    assert "token0 " in chunks[0].text and chunks[-1].text.endswith("token1999")


def test_title_only_slides_do_not_become_chunks(embedder):
    doc = ParsedDocument("Deck", "pptx", [
        Unit("Questions?", {"slide": 1}, title="Questions?"),
        Unit("LSTM gates\nThe forget gate erases parts of the cell state.", {"slide": 2}, title="LSTM gates"),
        Unit("Thank you", {"slide": 3}, title="Thank you"),
    ], unit_label="slides")
    chunks = Chunker(embedder.count_tokens, embedder.max_tokens).chunk_document(doc)
    assert [c.location for c in chunks] == [{"slide": 2}]
    assert chunks[0].embed_text.startswith("Deck > LSTM gates\n")


def test_chunks_are_sized_by_what_the_model_reads_and_capped_in_characters(embedder):
    listing = "\n".join(f"    hidden_{i} = torch.tanh(W_xh @ x_{i} + W_hh @ hidden_{i - 1} + b_h)" for i in range(1, 9))
    code = f"```python\n{listing}\n```"
    prose = "The loop below unrolls the recurrence by hand, one time step per line."
    unit_text = f"{prose}\n\n{code}\n\nEach step reuses the same weights."
    raw_tokens = embedder.count_tokens([unit_text])[0]
    chunker = Chunker(embedder.count_tokens, embedder.max_tokens)
    # the listing alone is more than the window's worth of raw tokens, but the model only reads its head
    doc = ParsedDocument("RNN code", "markdown", [Unit(unit_text, {"section": "Unrolling"})])
    cheap = Chunker(embedder.count_tokens, max_tokens=raw_tokens // 2 + 40, max_chars=10_000)
    assert raw_tokens > raw_tokens // 2 + 40
    assert [c.text for c in cheap.chunk_document(doc)] == [unit_text]  # one chunk, the listing kept whole

    sentences = [f"Step {i} multiplies the hidden state by the recurrent matrix once more." for i in range(60)]
    long_doc = ParsedDocument("Notes", "text", [Unit("\n\n".join(sentences), {"section": "Gradients"})])
    chunks = chunker.chunk_document(long_doc)
    assert len(chunks) > 3
    assert max(len(c.text) for c in chunks) <= 1000
    assert all(s in "\n".join(c.text for c in chunks) for s in sentences)
