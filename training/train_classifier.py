"""The fit loop: train the donor classifier (both tracks) beside its baselines and register it.

    streams -> leak-free dataset (training.build_dataset) -> message embeddings (training.embeddings:
    frozen int8 ONNX encoder, cached by encoder + text) -> sample features (training.features) ->
    CLS transformer (AdamW + warmup, pos_weight, early stopping on validation PR-AUC) -> Platt
    calibration and threshold on validation (models.calibration) -> baselines on the same split ->
    registry version per track (weights, ONNX files, tokenizer, configs, data fingerprint, metrics)
    -> test report (training.evaluate).

Two tracks: "chat" (chat only; also scored on viewers never seen in training) and "history"
(viewer history from earlier streams fused beside the CLS output). The command is
training/fit_command.py, its defaults training/configs/donor-default.toml (training.recipe).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.scorer import FeatureConfig
from training.build_dataset import Dataset, DatasetConfig, Sample, StreamData
from training.embeddings import (
    EmbeddingCache,
    EncoderFiles,
    link_or_copy,
    load_embedder,
    prepare_encoder,
    prepare_static_encoder,
)
from training.features import FeatureSet, build_features

if TYPE_CHECKING:
    import torch

    from infra.settings import Settings
    from models.classifier import DonorClassifier
    from models.registry import ModelVersion


# ---------------------------------------------------------------- configuration

Track = Literal["chat", "history"]


# `fit --encoder-tier` -> the runtime encoder file (FitConfig.runtime_encoder) that tier trains and serves with.
ENCODER_TIERS = {"bert": "encoder_onnx_int8", "static": "static_encoder"}


@dataclass
class FitConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tracks: tuple[str, ...] = ("chat", "history")
    deploy_track: str = "history"  # the version `promote` makes live (falls back to the first track)
    promote: bool = False
    use_extras: bool = True
    lexical_buckets: int = 0  # learned hashed word/trigram vectors per message (models.lexical); 0 = off
    # model
    d_model: int = 96
    n_layers: int = 2
    n_heads: int = 4
    time_dim: int = 8
    dropout: float = 0.1
    # optimisation
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 64
    max_epochs: int = 20
    patience: int = 4
    warmup_fraction: float = 0.1
    loss: Literal["bce", "focal"] = "bce"
    focal_gamma: float = 2.0
    seed: int = 0
    device: str = "cpu"  # "auto": CUDA where present
    # encoder and runtime
    encoder_dir: Path | None = None  # default: packaged all-MiniLM-L6-v2
    encoder_max_length: int = 64
    # The encoder file training embeds with and DonorScorer loads. All are batch-invariant (the int8
    # export scales activations per row, training/export_onnx.py); int8 is the faster BERT one, and
    # "static_encoder" the fast tier (`--encoder-tier static`: a model2vec table distilled from the
    # checkpoint, its vocabulary extended with the training split's frequent chat words).
    runtime_encoder: Literal["encoder_onnx_int8", "encoder_onnx", "static_encoder"] = "encoder_onnx_int8"
    embed_batch_size: int = 64
    threads: int = 1
    baselines: bool = True
    report_dir: Path | None = None
    cache_dir: Path | None = None  # ONNX exports + embeddings; default <state_dir>/cache
    progress: bool = True
    note: str = ""

    def model_config(self, embed_dim: int, features: FeatureConfig) -> Any:
        from models.classifier import ClassifierConfig

        return ClassifierConfig(
            embed_dim=embed_dim, n_extras=features.n_extras, n_history=features.n_history,
            d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, time_dim=self.time_dim,
            dropout=self.dropout, lexical_buckets=features.lexical_buckets,
        )


@dataclass
class TrackResult:
    track: str
    version: ModelVersion
    val_pr_auc: float
    threshold: float
    epochs: int
    test_metrics: dict[str, float]


@dataclass
class FitResults:
    tracks: dict[str, TrackResult]
    dataset: dict[str, Any]
    report: Path | None
    metrics: dict[str, dict[str, dict[str, float]]]  # section -> model -> metrics
    promoted: str | None
    seconds: dict[str, float]


# ---------------------------------------------------------------- training the transformer

def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _tensors(feed: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    import torch

    return {k: torch.from_numpy(v).to(device) for k, v in feed.items()}


def predict_logits(model: DonorClassifier, features: FeatureSet, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            feed = features.feed(range(start, min(start + batch_size, len(features))))
            out.append(model(**_tensors(feed, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def train_transformer(
    train: FeatureSet, val: FeatureSet, config: FitConfig, *, log: Callable[[str], None] = print
) -> tuple[DonorClassifier, dict[str, Any]]:
    """Weighted BCE (pos_weight) or focal loss, AdamW with linear warmup then cosine decay, early
    stopping on validation PR-AUC; returns the best epoch's model."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import average_precision_score

    from models.classifier import DonorClassifier
    from models.scorer import sigmoid

    torch.manual_seed(config.seed)
    device = _device(config.device)
    model = DonorClassifier(config.model_config(train.embeddings.shape[1], train.config)).to(device)
    labels, weights = train.labels, train.weights
    pos_weight = float((weights * (1 - labels)).sum() / max((weights * labels).sum(), 1e-6))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = max(1, steps_per_epoch * config.max_epochs)
    warmup = max(1, int(total * config.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
    )
    rng = np.random.default_rng(config.seed)
    packed = train.packed()
    best = {"pr_auc": -1.0, "epoch": 0, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    history: list[dict[str, float]] = []
    val_labels, val_weights = val.labels, val.weights
    stale = 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order, losses = rng.permutation(len(train)), []
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            logits = model(**_tensors(packed.feed(index), device))
            y = torch.from_numpy(labels[index]).to(device)
            w = torch.from_numpy(weights[index]).to(device)
            loss = F.binary_cross_entropy_with_logits(
                logits, y, pos_weight=torch.tensor(pos_weight, device=device), reduction="none")
            if config.loss == "focal":
                p_true = torch.where(y > 0.5, torch.sigmoid(logits), 1 - torch.sigmoid(logits))
                loss = loss * (1 - p_true).pow(config.focal_gamma)
            loss = (loss * w).sum() / w.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        val_scores = sigmoid(predict_logits(model, val, device=device))
        val_ap = float(average_precision_score(val_labels, val_scores, sample_weight=val_weights)) if val_labels.sum() else 0.0
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_pr_auc": val_ap})
        log(f"epoch {epoch:2d}  train loss {np.mean(losses):.4f}  val PR-AUC {val_ap:.4f}")
        if val_ap > best["pr_auc"] + 1e-4:
            best = {"pr_auc": val_ap, "epoch": epoch, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            stale = 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best["state"])
    model = model.to("cpu").eval()
    return model, {"best_epoch": best["epoch"], "val_pr_auc": best["pr_auc"], "pos_weight": pos_weight,
                   "epochs": history}


# ---------------------------------------------------------------- registry

def _write_version(
    registry_root: Path, files: EncoderFiles, model: DonorClassifier, val: FeatureSet, manifest: dict[str, Any],
) -> ModelVersion:
    """A registry version: encoder (linked), int8/fp32 ONNX, classifier .pt + ONNX with parity check."""
    import onnxruntime as ort
    import torch

    from models.classifier import export_classifier_onnx, save_classifier
    from models.registry import ModelRegistry

    registry = ModelRegistry(registry_root)
    version, folder = registry.create_version()
    link_or_copy(files.encoder_dir, folder / "encoder")
    encoder_files = {"encoder_dir": "encoder"}
    if files.static_dir is not None:
        link_or_copy(files.static_dir, folder / "static_encoder")
        encoder_files["static_encoder"] = "static_encoder"
    if files.onnx is not None and files.onnx_int8 is not None:
        # Copies, not links: `donorcast export --version` rewrites these files in place.
        shutil.copy2(files.onnx, folder / "encoder.onnx")
        shutil.copy2(files.onnx_int8, folder / "encoder.int8.onnx")
        encoder_files |= {"encoder_onnx": "encoder.onnx", "encoder_onnx_int8": "encoder.int8.onnx"}
    save_classifier(model, folder / "classifier.pt")
    export_classifier_onnx(model, folder / "classifier.onnx")
    # Parity on real validation inputs: the ONNX graph the live agents run vs PyTorch.
    feed = val.feed(range(min(64, len(val)))) if len(val) else None
    parity = 0.0
    if feed is not None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(folder / "classifier.onnx"), options, providers=["CPUExecutionProvider"])
        (onnx_logits,) = session.run(["logit"], feed)
        with torch.no_grad():
            torch_logits = model(**_tensors(feed, "cpu")).numpy()
        parity = float(np.abs(onnx_logits - torch_logits).max())
        if parity > 1e-3:
            raise RuntimeError(f"classifier ONNX export differs from PyTorch by {parity:.2e} (limit 1e-3)")
    manifest = {
        **manifest,
        "files": {**encoder_files, "classifier_pt": "classifier.pt", "classifier_onnx": "classifier.onnx"},
        "classifier_config": model.config.to_dict(),
        "onnx_parity_max_abs_logit": parity,
        "encoder_key": f"{files.key}-{manifest['runtime_encoder']}",
        "encoder_max_length": files.max_length,
    }
    return registry.commit(version, manifest)


# ---------------------------------------------------------------- the job

def training_texts(dataset: Dataset) -> Iterator[str]:
    """Every input text of the training split's streams: what the static tier's vocabulary may learn from."""
    return (text for track in dataset.tracks if dataset.streams[track.stream].split == "train" for text in track.texts)


BASELINE_NAMES = {"tfidf": "tfidf+activity", "tfidf_all": "tfidf(all messages)+activity"}  # names in the report


def main(
    config: FitConfig, *, streams: Iterable[StreamData] | None = None, dataset: Dataset | None = None,
    settings: Settings | None = None,
) -> FitResults:
    """Build (or take) the dataset, train every requested track, register, report, maybe promote."""
    import torch
    from rich.console import Console

    from infra.settings import load_settings
    from models.calibration import fit_platt
    from models.encoder import default_base_model_dir
    from models.registry import ModelRegistry
    from training.baselines import baseline_splits, fit_baselines
    from training.build_dataset import build_dataset
    from training.evaluate import EvalSamples, ModelScores, Section, best_f1_threshold, write_report

    console = Console(stderr=True)
    log = (lambda text: console.print(f"[dim]{text}[/dim]")) if config.progress else (lambda text: None)
    settings = settings or load_settings()
    torch.set_num_threads(config.threads)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    if dataset is None:
        if streams is None:
            raise ValueError("main() needs streams or a dataset")
        dataset = build_dataset(streams, config.dataset)
    summary = dataset.summary()
    log(f"dataset {json.dumps(summary)}")
    split_samples = {name: [dataset.samples[i] for i in dataset.indices(name)] for name in ("train", "val", "test")}
    for name in ("train", "val"):
        labels = {s.label for s in split_samples[name]}
        if labels != {0, 1}:
            raise ValueError(f"the {name} split needs positive and negative samples (has labels {sorted(labels)}); "
                             "add streams or change the split fractions")
    seconds["dataset"] = time.perf_counter() - clock

    clock = time.perf_counter()
    cache_dir = config.cache_dir or settings.state_dir / "cache"
    encoder_dir = config.encoder_dir or default_base_model_dir()
    if config.runtime_encoder == "static_encoder":
        files = prepare_static_encoder(encoder_dir, cache_dir, training_texts(dataset), config.encoder_max_length)
    else:
        files = prepare_encoder(encoder_dir, cache_dir, config.encoder_max_length)
    embed = load_embedder(files, runtime=config.runtime_encoder, threads=config.threads,
                          batch_size=config.embed_batch_size)
    cache = EmbeddingCache(cache_dir, f"{files.key}-{config.runtime_encoder}")
    base_features = replace(config.dataset.feature_config(use_extras=config.use_extras, use_history=False),
                            lexical_buckets=config.lexical_buckets)
    every = [s for name in ("train", "val", "test") for s in split_samples[name]]
    all_features = build_features(dataset, every, base_features, embed, cache, progress=config.progress)
    seconds["embed"] = time.perf_counter() - clock
    log(f"embedded {all_features.embeddings.shape[0]} distinct texts in {seconds['embed']:.1f}s")

    sections: list[Section] = []
    test_eval = EvalSamples.from_dataset(dataset, split_samples["test"])
    new_mask = test_eval.new_viewer
    test_groups = np.asarray([dataset.streams[dataset.tracks[s.track].stream].group for s in split_samples["test"]])
    last_mask = _last_snapshot_mask(split_samples["test"])
    results: dict[str, TrackResult] = {}
    for track in config.tracks:
        clock = time.perf_counter()
        features = replace(base_features, use_history=track == "history")
        sets = {name: all_features.subset(split_samples[name]) for name in ("train", "val", "test")}
        for fs in sets.values():
            fs.config = features
        log(f"track {track}: training the transformer")
        model, train_log = train_transformer(sets["train"], sets["val"], config, log=log)
        val_logits = predict_logits(model, sets["val"])
        calibration = fit_platt(val_logits, sets["val"].labels, sets["val"].weights)
        val_scores = calibration.probabilities(val_logits)
        threshold = best_f1_threshold(sets["val"].labels, val_scores, sets["val"].weights)
        test_scores = calibration.probabilities(predict_logits(model, sets["test"])) if len(sets["test"]) else np.zeros(0)
        name = "transformer" + ("+history" if track == "history" else "")
        models = [ModelScores(name, test_scores, threshold)]
        if config.baselines:
            splits = baseline_splits(dataset, sets, features.max_messages)
            evaluate_on = {"test": splits["test"]} if "test" in splits else {}
            baseline_scores = fit_baselines(splits["train"], splits["val"], evaluate_on, with_history=track == "history",
                                            label=config.dataset.label, seed=config.seed, progress=log)
            suffix = "+history" if track == "history" else ""
            for base, by_split in baseline_scores.items():
                if "test" in by_split:
                    base_threshold = best_f1_threshold(splits["val"].labels, by_split["val"], splits["val"].weights)
                    shown = base if base == "history_rule" else f"{BASELINE_NAMES.get(base, base)}{suffix}"
                    models.append(ModelScores(shown, by_split["test"], base_threshold))
        title = "chat only" if track == "chat" else "with viewer history"
        if len(test_eval):
            sections.append(Section(f"{title} · all test viewers", test_eval, models, plot_key=track))
            sections += _subsections(title, test_eval, models, new_mask, test_groups, last_mask)
        manifest = {
            "label": config.dataset.label, "track": track, "feature_config": features.to_dict(),
            "dataset_config": asdict(config.dataset), "data_fingerprint": dataset.fingerprint,
            "dataset_summary": summary, "threshold": threshold, "base_model": str(files.encoder_dir),
            "calibration": calibration.to_dict(),
            "runtime_encoder": config.runtime_encoder,
            "training": {k: v for k, v in asdict(config).items()
                         if k not in ("dataset", "encoder_dir", "report_dir", "cache_dir")},
            "training_log": train_log,
            "streams": {split: [s.stream_id for s in dataset.streams if s.split == split] for split in ("train", "val", "test")},
            "metrics": {"val_pr_auc": train_log["val_pr_auc"]},
            "notes": config.note,
        }
        version = _write_version(settings.registry_dir, files, model, sets["val"], manifest)
        results[track] = TrackResult(track=track, version=version, val_pr_auc=train_log["val_pr_auc"],
                                     threshold=threshold, epochs=len(train_log["epochs"]), test_metrics={})
        seconds[f"track_{track}"] = time.perf_counter() - clock
        log(f"track {track}: version {version.version}, val PR-AUC {train_log['val_pr_auc']:.4f}")

    report = None
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    if sections:
        deploy = results.get(config.deploy_track) or next(iter(results.values()))
        out_dir = config.report_dir or deploy.version.path / "report"
        notes = [f"dataset fingerprint `{dataset.fingerprint}`; versions: "
                 + ", ".join(f"{t} = `{r.version.version}`" for t, r in results.items()),
                 "thresholds for F1 were chosen on the validation split; the test split was used once."]
        report = write_report(out_dir, "Donor classifier: held-out test", sections,
                              label=config.dataset.label, notes=notes)
        metrics = {s.title: s.metrics for s in sections}
        for track, result in results.items():
            name = "transformer" + ("+history" if track == "history" else "")
            test_metrics = {s.title: s.metrics.get(name, {}) for s in sections if name in s.metrics}
            result.test_metrics = next(iter(test_metrics.values()), {})
            update_manifest(result.version, {"metrics": {"val_pr_auc": result.val_pr_auc, **result.test_metrics,
                                                          "test_sections": test_metrics},
                                              "report": str(report)})
            result.version = ModelRegistry(settings.registry_dir).get(result.version.version)
    promoted = None
    if config.promote and results:
        deploy = results.get(config.deploy_track) or next(iter(results.values()))
        ModelRegistry(settings.registry_dir).promote(deploy.version.version)
        promoted = deploy.version.version
    return FitResults(tracks=results, dataset=summary, report=report, metrics=metrics, promoted=promoted,
                      seconds=seconds)


def _last_snapshot_mask(samples: list[Sample]) -> np.ndarray:
    """True for each (stream, viewer)'s last snapshot: for `member`, all of the viewer's chat."""
    last: dict[int, int] = {}
    for i, sample in enumerate(samples):
        if sample.track not in last or sample.snapshot_seconds >= samples[last[sample.track]].snapshot_seconds:
            last[sample.track] = i
    mask = np.zeros(len(samples), dtype=bool)
    mask[list(last.values())] = True
    return mask


def _subsections(title: str, samples: Any, models: list[Any], new: np.ndarray, groups: np.ndarray,
                 last: np.ndarray) -> list[Any]:
    """New viewers only; each viewer's last snapshot (unweighted: one row per stream-viewer pair);
    and, when the test holds several groups (channels), each group on its own."""
    from training.evaluate import ModelScores, Section

    def part(name: str, mask: np.ndarray, *, unweighted: bool = False) -> Any:
        subset = samples.subset(mask)
        if unweighted:
            subset.weight = np.ones(len(subset))
        return Section(f"{title} · {name}", subset, [ModelScores(m.name, m.scores[mask], m.threshold) for m in models])

    out = [part("new viewers only (never in a training stream)", new)] if new.any() else []
    out.append(part("each viewer's last snapshot (one row per stream-viewer)", last, unweighted=True))
    if (last & new).any():
        out.append(part("each viewer's last snapshot, new viewers only", last & new, unweighted=True))
    names = sorted(set(groups.tolist()))
    if len(names) > 1:
        for group in names:
            mask = groups == group
            out.append(part(f"test group `{group}`, all viewers", mask))
            if (mask & new).any():
                out.append(part(f"test group `{group}`, new viewers", mask & new))
    return out


def update_manifest(version: ModelVersion, changes: dict[str, Any]) -> None:
    """Add test metrics after the report exists (the files list is unchanged)."""
    from models.registry import ModelRegistry

    manifest = {**version.manifest, **changes}
    ModelRegistry(version.path.parent).commit(version.version, manifest)
