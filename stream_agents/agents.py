"""The agents and timers. Each is a short loop that calls plain functions from `pipeline.py`.

- `score_chat_messages`: chat-messages -> (dead-letters | outcomes | viewer sequences) -> donor-scores.
  One agent, not a chain of agents joined by topics: every hop would add a full write per message to a
  broker that never compacts, and faust's in-memory channels between agents would ack a record
  before its work is done (a crash would lose it). Here a record's offset is committed only after
  its batch is embedded, stored in the tables and its scores are handed to the producer.
- `persist_to_postgres`: the PostgreSQL sink (its own consumer group, so an outage never stops scoring).
- `watch_promoted_model`: hot model swap. `expire_idle_viewers`: idle expiry. `measure_lag`: consumer lag.
"""

from __future__ import annotations

import faust

from stream_agents.persist import PostgresSink
from stream_agents.pipeline import Runtime, expire_idle, process_batch, publish, rebuild_boards
from stream_agents.validate import sort_events

MODEL_POLL_SECONDS = 2.0
EXPIRY_SECONDS = 30.0
LAG_SECONDS = 5.0


def register_agents(app: faust.App, rt: Runtime, chat_messages: faust.TopicT, sink: PostgresSink | None) -> None:
    settings = rt.settings

    @app.agent(chat_messages, name="score_chat_messages")
    async def score_chat_messages(stream: faust.StreamT[bytes]) -> None:
        """Validate, embed, append to viewer sequences and score, one micro-batch at a time."""
        async for events in stream.take_events(settings.embed_batch_size, within=settings.embed_batch_wait):
            batch = sort_events(events)
            model = await rt.models.wait_for_model()
            scores = await process_batch(rt, model, batch, n_records=len(events))
            await publish(rt, batch, scores)

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
        """Records on our chat-messages partitions not processed yet (highwater from fetch responses)."""
        for tp in app.consumer.assignment():
            if tp.topic == chat_messages.get_topic_name():
                highwater = app.consumer.highwater(tp)
                if highwater is None:  # nothing fetched from it yet
                    continue
                done = rt.processed.get(tp.partition)
                position = done + 1 if done is not None else (await app.consumer.position(tp) or 0)
                rt.metrics.lag.labels(str(tp.partition)).set(max(0, highwater - position))

    @app.on_partitions_revoked.connect
    async def mark_boards_stale(sender: faust.App, revoked: set, **kwargs: object) -> None:
        rt.boards.stale = True

    @app.on_rebalance_complete.connect
    async def rebuild_leaderboards(sender: faust.App, **kwargs: object) -> None:
        """Tables are recovered at this point: rebuild the rank index from the viewer headers."""
        rebuild_boards(rt)
