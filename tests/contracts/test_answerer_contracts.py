"""The Answerer contract run against every answer backend: extractive, an OpenAI-compatible server (a local
fake speaking the streamed chat-completions protocol) and h2oGPTe's LLM (the REAL client against the fake)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.contracts.answerers import AnswererContract, LLMAnswererContract
from tests.server import free_port


class TestExtractive(AnswererContract):
    @pytest.fixture()
    def answerer(self, embedder):
        from app.qa.answer.extractive import ExtractiveAnswerer

        return ExtractiveAnswerer(embedder)


@pytest.fixture(scope="module")
def fake_openai():
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI() as server:
        server.reply = "The forget gate decides which parts of the cell state to erase [1]."
        yield server


class TestOpenAICompatible(LLMAnswererContract):
    @pytest.fixture()
    def answerer(self, fake_openai, embedder):
        from app.qa.answer.extractive import ExtractiveAnswerer
        from app.qa.answer.openai_compat import OpenAICompatAnswerer

        return OpenAICompatAnswerer(fake_openai.url, fake_openai.model, ExtractiveAnswerer(embedder), timeout=10,
                                    retries=0)

    @pytest.fixture()
    def down(self, answerer):
        @contextmanager
        def nothing_listens() -> Iterator[None]:
            url, answerer.base_url = answerer.base_url, f"http://127.0.0.1:{free_port()}/v1"
            try:
                yield
            finally:
                answerer.base_url = url

        return nothing_listens


class TestH2OGPTeLLM(LLMAnswererContract):
    @pytest.fixture()
    def answerer(self, fake_h2ogpte, embedder):
        from app.qa.answer.extractive import ExtractiveAnswerer
        from app.qa.answer.h2ogpte_llm import H2OGPTeAnswerer
        from app.qa.h2ogpte_conn import H2OGPTeConnection

        fake_h2ogpte.mode = "ok"
        llm = H2OGPTeAnswerer(H2OGPTeConnection(fake_h2ogpte.url, "sk-good", timeout=10, retries=0),
                              ExtractiveAnswerer(embedder), llm="fake-llm")
        llm.warm_up()
        yield llm
        llm.close()

    @pytest.fixture()
    def down(self, fake_h2ogpte):
        @contextmanager
        def failing() -> Iterator[None]:
            fake_h2ogpte.mode = "500"
            try:
                yield
            finally:
                fake_h2ogpte.mode = "ok"

        return failing
