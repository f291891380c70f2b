"""What the contract suites share: one fake h2oGPTe server per test module (the REAL h2ogpte client talks to it)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def fake_h2ogpte():
    pytest.importorskip("h2ogpte")
    from tests.fake_h2ogpte import FakeH2OGPTe

    with FakeH2OGPTe() as server:
        yield server
