"""Records the consumer did not deliver: noticed by their offsets and read directly, so none is lost.

chat-messages offsets are contiguous (no compaction, no transactional producers), so a jump in the
offsets a partition delivers means records were skipped. faust-streaming 0.15.3 with aiokafka does
that around the seek that follows table recovery in a rebalance (seen on Tansu in the two-worker
failover test: a range of offsets never reached the agent, or a whole partition taken over from the
killed worker was fetched and dropped, and faust acknowledged what it dropped, so its committed
offsets cannot be trusted to say what was processed).

So what was applied is part of the state: the changelog-backed table `partition_to_offset` holds
the newest chat-messages offset applied per partition (written with the sequences it produced, and
recovered with them). A batch that starts past it first gets the skipped records, read here with a
plain consumer, in order; a partition with records past it that delivers nothing is caught up by
the stall watchdog (agents.py, through the Recovery hook) the same way. Records that cannot be read any more (retention) are
logged and counted as lost, never dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from infra.kafka import consumer as kafka_consumer
from stream_agents.metrics import Metrics
from stream_agents.validate import in_offset_order

log = logging.getLogger(__name__)
FETCH_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Record:
    """A record read here, in the shape `validate.sort_events` reads from faust events."""

    value: bytes | None
    message: Any  # aiokafka ConsumerRecord: topic, partition, offset, key


class GapFiller:
    def __init__(self, *, bootstrap: str, topic: str, applied: Callable[[int], int | None], metrics: Metrics) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.applied = applied  # partition -> newest offset applied (the partition_to_offset table)
        self.metrics = metrics
        self.expected: dict[int, int] = {}
        self._offsets: Any = None  # consumer without a group: beginning/end offsets
        self._probed: set[Any] = set()  # TopicPartitions the offsets client holds (paused) for end probes
        self._reader: Any = None  # consumer without a group: reads skipped ranges

    async def next_to_apply(self, partition: int) -> int:
        """The offset after the newest applied one; the partition's beginning if none ever was."""
        applied = self.applied(partition)
        if applied is not None:
            return applied + 1
        from aiokafka import TopicPartition

        await self._ensure_offsets_client()
        tp = TopicPartition(self.topic, partition)
        return int((await self._offsets.beginning_offsets([tp]))[tp])

    async def read(self, partition: int, start: int, end: int) -> list[Record]:
        """Records [start, end) of a partition (the stall watchdog's catch-up)."""
        records = await self._read(partition, start, end)
        self.expected[partition] = max(self.expected.get(partition, start), end)
        return records

    async def end_offset(self, partition: int) -> int:
        """Where the partition ends, exactly. ListOffsets alone will not do: Tansu answers the base offset
        of the last record batch + 1, so the rest of that batch would look applied (lag 0) and never be
        read. A fetch from just before that answer carries the true high watermark (infra/tansu_compat.py)."""
        from aiokafka import TopicPartition

        await self._ensure_offsets_client()
        tp = TopicPartition(self.topic, partition)
        listed = int((await self._offsets.end_offsets([tp]))[tp])
        if listed == 0:
            return 0
        # The offsets client, not the reader: a catch-up may be reading with that one meanwhile. Every
        # partition asked about stays assigned and paused but the one being probed (one assign per new
        # partition, not per probe), and a record fetched after the seek means its highwater is fresh.
        if tp not in self._probed:
            self._probed.add(tp)
            self._offsets.assign(list(self._probed))
            self._offsets.pause(*self._probed)
        self._offsets.seek(tp, listed - 1)
        self._offsets.resume(tp)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + FETCH_TIMEOUT_SECONDS
            while not (await self._offsets.getmany(tp, timeout_ms=200)).get(tp) and loop.time() < deadline:
                pass
        finally:
            self._offsets.pause(tp)
        return max(listed, int(self._offsets.highwater(tp) or 0))

    def forget(self, partitions: Iterable[int]) -> None:
        """After a rebalance, expect the recovered applied offset again (another worker may have moved it)."""
        for partition in partitions:
            self.expected.pop(partition, None)

    async def complete(self, events: Sequence[Any]) -> list[Any]:
        """The batch in offset order per partition, with any records skipped before it put in front."""
        out: list[Any] = []
        for partition, items in in_offset_order(events).items():
            if partition not in self.expected:
                self.expected[partition] = await self.next_to_apply(partition)
            first, expected = items[0].message.offset, self.expected[partition]
            if first > expected:
                out.extend(await self._read(partition, expected, first))
            out.extend(items)
            self.expected[partition] = max(expected, items[-1].message.offset + 1)
        return out

    async def close(self) -> None:
        for consumer in (self._offsets, self._reader):
            if consumer is not None:
                await consumer.stop()

    async def _ensure_offsets_client(self) -> None:
        if self._offsets is None:
            self._offsets = kafka_consumer(self.bootstrap)
            await self._offsets.start()

    async def _read(self, partition: int, start: int, end: int) -> list[Record]:
        from aiokafka import TopicPartition

        if self._reader is None:
            self._reader = kafka_consumer(self.bootstrap)
            await self._reader.start()
        tp = TopicPartition(self.topic, partition)
        self._reader.assign([tp])
        self._reader.seek(tp, start)
        found: list[Record] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FETCH_TIMEOUT_SECONDS
        while loop.time() < deadline and (not found or found[-1].message.offset < end - 1):
            batch = await self._reader.getmany(tp, timeout_ms=500)
            found.extend(Record(r.value, r) for r in batch.get(tp, []) if start <= r.offset < end)
        missing = (end - start) - len(found)
        self.metrics.refetched.inc(len(found))
        log.warning("%s[%d] offsets %d-%d were not delivered by the consumer; read them directly (%d found)",
                    self.topic, partition, start, end - 1, len(found))
        if missing:
            self.metrics.lost.inc(missing)
            log.error("%d records of %s[%d] between %d and %d could not be read: counted as lost",
                      missing, self.topic, partition, start, end - 1)
        return found
