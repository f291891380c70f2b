"""h2oGPTe's chat over its collection as an answerer (with `LECTURE_QA_STORE=h2ogpte`): it retrieves for itself.

A chat-session query (deltas streamed through the client's callback); the message's references become the
answer's sources, and each answer sentence is cited [n] with the reference it draws its words from. With
`document_ids` (the chat cannot filter), the service's own retrieval runs and the fallback answerer (h2oGPTe
`answer_question`, else extractive) answers over the collection's chunk search; so it does when the chat fails,
with `llm_error` saying why.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from app.qa.answer import NOT_COVERED, BaseAnswerer
from app.qa.answer.prompting import CHAT_SYSTEM, NOT_FOUND, best_quote, check_citations
from app.qa.stores.h2ogpte import H2OGPTeStore, source_of
from app.qa.types import Answer, Citation, Source
from ingest.sentences import PLAIN
from ingest.textnorm import keyword_tokens

log = logging.getLogger("lecture_qa")
MIN_SHARED_WORDS = 3


def cite_sentences(content: str, sources: list[Source]) -> str:
    """Mark each answer sentence with the source that shares the most content words with it (at least
    MIN_SHARED_WORDS), so a chat answer carries the same [n] citations as our own answers."""
    bags = [set(keyword_tokens(s.text)) for s in sources]
    out: list[str] = []
    for sentence in PLAIN.split(content.strip()):
        mine = set(keyword_tokens(sentence))
        best = max(range(len(bags)), key=lambda i: len(mine & bags[i]), default=None)
        if best is not None and len(mine & bags[best]) >= MIN_SHARED_WORDS and not re.search(r"\[\d+\]", sentence):
            m = re.search(r"[.!?]+$", sentence)
            cut = m.start() if m else len(sentence)
            sentence = f"{sentence[:cut]} [{best + 1}]{sentence[cut:]}"
        out.append(sentence)
    return " ".join(out)


class DeltaTracker:
    """The new text of each streamed partial message. The client doc says "cp" frames carry deltas; a server that
    sends the whole text so far instead shows it on the second frame (which then starts with all of the first and
    goes on), and is read that way from then on."""

    def __init__(self) -> None:
        self.text = ""
        self.frames = 0
        self.cumulative = False

    def add(self, body: str) -> str:
        self.frames += 1
        if self.frames == 2:
            self.cumulative = len(body) > len(self.text) and body.startswith(self.text)
        if self.cumulative:
            new = body[len(self.text) :] if body.startswith(self.text) else body
            self.text = body
            return new
        self.text += body
        return body


class H2OGPTeChatAnswerer(BaseAnswerer):
    retrieves = True

    def __init__(self, store: H2OGPTeStore, fallback: BaseAnswerer, *, llm: str = "auto") -> None:
        self.store = store
        self.conn = store.conn
        self.fallback = fallback  # answers over chunk-search results (document filter, or the chat failed)
        self.llm = llm
        self.name = fallback.name  # the backend /models lists; answers say `h2ogpte-rag:<llm>`
        self.answered_by = f"h2ogpte-rag:{llm}"
        self._sessions: list[str] = []  # idle chat sessions: one query at a time on each

    def models(self) -> list[str]:
        return self.fallback.models()

    def warm_up(self) -> None:
        self.fallback.warm_up()

    def close(self) -> None:
        self.fallback.close()

    def stream(self, question: str, sources: list[Source] | None, *, unknown_terms: Sequence[str] = (),
               history: Sequence[str] = (), top_k: int = 5) -> Iterator[str | Answer]:
        """Answer deltas, then the Answer with the chat's references as its sources."""
        if sources is not None:  # the service retrieved (a document filter): answer over that
            yield from self.fallback.stream(question, sources, unknown_terms=unknown_terms)
            return
        message = question if not history else f"{question}\n(This follows up on: {history[-1]})"
        cid = self.store.collection_id()  # resolved here: a blocking call must not run on the client's loop
        deltas: queue.Queue[str] = queue.Queue()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self._chat(cid, message, top_k, deltas.put), self.conn.timeout), self.conn.loop)
        while True:
            try:
                yield deltas.get(timeout=0.05)
            except queue.Empty:
                if fut.done() and deltas.empty():
                    break
        try:
            content, refs = fut.result()
        except Exception as exc:  # noqa: BLE001 - the chat failed: answer from the chunk search instead
            log.warning("h2oGPTe chat failed (%s: %s); answering from the chunk search", type(exc).__name__, exc)
            found = self.store.search(question, top_k)
            answer = self.fallback.answer(question, found)
            answer.llm_error = (f"the h2oGPTe chat was unavailable ({type(exc).__name__}: {exc}); "
                                f"answered by {answer.answered_by} over the collection's chunk search")
            answer.sources = found
            yield answer.text
            yield answer
            return
        own = [source_of(r.document_id, r.document_name, r.chunk_id, r.content or "", r.pages, r.score)
               for r in refs][: max(top_k, 1)]
        if NOT_FOUND in content or not content.strip() or not own:
            yield Answer(NOT_COVERED, grounded=False, citations=[], answered_by=self.answered_by, sources=own)
            return
        text, citations, _ = check_citations(cite_sentences(content, own), own)
        if not citations:  # a paraphrase no sentence matched: h2oGPTe's first reference stands behind it
            text = f"{text} [1]"
            citations = [Citation(1, own[0], best_quote(content, own[0]))]
        yield Answer(text, grounded=True, citations=citations, answered_by=self.answered_by, sources=own)

    async def _chat(self, cid: str, message: str, top_k: int, on_delta: Callable[[str], None]) -> tuple[str, list[Any]]:
        from h2ogpte.types import PartialChatMessage

        client = self.conn.client
        sid = self._sessions.pop() if self._sessions else await client.create_chat_session(cid)

        deltas = DeltaTracker()

        def callback(m: Any) -> None:  # "cp" frames carry the new text; the final "ca" the whole answer
            if isinstance(m, PartialChatMessage) and m.content:
                new = deltas.add(m.content)
                if new:
                    on_delta(new)

        async with client.connect(sid, max_connect_retries=2, open_timeout=10) as session:
            reply = await session.query(message, system_prompt=CHAT_SYSTEM, llm=self.llm,
                                        llm_args={"temperature": 0},
                                        rag_config={"rag_type": "rag", "rag_max_chunks": max(top_k, 1)},
                                        include_chat_history="off", timeout=self.conn.timeout, retries=1,
                                        callback=callback)
        refs = await client.list_chat_message_references(reply.id)
        self._sessions.append(sid)  # reused only after a clean query
        return str(reply.content), list(refs)
