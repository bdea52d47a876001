"""The documented training recipe (training/configs/donor-default.toml): it parses, refuses typos,
drives the demo, and trains end to end on tiny data into a calibrated, clock-free model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from infra.settings import load_settings
from models.registry import ModelRegistry
from models.scorer import FeatureConfig
from tests.test_training.test_fit_support import shared_cache
from training.build_dataset import streams_from_simulator
from training.evaluate import version_features
from training.recipe import DEFAULT_RECIPE, demo_config, load_recipe, with_overrides
from training.train_classifier import main, predict_logits


def test_default_recipe_is_what_fit_and_the_demo_use() -> None:
    recipe = load_recipe()
    assert recipe.path == DEFAULT_RECIPE and recipe.preset == "mixed" and recipe.streams == 48
    assert recipe.fit.tracks == ("chat", "history") and recipe.fit.dataset.label == "paid"
    demo, streams, seed = demo_config(recipe)
    assert demo.tracks == ("chat",) and demo.dataset.held_out == "none" and demo.dataset.seed == seed == demo.seed
    assert streams == 12 and demo.d_model == 64
    assert FeatureConfig().clock == "recency"  # new versions never see seconds since stream start


def test_unknown_recipe_keys_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[fit]\nmax_epoch = 3\n")
    with pytest.raises(ValueError, match=r"\[fit\]: unknown key\(s\) max_epoch"):
        load_recipe(bad)
    with pytest.raises(ValueError, match="unknown training option"):
        with_overrides(load_recipe().fit, max_epoch=3)


def test_recipe_trains_end_to_end_on_tiny_data(tmp_path: Path) -> None:
    """The recipe's preset, dataset and model settings, made tiny: a registered version whose
    probabilities are Platt-calibrated on validation (their mean there is the payers' share)."""
    recipe = load_recipe()
    config = replace(with_overrides(recipe.fit, max_epochs=3, d_model=32, tracks=("chat",), deploy_track="chat",
                                    max_viewers_per_stream=60, held_out="none"),
                     baselines=False, cache_dir=shared_cache(), progress=False)
    streams = streams_from_simulator(6, recipe.simulate_seed, preset=recipe.preset, viewers=80, minutes=25,
                                     donor_share=0.15)
    settings = load_settings(state_dir=tmp_path / "state")
    results = main(config, streams=streams, settings=settings)
    version = ModelRegistry(settings.registry_dir).get(results.tracks["chat"].version.version)
    assert version.manifest["feature_config"]["clock"] == "recency"
    assert version.manifest["calibration"]["method"] == "platt"

    from training.build_dataset import build_dataset

    dataset = build_dataset(streams, config.dataset)
    val = [dataset.samples[i] for i in dataset.indices("val")]
    scorer, features = version_features(version, dataset, val, shared_cache())
    probabilities = scorer.score([features.sequence(i) for i in range(len(features))])
    labels, weights = features.labels, features.weights
    assert abs(np.average(probabilities, weights=weights) - np.average(labels, weights=weights)) < 0.01
    # The scorer's calibration is a monotone map of the trained classifier's logits.
    from models.classifier import load_classifier

    logits = predict_logits(load_classifier(version.file("classifier_pt")), features)
    assert np.all(np.diff(probabilities[np.argsort(logits)]) >= -1e-4)
