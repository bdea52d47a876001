"""Coherence decay (`donorcast analyze coherence`): how similar are two chat messages of one stream,
as a function of the time between them — before vs after domain pretraining.

The seed project showed this as a figure ("Pairwise Coherence" over 0-300 s, pre vs post training)
with no code behind it. Our definition, stated so it can be checked:

- For every pair of messages (i, j) of the same stream with 0 <= t_j - t_i < max_lag, from different
  viewers (one viewer repeating themselves would dominate the shortest lags; `--include-same-viewer`
  keeps them), take the cosine similarity of their mean-pooled embeddings, and average per lag bin.
- Baseline: the mean cosine of random same-stream pairs at least `baseline_min_lag` seconds apart.
  `normalized` = bin mean / baseline, so 1.0 means "no more alike than unrelated messages of the
  same stream" — the seed's curves decayed towards ~1.0.
- Each stream contributes one contiguous window of at most `max_messages` messages (seeded), so
  dense chat does not need every pair of a four-hour stream.

Output: coherence.json (bins with pair counts, raw and normalized means per encoder) and
coherence.png (matplotlib, Agg).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import typer
from rich.console import Console

console = Console(stderr=True)
analyze_app = typer.Typer(help="Analyses of models on chat.", no_args_is_help=True)

DEFAULT_EDGES = (0, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300)


class Encoder(Protocol):
    def embed(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray: ...


@dataclass(frozen=True)
class TimedTexts:
    """One stream's model-input messages: text, seconds since the stream's first message, viewer."""

    stream_id: str
    texts: list[str]
    seconds: np.ndarray
    viewers: list[str]


@dataclass
class CoherenceConfig:
    edges: tuple[float, ...] = DEFAULT_EDGES  # lag bin edges in seconds; the last is max_lag
    baseline_min_lag: float = 1800.0
    baseline_pairs: int = 20000
    max_messages: int = 3000
    include_same_viewer: bool = False
    seed: int = 0


@dataclass
class LagSums:
    """Running sums per lag bin (plus the baseline), so streams add up exactly."""

    n_bins: int
    total: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)
    baseline_total: float = 0.0
    baseline_count: int = 0

    def __post_init__(self) -> None:
        self.total = np.zeros(self.n_bins)
        self.count = np.zeros(self.n_bins, dtype=np.int64)

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)

    def baseline(self) -> float:
        return self.baseline_total / self.baseline_count if self.baseline_count else float("nan")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def add_stream(sums: LagSums, unit: np.ndarray, seconds: np.ndarray, viewers: Sequence[str],
               config: CoherenceConfig, rng: np.random.Generator) -> None:
    """Add one stream's pairs (rows must be sorted by time) to the bin sums and the baseline."""
    edges = np.asarray(config.edges, dtype=np.float64)
    viewer_codes = np.unique(np.asarray(viewers), return_inverse=True)[1]
    ends = np.searchsorted(seconds, seconds + edges[-1], side="left")
    for i in range(len(seconds) - 1):
        j = np.arange(i + 1, ends[i])
        if not len(j):
            continue
        if not config.include_same_viewer:
            j = j[viewer_codes[j] != viewer_codes[i]]
        lags = seconds[j] - seconds[i]
        bins = np.searchsorted(edges, lags, side="right") - 1
        keep = (bins >= 0) & (bins < sums.n_bins)
        cos = unit[j[keep]] @ unit[i]
        sums.total += np.bincount(bins[keep], weights=cos, minlength=sums.n_bins)
        sums.count += np.bincount(bins[keep], minlength=sums.n_bins)
    # Baseline: random far-apart pairs of the same stream.
    n = len(seconds)
    if n < 2:
        return
    a = rng.integers(0, n, size=config.baseline_pairs)
    b = rng.integers(0, n, size=config.baseline_pairs)
    far = np.abs(seconds[a] - seconds[b]) >= config.baseline_min_lag
    if not config.include_same_viewer:
        far &= viewer_codes[a] != viewer_codes[b]
    if far.any():
        sums.baseline_total += float(np.einsum("ij,ij->i", unit[a[far]], unit[b[far]]).sum())
        sums.baseline_count += int(far.sum())


