"""`donorcast evaluate --presets`: the recipe's model against the baselines on streams it was not tuned on.

    recipe (training/configs/donor-default.toml) -> simulate its training preset -> fit both tracks
    -> three evaluation sets, each scored at before-paid snapshots (one row per viewer: right after
       their last message before their first paid event; non-payers after their last message):
         (a) in-distribution: the fit's own test-split streams,
         (b) shift: the `shift` preset (longer, bigger, late payments, other templates/language),
         (c) null: the `null` preset (donors chat like everyone else: any lift is a leak)
    -> the model (through DonorScorer, the live path) and every baseline on the same rows:
       message count, activity LR, TF-IDF (all messages) + activity LR, mean embedding + activity LR,
       all trained on the same training streams
    -> within-stream and pooled ROC-AUC, PR-AUC, P@10 per stream with bootstrap CIs, the NULL
       permutation test, and calibration (ECE, reliability plot) on the fit's grid test split
    -> report.md, metrics.json and plots in the output folder.

Nothing here is tuned: the recipe was fixed before these sets were generated, thresholds and
calibration come from the fit's validation split, and each set is read once.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.build_dataset import (
    Dataset,
    DatasetConfig,
    Sample,
    StreamData,
    build_dataset,
    streams_from_simulator,
)
from training.ranking_metrics import ranking_report

if TYPE_CHECKING:
    from infra.settings import Settings
    from models.registry import ModelVersion
    from training.recipe import Recipe

BASELINES = ("activity", "tfidf_all", "mean_embedding")
SHOWN = {"count": "message count", "activity": "activity LR", "tfidf_all": "TF-IDF (all messages) + activity LR",
         "mean_embedding": "mean embedding + activity LR", "history_rule": "history rule (paid before)",
         "stack": "ablation: transformer logit + activity (+ history) LR, fit on validation"}


@dataclass(frozen=True)
class PresetEvalConfig:
    train_streams: int | None = None  # default: the recipe's [simulate] streams
    shift_streams: int = 12
    null_streams: int = 16
    seed: int = 1
    bootstrap_rounds: int = 1000
    permutations: int = 1000
    k: int = 10


@dataclass
class EvalSet:
    name: str
    dataset: Dataset
    samples: list[Sample]
    baseline_data: Any = None  # training.baselines.SplitData of these rows, once featurised

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([s.label for s in self.samples], dtype=np.int64)

    @property
    def stream_ids(self) -> list[str]:
        return [self.dataset.streams[self.dataset.tracks[s.track].stream].stream_id for s in self.samples]


def before_paid_set(name: str, streams: list[StreamData], label: str, max_messages: int) -> EvalSet:
    config = DatasetConfig(label=label, max_messages=max_messages, held_out="none", snapshots="before-paid")  # type: ignore[arg-type]
    dataset = build_dataset(streams, config)
    return EvalSet(name, dataset, list(dataset.samples))  # every split: these streams were never trained on


def score_sets(settings: Settings, version: ModelVersion, train_ds: Dataset, sets: list[EvalSet], *,
               with_history: bool, cache_dir: Path, seed: int, log: Any) -> dict[str, dict[str, np.ndarray]]:
    """{set name: {model name: scores}} for the version and every baseline, on each set's rows."""
    from training.baselines import baseline_splits, fit_baselines
    from training.evaluate import version_features

    out: dict[str, dict[str, np.ndarray]] = {s.name: {} for s in sets}
    for eval_set in sets:
        scorer, features = version_features(version, eval_set.dataset, eval_set.samples, cache_dir)
        out[eval_set.name]["model"] = scorer.score([features.sequence(i) for i in range(len(features))])
        out[eval_set.name]["count"] = np.asarray([s.end for s in eval_set.samples], dtype=np.float64)
        eval_set.baseline_data = baseline_splits(eval_set.dataset, {"x": features},
                                                  scorer.feature_config.max_messages)["x"]
    split = {n: [train_ds.samples[i] for i in train_ds.indices(n)] for n in ("train", "val")}
    _, features = version_features(version, train_ds, split["train"] + split["val"], cache_dir)
    train_sets = {n: features.subset(split[n]) for n in ("train", "val")}
    baseline_data = baseline_splits(train_ds, train_sets, features.config.max_messages)
    log(f"baselines on {len(split['train'])} training samples")
    found = fit_baselines(baseline_data["train"], baseline_data["val"], {s.name: s.baseline_data for s in sets},
                          with_history=with_history, label=train_ds.config.label, seed=seed, progress=log,
                          names=BASELINES)
    for name, by_split in found.items():
        for eval_set in sets:
            if eval_set.name in by_split:
                out[eval_set.name][name] = by_split[eval_set.name]
    for name, values in stack_on_validation(sets, out, with_history=with_history).items():
        out[name]["stack"] = values
    return out


