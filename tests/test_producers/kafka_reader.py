"""Read a topic back the way a real downstream consumer would: a group consumer from the earliest
offset, until the expected number of records arrived (never `end_offsets`, which Tansu gets wrong)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    kafka_timestamp_ms: int
    received_at: float  # time.time() when the consumer got it


class TopicReader:
    """Async context manager; `await reader.read(n)` returns once n records (in total) arrived."""

    def __init__(self, bootstrap: str, *topics: str, fetch_max_wait_ms: int = 20) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[Received] = []
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer = None

    async def __aenter__(self) -> TopicReader:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=f"test-{uuid.uuid4().hex[:10]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=3000,
            heartbeat_interval_ms=500,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await self._consumer.start()
        # Join the group before returning, so a caller timing arrivals does not time the join.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not self._consumer.assignment() and loop.time() < deadline:
            await self._collect(timeout_ms=50)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def read(self, expected: int, *, timeout: float = 30.0, settle: float = 0.0) -> list[Received]:
        """Read until `expected` records in total, then `settle` seconds more (to catch duplicates)."""
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle_until: float | None = None
        while loop.time() < deadline:
            if len(self.records) >= expected:
                settle_until = settle_until or loop.time() + settle
                if loop.time() >= settle_until:
                    break
            await self._collect(timeout_ms=50)
        return self.records

    async def _collect(self, timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        now = time.time()
        for records in batches.values():
            for r in records:
                self.records.append(Received(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, now))


async def read_topic(bootstrap: str, topic: str, expected: int, *, timeout: float = 30.0, settle: float = 0.5):
    async with TopicReader(bootstrap, topic) as reader:
        return await reader.read(expected, timeout=timeout, settle=settle)
