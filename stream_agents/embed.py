"""Embed a micro-batch of new input messages (one encoder call, on the model thread) and append them
to their viewers' sequences.

Messages already applied (redelivered after a crash, or sent twice by a producer) are recognised
before embedding, so a restart costs no encoder time for them. A viewer whose stored vectors come
from another encoder than the promoted model's (a hot swap to a different encoder) is re-embedded
from the stored texts before the new message is added, so a sequence never mixes embedding spaces.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.scorer import seconds_since_start
from stream_agents.model_runner import LoadedModel, ModelRunner
from stream_agents.sequences import (
    SequenceStore,
    StoredMessage,
    ViewerSequence,
    append,
    is_duplicate,
)
from stream_agents.validate import Incoming


@dataclass
class ViewerUpdate:
    """One viewer touched by the current micro-batch: its header and window, loaded once."""

    key: str
    header: ViewerSequence
    window: list[StoredMessage]
    newest: Incoming | None = None  # newest input message of this viewer in the batch
    appended: list[StoredMessage] = field(default_factory=list)
    duplicates: int = 0
    changed: bool = False


def load_updates(store: SequenceStore, keys: Sequence[str]) -> dict[str, ViewerUpdate]:
    updates = {}
    for key in dict.fromkeys(keys):
        header = store.header(key)
        if header is None:
            updates[key] = ViewerUpdate(key, store.header_or_new(key), [])
        else:
            updates[key] = ViewerUpdate(key, header, store.window(key, header))
    return updates


def batch_origins(inputs: Sequence[Incoming], known: dict[str, float | None]) -> dict[str, float]:
    """Time origin per stream for messages without offset_seconds: the one already known for the
    stream, else the earliest message of this batch."""
    origins: dict[str, float] = {}
    for item in inputs:
        stream_id, ts = item.message.stream_id, item.message.timestamp.timestamp()
        known_origin = known.get(stream_id)
        if known_origin is not None:
            origins[stream_id] = known_origin
        else:
            origins[stream_id] = min(origins.get(stream_id, ts), ts)
    return origins


def new_inputs(updates: dict[str, ViewerUpdate], inputs: Sequence[Incoming]) -> list[Incoming]:
    """The inputs not yet applied, in read order; duplicates are counted on their viewer."""
    fresh, seen_ids = [], set()
    for item in inputs:
        update = updates[item.key]
        ident = (item.key, item.message.message_id)
        if ident in seen_ids or is_duplicate(update.header, update.window, item.offset, item.message.message_id):
            update.duplicates += 1
            continue
        seen_ids.add(ident)
        fresh.append(item)
    return fresh


async def embed_texts(runner: ModelRunner, model: LoadedModel, texts: Sequence[str]) -> np.ndarray:
    """(N, D) float16 embeddings of raw texts (the scorer applies the model's own preprocessing)."""
    if not texts:
        return np.zeros((0, model.scorer.embedding_dim), dtype=np.float16)
    vectors = await runner.call(model.scorer.embed, list(texts))
    return np.asarray(vectors, dtype=np.float16)


async def reembed_stale(runner: ModelRunner, model: LoadedModel, store: SequenceStore,
                        updates: dict[str, ViewerUpdate]) -> int:
    """Bring windows stored under another encoder into the current model's space; returns messages re-embedded."""
    stale = [u for u in updates.values() if u.window and u.header.space != model.space]
    texts = [m.text for u in stale for m in u.window]
    vectors = await embed_texts(runner, model, texts)
    at = 0
    for update in stale:
        update.window = [m.with_embedding(vectors[at + i]) for i, m in enumerate(update.window)]
        at += len(update.window)
        for stored in update.window:
            store.write_message(update.key, update.header, stored)
        update.header.space, update.changed = model.space, True
    return len(texts)


async def append_inputs(
    runner: ModelRunner,
    model: LoadedModel,
    store: SequenceStore,
    updates: dict[str, ViewerUpdate],
    inputs: Sequence[Incoming],
    origins: dict[str, float],
) -> int:
    """Embed the new inputs and append them to their viewers; returns how many were appended."""
    fresh = new_inputs(updates, inputs)
    vectors = await embed_texts(runner, model, [item.message.text for item in fresh])
    now = time.time()
    for item, vector in zip(fresh, vectors, strict=True):
        update, message = updates[item.key], item.message
        header = update.header
        if header.count == 0:
            header.origin, header.space = origins[message.stream_id], model.space
        stored = append(
            header, update.window, message_id=message.message_id, timestamp=message.timestamp.timestamp(),
            since_start=seconds_since_start(message.timestamp.timestamp(), message.offset_seconds, header.origin or 0.0),
            text=message.text, embedding=vector, offset=item.offset, now=now,
        )
        store.write_message(item.key, header, stored)
        header.viewer_name = message.author_name or header.viewer_name
        header.last_produced_at = message.produced_at
        update.appended.append(stored)
        update.changed = True
    for item in inputs:  # newest input per viewer, duplicates included: they are scored again
        updates[item.key].newest = item
    return len(fresh)