STACK_ACTIVITY_COLUMNS = [0, 1, 3, 4, 5, 6, 7]  # ACTIVITY_FEATURES minus the absolute stream time


def stack_on_validation(sets: list[EvalSet], scores: dict[str, dict[str, np.ndarray]], *,
                        with_history: bool) -> dict[str, np.ndarray]:
    """An ablation, not the deployed model: a logistic regression on the transformer's logit beside
    the viewer's activity (and history) numbers, fitted on the validation set's before-paid rows and
    applied to the other sets. It asks whether stacking would pay before the live path computes it.
    Its validation row is in-sample and so left out."""
    from sklearn.linear_model import LogisticRegression

    def design(eval_set: EvalSet) -> np.ndarray:
        p = np.clip(scores[eval_set.name]["model"].astype(np.float64), 1e-6, 1 - 1e-6)
        columns = [np.log(p / (1 - p))[:, None], eval_set.baseline_data.activity[:, STACK_ACTIVITY_COLUMNS]]
        if with_history:
            columns.append(eval_set.baseline_data.history)
        return np.hstack(columns)

    validation = next(s for s in sets if s.name == "validation")
    x = design(validation)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / std, validation.labels)
    return {s.name: model.predict_proba((design(s) - mean) / std)[:, 1] for s in sets if s is not validation}


def calibration_on_test(version: ModelVersion, train_ds: Dataset, cache_dir: Path, out_dir: Path) -> dict[str, Any]:
    """ECE and reliability of the version's probabilities on the fit's (grid) test split."""
    from models.calibration import expected_calibration_error, reliability_table
    from training.evaluate import score_version

    samples = [train_ds.samples[i] for i in train_ds.indices("test")]
    probabilities = score_version(version, train_ds, samples, cache_dir)
    labels = np.asarray([s.label for s in samples])
    weights = np.asarray([s.weight for s in samples])
    table = reliability_table(labels, probabilities, weights)
    _reliability_plot(table, out_dir / f"reliability-{version.manifest.get('track', 'chat')}.png")
    return {"ece": expected_calibration_error(labels, probabilities, weights), "reliability": table,
            "samples": len(samples), "calibration": version.manifest.get("calibration")}


