"""Issue 11: questions that name their source, answers made only of answer sentences, the fitted refusal model,
and an eval that scores several sets at once."""

from __future__ import annotations

import json

import pytest

from app.qa.answer.answerability import Answerability, Signals
from app.qa.answer.extractive import ExtractiveAnswerer, quotable, sentences_of
from app.qa.evaluate import answer_defects, evaluate_sets
from app.qa.mentions import SourceNames
from app.qa.retrieve import Retriever
from app.qa.service import QAService
from app.qa.stores.local import LocalStore
from app.qa.types import DocumentRef, Source
from ingest.pipeline import SourceFile
from tests.conftest import SAMPLES

DOCS = [("a", "slides/harvard-cs109b-2021_lecture24_attention.pptx", "Lecture 24: Attention"),
        ("b", "slides/harvard-cs109b-2021_lecture24_attention.pdf", "Lecture 24"),
        ("c", "slides/harvard-cs109b-2021_lecture25_transformers.pdf", "Transformers"),
        ("d", "slides/tjuirlab_RNN.pptx", "PowerPoint"),
        ("e", "jalammar/2018-05-09-visualizing-seq2seq-models-with-attention.md", "Visualizing seq2seq"),
        ("f", "d2l/chapter_attention/attention-scoring-functions.md", "Attention Scoring Functions")]
ROWS = ["a", "b", "c", "d", "e", "f"] * 20  # 120 passages, 20 per document
TEXT = {"attention": range(120), "harvard": [0, 1, 2, 6, 7, 8], "scoring": [5, 11]}  # row numbers


def names() -> SourceNames:
    return SourceNames(DOCS, lambda term: TEXT.get(term, ()), ROWS, frozenset({"attention", "the", "slides"}))


@pytest.mark.parametrize(("question", "named"), [
    ("In the Harvard lecture 24 deck, what is attention?", {"a", "b"}),  # a numbered pair; PDF and PPTX tie
    ("According to Harvard's lecture 25, how expensive is BERT?", {"c"}),
    ("In the TJU slides, what is a recursive network?", {"d"}),  # part of a name's word, capitalised
    ("In Jay Alammar's seq2seq attention post, what does the decoder do?", {"e"}),
])
def test_questions_that_name_their_source(question, named):
    mention = names().find(question)
    assert mention is not None and set(mention.doc_ids) == named


@pytest.mark.parametrize("question", [
    "How does attention scoring work?",  # topic words, not a reference to a source
    "What does the tju module do?",  # lower case, and not before a word for a document
    "How does beam search's cost compare?",
])
def test_topic_words_name_no_source(question):
    assert names().find(question) is None


@pytest.fixture()
def sample_store(pipeline, library, embedder):
    assert pipeline.ingest([SourceFile(name=p.name, path=p) for p in sorted(SAMPLES.iterdir())]).error is None
    return LocalStore(library, embedder, pipeline, Retriever(library, embedder))


def test_a_named_deck_is_preferred_and_its_name_is_no_unknown_term(sample_store):
    docs = {d.name: d.id for d in sample_store.library.documents()}
    named = docs["05-training-rnns.docx"]
    question = "What do the ZQX slides say about recurrent networks?"

    def first_rank() -> int:
        ids = [s.document.id for s in sample_store.search(question, 10)]
        return ids.index(named) if named in ids else 99

    assert sample_store.unknown_terms(question) == ["zqx"]
    before = first_rank()
    sample_store.retriever.source_names(sample_store.library.snapshot()).names[named].add("zqx")  # its name now
    assert sample_store.unknown_terms(question) == []
    assert first_rank() <= 2 < before  # was 5th


def test_sentences_that_are_not_answers_are_never_quoted(embedder):
    text = ("Gradient clipping rescales the gradient when its norm exceeds a threshold, so one bad step cannot "
            "blow up the weights.\n"
            "How does the value of the threshold affect training time?\n"
            "Notes: Remind students of the homework on clipping thresholds.\n"
            "Source: 'On the difficulty of training recurrent neural networks', Pascanu et al.\n"
            "Clipping is usually applied to the global norm of all gradients, and\n"
            "Pascanu et al. proposed it for recurrent networks.\n"
            "The clipped gradient is computed as:\n"
            "$$g \\leftarrow \\min(1, \\theta / \\|g\\|) g$$")
    sents = sentences_of(text)
    assert "Clipping is usually applied to the global norm of all gradients, and Pascanu et al. proposed it for " \
           "recurrent networks." in sents  # a hard line wrap after "and" is one sentence
    assert any(s.startswith("The clipped gradient is computed as: $$g") for s in sents)  # the equation comes along
    assert not quotable("How does the value of the threshold affect training time?")
    assert not quotable("Notes: Remind students of the homework on clipping thresholds.")
    assert not quotable("Source: 'On the difficulty of training recurrent neural networks', Pascanu et al.")
    assert not quotable("BERT is trained on a lot of text data:")
    assert not quotable("Additive attention, introduced by Bahdanau, Cho and")
    src = Source("c1", text, 1.0, DocumentRef("d", "05-training.docx", "Training"), {"section": "Clipping"},
                 dense=0.7)
    answer = ExtractiveAnswerer(embedder).answer("How does gradient clipping work and how is it computed?", [src])
    assert answer.grounded
    assert answer_defects(answer.text) == []
    for bad in ("?", "Notes:", "Source:", "Remind"):
        assert bad not in answer.text


