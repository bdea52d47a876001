"""A model for the demo when none is promoted: fit a small chat-only classifier on simulated streams.

The packaged all-MiniLM-L6-v2 is used as is (no MLM pretraining), exported to ONNX and quantised
(cached under the state dir), the classifier is small and trained for a few epochs without the
baselines. A few minutes at most on 2 cores; later calls return the promoted version at once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from training.recipe import demo_config, load_recipe
from training.train_classifier import FitConfig

if TYPE_CHECKING:
    from infra.settings import Settings
    from models.registry import ModelVersion

# The [demo] section of training/configs/donor-default.toml (the recipe `fit` uses, made small).
_FIT, DEMO_STREAMS, DEMO_SEED = demo_config(load_recipe())
DEMO_PRESET = load_recipe().preset


def demo_fit_config(settings: Settings, *, progress: bool = True) -> FitConfig:
    return replace(
        _FIT, promote=True, baselines=False, threads=settings.worker_threads, encoder_dir=settings.base_model,
        progress=progress,
        note=f"demo model: {DEMO_STREAMS} simulated '{DEMO_PRESET}' streams (seed {DEMO_SEED}), chat-only, "
             "base encoder not pretrained (training/configs/donor-default.toml [demo])",
    )


def ensure_demo_model(settings: Settings, *, progress: bool = True) -> ModelVersion:
    """The promoted model; if there is none, train, register and promote the demo model first."""
    from rich.console import Console

    from models.registry import ModelRegistry
    from training.build_dataset import streams_from_simulator
    from training.train_classifier import main

    registry = ModelRegistry(settings.registry_dir)
    promoted = registry.promoted()
    if promoted is not None:
        return promoted
    console = Console(stderr=True)
    if progress:
        console.print("[bold]no promoted model: training the demo model on simulated streams[/bold]")
    streams = streams_from_simulator(DEMO_STREAMS, DEMO_SEED, preset=DEMO_PRESET)
    results = main(demo_fit_config(settings, progress=progress), streams=streams, settings=settings)
    version = registry.promoted()
    assert version is not None and version.version == results.promoted
    if progress:
        console.print(f"demo model {version.version} promoted (val PR-AUC {results.tracks['chat'].val_pr_auc:.3f})")
    return version