def _reliability_plot(table: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect")
    ax.plot([r["mean_probability"] for r in table], [r["observed_rate"] for r in table], marker="o", label="model")
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("observed share who paid")
    ax.set_title("reliability on the simulator test split")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def eval_streams(train: list[StreamData], train_ds: Dataset, config: PresetEvalConfig) -> dict[str, list[StreamData]]:
    """The evaluation sets' streams: validation (before-paid rows there are where recipes are compared)
    and the fit's test split from the training preset, then the shift and NULL presets (read once)."""
    split_of = {s.stream_id: s.split for s in train_ds.streams}
    return {
        "validation": [s for s in train if split_of.get(s.stream_id) == "val"],
        "in-distribution": [s for s in train if split_of.get(s.stream_id) == "test"],
        "shift": streams_from_simulator(config.shift_streams, config.seed + 100, preset="shift"),
        "null": streams_from_simulator(config.null_streams, config.seed + 200, preset="null"),
    }


LEAD_TIME_SETS = ("in-distribution", "shift", "null")


def lead_time_metrics(settings: Settings, version: ModelVersion, named: dict[str, list[StreamData]],
                      config: PresetEvalConfig, log: Any) -> dict[str, dict[str, dict[str, float]]]:
    """{set: {"model" | "message count": training.lead_time.summarise(...)}} on the sets read once."""
    from models.scorer import DonorScorer
    from training.embeddings import EmbeddingCache
    from training.lead_time import lead_times, summarise

    scorer = DonorScorer.load(version, threads=settings.worker_threads)
    cache = EmbeddingCache(settings.state_dir / "cache", version.manifest.get("encoder_key", version.version))
    out = {}
    for name in LEAD_TIME_SETS:
        log(f"lead time: {version.version} on {name}, scored after every message")
        found = lead_times(named[name], scorer, cache=cache, k=config.k, label=scorer.feature_config.label)
        out[name] = {board: summarise(leads, rounds=config.bootstrap_rounds, seed=config.seed)
                     for board, leads in found.items()}
    return out


def run_preset_eval(settings: Settings, recipe: Recipe, config: PresetEvalConfig, out_dir: Path) -> dict[str, Any]:
    from rich.console import Console

    from training.train_classifier import main

    console = Console(stderr=True)
    log = lambda text: console.print(f"[dim]{text}[/dim]")  # noqa: E731
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = settings.state_dir / "cache"
    n_train = config.train_streams or recipe.streams
    log(f"simulating {n_train} '{recipe.preset}' training streams (seed {recipe.simulate_seed})")
    train = streams_from_simulator(n_train, recipe.simulate_seed, preset=recipe.preset)
    fit = main(replace(recipe.fit, baselines=False, promote=False, threads=settings.worker_threads,
                       encoder_dir=settings.base_model, note="evaluate --presets"), streams=train, settings=settings)
    train_ds = build_dataset(train, recipe.fit.dataset)  # the fit's dataset: same streams, same config
    label, width = recipe.fit.dataset.label, recipe.fit.dataset.max_messages
    log("simulating the shift and null sets")
    named = eval_streams(train, train_ds, config)
    sets = [before_paid_set(name, streams, label, width) for name, streams in named.items()]
    metrics: dict[str, Any] = {"recipe": str(recipe.path.name), "config": asdict(config), "sets": {}, "tracks": {}}
    for track, result in fit.tracks.items():
        log(f"track {track}: scoring {', '.join(s.name for s in sets)}")
        scores = score_sets(settings, result.version, train_ds, sets, with_history=track == "history",
                            cache_dir=cache_dir, seed=recipe.fit.seed, log=log)
        metrics["tracks"][track] = {
            "version": result.version.version, "val_pr_auc": result.val_pr_auc,
            "calibration": calibration_on_test(result.version, train_ds, cache_dir, out_dir),
            "lead_time": lead_time_metrics(settings, result.version, named, config, log),
            "sets": {s.name: {model: ranking_report(s.labels, values, s.stream_ids, k=config.k,
                                                    bootstrap_rounds=config.bootstrap_rounds,
                                                    permutations=config.permutations if s.name == "null" else 0,
                                                    seed=config.seed)
                              for model, values in scores[s.name].items()}
                     for s in sets},
        }
    for s in sets:
        durations = [(i.end - i.start).total_seconds() / 60 for i in s.dataset.streams]
        metrics["sets"][s.name] = {"streams": len(s.dataset.streams), "rows": len(s.samples),
                                   "payers": int(s.labels.sum()),
                                   "minutes": [round(min(durations)), round(max(durations))]}
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float), encoding="utf-8")
    (out_dir / "report.md").write_text(render_report(metrics, config), encoding="utf-8")
    return metrics


