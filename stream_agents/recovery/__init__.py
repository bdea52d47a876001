"""Recovery for the embedded broker: one hook, switched on only when the broker is Tansu.

Two things the embedded Tansu broker (with faust-streaming 0.15.3 and aiokafka) does that a real Kafka
cluster does not, and what the worker does about them:

- records fetched but never delivered to the agent (around the seek after a table recovery): noticed
  by offsets, read directly, and a partition that stalls is caught up by the watchdog (`gaps.py`);
- a restart with empty storage (memory storage: no topics, no records, offsets from 0 again): noticed
  by a new cluster id, counted, and the worker reset to match (`broker_reset.py`; the PostgreSQL
  sink's share, `sink_watch.py`).

`Recovery` is the only object the app, the agents and the timers talk to. `create_app` builds one
when `infra.kafka.is_tansu` says so and passes None otherwise: on a real cluster the agent applies
what faust delivers, in offset order, and none of this runs.

Per micro-batch, in this order:

1. `before_batch` (outside the batch lock): a redelivery makes the broker watch ask for the cluster
   id, and a new one resets the worker, holding the batch lock itself;
2. `prepare` (under the batch lock, so after any reset): the old broker's leftovers are dropped, once
   per batch, then records skipped before the batch are put in front of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from infra.kafka import WantedTopic, wanted_topics
from stream_agents.recovery.broker_reset import RESET_POLL_SECONDS, BrokerWatch
from stream_agents.recovery.gaps import GapFiller
from stream_agents.recovery.sink_watch import SinkWatch

if TYPE_CHECKING:
    import faust

    from stream_agents.persist import PostgresSink
    from stream_agents.pipeline import Runtime


class Recovery:
    """The gap filler and the broker watch behind the calls the agents make."""

    def __init__(self, gaps: GapFiller, watch: BrokerWatch) -> None:
        self.gaps = gaps
        self.watch = watch

    @classmethod
    def build(cls, app: faust.App, rt: Runtime, *, bootstrap: str, chat_topic: str, tables: Sequence[Any],
              owned: Iterable[str]) -> Recovery:
        """For one app: `tables` are rewritten to new changelogs after a reset; `owned` are the topics only
        the worker writes (recreated empty after a reset)."""
        settings = rt.settings
        gaps = GapFiller(bootstrap=bootstrap, topic=chat_topic, applied=rt.applied, metrics=rt.metrics)
        changelogs = [WantedTopic(t.changelog_topic.get_topic_name(), settings.topic_partitions, compacted=True)
                      for t in tables]
        watch = BrokerWatch(
            bootstrap=bootstrap, rt=rt, tables=tables, metrics=rt.metrics,
            topics=wanted_topics(settings) + changelogs,
            highwater=lambda tp: app.consumer.highwater(tp),
            owned=frozenset({*owned, *(t.name for t in changelogs)}),
            settle=rt.settle,
            gaps=gaps,
        )
        return cls(gaps, watch)

    # ------------------------------------------------------------ per batch

    async def before_batch(self, events: Sequence[Any]) -> None:
        """Step 1 of the module docstring; the caller does not hold the batch lock."""
        await self.watch.check_if_redelivered(events)

    async def prepare(self, events: Sequence[Any], *, delivered: bool = True) -> list[Any]:
        """Step 2; the caller holds the batch lock. `delivered=False` for records read here (the stall
        watchdog's catch-up): they are the gap, so none is filled in front of them."""
        kept = self.watch.drop_leftovers(events)
        if not delivered:
            return kept
        self.watch.observe_batch(kept)
        return await self.gaps.complete(kept)

    # ------------------------------------------------------------ the stall watchdog

    async def partition_end(self, partition: int, highwater: int | None) -> int:
        """faust's highwater is exact only while faust keeps fetching the partition (None after a
        rebalance until the next fetch, stale for a partition faust stopped delivering): the broker's
        answer (exact on Tansu too, see gaps.end_offset) is read as well and the larger one wins."""
        return max(int(highwater or 0), await self.gaps.end_offset(partition))

    async def lag(self, partition: int, end: int) -> int:
        return max(0, end - await self.gaps.next_to_apply(partition))

    async def undelivered(self, partition: int, end: int) -> list[Any]:
        """The records of a partition from the next one to apply up to `end`, read directly."""
        start = await self.gaps.next_to_apply(partition)
        return await self.gaps.read(partition, start, end)

    def forget(self, partitions: Iterable[int]) -> None:
        self.gaps.forget(partitions)

    # ------------------------------------------------------------ wiring

    def attach_sink(self, sink: PostgresSink) -> None:
        """The sink sees offsets going backwards too, and counts what it never wrote on a reset."""
        sink_watch = SinkWatch(sink.chat_topic, self.watch.check)
        sink.on_fetch = sink_watch.fetched
        self.watch.on_reset.append(sink_watch.lost_on_reset)

    def register(self, app: faust.App, chat_topic: str) -> None:
        watch = self.watch

        @app.timer(RESET_POLL_SECONDS)
        async def watch_broker() -> None:
            """Notice a broker restarted with empty storage (the embedded one) and reset the worker to match."""
            try:
                for tp in app.consumer.assignment():
                    if tp.topic == chat_topic:
                        watch.observe(tp.partition, app.consumer.highwater(tp))
            except Exception:  # noqa: BLE001, S110 - mid-rebalance: the next tick samples again
                pass
            await watch.check()

        @app.on_before_shutdown.connect
        async def close_recovery(sender: Any, **kwargs: object) -> None:
            await watch.cluster.close()
            await self.gaps.close()
