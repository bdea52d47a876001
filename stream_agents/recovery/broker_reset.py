"""A broker that lost its storage: noticed, counted, and the worker reset to match.

The embedded Tansu broker keeps everything in memory. Restarted, it has no topics, no records, no
consumer groups, and its offsets start again at 0. A Kafka cluster never does this (its log is on
disk, replicated); this module exists for the embedded broker, and does nothing on a broker whose
cluster id never changes.

Each embedded broker start has its own cluster id (infra/kafka.py). `BrokerWatch` asks for it every
RESET_POLL_SECONDS, and at once whenever a consumer sees offsets going backwards (the first sign of
an empty broker). On a new id it holds the agent's batch lock and:

1. counts what is lost: per chat-messages partition, the end the worker had seen on the old broker
   minus what it had applied (`lost_on_broker_reset`, scoring) and, for the PostgreSQL sink, minus
   what it had written (`lost_on_broker_reset_storage`); logged at ERROR with the counts, never silent;
2. lets faust's producer finish what it was sending when the old broker died (aiokafka retries it
   into the new broker, which auto-creates the topics on first use with 4 partitions), then
   recreates empty the topics only the worker writes (the changelogs, donor-scores: they hold only
   those stale in-flight writes) and creates the producers' topics if missing;
3. resets offset-based dedupe: the new broker numbers records from 0 again, so each viewer's
   `last_offset`/`last_paid_offset` and the applied offset per partition (`partition_to_offset`)
   are cleared; dedupe by message id in the window still holds;
4. writes its whole table state to the new changelogs, so a worker restarted later recovers
   exactly what this one holds; every write must be acknowledged and every partition readable to
   its end, else the worker's topics are recreated and written again (`BrokerWatch.rewrite`: found
   by the backlog drill, Tansu can give two batches one offset just after a restart, and such a
   partition never delivers its last records, so a recovery reading it waits forever).

Records of the old broker that faust had fetched but not yet handed to the agent when the reset was
noticed, or that were handed to it and waited for the batch lock while the reset ran, are dropped
(they are in the lost count): applying them after step 3 would mark offsets of
the old numbering as applied and make the new broker's records look like duplicates. They are
recognised per partition as offsets past the old applied offset arriving before the new broker's
first record (which starts again at or below it).

faust does not always deliver the new broker's records of a partition (its consumer can keep the
old read offset until it is reassigned); the stall watchdog (agents.py, recovery/gaps.py) then reads them
directly after STALL_SECONDS. Not sooner: until faust's consumer has rejoined the group on the new
broker, the partition end it reports is the old broker's.

Limits: records the old broker acknowledged but no consumer fetched are unknown here (the producer
side reports them, producers/publisher.py); a score published but not yet stored is lost (the next
message of that viewer scores it again); with several workers each resets the partitions it holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from infra.kafka import ClusterWatch, WantedTopic, ensure_named_topics, recreate_topics, unreadable_topics
from stream_agents.metrics import Metrics
from stream_agents.pipeline import Runtime
from stream_agents.recovery.gaps import GapFiller

log = logging.getLogger(__name__)

RESET_POLL_SECONDS = 0.5
QUERY_TIMEOUT_SECONDS = 2.0
SETTLE_TIMEOUT_SECONDS = 15.0
REWRITE_ATTEMPTS = 4


class BrokerWatch:
    """Holds the cluster id the worker's state belongs to, and resets the worker when it changes."""

    def __init__(
        self,
        *,
        bootstrap: str,
        rt: Runtime,
        tables: Sequence[Any],
        topics: Sequence[WantedTopic],
        highwater: Callable[[Any], int | None],
        metrics: Metrics,
        owned: frozenset[str] = frozenset(),
        settle: Callable[[], Awaitable[Any]] | None = None,
        gaps: GapFiller | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.rt = rt
        self.gaps = gaps  # its expected offsets belong to the old broker's numbering: cleared on a reset
        self.tables = tables  # faust tables, rewritten to their new changelogs
        self.topics = list(topics)  # every topic to recreate, changelogs included
        self.highwater = highwater  # faust TP -> end of the partition as last fetched
        self.metrics = metrics
        self.owned = owned  # topics only the worker writes: replaced if they came back wrong
        self.settle = settle  # waits until the worker's producer has nothing in flight
        self.seen_end: dict[int, int] = {}  # chat-messages partition -> end seen on the current broker
        self.pending: dict[int, int] = {}  # partition -> old applied offset, until the new broker's first record
        self.on_reset: list[Callable[[], int]] = []  # the sink's accounting; returns records it lost
        self.resets = 0  # resets done
        self.lock = asyncio.Lock()
        self.cluster = ClusterWatch(bootstrap, topic=self.topics[0].name if self.topics else None,
                                    timeout=QUERY_TIMEOUT_SECONDS)

    async def check(self) -> bool:
        """Ask the broker for its cluster id; reset the worker if it changed. True when it did."""
        async with self.lock:
            change = await self.cluster.changed()
            if change is None:
                return False
            async with self.rt.batch_lock:
                await self.reset(*change)
                self.resets += 1
            self.cluster.accept(change[1])
            return True

    def observe(self, partition: int, end: int | None) -> None:
        if end is not None and end > self.seen_end.get(partition, -1):
            self.seen_end[partition] = end

    async def check_if_redelivered(self, events: Sequence[Any]) -> None:
        """A batch from faust, before the batch lock: offsets at or before the applied ones are a
        redelivery after a restart, or a new broker. The cluster id tells which (and resets if new)."""
        applied = self.rt.applied
        if any((done := applied(e.message.partition)) is not None and e.message.offset <= done for e in events):
            await self.check()

    def observe_batch(self, events: Sequence[Any]) -> None:
        """Note how far each partition of a delivered batch goes (for the lost count of a reset)."""
        for event in events:
            self.observe(event.message.partition, self.highwater(event.message.tp))

    def drop_leftovers(self, events: Sequence[Any]) -> list[Any]:
        """The events that are not the old broker's leftovers; called once per batch, under the batch lock,
        so after any reset that could affect it (resets hold that lock too). Applied after the reset, an old
        broker's offsets would become the partition's applied offset in the new numbering, so the new broker's
        records (numbered from 0 again) would look applied (lag 0, never read) and its viewers' new messages
        would look like duplicates. Found by the backlog drill: one 16-record batch did this, and the new
        broker's records of three partitions were never scored."""
        kept = [e for e in events if not self._leftover(e.message.partition, e.message.offset)]
        if len(kept) < len(events):
            log.warning("dropped %d records the old broker delivered after its reset was noticed (counted in "
                        "lost_on_broker_reset)", len(events) - len(kept))
        return kept

    def _leftover(self, partition: int, offset: int) -> bool:
        old = self.pending.get(partition)
        if old is None:
            return False
        # The new broker's records have begun: numbered from 0 again, or already applied another way
        # (the stall watchdog reads them directly).
        if offset <= old or self.rt.applied(partition) is not None:
            del self.pending[partition]
            return False
        return True

    def unapplied(self) -> int:
        lost = 0
        for partition, end in self.seen_end.items():
            done = self.rt.applied(partition)
            lost += max(0, end - (done + 1 if done is not None else 0))
        return lost

    async def _settle(self) -> None:
        if self.settle is None:
            return
        try:
            await asyncio.wait_for(self.settle(), SETTLE_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - failed sends are superseded by the rewrite
            log.warning("flushing the producer after the broker reset: %s: %s", type(error).__name__, error)

    def owned_topics(self) -> list[WantedTopic]:
        return [t for t in self.topics if t.name in self.owned]

    async def rewrite(self) -> int:
        """Write the tables to the new changelogs until every write is acknowledged and every topic the
        worker owns reads to its end. Just after a restart, writes from a producer that lived through
        it can collide in Tansu (AlreadyExists: two batches given one offset); the write is refused and
        the partition may never deliver its last records (a recovery reading it waits forever). So on
        either, the worker's topics are recreated empty and the tables written again."""
        for attempt in range(1, REWRITE_ATTEMPTS + 1):
            deliveries = rewrite_tables(self.rt, self.tables)
            await self._settle()
            results = await asyncio.gather(*deliveries, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            broken = [] if failed else await unreadable_topics(self.bootstrap, self.owned_topics(), timeout=5.0)
            if not failed and not broken:
                return len(deliveries)
            log.warning("after the broker reset, attempt %d of %d: %d of %d changelog writes refused%s, "
                        "unreadable: %s; recreating the worker's topics and writing again", attempt,
                        REWRITE_ATTEMPTS, len(failed), len(deliveries),
                        f" ({type(failed[0]).__name__})" if failed else "", ", ".join(broken) or "none")
            await asyncio.sleep(0.5 * attempt)
            await recreate_topics(self.bootstrap, self.owned_topics())
        log.error("the tables could not be written to the new changelogs: a restarted worker would recover "
                  "other sequences than this one holds")
        return 0

    async def reset(self, old: str, new: str) -> None:
        """Steps 1-4 of the module docstring; the caller holds the batch lock."""
        rt = self.rt
        lost = self.unapplied()
        lost_storage = sum(account() for account in self.on_reset)
        self.metrics.broker_resets.inc()
        self.metrics.lost_on_reset.labels("scoring").inc(lost)
        self.metrics.lost_on_reset.labels("storage").inc(lost_storage)
        log.error("Kafka broker reset (cluster id %s -> %s: a new broker with empty storage): %d chat-messages "
                  "records the old broker held were never scored and %d never stored; they are lost unless "
                  "their producer sends them again", old, new, lost, lost_storage)
        await self._settle()
        # The worker's own topics hold only what its producer had in flight when the old broker died
        # (stale, maybe refused halfway): they start empty. The producers' topics are created if missing.
        await recreate_topics(self.bootstrap, self.owned_topics())
        topics = await ensure_named_topics(self.bootstrap, [t for t in self.topics if t.name not in self.owned])
        if topics.mismatched:
            log.error("after the broker reset these topics exist with another partition count than %d (auto-created "
                      "by a producer before anyone recreated them): %s; keys now map to other partitions",
                      rt.settings.topic_partitions, ", ".join(topics.mismatched))
        self.pending = {p: done for p in range(rt.settings.topic_partitions) if (done := rt.applied(p)) is not None}
        rows = await self.rewrite()
        if self.gaps is not None:
            self.gaps.expected.clear()
        self.seen_end.clear()
        log.warning("after the broker reset: recreated %s, created %s; rewrote %d table rows to the new "
                    "changelogs; offset dedupe restarted", ", ".join(t.name for t in self.owned_topics()),
                    ", ".join(topics.created) or "nothing else", rows)


def rewrite_tables(rt: Runtime, tables: Sequence[Any]) -> list[Any]:
    """Clear offset-based dedupe and send every row again to its changelog; returns the delivery futures.

    Rows are written to the store and their changelog directly (what `table[key] = value` does) to get
    each delivery's future: a write the new broker refused must be noticed (see `BrokerWatch.reset`)."""
    store, deliveries = rt.store, []
    for table in tables:
        table.data.forget_held()  # the new changelogs number from 0: where each held partition ends is unknown
    for key, header in store.items():
        header.last_offset = header.last_paid_offset = -1
        deliveries.append(_put(store.headers, key, header.to_bytes()))
    for key in list(rt.offsets.keys()):
        rt.offsets.data.pop(key, None)
        deliveries.append(rt.offsets.send_changelog(rt.offsets.partition_for_key(key), key, None,
                                                    value_serializer="raw"))
    for table in tables:
        if table is store.headers or table is rt.offsets:
            continue
        for key, value in list(table.data.items()):
            deliveries.append(_put(table, key, value))
    return deliveries


def _put(table: Any, key: Any, value: Any) -> Any:
    table.data[key] = value
    return table.send_changelog(table.partition_for_key(key), key, value)
