"""The PostgreSQL sink: chat-messages -> chat_messages rows, donor-scores -> viewer_scores rows.

It is its own Kafka consumer (group "<app id>-persist"), separate from the scoring agent, and loops:
read a batch, write it (COPY + ON CONFLICT DO NOTHING, infra.repository), then commit the batch's
offsets. Hence:

- kill -9 re-reads at most the batch not yet committed, and writing it again adds no row;
- PostgreSQL down: the write is retried with capped exponential back-off and the worker reports
  `degraded` (metrics, /healthz); scoring is another consumer and keeps publishing to Kafka; the
  records wait in Kafka (this sink holds one batch in memory, so the buffer is bounded) and arrive
  after recovery;
- several workers split the partitions of both topics between their sinks, like the agents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.events import ChatMessage, DonorScore, parse_chat_message
from stream_agents.metrics import Metrics

log = logging.getLogger(__name__)

SOURCE = "stream_agents"


@dataclass
class SinkBatch:
    messages: list[ChatMessage] = field(default_factory=list)
    scores: list[DonorScore] = field(default_factory=list)
    offsets: dict[Any, int] = field(default_factory=dict)  # TopicPartition -> next offset to read
    skipped: int = 0  # invalid chat records: the agent dead-letters those


def decode_batch(records: dict[Any, Sequence[Any]], chat_topic: str) -> SinkBatch:
    batch = SinkBatch()
    for tp, items in records.items():
        for record in items:
            try:
                if tp.topic == chat_topic:
                    batch.messages.append(parse_chat_message(record.value))
                else:
                    batch.scores.append(DonorScore.model_validate_json(record.value))
            except ValueError:
                batch.skipped += 1
        if items:
            batch.offsets[tp] = items[-1].offset + 1
    return batch


def backoff(attempt: int, initial: float = 0.2, cap: float = 5.0) -> float:
    return min(cap, initial * 2**attempt)


class PostgresSink:
    def __init__(
        self,
        *,
        bootstrap: str,
        database_url: str,
        topics: tuple[str, str],  # (chat-messages, donor-scores)
        group_id: str,
        metrics: Metrics,
        batch_records: int = 2000,
        max_backoff: float = 5.0,
    ) -> None:
        self.bootstrap, self.database_url = bootstrap, database_url
        self.chat_topic, self.score_topic = topics
        self.group_id = group_id
        self.metrics = metrics
        self.batch_records = batch_records
        self.max_backoff = max_backoff
        self.pool: Any = None
        self.written = {"chat_messages": 0, "viewer_scores": 0}

    @property
    def degraded(self) -> bool:
        return self.metrics.is_degraded("postgres")

    async def run(self) -> None:
        """Until cancelled (worker shutdown)."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.chat_topic, self.score_topic,
            bootstrap_servers=self.bootstrap, group_id=self.group_id, client_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",  # never "latest": Tansu ListOffsets bug
            session_timeout_ms=3000, heartbeat_interval_ms=500,
            max_poll_interval_ms=3_600_000,  # a PostgreSQL outage must not evict the sink from the group
        )
        await consumer.start()
        try:
            while True:
                records = await consumer.getmany(timeout_ms=500, max_records=self.batch_records)
                if not records:
                    continue
                batch = decode_batch(records, self.chat_topic)
                await self.write_with_retry(batch)
                await self.commit(consumer, batch.offsets)
        finally:
            await consumer.stop()
            if self.pool is not None:
                await self.pool.close()

    async def write_with_retry(self, batch: SinkBatch) -> None:
        attempt = 0
        while True:
            try:
                await self.write(batch)
            except Exception as error:  # noqa: BLE001 - any failure: back off and try the same batch again
                self.metrics.set_degraded("postgres", True)
                self.metrics.sink_retries.inc()
                delay = backoff(attempt, cap=self.max_backoff)
                log.warning("PostgreSQL write failed (%s: %s); retry in %.1f s", type(error).__name__, error, delay)
                await self._drop_pool()
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self.metrics.set_degraded("postgres", False)
            return

    async def write(self, batch: SinkBatch) -> None:
        from infra.postgres import create_pool
        from infra.repository import save_messages, save_scores

        if self.pool is None:
            self.pool = await create_pool(self.database_url)
        new_messages = await save_messages(self.pool, batch.messages, source=SOURCE)
        new_scores = await save_scores(self.pool, batch.scores)
        self.written["chat_messages"] += new_messages
        self.written["viewer_scores"] += new_scores
        self.metrics.rows_written.labels("chat_messages").inc(new_messages)
        self.metrics.rows_written.labels("viewer_scores").inc(new_scores)

    async def commit(self, consumer: Any, offsets: dict[Any, int]) -> None:
        from aiokafka.errors import CommitFailedError, IllegalStateError

        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # Partitions moved to another worker mid-batch: it re-reads them; the rows are idempotent.
            log.info("sink commit skipped after a rebalance: %s", error)

    async def _drop_pool(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                pool.terminate()
            except Exception:  # noqa: BLE001 - a broken pool is being thrown away anyway
                pass
