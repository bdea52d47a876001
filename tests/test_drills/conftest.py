"""Fixtures for the drills: the tiny real model (tests/test_drills/real_model.py), trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_model_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_drills.real_model import train_tiny_model

    return train_tiny_model(tmp_path_factory.mktemp("drill-model") / "state")
