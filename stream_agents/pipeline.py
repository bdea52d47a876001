"""What one micro-batch of chat-messages goes through, step by step; the agent in `agents.py` calls
`process_batch` once per batch, and everything here is a plain function of the `Runtime`.

Order matters only per viewer, and a viewer's records are all on one partition, read in offset order.

New input messages are embedded in one encoder call per batch (on the model thread) and appended to
their viewers' sequences. Messages already applied (redelivered after a crash, or sent twice by a
producer) are recognised before embedding, so a restart costs no encoder time for them. A viewer
whose stored vectors come from another encoder than the promoted model's (a hot swap to a different
encoder) is re-embedded from the stored texts before the new message is added, so a sequence never
mixes embedding spaces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra.events import ChatMessage, DeadLetter, DonorScore
from infra.repository import ViewerHistory
from infra.settings import Settings
from models.scorer import seconds_since_start
from stream_agents.leaderboard import Leaderboards, OutcomeLog, record_paid
from stream_agents.metrics import Metrics
from stream_agents.persist import HistoryCache
from stream_agents.score import LoadedModel, ModelRunner, embed_texts, score_viewers
from stream_agents.sequences import (
    SequenceStore,
    ViewerUpdate,
    append,
    is_duplicate,
    is_idle,
    load_updates,
    split_viewer_key,
)
from stream_agents.validate import Incoming, SortedBatch

if TYPE_CHECKING:
    from stream_agents.recovery import Recovery

log = logging.getLogger(__name__)

STREAM_END_KIND = "stream_end"  # a producer's end-of-stream notice, once infra.events has that kind
SETTLE_TIMEOUT_SECONDS = 15.0


@dataclass
class Runtime:
    """Everything the agents, timers and views share; one per app, built by `create_app`."""

    settings: Settings
    store: SequenceStore
    models: ModelRunner
    metrics: Metrics
    send_score: Callable[[DonorScore], Any]  # async: publish one score to donor-scores
    send_dead_letter: Callable[[DeadLetter], Any]  # async: publish one dead letter
    owns: Callable[[str], bool] = lambda key: True  # is this table key on a partition we hold?
    settle: Callable[[], Awaitable[Any]] | None = None  # waits until the broker acknowledged every write sent
    recovery: Recovery | None = None  # the embedded broker's gap/reset handling (None: a real cluster, test_context)
    offsets: Any = field(default_factory=dict)  # partition_to_offset table: str(partition) -> newest applied
    batch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # agent and stall watchdog take turns
    boards: Leaderboards = field(default_factory=Leaderboards)
    histories: HistoryCache = field(default_factory=HistoryCache)
    outcomes: OutcomeLog = field(default_factory=OutcomeLog)
    database_url: str | None = None  # for history reads; None: models that use history get none
    pool: Any = None  # opened on first need
    pool_retry_at: float = 0.0
    delivered_at: dict[int, float] = field(default_factory=dict)  # partition -> when a record last came (lag)
    held_back: dict[int, int] = field(default_factory=dict)  # applied offsets waiting for an acknowledgement
    started: float = field(default_factory=time.monotonic)

    def idle_since(self, partition: int) -> float:
        """Seconds since the partition last delivered a record (since start if it never did)."""
        return time.monotonic() - self.delivered_at.get(partition, self.started)

    def applied(self, partition: int) -> int | None:
        """Newest chat-messages offset of this partition whose effects are in the tables."""
        value = self.offsets.get(str(partition))
        return None if value is None else int(value)

    def mark_applied(self, partition: int, offset: int) -> None:
        if offset > (self.applied(partition) if self.applied(partition) is not None else -1):
            self.offsets[str(partition)] = str(offset).encode()


def is_stream_end(message: ChatMessage) -> bool:
    return message.kind.value == STREAM_END_KIND


def rebuild_boards(rt: Runtime) -> None:
    rt.boards.rebuild(rt.store.items(keep=rt.owns))
    rt.metrics.viewers.set(rt.boards.viewers)


async def history_pool(rt: Runtime) -> Any:
    """The pool for history reads, opened on first need; while PostgreSQL is down, retried every few seconds."""
    if rt.pool is None and rt.database_url and time.monotonic() >= rt.pool_retry_at:
        from infra.postgres import create_pool

        try:
            rt.pool = await create_pool(rt.database_url, min_size=1, max_size=2, timeout=3.0)
        except Exception as error:  # noqa: BLE001 - scored without history meanwhile
            log.warning("viewer history unavailable: %s", error)
            rt.pool_retry_at = time.monotonic() + 5.0
    return rt.pool


async def histories_for(rt: Runtime, model: LoadedModel, updates: Sequence[ViewerUpdate]
                        ) -> dict[tuple[str, str], ViewerHistory | None]:
    if not model.scorer.uses_history or await history_pool(rt) is None:
        return {}
    wanted = [(*split_viewer_key(u.key), u.header.origin or u.header.first_time or 0.0) for u in updates]
    return await rt.histories.lookup(rt.pool, wanted)


# ---------------------------------------------------------------- embedding new inputs

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
    for item in fresh:  # a duplicate was scored when first applied, and that score is on the broker
        updates[item.key].newest = item
    return len(fresh)


# ---------------------------------------------------------------- one micro-batch

def save_updates(rt: Runtime, updates: dict[str, ViewerUpdate]) -> None:
    for key, update in updates.items():
        if update.changed:
            rt.store.save(key, update.header)
            rt.boards.update(key, update.header)
    rt.metrics.viewers.set(rt.boards.viewers)


def count_batch(rt: Runtime, batch: SortedBatch, appended: int, paid: int, duplicates: int, n_records: int) -> None:
    m = rt.metrics
    m.records_in.inc(n_records)
    m.batch_size.observe(n_records)
    m.count("sequenced", appended)
    m.count("duplicate", duplicates)
    m.count("paid", paid)
    m.count("not_input", len(batch.other))
    m.count("dead_letter", len(batch.rejected))
    m.misrouted.inc(sum(1 for i in (*batch.inputs, *batch.paid, *batch.other) if not i.key_matches))
    now = time.monotonic()
    for partition in batch.last_offsets:
        rt.delivered_at[partition] = now


async def acknowledged(rt: Runtime) -> bool:
    """Wait until the broker acknowledged every write sent so far; False if it did not in time.

    A batch writes in three steps (its slots, scores and dead letters; then the headers that count
    them; then the applied offset), and the producer sends each topic partition's backlog on its own,
    one record batch per partition per request: a few header rows or the one offset row overtake a
    backlog of slots or scores. A worker killed then leaves a header that counts a message whose slot
    or score never got there, or an applied offset past headers never written; the worker taking over
    skips those messages as already applied, and their scores are lost for good. Waiting here keeps
    what the broker holds a prefix of what was written, in order. Not for ever: a broker gone for good
    is the broker watch's, and the caller keeps the applied offset back instead (the safe direction:
    a redelivery is recognised by the headers)."""
    if rt.settle is None:
        return True
    try:
        await asyncio.wait_for(rt.settle(), SETTLE_TIMEOUT_SECONDS)
        return True
    except TimeoutError:
        log.warning("writes not acknowledged within %.0f s: going on; a crash now could leave the "
                    "changelogs out of order", SETTLE_TIMEOUT_SECONDS)
    except Exception as error:  # noqa: BLE001 - the same, and no reason to stop scoring
        log.warning("writes not acknowledged (%s: %s): going on; a crash now could leave the "
                    "changelogs out of order", type(error).__name__, error)
    return False


async def process_batch(rt: Runtime, model: LoadedModel, batch: SortedBatch, n_records: int) -> list[DonorScore]:
    """Outcomes, embeddings, sequences and scores for one micro-batch, published; returns the scores.

    Each write waits for the broker to hold the ones it vouches for. Slots, scores and dead letters
    first; then the headers, which make the batch's messages duplicates; then the applied offset,
    which makes its records skipped. A kill before the headers land re-applies the batch (the same
    slots, the same scores once more); a kill after them finds the messages already counted and their
    scores on the broker (nothing is scored again; a dead letter is sent once more); a kill after the
    offset skips the batch. Never a score lost; at most one repeat of a score or a dead letter, only
    around a kill. Only viewers with a new input are scored: a duplicate's score is already out."""
    if rt.boards.stale:
        rebuild_boards(rt)
    updates = load_updates(rt.store, [i.key for i in (*batch.inputs, *batch.paid)])
    paid, paid_duplicates = record_paid(updates, batch.paid, rt.boards, rt.outcomes)
    touched = {i.key: updates[i.key] for i in batch.inputs}
    started = time.perf_counter()
    reembedded = await reembed_stale(rt.models, model, rt.store, touched)
    origins = batch_origins(batch.inputs, {i.message.stream_id: rt.boards.origin(i.message.stream_id)
                                           for i in batch.inputs})
    appended = await append_inputs(rt.models, model, rt.store, updates, batch.inputs, origins)
    rt.metrics.embed_seconds.observe(time.perf_counter() - started)
    rt.metrics.embedded.inc(appended + reembedded)
    started = time.perf_counter()
    grown = [u for u in touched.values() if u.appended]
    histories = await histories_for(rt, model, grown)
    scores = await score_viewers(rt.models, model, rt.boards, grown, histories)
    rt.metrics.score_seconds.observe(time.perf_counter() - started)
    await publish(rt, batch, scores)
    await acknowledged(rt)  # slots, scores and dead letters on the broker before the headers that count them
    save_updates(rt, updates)
    duplicates = paid_duplicates + sum(u.duplicates for u in touched.values())
    count_batch(rt, batch, appended, paid, duplicates, n_records)
    for stream_id in {i.message.stream_id for i in batch.other if is_stream_end(i.message)}:
        expire_stream(rt, stream_id, reason="stream_end")
    await write_applied(rt, batch.last_offsets)  # after the headers that say the batch is done
    return scores


