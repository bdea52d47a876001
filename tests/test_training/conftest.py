from __future__ import annotations

import pytest

from tests.determinism import reset_random_state


@pytest.fixture(autouse=True)
def deterministic() -> None:
    """Same seeds and one torch thread at the start of every test (tests/determinism.py)."""
    reset_random_state()
