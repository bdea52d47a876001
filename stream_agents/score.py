"""Score the viewers a micro-batch touched: one classifier call for all of them, ranks from the
stream leaderboards, explanations for the top of each stream, one `DonorScore` per viewer.

The model input is assembled by `models.scorer.sequence_input`, the function training uses, from the
stored window (embeddings, stream-relative times, message numbers, texts for the per-message extras)
and, for models that use it, the viewer's history from before the stream.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from infra.events import DonorScore
from infra.repository import ViewerHistory
from stream_agents.embed import ViewerUpdate
from stream_agents.leaderboard import Leaderboards
from stream_agents.model_runner import LoadedModel, ModelRunner
from stream_agents.sequences import StoredMessage, ViewerSequence, split_viewer_key

# Leave-one-out explanations cost T+1 classifier rows per viewer: computed where someone looks (the
# top of each stream's leaderboard); any other viewer is explained on request (GET /viewers/...).
EXPLAIN_TOP_K = 20
TOP_MESSAGES = 3


def model_input(model: LoadedModel, header: ViewerSequence, window: Sequence[StoredMessage],
                history: ViewerHistory | None = None) -> Any:
    """A `models.scorer.ViewerSequenceInput` for one viewer (window oldest first, at least one message)."""
    from models.scorer import sequence_input

    scorer = model.scorer
    return sequence_input(
        np.stack([m.embedding for m in window]).astype(np.float32),
        [m.seconds_since_start for m in window],
        texts=[scorer.preprocess(m.text) for m in window],
        message_numbers=[m.number for m in window],
        config=scorer.feature_config,
        previous_seconds=header.previous_seconds,
        history=history,
        message_ids=[m.message_id for m in window],
    )


def explain_many(scorer: Any, inputs: Sequence[Any], k: int = TOP_MESSAGES) -> list[list[int]]:
    return [scorer.explain(sequence, k=k) for sequence in inputs]


def top_message_ids(message_ids: Sequence[str], indices: Sequence[int], max_messages: int) -> tuple[str, ...]:
    """Explanation indices refer to the scorer's tail (its newest `max_messages`); map them to message ids."""
    tail = tuple(message_ids)[-max_messages:]
    return tuple(tail[i] for i in indices if 0 <= i < len(tail))


def make_score(key: str, header: ViewerSequence, model: LoadedModel, rank: int | None,
               top_ids: tuple[str, ...], produced_at: float | None) -> DonorScore:
    stream_id, viewer_id = split_viewer_key(key)
    return DonorScore(
        stream_id=stream_id, viewer_id=viewer_id, viewer_name=header.viewer_name,
        probability=float(header.probability or 0.0), rank=rank, n_messages=header.count,
        model_version=model.version, top_message_ids=top_ids,
        event_time=datetime.fromtimestamp(header.last_time or 0.0, UTC),
        scored_at=datetime.now(UTC), produced_at=produced_at,
    )


async def score_viewers(
    runner: ModelRunner,
    model: LoadedModel,
    boards: Leaderboards,
    updates: Sequence[ViewerUpdate],
    histories: dict[tuple[str, str], ViewerHistory | None] | None = None,
) -> list[DonorScore]:
    """Score every update with a non-empty window; headers get probability and version, boards the rank."""
    updates = [u for u in updates if u.window]
    if not updates:
        return []
    histories = histories or {}
    inputs = [model_input(model, u.header, u.window, histories.get(split_viewer_key(u.key))) for u in updates]
    probabilities = await runner.call(model.scorer.score, inputs)
    now = time.time()
    for update, probability in zip(updates, np.asarray(probabilities).reshape(-1), strict=True):
        update.header.probability, update.header.model_version = float(probability), model.version
        update.header.updated_at, update.changed = now, True
        boards.update(update.key, update.header)
    ranks = [boards.rank(u.key) for u in updates]
    explain_rows = [i for i, rank in enumerate(ranks) if rank is not None and rank <= EXPLAIN_TOP_K]
    explanations = await runner.call(explain_many, model.scorer, [inputs[i] for i in explain_rows])
    top_ids = dict(zip(explain_rows, explanations, strict=True))
    limit = model.scorer.feature_config.max_messages
    return [
        make_score(
            u.key, u.header, model, ranks[i], top_message_ids(inputs[i].message_ids, top_ids.get(i, []), limit),
            u.newest.message.produced_at if u.newest else None,
        )
        for i, u in enumerate(updates)
    ]
