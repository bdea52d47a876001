"""`donorcast score FILE... --model VERSION --out scores.jsonl [--at MODE]`: offline scoring of chat files.

Each (stream, viewer) gets one line per snapshot (`--at end`: after their last model-input message;
`each-message`: after every message; `before-paid`: after the last one before their first paid
event), scored through
`models.scorer.DonorScorer` (int8 ONNX encoder + ONNX classifier) and `sequence_input`: the same
objects and feature code the live stream agents use. For models with viewer history, the history
comes from the earlier streams among the given files (as `infra.repository.viewer_histories` would
compute it from PostgreSQL).

Line: {"stream_id", "viewer_id", "viewer_name", "score", "n_messages", "snapshot_time",
       "model_version", "top_message_ids"}; `snapshot_time` is the timestamp of the newest message the
score saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from training.build_dataset import (
    DatasetConfig,
    StreamData,
    compact_stream,
    histories_before,
    inputs_before_event,
)

SCORE_AT = ("end", "each-message", "before-paid")


@dataclass
class ViewerLine:
    stream_id: str
    viewer_id: str
    viewer_name: str
    score: float
    n_messages: int
    snapshot_time: str
    model_version: str
    top_message_ids: list[str]

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False)


def snapshot_ends(seconds: Sequence[float], event_seconds: float | None, at: str) -> list[int]:
    """For one viewer, the number of input messages each snapshot has seen (times ascending).

    end: after their last message; each-message: after every message; before-paid: after their last
    message before their first paid event (non-payers: their last message; nothing before: none)."""
    n = len(seconds)
    if at == "end":
        return [n] if n else []
    if at == "each-message":
        return list(range(1, n + 1))
    if at == "before-paid":
        end = inputs_before_event(seconds, event_seconds)
        return [end] if end else []
    raise ValueError(f"--at must be one of {', '.join(SCORE_AT)} (got {at!r})")


def score_streams(
    streams: Iterable[StreamData], scorer: Any, *, cache: Any = None, explain: int = 0, batch_size: int = 256,
    at: str = "end",
) -> Iterator[ViewerLine]:
    """One ViewerLine per (stream, viewer, snapshot) with at least one model-input message. Each
    snapshot's input is exactly what the live agents hold then: the newest `max_messages` messages
    before it, their message numbers in the stream, and the gap from the message before the window."""
    from models.scorer import sequence_input
    from training.embeddings import embed_texts

    config = scorer.feature_config
    # The dataset code does the preprocessing (model's label => same member-signal stripping) and history.
    dataset_config = DatasetConfig(label=config.label, n_snapshots=1, max_messages=config.max_messages)  # type: ignore[arg-type]
    compacts = [c for c in (compact_stream(s, dataset_config) for s in streams) if c is not None]
    histories = histories_before(compacts) if scorer.uses_history else [{} for _ in compacts]
    embed = lambda texts: scorer.encoder.embed(list(texts))  # noqa: E731 - texts already preprocessed
    for compact, history in zip(compacts, histories, strict=True):
        rows = [(viewer, facts, end) for viewer, facts in sorted(compact.viewers.items()) if facts.texts
                for end in snapshot_ends(facts.seconds, facts.first_paid, at)]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            windows = [(facts, max(0, end - config.max_messages), end) for _, facts, end in chunk]
            texts = sorted({t for facts, first, end in windows for t in facts.texts[first:end]})
            vectors = dict(zip(texts, embed_texts(texts, embed, cache), strict=True)) if texts else {}
            inputs = [
                sequence_input(
                    np.stack([vectors[t] for t in facts.texts[first:end]]),
                    facts.clock[first:end],
                    texts=facts.texts[first:end],
                    message_numbers=range(first + 1, end + 1),
                    config=config,
                    previous_seconds=facts.clock[first - 1] if first > 0 else None,
                    history=history.get(viewer),
                    message_ids=facts.message_ids[first:end],
                )
                for (viewer, _, _), (facts, first, end) in zip(chunk, windows, strict=True)
            ]
            probabilities = scorer.score(inputs)
            for (viewer, facts, end), sequence, probability in zip(chunk, inputs, probabilities, strict=True):
                top = scorer.explain(sequence, k=explain) if explain else []
                yield ViewerLine(
                    stream_id=compact.info.stream_id, viewer_id=viewer, viewer_name=facts.name,
                    score=float(probability), n_messages=end,
                    snapshot_time=(compact.info.start + timedelta(seconds=facts.seconds[end - 1])).isoformat(),
                    model_version=scorer.version,
                    top_message_ids=[sequence.message_ids[i] for i in top],
                )


def score_files(paths: Sequence[Path], scorer: Any, out: Path, *, cache: Any = None, explain: int = 0,
                at: str = "end") -> int:
    """Write one JSON line per (stream, viewer, snapshot); returns the number of lines."""
    from training.build_dataset import streams_from_files
    from training.sources import channel_group

    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8") as sink:
        for line in score_streams(streams_from_files(paths, group_of=channel_group), scorer, cache=cache,
                                  explain=explain, at=at):
            sink.write(line.to_json() + "\n")
            count += 1
    return count


def score_command(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="chat files (any supported format)", exists=True, dir_okay=False)],
    model: Annotated[str | None, typer.Option(help="registry version (default: the promoted one)")] = None,
    out: Annotated[Path, typer.Option(help="JSON lines output")] = Path("scores.jsonl"),
    explain: Annotated[int, typer.Option(help="top messages per viewer (leave-one-out; slower)")] = 0,
    at: Annotated[str, typer.Option(metavar="|".join(SCORE_AT), help=(
        "end: after each viewer's last message; each-message: after every message, as the live agents "
        "score; before-paid: after the last message before the viewer's first paid event"))] = "end",
) -> None:
    """Score every viewer of the given chat files with a registered model (the live agents' scorer)."""
    from rich.console import Console

    from infra.cli import settings_from
    from models.scorer import DonorScorer
    from training.embeddings import EmbeddingCache
    from training.evaluate import resolve_version

    settings = settings_from(ctx)
    version = resolve_version(settings, model)
    if at not in SCORE_AT:
        from infra.errors import InputError

        raise InputError(f"--at must be one of {', '.join(SCORE_AT)} (got {at!r})")
    scorer = DonorScorer.load(version, threads=settings.worker_threads)
    cache = EmbeddingCache(settings.state_dir / "cache", version.manifest.get("encoder_key", version.version))
    count = score_files(files, scorer, out, cache=cache, explain=explain, at=at)
    Console(stderr=True).print(f"wrote {count} scores (--at {at}) with {version.version} -> {out}")