async def write_applied(rt: Runtime, offsets: dict[int, int]) -> None:
    """Write the applied offsets once the broker acknowledged everything before them; if it did not in
    time, hold them back until a later acknowledgement (the next batch, or the lag timer's retry)."""
    for partition, offset in offsets.items():
        rt.held_back[partition] = max(offset, rt.held_back.get(partition, -1))
    if not rt.held_back:
        return
    if await acknowledged(rt):
        for partition, offset in rt.held_back.items():
            rt.mark_applied(partition, offset)
        rt.held_back.clear()
    else:
        log.warning("applied offsets %s held back until the broker acknowledges the writes before them",
                    dict(rt.held_back))


async def publish(rt: Runtime, batch: SortedBatch, scores: Sequence[DonorScore]) -> None:
    for letter in batch.rejected:
        log.warning("dead letter %s: %s", letter.location, letter.reason)
        await rt.send_dead_letter(letter)
    for score in scores:
        await rt.send_score(score)
    rt.metrics.scored.inc(len(scores))


# ---------------------------------------------------------------- expiry

def expire_viewer(rt: Runtime, key: str, reason: str) -> None:
    rt.store.delete(key)
    rt.boards.remove(key)
    rt.metrics.expired.labels(reason).inc()


def expire_stream(rt: Runtime, stream_id: str, reason: str) -> int:
    board = rt.boards.streams.get(stream_id)
    keys = [f"{stream_id}|{viewer_id}" for viewer_id in (board.entries if board else {})]
    for key in keys:
        if rt.owns(key):
            expire_viewer(rt, key, reason)
    rt.histories.forget_stream(stream_id)
    rt.outcomes.forget_stream(stream_id)
    rt.metrics.viewers.set(rt.boards.viewers)
    return len(keys)


def expire_idle(rt: Runtime, now: float | None = None) -> int:
    """Delete sequences idle longer than settings.viewer_idle_seconds (stream or wall time)."""
    now = time.time() if now is None else now
    expired = 0
    for stream_id, board in rt.boards:
        clock = board.clock
        for viewer_id, entry in list(board.entries.items()):
            key = f"{stream_id}|{viewer_id}"
            if rt.owns(key) and is_idle(entry, now=now, stream_clock=clock,
                                        idle_seconds=rt.settings.viewer_idle_seconds):
                expire_viewer(rt, key, "idle")
                expired += 1
        if stream_id not in rt.boards.streams:
            rt.histories.forget_stream(stream_id)
            rt.outcomes.forget_stream(stream_id)
    rt.metrics.viewers.set(rt.boards.viewers)
    return expired
