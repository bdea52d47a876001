"""The agents and timers. Each is a short loop that calls plain functions from `pipeline.py`.

- `score_chat_messages`: chat-messages -> (dead-letters | outcomes | viewer sequences) -> donor-scores.
  One agent, not a chain of agents joined by topics: every hop would add a full write per message to a
  broker that never compacts, and faust's in-memory channels between agents would ack a record
  before its work is done (a crash would lose it). Here a record's offset is committed only after
  its batch is embedded, stored in the tables and its scores are acknowledged by the broker.
- `persist_to_postgres`: the PostgreSQL sink (its own consumer group, so an outage never stops scoring).
- `watch_promoted_model`: hot model swap. `expire_idle_viewers`: idle expiry. `measure_lag`: lag per
  partition, and the watchdog for records faust fetched but never delivered.

`recovery` (stream_agents/recovery/) is the embedded broker's gap and reset handling, None on a real
Kafka cluster: every call into it is behind an `if`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import faust

from stream_agents.persist import PostgresSink
from stream_agents.pipeline import Runtime, expire_idle, process_batch, rebuild_boards, write_applied
from stream_agents.recovery import Recovery
from stream_agents.validate import in_offset_order, sort_events

log = logging.getLogger(__name__)

MODEL_POLL_SECONDS = 2.0
STALL_SECONDS = 30.0  # a partition with records that delivers none this long is read directly
EXPIRY_SECONDS = 30.0
LAG_SECONDS = 5.0


def skip_applied(rt: Runtime, records: Sequence[Any]) -> list[Any]:
    """The records after their partition's applied offset. One at or before it was applied, and the
    broker acknowledged its dead letter and scores, before a kill or a rebalance re-delivered it (faust
    commits consumer offsets later than the tables say): applying it again would change no sequence but
    would dead-letter it twice and publish its viewer's score twice. Counted as duplicates."""
    applied = {p: rt.applied(p) for p in {r.message.partition for r in records}}
    fresh = [r for r in records if applied[r.message.partition] is None
             or r.message.offset > applied[r.message.partition]]  # type: ignore[operator]
    if len(fresh) < len(records):
        rt.metrics.records_in.inc(len(records) - len(fresh))
        rt.metrics.count("duplicate", len(records) - len(fresh))
        now = time.monotonic()
        for partition in applied:
            rt.delivered_at[partition] = now
    return fresh


async def handle(rt: Runtime, events: Sequence[Any], *, delivered: bool = True) -> None:
    """One micro-batch, start to finish (the agent's body, also used to catch up a stalled partition:
    `delivered=False`, the records were read directly)."""
    recovery = rt.recovery
    if recovery is not None and delivered:
        await recovery.before_batch(events)  # may reset the worker (taking the batch lock itself)
    async with rt.batch_lock:
        if recovery is not None:
            records = await recovery.prepare(events, delivered=delivered)
        else:
            records = [e for items in in_offset_order(events).values() for e in items]
        records = skip_applied(rt, records)
        if not records:
            return
        batch = sort_events(records)
        model = await rt.models.wait_for_model()
        await process_batch(rt, model, batch, n_records=len(records))


async def catch_up(rt: Runtime, recovery: Recovery, partition: int, end: int) -> None:
    """Read and apply a partition's records that faust fetched but never delivered."""
    records = await recovery.undelivered(partition, end)
    size = rt.settings.embed_batch_size
    for at in range(0, len(records), size):
        await handle(rt, records[at : at + size], delivered=False)


def register_agents(app: faust.App, rt: Runtime, chat_messages: faust.TopicT, sink: PostgresSink | None) -> None:
    settings = rt.settings

    @app.agent(chat_messages, name="score_chat_messages")
    async def score_chat_messages(stream: faust.StreamT[bytes]) -> None:
        """Validate, embed, append to viewer sequences and score, one micro-batch at a time."""
        async for events in stream.take_events(settings.embed_batch_size, within=settings.embed_batch_wait):
            await handle(rt, events)

    if sink is not None:
        @app.task
        async def persist_to_postgres() -> None:
            """chat-messages and donor-scores -> PostgreSQL, batched, idempotent, retried."""
            await sink.run()

    @app.timer(MODEL_POLL_SECONDS)
    async def watch_promoted_model() -> None:
        """Swap in a newly promoted model without a restart."""
        await rt.models.refresh()
        rt.metrics.set_degraded("model", rt.models.last_error is not None)

    @app.timer(EXPIRY_SECONDS)
    async def expire_idle_viewers() -> None:
        """Forget viewers idle longer than settings.viewer_idle_seconds."""
        if not rt.boards.stale:
            expire_idle(rt)

    @app.timer(LAG_SECONDS)
    async def measure_lag() -> None:
        """Lag per chat-messages partition; catches up a partition that has records but delivers none."""
        recovery = rt.recovery
        if app.in_recovery:
            return
        if rt.held_back:  # applied offsets a slow acknowledgement held back: before the lag reads them
            async with rt.batch_lock:
                await write_applied(rt, {})
        for tp in app.consumer.assignment():
            if tp.topic != chat_messages.get_topic_name():
                continue
            if recovery is None:  # a real cluster delivers what it has: faust's highwater is the end, no watchdog
                applied = rt.applied(tp.partition)
                end = int(app.consumer.highwater(tp) or 0)
                rt.metrics.lag.labels(str(tp.partition)).set(max(0, end - (applied + 1 if applied is not None else 0)))
                continue
            end = await recovery.partition_end(tp.partition, app.consumer.highwater(tp))
            lag = await recovery.lag(tp.partition, end)
            rt.metrics.lag.labels(str(tp.partition)).set(lag)
            if lag and rt.idle_since(tp.partition) > STALL_SECONDS:
                log.warning("chat-messages[%d]: %d records not delivered for %.0f s: reading them directly",
                            tp.partition, lag, STALL_SECONDS)
                rt.metrics.resumed.inc()
                await catch_up(rt, recovery, tp.partition, end)

    @app.on_partitions_revoked.connect
    async def mark_boards_stale(sender: faust.App, revoked: set, **kwargs: object) -> None:
        rt.boards.stale = True
        if rt.recovery is not None:
            rt.recovery.forget(tp.partition for tp in revoked if tp.topic == chat_messages.get_topic_name())

    @app.on_rebalance_complete.connect
    async def rebuild_leaderboards(sender: faust.App, **kwargs: object) -> None:
        """Tables are recovered at this point: rebuild the rank index from the viewer headers."""
        rebuild_boards(rt)
