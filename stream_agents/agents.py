"""The agents and timers. Each is a short loop that calls plain functions from `pipeline.py`.

- `score_chat_messages`: chat-messages -> (dead-letters | outcomes | viewer sequences) -> donor-scores.
  One agent, not a chain of agents joined by topics: every hop would add a full write per message to a
  broker that never compacts, and faust's in-memory channels between agents would ack a record
  before its work is done (a crash would lose it). Here a record's offset is committed only after
  its batch is embedded, stored in the tables and its scores are handed to the producer.
- `persist_to_postgres`: the PostgreSQL sink (its own consumer group, so an outage never stops scoring).
- `watch_promoted_model`: hot model swap. `expire_idle_viewers`: idle expiry. `measure_lag`: lag per
  partition, and the watchdog for records faust fetched but never delivered (see gaps.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import TP

from stream_agents.broker_reset import BrokerWatch
from stream_agents.persist import PostgresSink
from stream_agents.pipeline import Runtime, expire_idle, process_batch, publish, rebuild_boards
from stream_agents.validate import sort_events

log = logging.getLogger(__name__)

MODEL_POLL_SECONDS = 2.0
STALL_SECONDS = 30.0  # a partition with records that delivers none this long is read directly
EXPIRY_SECONDS = 30.0
LAG_SECONDS = 5.0


async def partition_end(app: faust.App, rt: Runtime, tp: TP) -> int:
    """Where a chat-messages partition ends. faust's highwater (from its fetch responses) is exact only
    while faust keeps fetching the partition: it is None after a rebalance until the next fetch, and
    stale for a partition faust stopped delivering, the very case the watchdog is for. So the end is
    also read from the broker (gaps.end_offset, exact on Tansu too) and the larger answer wins."""
    highwater = app.consumer.highwater(tp)
    if rt.gaps is None:
        return int(highwater or 0)
    return max(int(highwater or 0), await rt.gaps.end_offset(tp.partition))


def skip_applied(rt: Runtime, records: Sequence[Any]) -> list[Any]:
    """The records after their partition's applied offset. One at or before it was applied, and its dead
    letter and scores handed to the producer, before a kill or a rebalance re-delivered it (faust commits
    consumer offsets later than the tables say): applying it again would change no sequence but would
    dead-letter it twice and publish its viewer's score twice. Counted as duplicates."""
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


async def handle(rt: Runtime, records: Sequence[Any], watch: BrokerWatch | None = None, resets: int = 0) -> None:
    """One micro-batch, start to finish (the agent's body, also used to catch up a stalled partition).
    `resets`: the watch's reset count when the records were fetched; if a broker reset happened since (while
    the batch waited for the lock), the old broker's records among them are dropped (counted lost)."""
    async with rt.batch_lock:
        if watch is not None and watch.resets != resets:
            records = watch.drop_leftovers(records)
        records = skip_applied(rt, records)
        if not records:
            return
        batch = sort_events(records)
        model = await rt.models.wait_for_model()
        scores = await process_batch(rt, model, batch, n_records=len(records))
        await publish(rt, batch, scores)


async def catch_up(rt: Runtime, partition: int, end: int, watch: BrokerWatch | None = None) -> None:
    """Read and apply a partition's records that faust fetched but never delivered."""
    assert rt.gaps is not None
    resets = watch.resets if watch is not None else 0
    start = await rt.gaps.next_to_apply(partition)
    records = await rt.gaps.read(partition, start, end)
    size = rt.settings.embed_batch_size
    for at in range(0, len(records), size):
        await handle(rt, records[at : at + size], watch, resets)


def register_agents(app: faust.App, rt: Runtime, chat_messages: faust.TopicT, sink: PostgresSink | None,
                    watch: BrokerWatch | None = None) -> None:
    settings = rt.settings

    @app.agent(chat_messages, name="score_chat_messages")
    async def score_chat_messages(stream: faust.StreamT[bytes]) -> None:
        """Validate, embed, append to viewer sequences and score, one micro-batch at a time."""
        async for events in stream.take_events(settings.embed_batch_size, within=settings.embed_batch_wait):
            resets = watch.resets if watch is not None else 0  # before screening: it may reset the worker itself
            await handle(rt, await rt.gaps.complete(events) if rt.gaps else events, watch, resets)

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
        if app.in_recovery:
            return
        for tp in app.consumer.assignment():
            if tp.topic != chat_messages.get_topic_name():
                continue
            end = await partition_end(app, rt, tp)
            lag = max(0, end - await rt.gaps.next_to_apply(tp.partition)) if rt.gaps else 0
            rt.metrics.lag.labels(str(tp.partition)).set(lag)
            if lag and rt.idle_since(tp.partition) > STALL_SECONDS:
                log.warning("chat-messages[%d]: %d records not delivered for %.0f s: reading them directly",
                            tp.partition, lag, STALL_SECONDS)
                rt.metrics.resumed.inc()
                await catch_up(rt, tp.partition, end, watch)

    @app.on_partitions_revoked.connect
    async def mark_boards_stale(sender: faust.App, revoked: set, **kwargs: object) -> None:
        rt.boards.stale = True
        if rt.gaps is not None:
            rt.gaps.forget(tp.partition for tp in revoked if tp.topic == chat_messages.get_topic_name())

    @app.on_rebalance_complete.connect
    async def rebuild_leaderboards(sender: faust.App, **kwargs: object) -> None:
        """Tables are recovered at this point: rebuild the rank index from the viewer headers."""
        rebuild_boards(rt)