def run_lead_time(settings: Settings, recipe: Recipe, config: PresetEvalConfig, versions: list[ModelVersion],
                  out_dir: Path) -> dict[str, Any]:
    """The lead-time part alone, for versions this recipe already trained (the sets are simulated again,
    from the same seeds): lead-time.json and lead-time.md in `out_dir`."""
    from rich.console import Console

    console = Console(stderr=True)
    log = lambda text: console.print(f"[dim]{text}[/dim]")  # noqa: E731
    started = time.perf_counter()
    train = streams_from_simulator(config.train_streams or recipe.streams, recipe.simulate_seed, preset=recipe.preset)
    named = eval_streams(train, build_dataset(train, recipe.fit.dataset), config)
    metrics: dict[str, Any] = {"recipe": str(recipe.path.name), "config": asdict(config), "tracks": {}}
    for version in versions:
        track = str(version.manifest.get("track", version.version))
        metrics["tracks"][track] = {"version": version.version,
                                    "lead_time": lead_time_metrics(settings, version, named, config, log)}
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "lead-time.json").write_text(json.dumps(metrics, indent=2, default=float), encoding="utf-8")
    lines = ["# Lead time of the donor model on simulator presets", "",
             f"Recipe `{metrics['recipe']}`; the versions of `report.md`, the sets simulated again from the same seeds.", ""]
    for track, info in metrics["tracks"].items():
        lines += [f"## Track `{track}` (version `{info['version']}`)", "", *render_lead_time(info["lead_time"], config.k)]
    lines += [f"Total time {metrics['seconds']:.0f} s. Regenerate: `donorcast evaluate --presets --lead-time "
              f"--model {','.join(v.version for v in versions)} --out <dir>` (same state dir)."]
    (out_dir / "lead-time.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return metrics


def render_report(metrics: dict[str, Any], config: PresetEvalConfig) -> str:
    k = config.k
    lines = ["# Donor model on simulator presets it was not tuned on", "",
             f"Recipe `{metrics['recipe']}`; rows are before-paid snapshots (one per viewer). "
             f"Within-stream ROC-AUC and P@{k} are means over streams, with 95 % bootstrap intervals over "
             "streams. The NULL row's p is a one-sided permutation test (labels shuffled within streams) "
             "of within-stream ROC-AUC > 0.5.", "",
             "| set | streams | rows | payers | minutes |", "|---|---|---|---|---|"]
    for name, info in metrics["sets"].items():
        lines.append(f"| {name} | {info['streams']} | {info['rows']} | {info['payers']} | "
                     f"{info['minutes'][0]}-{info['minutes'][1]} |")
    for track, info in metrics["tracks"].items():
        cal = info["calibration"]
        lines += ["", f"## Track `{track}` (version `{info['version']}`, validation PR-AUC {info['val_pr_auc']:.3f})", "",
                  f"Calibration on the fit's test split ({cal['samples']} grid samples): ECE **{cal['ece']:.3f}** "
                  f"(Platt on validation: {cal['calibration']}); plot `reliability-{track}.png`.", ""]
        for set_name, models in info["sets"].items():
            lines += [f"### {set_name}", "",
                      f"| model | within-stream ROC-AUC | pooled ROC-AUC | PR-AUC | P@{k} (random) |"
                      + (" permutation p |" if set_name == "null" else ""),
                      "|---|---|---|---|---|" + ("---|" if set_name == "null" else "")]
            for model, m in models.items():
                row = (f"| {SHOWN.get(model, 'transformer (' + track + ')')} | {m['within_stream_roc_auc']:.3f} "
                       f"[{m['within_stream_roc_auc_ci_low']:.3f}, {m['within_stream_roc_auc_ci_high']:.3f}] | "
                       f"{m['pooled_roc_auc']:.3f} | {m['pr_auc']:.3f} | {m[f'p_at_{k}']:.3f} "
                       f"({m[f'random_p_at_{k}']:.3f}) |")
                if set_name == "null":
                    row += f" {m.get('permutation_p', float('nan')):.3f} |"
                lines.append(row)
            lines.append("")
        if info.get("lead_time"):
            lines += render_lead_time(info["lead_time"], k)
    lines += [f"Total time {metrics['seconds']:.0f} s. Regenerate: `donorcast evaluate --presets --out <dir>`."]
    return "\n".join(lines) + "\n"


def render_lead_time(lead: dict[str, dict[str, dict[str, float]]], k: int) -> list[str]:
    lines = [f"### lead time (top {k} before the first paid event)", "",
             f"Scores after every message, replayed as the live board; a payer is caught when they reach the "
             f"top {k} of their stream before paying; the lead is the time from then to the payment "
             "(training/lead_time.py).", "",
             "| set | board | payers | caught | median lead, min [95 % CI] |", "|---|---|---|---|---|"]
    for set_name, boards in lead.items():
        for board, m in boards.items():
            lines.append(f"| {set_name} | {'transformer' if board == 'model' else board} | {m['payers']:.0f} | "
                         f"{m['caught_share']:.1%} | {m['median_lead_minutes']:.1f} "
                         f"[{m['median_ci_low']:.1f}, {m['median_ci_high']:.1f}] |")
    return [*lines, ""]
