"""Evaluation: metrics, plots and a markdown report comparing the model with every baseline.

Metrics per model (sample weights: each (stream, viewer) counts once):
- ROC-AUC, PR-AUC (average precision), Brier score, F1/precision/recall at the threshold chosen on
  validation;
- precision@k per stream (k = 10, 50): at every snapshot time of a stream, rank the viewers seen so
  far by their latest score (the live leaderboard) and take the share of positives in the top k;
  averaged over snapshot times, then streams;
- for the `paid` label, lead time: how long before a donor's first paid event they first entered
  the top k of their stream's leaderboard.

`donorcast evaluate` scores a registry version's test split through `DonorScorer` (the ONNX path the
live agents use), refits the baselines on the same train/validation split, and writes the report.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from training.build_dataset import Dataset, DatasetConfig, Sample, StreamData
from training.embeddings import EmbeddingCache
from training.features import FeatureSet, build_features

if TYPE_CHECKING:
    from infra.settings import Settings
    from models.registry import ModelVersion

KS = (10, 50)


@dataclass
class EvalSamples:
    """What metrics need to know about each scored sample."""

    stream: np.ndarray  # stream ids
    viewer: np.ndarray
    snapshot: np.ndarray  # seconds since stream start
    event: np.ndarray  # first paid / member event seconds, nan = none
    label: np.ndarray
    weight: np.ndarray
    new_viewer: np.ndarray  # viewer never in a training stream

    @classmethod
    def from_dataset(cls, dataset: Dataset, samples: Sequence[Sample]) -> EvalSamples:
        tracks = [dataset.tracks[s.track] for s in samples]
        return cls(
            stream=np.asarray([dataset.streams[t.stream].stream_id for t in tracks], dtype=object),
            viewer=np.asarray([t.viewer_id for t in tracks], dtype=object),
            snapshot=np.asarray([s.snapshot_seconds for s in samples], dtype=np.float64),
            event=np.asarray([np.nan if t.event_seconds is None else t.event_seconds for t in tracks]),
            label=np.asarray([s.label for s in samples], dtype=np.int64),
            weight=np.asarray([s.weight for s in samples], dtype=np.float64),
            new_viewer=np.asarray([dataset.is_new_viewer(s) for s in samples], dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, mask: np.ndarray) -> EvalSamples:
        return EvalSamples(**{name: getattr(self, name)[mask] for name in self.__dataclass_fields__})


# ---------------------------------------------------------------- metrics

def best_f1_threshold(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The score threshold with the highest F1 (used on validation only)."""
    if labels.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores, sample_weight=weights)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def leaderboards(samples: EvalSamples, scores: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
    """(stream, time, sample indices of the live leaderboard at that time): each viewer seen so far
    with their latest snapshot's score; viewers whose event already happened have left the question."""
    boards = []
    by_stream: dict[str, list[int]] = defaultdict(list)
    for i, stream in enumerate(samples.stream):
        by_stream[stream].append(i)
    for stream, members in by_stream.items():
        members.sort(key=lambda i: samples.snapshot[i])
        latest: dict[str, int] = {}
        times = sorted({samples.snapshot[i] for i in members})
        position = 0
        for time in times:
            while position < len(members) and samples.snapshot[members[position]] <= time:
                latest[samples.viewer[members[position]]] = members[position]
                position += 1
            pool = [i for i in latest.values() if not samples.event[i] < time]
            boards.append((stream, float(time), np.asarray(pool, dtype=np.int64)))
    return boards


def precision_at_k(samples: EvalSamples, scores: np.ndarray, k: int) -> float:
    """Mean over streams of the mean over snapshot times of precision in the top k."""
    per_stream: dict[str, list[float]] = defaultdict(list)
    for stream, _, pool in leaderboards(samples, scores):
        if len(pool) == 0:
            continue
        top = pool[np.argsort(-scores[pool], kind="stable")[:k]]
        per_stream[stream].append(float(samples.label[top].mean()))
    return float(np.mean([np.mean(v) for v in per_stream.values()])) if per_stream else float("nan")


def lead_times(samples: EvalSamples, scores: np.ndarray, k: int) -> dict[tuple[str, str], float]:
    """Per donor: seconds between first entering the top k and their paid event (nan: never before it)."""
    first_seen: dict[tuple[str, str], float] = {}
    donors = {(samples.stream[i], samples.viewer[i]): samples.event[i]
              for i in range(len(samples)) if samples.label[i] == 1 and not np.isnan(samples.event[i])}
    for stream, time, pool in leaderboards(samples, scores):
        if len(pool) == 0:
            continue
        for i in pool[np.argsort(-scores[pool], kind="stable")[:k]]:
            key = (stream, samples.viewer[i])
            if key in donors and key not in first_seen and time <= donors[key]:
                first_seen[key] = time
    return {key: (event - first_seen[key]) if key in first_seen else float("nan") for key, event in donors.items()}


def compute_metrics(samples: EvalSamples, scores: np.ndarray, threshold: float, *, label: str) -> dict[str, float]:
    y, w, p = samples.label, samples.weight, np.asarray(scores, dtype=np.float64)
    out: dict[str, float] = {"n_samples": float(len(y)), "n_positive": float(y.sum()),
                             "positive_rate": float(np.average(y, weights=w)) if len(y) else float("nan")}
    if len(y) == 0:
        return out
    both = len(np.unique(y)) == 2
    predicted = (p >= threshold).astype(np.int64)
    out.update(
        roc_auc=float(roc_auc_score(y, p, sample_weight=w)) if both else float("nan"),
        pr_auc=float(average_precision_score(y, p, sample_weight=w)) if y.sum() else float("nan"),
        brier=float(brier_score_loss(y, np.clip(p, 0, 1), sample_weight=w)),
        threshold=float(threshold),
        f1=float(f1_score(y, predicted, sample_weight=w, zero_division=0)),
        precision=float(precision_score(y, predicted, sample_weight=w, zero_division=0)),
        recall=float(recall_score(y, predicted, sample_weight=w, zero_division=0)),
    )
    for k in KS:
        out[f"p_at_{k}"] = precision_at_k(samples, p, k)
    if label == "paid":
        leads = np.asarray(list(lead_times(samples, p, KS[0]).values()), dtype=np.float64)
        caught = leads[~np.isnan(leads)]
        out["donors"] = float(len(leads))
        out["donors_in_top10_before_paying"] = float(len(caught) / len(leads)) if len(leads) else float("nan")
        out["median_lead_minutes"] = float(np.median(caught) / 60) if len(caught) else float("nan")
    return out


# ---------------------------------------------------------------- report

@dataclass
class ModelScores:
    name: str
    scores: np.ndarray  # aligned with the section's EvalSamples
    threshold: float


@dataclass
class Section:
    """One table of the report: several models scored on the same samples."""

    title: str
    samples: EvalSamples
    models: list[ModelScores]
    plot_key: str = ""  # non-empty: draw PR / reliability / lead-time plots for this section
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


TABLE_COLUMNS = ("pr_auc", "roc_auc", "p_at_10", "p_at_50", "f1", "brier")


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def write_report(out_dir: Path, title: str, sections: list[Section], *, label: str,
                 notes: Sequence[str] = ()) -> Path:
    """metrics.json, PNG plots and report.md under out_dir; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Label: `{label}`. Sample-weighted metrics (each stream-viewer pair counts once);",
             "p@k = precision in the top k of each stream's live leaderboard, averaged over snapshot times and streams.",
             ""]
    lines += [f"- {note}" for note in notes]
    for section in sections:
        section.metrics = {m.name: compute_metrics(section.samples, m.scores, m.threshold, label=label)
                           for m in section.models}
        first = next(iter(section.metrics.values()), {})
        lines += ["", f"## {section.title}", "",
                  f"{int(first.get('n_samples', 0))} samples, {int(first.get('n_positive', 0))} positive "
                  f"(weighted rate {_fmt(first.get('positive_rate', float('nan')))}).", ""]
        columns = TABLE_COLUMNS + (("donors_in_top10_before_paying", "median_lead_minutes") if label == "paid" else ())
        lines.append("| model | " + " | ".join(columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for name, metrics in section.metrics.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(metrics.get(c, float('nan'))) for c in columns) + " |")
        if section.plot_key:
            for png in _plots(out_dir, section, label):
                lines += ["", f"![{png.stem}]({png.name})"]
    (out_dir / "metrics.json").write_text(json.dumps(
        {s.title: s.metrics for s in sections}, indent=2, sort_keys=True, default=float))
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _plots(out_dir: Path, section: Section, label: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, w = section.samples.label, section.samples.weight
    paths = []
    if y.sum() and len(np.unique(y)) == 2:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for model in section.models:
            precision, recall, _ = precision_recall_curve(y, model.scores, sample_weight=w)
            ax.plot(recall, precision, label=f"{model.name} (AP {section.metrics[model.name]['pr_auc']:.3f})")
        ax.axhline(float(np.average(y, weights=w)), color="grey", linestyle=":", label="base rate")
        ax.set(xlabel="recall", ylabel="precision", title=f"PR curve: {section.title}", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / f"pr_curve_{section.plot_key}.png"))

        fig, ax = plt.subplots(figsize=(5, 5))
        bins = np.linspace(0, 1, 11)
        for model in section.models[:2]:
            which = np.clip(np.digitize(model.scores, bins) - 1, 0, 9)
            xs, ys = [], []
            for b in range(10):
                mask = which == b
                if w[mask].sum() > 0:
                    xs.append(np.average(model.scores[mask], weights=w[mask]))
                    ys.append(np.average(y[mask], weights=w[mask]))
            ax.plot(xs, ys, marker="o", label=f"{model.name} (Brier {section.metrics[model.name]['brier']:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title="Reliability")
        ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / f"reliability_{section.plot_key}.png"))

    if label == "paid" and section.models:
        leads = np.asarray(list(lead_times(section.samples, section.models[0].scores, KS[0]).values()))
        caught = leads[~np.isnan(leads)] / 60
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(caught, bins=20, color="tab:blue")
        ax.set(xlabel="minutes in the top 10 before the first paid event", ylabel="donors",
               title=f"Lead time, {section.models[0].name}: {len(caught)} of {len(leads)} donors caught")
        paths.append(_save(fig, out_dir / f"lead_time_{section.plot_key}.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---------------------------------------------------------------- scoring a registered version

def version_features(
    version: ModelVersion, dataset: Dataset, samples: Sequence[Sample], cache_dir: Path, *, threads: int = 1,
    progress: bool = False,
) -> tuple[Any, FeatureSet]:
    """(DonorScorer, features) for a version on a dataset built with the same label."""
    from infra.errors import InputError
    from models.scorer import DonorScorer

    scorer = DonorScorer.load(version, threads=threads)
    if scorer.feature_config.label != dataset.config.label:
        raise InputError(f"model {version.version} predicts {scorer.feature_config.label!r}, "
                         f"the dataset is labelled {dataset.config.label!r}")
    cache = EmbeddingCache(cache_dir, version.manifest.get("encoder_key", version.version))
    embed = lambda texts: scorer.encoder.embed(list(texts))  # noqa: E731 - texts are preprocessed already
    return scorer, build_features(dataset, samples, scorer.feature_config, embed, cache, progress=progress)


def score_version(version: ModelVersion, dataset: Dataset, samples: Sequence[Sample], cache_dir: Path,
                  *, threads: int = 1) -> np.ndarray:
    """Probabilities of a registered version through DonorScorer (ONNX): the live path."""
    scorer, features = version_features(version, dataset, samples, cache_dir, threads=threads)
    return scorer.score([features.sequence(i) for i in range(len(features))])


def evaluate_version(settings: Settings, version: ModelVersion, streams: Iterable[StreamData], *,
                     out_dir: Path, baselines: bool = True, cache_dir: Path | None = None) -> Path:
    """Rebuild the version's dataset from `streams`, score its test split via ONNX, refit baselines."""
    from training.baselines import baseline_splits, fit_baselines
    from training.build_dataset import build_dataset

    dataset = build_dataset(streams, DatasetConfig(**version.manifest["dataset_config"]))
    split = {name: [dataset.samples[i] for i in dataset.indices(name)] for name in ("train", "val", "test")}
    if not split["test"]:
        from infra.errors import InputError

        raise InputError("the data has no test split (too few streams)")
    cache_dir = cache_dir or settings.state_dir / "cache"
    scorer, test_features = version_features(version, dataset, split["test"], cache_dir)
    scores = scorer.score([test_features.sequence(i) for i in range(len(test_features))])
    track = version.manifest.get("track", "chat")
    name = "transformer" + ("+history" if track == "history" else "")
    models = [ModelScores(f"{name} ({version.version})", scores, scorer.threshold)]
    if baselines and {s.label for s in split["train"]} == {0, 1} and split["val"]:
        _, features = version_features(version, dataset, split["train"] + split["val"] + split["test"], cache_dir)
        sets = {n: features.subset(split[n]) for n in ("train", "val", "test")}
        splits = baseline_splits(dataset, sets, scorer.feature_config.max_messages)
        found = fit_baselines(splits["train"], splits["val"], {"test": splits["test"]}, with_history=track == "history",
                              label=dataset.config.label)
        for base, by_split in found.items():
            models.append(ModelScores(base, by_split["test"],
                                      best_f1_threshold(splits["val"].labels, by_split["val"], splits["val"].weights)))
    samples = EvalSamples.from_dataset(dataset, split["test"])
    sections = [Section("all test viewers", samples, models, plot_key=track)]
    if samples.new_viewer.any():
        mask = samples.new_viewer
        sections.append(Section("new viewers only", samples.subset(mask),
                                [ModelScores(m.name, m.scores[mask], m.threshold) for m in models]))
    return write_report(out_dir, f"Evaluation of {version.version}", sections, label=dataset.config.label,
                        notes=[f"dataset fingerprint `{dataset.fingerprint}`",
                               "model scored through DonorScorer (int8 ONNX encoder + ONNX classifier)"])


# ---------------------------------------------------------------- command

def evaluate_command(
    ctx: typer.Context,
    data: Annotated[list[Path] | None, typer.Argument(help="chat files (any supported format); default: PostgreSQL")] = None,
    model: Annotated[str | None, typer.Option(help="registry version (default: the promoted one)")] = None,
    simulate: Annotated[int, typer.Option(help="evaluate on N simulated streams instead")] = 0,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 7,
    out: Annotated[Path | None, typer.Option(help="report folder (default: <version>/evaluation)")] = None,
    presets: Annotated[bool, typer.Option("--presets", help=(
        "train the recipe on its simulator preset, then score the in-distribution test, shift and null sets "
        "at before-paid snapshots beside the baselines (training/preset_eval.py)"))] = False,
    recipe: Annotated[Path | None, typer.Option(help="with --presets: training recipe TOML")] = None,
    train_streams: Annotated[int | None, typer.Option(help="with --presets: training streams (default: recipe)")] = None,
    shift_streams: Annotated[int, typer.Option(help="with --presets: streams of the shift preset")] = 12,
    null_streams: Annotated[int, typer.Option(help="with --presets: streams of the null preset")] = 16,
    lead_time: Annotated[bool, typer.Option("--lead-time", help=(
        "with --presets and --model V1[,V2]: only the lead-time part, for versions the recipe already "
        "trained (lead-time.md and lead-time.json in --out)"))] = False,
) -> None:
    """Score a model version's test split through the live ONNX path, beside refitted baselines
    (or, with --presets, the recipe's model on simulator presets it was not tuned on)."""
    from rich.console import Console

    from infra.cli import settings_from
    from training.sources import load_streams

    settings = settings_from(ctx)
    if presets:
        from training.preset_eval import PresetEvalConfig, run_preset_eval
        from training.recipe import load_recipe

        folder = out or Path("reports") / "simulator-presets"
        config = PresetEvalConfig(train_streams=train_streams, shift_streams=shift_streams, null_streams=null_streams)
        if lead_time:
            from training.preset_eval import run_lead_time

            versions = [resolve_version(settings, name.strip()) for name in (model or "").split(",") if name.strip()]
            if not versions:
                from infra.errors import InputError

                raise InputError("--lead-time needs --model with the version(s) the recipe trained")
            run_lead_time(settings, load_recipe(recipe), config, versions, folder)
            print((folder / "lead-time.md").read_text())
            return
        run_preset_eval(settings, load_recipe(recipe), config, folder)
        print((folder / "report.md").read_text())
        return
    version = resolve_version(settings, model)
    streams = load_streams(settings, files=data or [], simulate=simulate, seed=seed)
    report = evaluate_version(settings, version, streams, out_dir=out or version.path / "evaluation")
    Console(stderr=True).print(f"report: {report}")
    print(report.read_text())


def resolve_version(settings: Any, name: str | None) -> Any:
    from infra.errors import ModelNotFound
    from models.registry import ModelRegistry

    registry = ModelRegistry(settings.registry_dir)
    if name:
        return registry.get(name)
    promoted = registry.promoted()
    if promoted is None:
        raise ModelNotFound(f"no promoted model in {settings.registry_dir}; pass --model or run `donorcast fit --promote`")
    return promoted