def test_answer_defects_flags_each_kind():
    assert answer_defects("A good sentence. [1] Another good one. [2]") == []
    kinds = [d.split(":")[0] for d in answer_defects(
        "Why is it slow? [1] Notes: remind them. [1] ## Summary of it [2] Introduced by Bahdanau, Cho and. [2] "
        "It is computed as: [3]")]
    assert kinds == ["question", "notes/source line", "heading", "cut", "cut"]


def test_answerability_refuses_unknown_terms_and_explains():
    strong = Signals(passage=0.8, sentence=0.85, term_share=0.8, rare_share=0.8, unknown=0, absent=0, lacking=0,
                     reader_passage=6.0, reader_sentence=5.0)
    weak = Signals(passage=0.2, sentence=0.25, term_share=0.0, rare_share=0.0, unknown=0, absent=3, lacking=1,
                   reader_passage=-10.0, reader_sentence=-11.0)
    for model in (Answerability.load(), Answerability.load(with_reader=False)):  # with and without the reader
        assert model.decide(strong)[0] and not model.decide(weak)[0]
        assert model.probability(strong) > model.probability(weak)
    model = Answerability.load()
    assert model.features == ["reader_passage", "reader_sentence"]
    unknown = Signals(**{**strong.__dict__, "unknown": 1})
    ok, why = model.decide(unknown)
    assert not ok and why.startswith("refuse") and "reader_passage 6.00" in why


def test_eval_scores_several_sets_with_kinds(sample_store, embedder, tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_text(json.dumps({"id": "a1", "question": "What is teacher forcing?", "kind": "factual",
                                 "answerable": True, "answer": "feeding the true previous token",
                                 "evidence": [{"doc": "x", "quote": "teacher forcing"}]}) + "\n")
    second = tmp_path / "b.jsonl"
    second.write_text(json.dumps({"id": "b1", "question": "What is the capital of Australia?", "kind": "unanswerable",
                                  "answerable": False, "evidence": []}) + "\n")
    service = QAService(sample_store, ExtractiveAnswerer(embedder, rarity=sample_store.rarity))
    out = evaluate_sets(service, [first, second], explain=True)
    assert set(out) == {"a.jsonl", "b.jsonl"}
    assert out["a.jsonl"]["recall@5_by_kind"] == {"factual": "1/1"}
    assert out["b.jsonl"]["refused_unanswerable"] == "1/1"
    assert out["b.jsonl"]["decisions"][0]["why"].startswith("refuse")


def test_a_wrapped_line_that_starts_with_a_bracket_continues_its_sentence():
    # examples/lectures/04-attention-notes.txt wraps "Multiplicative" + "(bilinear) attention inserts ...": the
    # answer quoted "(bilinear) attention inserts a learned matrix between them." without its first word
    text = (SAMPLES / "04-attention-notes.txt").read_text()
    para = text[text.index("Scoring functions."):text.index("From attention")]
    assert "Multiplicative\n(bilinear)" in para
    sents = sentences_of(para)
    assert "Multiplicative (bilinear) attention inserts a learned matrix between them." in sents
    assert not any(s.startswith("(bilinear)") for s in sents)
    # an enumerator in brackets still starts an item of its own
    assert sentences_of("Three kinds of scores\n(a) dot product of states\n(b) a bilinear form x W y") == [
        "Three kinds of scores", "(a) dot product of states", "(b) a bilinear form x W y"]


@pytest.fixture(scope="module")
def cross_encoder():
    from ingest import reader_models
    from ingest.cross_encoder import CrossEncoder

    if reader_models.available() is not None:
        pytest.skip(reader_models.available())
    return CrossEncoder().load()


def test_a_why_question_quotes_the_reason_read_by_the_cross_encoder(pipeline, library, embedder, cross_encoder):
    """Issue 21: "what problem does X solve" quotes the problem (slide 2 of the LSTM deck), not X's formula."""
    assert pipeline.ingest([SourceFile(name=p.name, path=p) for p in sorted(SAMPLES.iterdir())]).error is None
    store = LocalStore(library, embedder, pipeline, Retriever(library, embedder, reader=cross_encoder))
    service = QAService(store, ExtractiveAnswerer(embedder, rarity=store.rarity, reader=cross_encoder))
    result = service.ask("What problem does the LSTM forget gate solve?")
    assert result.answer.grounded
    assert "Plain RNNs forget long-range information because gradients vanish" in result.answer.text
    assert answer_defects(result.answer.text) == []
    assert all(s.reader is not None for s in result.sources)  # the reader read every source it returned
    plain = QAService(store, ExtractiveAnswerer(embedder, rarity=store.rarity)).ask(
        "What problem does the LSTM forget gate solve?")
    assert plain.answer.text != result.answer.text


def test_cross_encoder_scores_relevance_and_caches(cross_encoder):
    q = "What does the forget gate of an LSTM decide?"
    texts = ["The forget gate decides which entries of the cell state to erase.", "Paris is the capital of France."]
    first = cross_encoder.score(q, texts)
    assert first.shape == (2,) and first[0] > first[1] + 5
    assert cross_encoder.score(q, texts[::-1]).tolist() == first[::-1].tolist()  # from the cache, same values
    assert cross_encoder.score(q, []).shape == (0,)
