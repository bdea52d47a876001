"""The documented training recipe (training/configs/donor-default.toml) -> FitConfig.

One file says what `donorcast fit` does with no flags, what the demo trains and what the preset
evaluation trains, so the three cannot drift apart. Flags override the file; unknown keys in it
are errors, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from training.build_dataset import DatasetConfig
from training.train_classifier import FitConfig

DEFAULT_RECIPE = Path(__file__).resolve().parent / "configs" / "donor-default.toml"
_DATASET_KEYS = {f.name for f in fields(DatasetConfig)}
_FIT_KEYS = {f.name for f in fields(FitConfig)} - {"dataset"}


@dataclass(frozen=True)
class Recipe:
    preset: str
    streams: int
    simulate_seed: int
    dataset: DatasetConfig
    fit: FitConfig
    demo: dict[str, Any]
    path: Path


def _checked(section: str, values: dict[str, Any], known: set[str]) -> dict[str, Any]:
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def load_recipe(path: Path | None = None) -> Recipe:
    path = Path(path or DEFAULT_RECIPE)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    simulate = data.get("simulate", {})
    dataset = DatasetConfig(**_checked(f"{path.name} [dataset]", data.get("dataset", {}), _DATASET_KEYS))
    fit = FitConfig(dataset=dataset, **_checked(f"{path.name} [fit]", data.get("fit", {}), _FIT_KEYS))
    demo = _checked(f"{path.name} [demo]", data.get("demo", {}), _DATASET_KEYS | _FIT_KEYS | {"streams"})
    return Recipe(preset=str(simulate.get("preset", "mixed")), streams=int(simulate.get("streams", 48)),
                  simulate_seed=int(simulate.get("seed", 7)), dataset=dataset, fit=fit, demo=demo, path=path)


def with_overrides(config: FitConfig, **overrides: Any) -> FitConfig:
    """FitConfig with dataset and fit keys replaced; None values (flags not given) change nothing."""
    given = {k: v for k, v in overrides.items() if v is not None}
    dataset = replace(config.dataset, **{k: v for k, v in given.items() if k in _DATASET_KEYS})
    rest = {k: v for k, v in given.items() if k in _FIT_KEYS}
    if unknown := sorted(set(given) - _DATASET_KEYS - _FIT_KEYS):
        raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
    return replace(config, dataset=dataset, **rest)


def demo_config(recipe: Recipe, **overrides: Any) -> tuple[FitConfig, int, int]:
    """(FitConfig, streams, seed) of the demo model: the recipe with its [demo] section on top."""
    demo = dict(recipe.demo)
    streams, seed = int(demo.pop("streams", 8)), int(demo.get("seed", 0))
    demo.setdefault("held_out", "none")
    config = with_overrides(recipe.fit, **demo, **overrides)
    return replace(config, dataset=replace(config.dataset, seed=seed)), streams, seed
