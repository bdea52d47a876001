"""A real model version for the drills: the packaged all-MiniLM-L6-v2 encoder (ONNX, int8) and a tiny
chat-only classifier, trained by the project's own training code on seeded simulated streams, registered
and promoted like any version. Small on purpose (a few seconds of training once the encoder is exported):
the drills test the streaming of a real ONNX model, not its quality.

The encoder export and embeddings go to the classifier tests' shared cache (tests/test_training), so a
session that runs both exports the encoder once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from models.registry import ModelRegistry

SEED = 17


def train_tiny_model(state_dir: Path) -> Path:
    """Train, register and promote the tiny model under `state_dir`; returns its registry dir."""
    from infra.settings import load_settings
    from tests.test_training.test_fit_support import shared_cache
    from training.build_dataset import DatasetConfig, streams_from_simulator
    from training.train_classifier import FitConfig, main

    settings = load_settings(state_dir=state_dir)
    streams = streams_from_simulator(6, SEED, viewers=60, minutes=30, donor_share=0.2)
    config = FitConfig(
        dataset=DatasetConfig(label="paid", n_snapshots=3, max_messages=16, held_out="none", seed=SEED),
        tracks=("chat",), deploy_track="chat", promote=True, baselines=False,
        d_model=16, n_layers=1, n_heads=2, max_epochs=2, patience=2, batch_size=32, seed=SEED, threads=1,
        cache_dir=shared_cache(), progress=False, note="tiny drill model (tests/test_drills/real_model.py)",
    )
    results = main(config, streams=streams, settings=settings)
    registry = ModelRegistry(settings.registry_dir)
    promoted = registry.promoted()
    assert promoted is not None and promoted.version == results.promoted
    assert (promoted.path / "encoder.int8.onnx").is_file() and (promoted.path / "classifier.onnx").is_file()
    return settings.registry_dir


def install(registry_dir: Path, target: Path) -> str:
    """Put the trained registry at `target` (a worker's registry dir), hard-linked where the filesystem
    allows (the version is about 200 MB; nothing rewrites its files); returns the promoted version."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(registry_dir, target, copy_function=link, dirs_exist_ok=True)
    promoted = ModelRegistry(target).promoted()
    assert promoted is not None
    return promoted.version