def window(stream: TimedTexts, max_messages: int, rng: np.random.Generator) -> TimedTexts:
    """A contiguous time window of at most max_messages (rows sorted by time)."""
    order = np.argsort(stream.seconds, kind="stable")
    start = int(rng.integers(0, len(order) - max_messages + 1)) if len(order) > max_messages else 0
    order = order[start : start + max_messages]
    return TimedTexts(stream.stream_id, [stream.texts[i] for i in order], stream.seconds[order],
                      [stream.viewers[i] for i in order])


def analyze(streams: Sequence[TimedTexts], encoders: dict[str, Encoder], config: CoherenceConfig) -> dict[str, Any]:
    """Coherence curves for each named encoder over the same messages and the same baseline pairs."""
    rng = np.random.default_rng(config.seed)
    windows = [window(s, config.max_messages, rng) for s in streams if len(s.texts) >= 2]
    n_bins = len(config.edges) - 1
    curves: dict[str, LagSums] = {}
    for name, encoder in encoders.items():
        sums = LagSums(n_bins)
        pair_rng = np.random.default_rng(config.seed + 1)  # same baseline pairs for every encoder
        for stream in windows:
            unit = unit_rows(encoder.embed(stream.texts))
            add_stream(sums, unit, stream.seconds, stream.viewers, config, pair_rng)
        curves[name] = sums
    first = next(iter(curves.values()))
    bins = []
    for k in range(n_bins):
        row: dict[str, Any] = {"lo": config.edges[k], "hi": config.edges[k + 1], "n_pairs": int(first.count[k])}
        for name, sums in curves.items():
            mean = float(sums.mean()[k])
            row[name] = mean
            row[f"{name}_normalized"] = mean / sums.baseline() if sums.baseline_count else float("nan")
        bins.append(row)
    return {
        "definition": "mean cosine of mean-pooled embeddings of same-stream message pairs per time-lag bin; "
        "normalized = divided by the mean cosine of random pairs >= baseline_min_lag apart",
        "config": asdict(config),
        "streams": [s.stream_id for s in windows],
        "n_messages": int(sum(len(s.texts) for s in windows)),
        "baseline": {name: {"mean": s.baseline(), "n_pairs": s.baseline_count} for name, s in curves.items()},
        "bins": bins,
    }


def plot(result: dict[str, Any], names: Sequence[str], path: Path) -> Path:
    """Raw and normalized curves side by side, one line per encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centers = [(b["lo"] + b["hi"]) / 2 for b in result["bins"]]
    figure, (raw, normalized) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        (line,) = raw.plot(centers, [b[name] for b in result["bins"]], marker="o", label=name)
        raw.axhline(result["baseline"][name]["mean"], color=line.get_color(), linestyle=":", linewidth=1)
        normalized.plot(centers, [b[f"{name}_normalized"] for b in result["bins"]], marker="o", label=name)
    normalized.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    raw.set(title="mean cosine by time lag (dotted: long-lag baseline)", xlabel="lag (s)", ylabel="cosine")
    normalized.set(title="coherence relative to baseline", xlabel="lag (s)", ylabel="cosine / baseline")
    for axes in (raw, normalized):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(f"{len(result['streams'])} streams, {result['n_messages']} messages")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ---------------------------------------------------------------- inputs

def timed_texts(stream_id: str, messages: Sequence[Any]) -> TimedTexts | None:
    """Model inputs of one stream's ChatMessages (member-only emotes stripped); None if empty."""
    from infra.text import strip_member_signals

    kept = [m for m in messages if m.is_model_input and m.text and strip_member_signals(m.text).strip()]
    if not kept:
        return None
    start = min(m.timestamp for m in kept)
    return TimedTexts(
        stream_id,
        [strip_member_signals(m.text) for m in kept],
        np.array([(m.timestamp - start).total_seconds() for m in kept]),
        [m.viewer_id for m in kept],
    )


