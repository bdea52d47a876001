"""`ensure_demo_model`: trains, registers and promotes a small model once; later calls reuse it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from infra.settings import load_settings
from models.registry import ModelRegistry
from models.scorer import DonorScorer
from tests.test_training.test_fit_support import shared_cache
from training.demo_model import ensure_demo_model


@pytest.mark.slow
def test_demo_model_is_trained_once_and_promoted(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    settings.state_dir.mkdir(parents=True)
    shared_cache().mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "cache").symlink_to(shared_cache())  # reuse this session's ONNX export
    started = time.perf_counter()
    version = ensure_demo_model(settings, progress=False)
    first_call = time.perf_counter() - started
    assert ModelRegistry(settings.registry_dir).promoted().version == version.version
    assert version.manifest["track"] == "chat" and "demo model" in version.manifest["notes"]
    assert first_call < 180, f"demo model took {first_call:.0f} s"
    val = version.manifest["dataset_summary"]["val"]
    payer_share = val["positives"] / val["samples"]  # what a random ranking's PR-AUC comes to
    assert version.manifest["metrics"]["val_pr_auc"] > 2 * payer_share

    started = time.perf_counter()
    assert ensure_demo_model(settings, progress=False).version == version.version
    assert time.perf_counter() - started < 1.0

    scorer = DonorScorer.load(version)
    from models.scorer import sequence_input

    sequence = sequence_input(scorer.embed(["hi Nova, can you play Balatro next?", "love the stream"]),
                              [60.0, 300.0], texts=["hi Nova, can you play Balatro next?", "love the stream"],
                              message_numbers=[1, 2], config=scorer.feature_config)
    probability = scorer.score([sequence])
    assert probability.shape == (1,) and np.isfinite(probability).all()
