"""h2oGPTe as the LLM over our own retrieval: `answer_question` on exactly the retrieved, numbered chunks.

Calls go through one H2OGPTeConnection (lazy import, private loop, timeouts, retries on 429/5xx); any failure
falls back to the extractive answer with `llm_error` set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from app.qa.answer.extractive import ExtractiveAnswerer
from app.qa.answer.llm_base import LLMAnswerer
from app.qa.answer.prompting import PRE_PROMPT, PROMPT, source_blocks
from app.qa.h2ogpte_conn import H2OGPTeConnection
from app.qa.types import Answer, Source

log = logging.getLogger("lecture_qa")


def check_key(conn: H2OGPTeConnection) -> list[str]:
    """The LLM names; a bad key is a startup error (shown by /readyz), an unreachable server only a warning."""
    from h2ogpte.errors import UnauthorizedError

    try:
        names = list(conn.call(conn.client.get_llm_names))
        log.info("h2oGPTe reachable; LLMs: %s", ", ".join(names[:10]))
        return names
    except UnauthorizedError as exc:
        raise RuntimeError(f"h2oGPTe rejected the API key (H2OGPTE_API_KEY): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - answers fall back to extractive until it is back
        log.warning("h2oGPTe is not reachable yet (%s: %s); answers fall back to extractive",
                    type(exc).__name__, exc)
        return []


class H2OGPTeAnswerer(LLMAnswerer):
    name = "h2ogpte"

    def __init__(self, conn: H2OGPTeConnection, fallback: ExtractiveAnswerer, *, llm: str = "auto",
                 context_chars: int = 6000) -> None:
        self.conn = conn
        self.fallback = fallback
        self.llm = llm
        self.context_chars = context_chars

    def warm_up(self) -> None:
        check_key(self.conn)

    def models(self) -> list[str]:
        return list(self.conn.call(self.conn.client.get_llm_names))

    def close(self) -> None:
        self.conn.close()

    def generate(self, question: str, sources: list[Source], unknown_terms: Sequence[str]) -> Iterator[str | Answer]:
        """answer_question is not streamed: one delta with the checked text, then the Answer."""
        try:
            content = self._ask(question, sources)
        except Exception as exc:  # noqa: BLE001 - any client error means: answer without the LLM
            yield from self.extractive(question, sources, unknown_terms, exc)
            return
        answer = self.checked(content, sources, f"h2ogpte:{self.llm}")
        yield answer.text
        yield answer

    def _ask(self, question: str, sources: list[Source]) -> str:
        blocks = source_blocks(sources, self.context_chars)
        reply = self.conn.call(lambda: self.conn.client.answer_question(
            question=question, text_context_list=[blocks], system_prompt="", pre_prompt_query=PRE_PROMPT,
            prompt_query=PROMPT, llm=self.llm, llm_args={"temperature": 0, "max_new_tokens": 512},
            timeout=max(1, int(self.conn.timeout))))
        return str(reply.content)
