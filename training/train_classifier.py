"""`donorcast fit`: train the donor classifier (both tracks) beside its baselines and register it.

    streams -> leak-free dataset (training.build_dataset) -> message embeddings (frozen int8 ONNX
    encoder, cached by encoder + text) -> CLS transformer (AdamW + warmup, pos_weight, early stopping
    on validation PR-AUC, threshold chosen on validation) -> baselines on the same split ->
    registry version per track (weights, ONNX files, tokenizer, configs, data fingerprint, metrics)
    -> test report (training.evaluate).

Two tracks: "chat" (chat only; also scored on viewers never seen in training) and "history"
(viewer history from earlier streams fused beside the CLS output).

Embeddings: the encoder is the int8 ONNX export the live agents load, so training sees exactly the
vectors the deployed model will see. Sequences are assembled with `models.scorer.time_features`,
`message_extras`, `history_vector` and padded with `pad_batch`: the live path, not a copy of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import typer

from models.lexical import lexical_matrix
from models.scorer import (
    FeatureConfig,
    ViewerSequenceInput,
    history_vector,
    message_extras,
    pad_batch,
    time_features,
    window_clock,
)
from training.build_dataset import Dataset, DatasetConfig, Sample, StreamData

if TYPE_CHECKING:
    import torch

    from infra.settings import Settings
    from models.classifier import DonorClassifier
    from models.registry import ModelVersion


# ---------------------------------------------------------------- encoder files and embeddings

EmbedFn = Callable[[Sequence[str]], np.ndarray]


# ---------------------------------------------------------------- encoder files

def encoder_fingerprint(encoder_dir: Path, max_length: int) -> str:
    """Hash of every file of a checkpoint dir (+ max_length): the key of exports and embedding caches."""
    digest = hashlib.sha256(f"max_length={max_length}".encode())
    for path in sorted(p for p in Path(encoder_dir).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(encoder_dir)).encode())
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EncoderFiles:
    encoder_dir: Path  # HF checkpoint with tokenizer
    onnx: Path
    onnx_int8: Path
    key: str
    max_length: int


def prepare_encoder(encoder_dir: Path, cache_dir: Path, max_length: int = 64) -> EncoderFiles:
    """fp32 + int8 ONNX exports of a checkpoint, made once per checkpoint and kept in the cache."""
    from training.export_onnx import export_encoder_onnx, quantize_int8

    key = encoder_fingerprint(encoder_dir, max_length)
    folder = Path(cache_dir) / "onnx" / key
    fp32, int8 = folder / "encoder.onnx", folder / "encoder.int8.onnx"
    if not int8.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
        try:
            export_encoder_onnx(encoder_dir, staging / fp32.name)
            quantize_int8(staging / fp32.name, staging / int8.name)
            if folder.exists():  # another job finished first
                shutil.rmtree(staging)
            else:
                os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return EncoderFiles(encoder_dir=Path(encoder_dir), onnx=fp32, onnx_int8=int8, key=key, max_length=max_length)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard link (no extra disk) where the filesystem allows, else copy; folders recursively."""
    if source.is_dir():
        shutil.copytree(source, target, copy_function=_link_file)
    else:
        _link_file(str(source), str(target))