def streams_from_files(paths: Sequence[Path]) -> list[TimedTexts]:
    from producers.readers import Rejected
    from producers.readers.detect import read_chat_file

    grouped: dict[str, list[Any]] = {}
    for path in paths:
        for item in read_chat_file(path):
            if not isinstance(item, Rejected):
                grouped.setdefault(item.stream_id, []).append(item)
    return [s for sid, messages in grouped.items() if (s := timed_texts(sid, messages)) is not None]


async def streams_from_db(database_url: str, stream_ids: Sequence[str], limit: int) -> list[TimedTexts]:
    from infra.postgres import create_pool
    from infra.repository import list_streams, stream_messages

    pool = await create_pool(database_url)
    try:
        ids = list(stream_ids) or [s.stream_id for s in await list_streams(pool) if s.n_messages][:limit]
        found = [timed_texts(sid, await stream_messages(pool, sid)) for sid in ids]
        return [s for s in found if s is not None]
    finally:
        await pool.close()


# ---------------------------------------------------------------- command

@analyze_app.command("coherence")
def coherence_command(
    ctx: typer.Context,
    after: Annotated[Path, typer.Option(help="encoder dir after pretraining (e.g. RUN/encoder)")],
    before: Annotated[Path | None, typer.Option(help="encoder dir before (default: packaged MiniLM)")] = None,
    file: Annotated[list[Path] | None, typer.Option(help="chat file(s) instead of PostgreSQL (repeatable)")] = None,
    stream: Annotated[list[str] | None, typer.Option(help="stream id from PostgreSQL (repeatable)")] = None,
    max_streams: Annotated[int, typer.Option(min=1, help="streams taken when none are named")] = 10,
    max_messages: Annotated[int, typer.Option(min=2, help="messages per stream (one contiguous window)")] = 3000,
    max_lag: Annotated[float, typer.Option(min=1, help="largest lag in seconds")] = 300,
    include_same_viewer: Annotated[bool, typer.Option(help="also pair a viewer's messages with their own")] = False,
    out: Annotated[Path | None, typer.Option(help="output dir (default STATE_DIR/reports/coherence)")] = None,
    seed: int = 0,
) -> None:
    """Mean cosine similarity of messages vs the time between them, before vs after pretraining."""
    from infra.cli import settings_from
    from infra.errors import InputError
    from models.encoder import MessageEncoder

    settings = settings_from(ctx)
    if file:
        streams = streams_from_files(file)
    else:
        from infra.services import running_services

        with running_services(settings, kafka=False) as endpoints:
            assert endpoints.database_url is not None
            streams = asyncio.run(streams_from_db(endpoints.database_url, stream or [], max_streams))
    if not streams:
        raise InputError("no chat messages to analyse: pass --file or ingest streams into PostgreSQL first")
    edges = tuple(e for e in DEFAULT_EDGES if e < max_lag) + (max_lag,)
    config = CoherenceConfig(edges=edges, max_messages=max_messages, include_same_viewer=include_same_viewer, seed=seed)
    encoders = {
        "before": MessageEncoder.load(before, threads=settings.worker_threads),
        "after": MessageEncoder.load(after, threads=settings.worker_threads),
    }
    with console.status(f"embedding {sum(min(len(s.texts), max_messages) for s in streams)} messages x 2 encoders ..."):
        result = analyze(streams, encoders, config)
    result["encoders"] = {"before": str(before or "all-MiniLM-L6-v2 (packaged)"), "after": str(after)}
    folder = out or settings.state_dir / "reports" / "coherence"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "coherence.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    plot(result, ["before", "after"], folder / "coherence.png")
    first = result["bins"][0]
    console.print(
        f"lag {first['lo']}-{first['hi']} s: before {first['before_normalized']:.4f}, "
        f"after {first['after_normalized']:.4f} (x baseline); wrote {folder}/coherence.json and .png"
    )
