"""`donorcast score FILE... --model VERSION --out scores.jsonl`: offline scoring of chat files.

Each (stream, viewer) gets one line scored after their last model-input message, through
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

from training.build_dataset import DatasetConfig, StreamData, compact_stream, histories_before


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


def score_streams(
    streams: Iterable[StreamData], scorer: Any, *, cache: Any = None, explain: int = 0, batch_size: int = 256,
) -> Iterator[ViewerLine]:
    """One ViewerLine per (stream, viewer) with at least one model-input message."""
    from models.scorer import sequence_input
    from training.train_classifier import embed_texts

    config = scorer.feature_config
    # The dataset code does the preprocessing (model's label => same member-signal stripping) and
    # history; a single snapshot after each stream's end means "everything written".
    dataset_config = DatasetConfig(label=config.label, n_snapshots=1, max_messages=config.max_messages)  # type: ignore[arg-type]
    compacts = [c for c in (compact_stream(s, dataset_config) for s in streams) if c is not None]
    histories = histories_before(compacts) if scorer.uses_history else [{} for _ in compacts]
    embed = lambda texts: scorer.encoder.embed(list(texts))  # noqa: E731 - texts already preprocessed
    for compact, history in zip(compacts, histories, strict=True):
        rows = [(viewer, facts) for viewer, facts in sorted(compact.viewers.items()) if facts.texts]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            windows = [(facts, max(0, len(facts.texts) - config.max_messages)) for _, facts in chunk]
            texts = sorted({t for facts, first in windows for t in facts.texts[first:]})
            vectors = dict(zip(texts, embed_texts(texts, embed, cache), strict=True)) if texts else {}
            inputs = [
                sequence_input(
                    np.stack([vectors[t] for t in facts.texts[first:]]),
                    facts.clock[first:],
                    texts=facts.texts[first:],
                    message_numbers=range(first + 1, len(facts.texts) + 1),
                    config=config,
                    previous_seconds=facts.clock[first - 1] if first > 0 else None,
                    history=history.get(viewer),
                    message_ids=facts.message_ids[first:],
                )
                for (viewer, _), (facts, first) in zip(chunk, windows, strict=True)
            ]
            probabilities = scorer.score(inputs)
            for (viewer, facts), sequence, probability in zip(chunk, inputs, probabilities, strict=True):
                top = scorer.explain(sequence, k=explain) if explain else []
                yield ViewerLine(
                    stream_id=compact.info.stream_id, viewer_id=viewer, viewer_name=facts.name,
                    score=float(probability), n_messages=len(facts.texts),
                    snapshot_time=(compact.info.start + timedelta(seconds=facts.seconds[-1])).isoformat(),
                    model_version=scorer.version,
                    top_message_ids=[sequence.message_ids[i] for i in top],
                )


def score_files(paths: Sequence[Path], scorer: Any, out: Path, *, cache: Any = None, explain: int = 0) -> int:
    """Write one JSON line per (stream, viewer); returns the number of lines."""
    from training.build_dataset import streams_from_files
    from training.train_classifier import channel_group

    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8") as sink:
        for line in score_streams(streams_from_files(paths, group_of=channel_group), scorer, cache=cache,
                                  explain=explain):
            sink.write(line.to_json() + "\n")
            count += 1
    return count


def score_command(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="chat files (any supported format)", exists=True, dir_okay=False)],
    model: Annotated[str | None, typer.Option(help="registry version (default: the promoted one)")] = None,
    out: Annotated[Path, typer.Option(help="JSON lines output")] = Path("scores.jsonl"),
    explain: Annotated[int, typer.Option(help="top messages per viewer (leave-one-out; slower)")] = 0,
) -> None:
    """Score every viewer of the given chat files with a registered model (the live agents' scorer)."""
    from rich.console import Console

    from infra.cli import settings_from
    from models.scorer import DonorScorer
    from training.evaluate import resolve_version
    from training.train_classifier import EmbeddingCache

    settings = settings_from(ctx)
    version = resolve_version(settings, model)
    scorer = DonorScorer.load(version, threads=settings.worker_threads)
    cache = EmbeddingCache(settings.state_dir / "cache", version.manifest.get("encoder_key", version.version))
    count = score_files(files, scorer, out, cache=cache, explain=explain)
    Console(stderr=True).print(f"scored {count} viewers with {version.version} -> {out}")