def _link_file(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def load_embedder(files: EncoderFiles, *, runtime: str = "encoder_onnx_int8", threads: int = 1,
                  batch_size: int = 64) -> EmbedFn:
    from models.onnx_encoder import OnnxEncoder

    onnx = files.onnx_int8 if runtime == "encoder_onnx_int8" else files.onnx
    encoder = OnnxEncoder.load(onnx, files.encoder_dir, threads=threads, max_length=files.max_length)
    return lambda texts: encoder.embed(list(texts), batch_size=batch_size)


# ---------------------------------------------------------------- embedding cache

class EmbeddingCache:
    """text -> float32 vector on disk for one encoder key: append-only shards of (sha1, vector)."""

    def __init__(self, root: Path, key: str) -> None:
        self.folder = Path(root) / "embeddings" / key
        self.index: dict[bytes, tuple[int, int]] = {}
        self.shards: list[np.ndarray] = []
        if self.folder.is_dir():
            for keys_file in sorted(self.folder.glob("keys-*.npy")):
                vectors = np.load(keys_file.with_name(keys_file.name.replace("keys-", "vecs-")))
                for row, digest in enumerate(np.load(keys_file)):
                    self.index[digest.tobytes()] = (len(self.shards), row)
                self.shards.append(vectors)

    @staticmethod
    def digest(text: str) -> bytes:
        return hashlib.sha1(text.encode("utf-8")).digest()

    def __contains__(self, text: str) -> bool:
        return self.digest(text) in self.index

    def get(self, text: str) -> np.ndarray:
        shard, row = self.index[self.digest(text)]
        return self.shards[shard][row]

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        if not texts:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{len(list(self.folder.glob('keys-*.npy'))):05d}-{os.getpid()}-{os.urandom(3).hex()}"
        # (N, 20) uint8, not an "S20" array: numpy's bytes type drops trailing NUL bytes of a digest.
        digests = np.frombuffer(b"".join(self.digest(t) for t in texts), dtype=np.uint8).reshape(len(texts), 20)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        np.save(self.folder / f"vecs-{name}.npy", vectors)  # vectors first: keys make a shard visible
        np.save(self.folder / f"keys-{name}.npy", digests)
        for row, digest in enumerate(digests):
            self.index[digest.tobytes()] = (len(self.shards), row)
        self.shards.append(vectors)


def embed_texts(
    texts: Sequence[str], embed: EmbedFn, cache: EmbeddingCache | None, *, chunk: int = 2048,
    progress: bool = False,
) -> np.ndarray:
    """(len(texts), D) for distinct texts, embedding only those the cache lacks (in chunks, so an
    interrupted job keeps what it has done)."""
    missing = [t for t in texts if cache is None or t not in cache]
    computed: dict[str, np.ndarray] = {}
    if missing:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("embedding messages"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("embed", total=len(missing))
            for start in range(0, len(missing), chunk):
                part = missing[start : start + chunk]
                vectors = np.asarray(embed(part), dtype=np.float32)
                if cache is not None:
                    cache.add(part, vectors)
                else:
                    computed.update(zip(part, vectors, strict=True))
                bar.advance(task, len(part))
    rows = [cache.get(t) if cache is not None else computed[t] for t in texts]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------- features of samples

@dataclass
class TrackArrays:
    rows: np.ndarray  # (n,) row of each message in the embedding matrix (-1: not needed)
    starts: np.ndarray  # (n,) seconds since stream start
    gaps: np.ndarray  # (n,) seconds since the viewer's previous input message
    extras: np.ndarray  # (n, 4)


@dataclass
class FeatureSet:
    """Classifier inputs for a list of samples, built from one shared embedding matrix."""

    dataset: Dataset
    samples: list[Sample]
    config: FeatureConfig
    tracks: dict[int, TrackArrays]
    embeddings: np.ndarray
    lexical: np.ndarray | None = None  # (U, K) hashed ids per distinct text, rows as in `embeddings`

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([s.label for s in self.samples], dtype=np.float32)

    @property
    def weights(self) -> np.ndarray:
        return np.asarray([s.weight for s in self.samples], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def sequence(self, i: int) -> ViewerSequenceInput:
        sample = self.samples[i]
        arrays, track = self.tracks[sample.track], self.dataset.tracks[sample.track]
        first = max(0, sample.end - self.config.max_messages)
        window = slice(first, sample.end)
        return ViewerSequenceInput(
            embeddings=self.embeddings[arrays.rows[window]],
            seconds_since_start=window_clock(arrays.starts[window], self.config.clock),
            seconds_since_prev=arrays.gaps[window],
            extras=arrays.extras[window] if self.config.use_extras else None,
            history=history_vector(track.history) if self.config.use_history else None,
            message_ids=tuple(track.message_ids[window]),
            lexical=self._lexical_rows(arrays.rows[window]),
        )

    def _lexical_rows(self, rows: np.ndarray) -> np.ndarray | None:
        if not self.config.uses_lexical:
            return None
        if self.lexical is None:
            raise ValueError("the model reads hashed lexical ids; these features were built without them")
        return self.lexical[rows]

    def feed(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The ONNX/PyTorch feed for some samples, through `pad_batch` (the live path)."""
        return pad_batch([self.sequence(i) for i in indices], self.config)

    def packed(self) -> PackedFeatures:
        """All samples as fixed-width arrays (row indices, not vectors): fast batches for training."""
        n, width = len(self), self.config.max_messages
        packed = PackedFeatures(
            rows=np.full((n, width), -1, dtype=np.int64),
            starts=np.zeros((n, width), dtype=np.float32), gaps=np.zeros((n, width), dtype=np.float32),
            extras=np.zeros((n, width, self.config.n_extras), dtype=np.float32),
            history=np.zeros((n, self.config.n_history), dtype=np.float32),
            lengths=np.zeros(n, dtype=np.int64), embeddings=self.embeddings, config=self.config,
            lexical=self.lexical if self.config.uses_lexical else None,
        )
        for i, sample in enumerate(self.samples):
            arrays, track = self.tracks[sample.track], self.dataset.tracks[sample.track]
            window = slice(max(0, sample.end - width), sample.end)
            t = window.stop - window.start
            packed.rows[i, :t] = arrays.rows[window]
            packed.starts[i, :t] = window_clock(arrays.starts[window], self.config.clock)
            packed.gaps[i, :t] = arrays.gaps[window]
            if self.config.use_extras:
                packed.extras[i, :t] = arrays.extras[window]
            if self.config.use_history:
                packed.history[i] = history_vector(track.history)
            packed.lengths[i] = t
        return packed

    def mean_embeddings(self) -> np.ndarray:
        return np.stack([self.sequence(i).embeddings.mean(axis=0) for i in range(len(self))])

    def subset(self, samples: list[Sample]) -> FeatureSet:
        return FeatureSet(self.dataset, samples, self.config, self.tracks, self.embeddings, self.lexical)


@dataclass
class PackedFeatures:
    """Samples as padded arrays; `feed(index)` equals `FeatureSet.feed(index)` (tested)."""

    rows: np.ndarray  # (N, W) embedding row per message, -1 = padding
    starts: np.ndarray  # (N, W)
    gaps: np.ndarray  # (N, W)
    extras: np.ndarray  # (N, W, k)
    history: np.ndarray  # (N, h)
    lengths: np.ndarray  # (N,)
    embeddings: np.ndarray  # (U, D)
    config: FeatureConfig
    lexical: np.ndarray | None = None  # (U, K)

    def feed(self, index: np.ndarray) -> dict[str, np.ndarray]:
        width = int(self.lengths[index].max())  # pad to the batch's longest, like pad_batch
        rows = self.rows[index, :width]
        feed = {
            "embeddings": np.where((rows >= 0)[..., None], self.embeddings[np.maximum(rows, 0)], 0.0).astype(np.float32),
            "seconds_since_start": self.starts[index, :width],
            "seconds_since_prev": self.gaps[index, :width],
            "padding_mask": rows < 0,
        }
        if self.config.use_extras:
            feed["extras"] = self.extras[index, :width]
        if self.config.use_history:
            feed["history"] = self.history[index]
        if self.lexical is not None:
            feed["lexical_ids"] = np.where((rows >= 0)[..., None], self.lexical[np.maximum(rows, 0)], 0).astype(np.int64)
        return feed


def track_arrays(texts: Sequence[str], seconds: np.ndarray, rows: np.ndarray) -> TrackArrays:
    """Per-message features of a whole track; a window's slice equals what `sequence_input` builds
    for that window (gaps and message numbers do not depend on where the window starts)."""
    starts, gaps = time_features(seconds)
    return TrackArrays(rows=rows, starts=starts, gaps=gaps,
                       extras=message_extras(texts, range(1, len(texts) + 1)))


def build_features(
    dataset: Dataset, samples: Sequence[Sample], config: FeatureConfig, embed: EmbedFn,
    cache: EmbeddingCache | None, *, progress: bool = False,
) -> FeatureSet:
    """Embed every distinct text inside some sample's window (once), then index tracks into it."""
    needed: dict[int, tuple[int, int]] = {}
    for sample in samples:
        first = max(0, sample.end - config.max_messages)
        low, high = needed.get(sample.track, (first, sample.end))
        needed[sample.track] = (min(low, first), max(high, sample.end))
    vocabulary: dict[str, int] = {}
    for track_index, (low, high) in needed.items():
        for text in dataset.tracks[track_index].texts[low:high]:
            vocabulary.setdefault(text, len(vocabulary))
    matrix = embed_texts(list(vocabulary), embed, cache, progress=progress)
    lexical = (lexical_matrix(vocabulary, config.lexical_buckets, config.lexical_per_message).astype(np.int32)
               if config.uses_lexical else None)
    tracks = {}
    for track_index, (low, high) in needed.items():
        track = dataset.tracks[track_index]
        rows = np.full(len(track.texts), -1, dtype=np.int64)
        rows[low:high] = [vocabulary[t] for t in track.texts[low:high]]
        tracks[track_index] = track_arrays(track.texts, track.clock, rows)
    return FeatureSet(dataset=dataset, samples=list(samples), config=config, tracks=tracks, embeddings=matrix,
                      lexical=lexical)


# ---------------------------------------------------------------- configuration

Track = Literal["chat", "history"]


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
    # The encoder file training embeds with and DonorScorer loads. int8 is faster, but ONNX Runtime's
    # dynamic quantisation scales activations per batch tensor, so a text's vector depends a little
    # on the texts batched with it; "encoder_onnx" (fp32) is batch-invariant.
    runtime_encoder: Literal["encoder_onnx_int8", "encoder_onnx"] = "encoder_onnx_int8"
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
    # Copies, not links: `donorcast export --version` rewrites these files in place.
    shutil.copy2(files.onnx, folder / "encoder.onnx")
    shutil.copy2(files.onnx_int8, folder / "encoder.int8.onnx")
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
        "files": {"encoder_dir": "encoder", "encoder_onnx": "encoder.onnx", "encoder_onnx_int8": "encoder.int8.onnx",
                  "classifier_pt": "classifier.pt", "classifier_onnx": "classifier.onnx"},
        "classifier_config": model.config.to_dict(),
        "onnx_parity_max_abs_logit": parity,
        "encoder_key": f"{files.key}-{manifest['runtime_encoder']}",
        "encoder_max_length": files.max_length,
    }
    return registry.commit(version, manifest)


# ---------------------------------------------------------------- the job

BASELINE_NAMES = {"tfidf": "tfidf+activity", "tfidf_all": "tfidf(all messages)+activity"}  # names in the report


def _baseline_splits(dataset: Dataset, sets: dict[str, FeatureSet], max_messages: int) -> dict[str, Any]:
    from training.baselines import SplitData, activity_features, history_matrix, window_texts

    return {
        name: SplitData(
            activity=activity_features(dataset, fs.samples), texts=window_texts(dataset, fs.samples, max_messages),
            all_texts=window_texts(dataset, fs.samples, None),
            mean_embeddings=fs.mean_embeddings(), history=history_matrix(dataset, fs.samples),
            labels=fs.labels.astype(np.int64), weights=fs.weights.astype(np.float64),
        )
        for name, fs in sets.items() if len(fs)
    }


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
    from training.baselines import fit_baselines
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
    files = prepare_encoder(config.encoder_dir or default_base_model_dir(), cache_dir, config.encoder_max_length)
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
            splits = _baseline_splits(dataset, sets, features.max_messages)
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
    from training.baselines import fit_baselines
    from training.build_dataset import build_dataset
    from training.evaluate import EvalSamples, ModelScores, Section, best_f1_threshold, write_report

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
        splits = _baseline_splits(dataset, sets, scorer.feature_config.max_messages)
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


# ---------------------------------------------------------------- data sources

def channel_group(path: Path) -> str:
    """Split group (channel) of a chat file from the layouts we know: `<channel>/history/<video>.json`
    (HundredBeans) and `rbtv-*` folders; other files share one group."""
    parts = path.parts
    if "history" in parts and parts.index("history") > 0:
        return parts[parts.index("history") - 1]
    return "rbtv" if any("rbtv" in p.lower() for p in parts) else ""


def load_streams(settings: Settings, *, files: Sequence[Path] = (), simulate: int = 0, seed: int = 7,
                 preset: str = "mixed") -> list[StreamData]:
    """Streams from chat files, from the simulator, or (neither given) from PostgreSQL."""
    from training.build_dataset import streams_from_database, streams_from_files, streams_from_simulator

    if files:
        return list(streams_from_files(files, group_of=channel_group))
    if simulate:
        return streams_from_simulator(simulate, seed, preset=preset)
    import asyncio

    from infra.postgres import create_pool
    from infra.services import running_services

    with running_services(settings, kafka=False) as endpoints:
        async def _load() -> list[StreamData]:
            pool = await create_pool(endpoints.database_url)  # type: ignore[arg-type]
            try:
                return await streams_from_database(pool)
            finally:
                await pool.close()

        return asyncio.run(_load())


# ---------------------------------------------------------------- command

def fit_command(
    ctx: typer.Context,
    data: Annotated[list[Path] | None, typer.Argument(metavar="[FILES]...", help=(
        "chat files (any supported format); default: the recipe's simulated streams with --simulate, "
        "else PostgreSQL"))] = None,
    recipe: Annotated[Path | None, typer.Option(help="training recipe TOML (default: training/configs/donor-default.toml)")]
    = None,
    label: Annotated[str | None, typer.Option(metavar="paid|member|conversion", help="what to predict")] = None,
    simulate: Annotated[int | None, typer.Option(help="train on N simulated streams of the recipe's preset")] = None,
    preset: Annotated[str | None, typer.Option(help="simulator preset for --simulate (default: the recipe's)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    tracks: Annotated[str | None, typer.Option(metavar="chat,history", help="comma list of tracks")] = None,
    deploy_track: Annotated[str | None, typer.Option(metavar="TRACK", help="the track --promote makes live")] = None,
    promote: Annotated[bool, typer.Option("--promote/--no-promote", help="promote the deploy track's version")] = False,
    n_snapshots: Annotated[int | None, typer.Option(help="snapshot times per stream")] = None,
    max_messages: Annotated[int | None, typer.Option(help="newest messages per sequence")] = None,
    max_viewers_per_stream: Annotated[int | None, typer.Option(help="subsample viewers (speed)")] = None,
    max_epochs: Annotated[int | None, typer.Option()] = None,
    lexical_buckets: Annotated[int | None, typer.Option(help="hashed word/trigram table rows the model learns (0 = off)")] = None,
    encoder: Annotated[Path | None, typer.Option(help="HF checkpoint dir (default: settings.base_model or packaged MiniLM)")] = None,
    device: Annotated[str | None, typer.Option(metavar="cpu|cuda|auto", help="classifier training device")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="where to write the test report")] = None,
) -> None:
    """Train the donor classifier (chat-only and with-history tracks) beside its baselines; register it.
    With no flags it follows training/configs/donor-default.toml; each flag overrides the recipe."""
    from rich.console import Console
    from rich.table import Table

    from infra.cli import settings_from
    from infra.errors import InputError
    from training.recipe import load_recipe, with_overrides

    settings = settings_from(ctx)
    try:
        plan = load_recipe(recipe)
        config = with_overrides(
            plan.fit, label=label, n_snapshots=n_snapshots, max_messages=max_messages,
            max_viewers_per_stream=max_viewers_per_stream, seed=seed, max_epochs=max_epochs,
            lexical_buckets=lexical_buckets, device=device, deploy_track=deploy_track,
            tracks=tuple(t.strip() for t in tracks.split(",") if t.strip()) if tracks else None,
        )
    except (ValueError, OSError) as error:
        raise InputError(f"training recipe: {error}") from None
    config = replace(config, promote=promote, threads=settings.worker_threads,
                     encoder_dir=encoder or settings.base_model, report_dir=report_dir,
                     note=f"recipe {plan.path.name}")
    streams = load_streams(settings, files=data or [], simulate=simulate or 0,
                           seed=plan.simulate_seed if seed is None else seed + 7, preset=preset or plan.preset)
    results = main(config, streams=streams, settings=settings)
    table = Table("track", "version", "val PR-AUC", "test PR-AUC", "test ROC-AUC", "threshold")
    for track, result in results.tracks.items():
        m = result.test_metrics
        table.add_row(track, result.version.version, f"{result.val_pr_auc:.3f}", f"{m.get('pr_auc', float('nan')):.3f}",
                      f"{m.get('roc_auc', float('nan')):.3f}", f"{result.threshold:.3f}")
    console = Console()
    console.print(table)
    if results.report:
        console.print(f"report: {results.report}")
    if results.promoted:
        console.print(f"promoted {results.promoted}")
