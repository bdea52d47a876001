"""The worker's PostgreSQL: the sink that writes what the topics carry, and the viewer-history reads.

The sink: chat-messages -> chat_messages rows, donor-scores -> viewer_scores rows.

It is its own Kafka consumer (group "<app id>-persist"), separate from the scoring agent, and loops:
read a batch, write it (COPY + ON CONFLICT DO NOTHING, infra.repository), then commit the batch's
offsets. Hence:

- kill -9 re-reads at most the batch not yet committed, and writing it again adds no row;
- PostgreSQL unavailable (connection refused or lost, shutting down, too many connections, a
  timeout): the write is retried with capped exponential back-off and the worker reports
  `degraded` (metrics, /healthz); scoring is another consumer and keeps publishing to Kafka; the
  records wait in Kafka (this sink holds one batch in memory, so the buffer is bounded) and arrive
  after recovery;
- PostgreSQL refuses a row (a data error or a violated constraint: waiting will not change its
  mind): the batch is written again row by row, and each refused row goes to the dead-letters
  topic with PostgreSQL's reason, so one bad row neither blocks its partition nor takes the other
  rows of its batch with it;
- any other error (a bug, a schema that does not match) stops the worker loudly: neither waiting
  nor dead-lettering every row would fix it;
- several workers split the partitions of both topics between their sinks, like the agents.

Viewer history features (past streams, paid events, membership), for models that use them, are read
once per viewer per stream, strictly before the stream's origin and outside the stream itself, so a
viewer's own payment in this stream only ever counts for later streams. They are cached in a bounded
LRU; a failed query is not cached (the viewer is scored without history meanwhile and the lookup is
retried on their next message).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

from infra.errors import DatabaseUnavailable
from infra.events import ChatMessage, DeadLetter, DonorScore, parse_chat_message
from infra.kafka import consumer as kafka_consumer
from infra.repository import ViewerHistory, viewer_histories
from stream_agents.metrics import Metrics

log = logging.getLogger(__name__)

SOURCE = "stream_agents"
DEAD_LETTER_SOURCE = "stream_agents.persist"

# PostgreSQL (or the way to it) is unavailable: the same write can succeed later.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,
    DatabaseUnavailable,  # infra.postgres.create_pool: cannot connect
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: connection lost or rejected
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
)
# PostgreSQL refuses the data itself: the same row fails every time.
REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # class 22: invalid text, out of range, ...
    asyncpg.IntegrityConstraintViolationError,  # class 23: CHECK, NOT NULL (duplicates are ON CONFLICT)
    asyncpg_base.DataError,  # client side: a value asyncpg cannot encode for its column
)


def is_unavailable(error: BaseException) -> bool:
    if isinstance(error, UNAVAILABLE):
        return True
    # asyncpg says "connection is closed" / "pool is closing" when the server went away under a pooled
    # connection, and "cannot switch to state N; another operation is in progress" when the pool's
    # reconnect of that connection raced our write after a postmaster crash (seen in the kill -9 drill:
    # it stopped the sink). Nothing was committed either way; the pool is replaced before the retry.
    if isinstance(error, asyncpg_base.InternalClientError):
        return "another operation" in str(error)
    return isinstance(error, asyncpg.InterfaceError) and "clos" in str(error)


@dataclass(frozen=True)
class Origin:
    """Where a decoded record was read, kept so a refused row can be dead-lettered as it came."""

    location: str  # topic[partition]@offset
    raw: bytes


@dataclass
class SinkBatch:
    messages: list[ChatMessage] = field(default_factory=list)
    scores: list[DonorScore] = field(default_factory=list)
    message_origins: list[Origin] = field(default_factory=list)  # parallel to `messages`
    score_origins: list[Origin] = field(default_factory=list)  # parallel to `scores`
    offsets: dict[Any, int] = field(default_factory=dict)  # TopicPartition -> next offset to read
    skipped: int = 0  # invalid chat records: the agent dead-letters those


def decode_batch(records: dict[Any, Sequence[Any]], chat_topic: str) -> SinkBatch:
    batch = SinkBatch()
    for tp, items in records.items():
        for record in items:
            origin = Origin(f"{tp.topic}[{tp.partition}]@{record.offset}", record.value or b"")
            try:
                if tp.topic == chat_topic:
                    batch.messages.append(parse_chat_message(record.value))
                    batch.message_origins.append(origin)
                else:
                    batch.scores.append(DonorScore.model_validate_json(record.value))
                    batch.score_origins.append(origin)
            except ValueError:
                batch.skipped += 1
        if items:
            batch.offsets[tp] = items[-1].offset + 1
    return batch


def origins(items: Sequence[ChatMessage | DonorScore], known: Sequence[Origin]) -> list[Origin]:
    """`known` when it covers every item (decode_batch), else each item as JSON from an unknown place."""
    if len(known) == len(items):
        return list(known)
    return [Origin("unknown", item.model_dump_json().encode()) for item in items]


def backoff(attempt: int, initial: float = 0.2, cap: float = 5.0) -> float:
    return min(cap, initial * 2**attempt)


def refused_letter(origin: Origin, error: BaseException) -> DeadLetter:
    return DeadLetter.of(origin.raw, source=DEAD_LETTER_SOURCE, location=origin.location,
                         reason=f"PostgreSQL refused the row ({type(error).__name__}): {error}")


class PostgresSink:
    def __init__(
        self,
        *,
        bootstrap: str,
        database_url: str,
        topics: tuple[str, str],  # (chat-messages, donor-scores)
        group_id: str,
        metrics: Metrics,
        send_dead_letter: Callable[[DeadLetter], Awaitable[Any]] | None = None,
        batch_records: int = 2000,
        max_backoff: float = 5.0,
    ) -> None:
        self.bootstrap, self.database_url = bootstrap, database_url
        self.chat_topic, self.score_topic = topics
        self.group_id = group_id
        self.metrics = metrics
        self.send_dead_letter = send_dead_letter
        self.batch_records = batch_records
        self.max_backoff = max_backoff
        self.pool: Any = None
        self.written = {"chat_messages": 0, "viewer_scores": 0}
        self.refused = 0  # rows PostgreSQL refused, each dead-lettered
        # (records, consumer, offsets) of each fetched batch, before it is written: set by the embedded
        # broker's recovery (stream_agents/recovery/sink_watch.py) only; None on a real Kafka cluster.
        self.on_fetch: Callable[[dict[Any, Sequence[Any]], Any, dict[Any, int]], Awaitable[None]] | None = None

    @property
    def degraded(self) -> bool:
        return self.metrics.is_degraded("postgres")

    async def run(self) -> None:
        """Until cancelled (worker shutdown)."""
        consumer = kafka_consumer(
            self.bootstrap, self.chat_topic, self.score_topic, group_id=self.group_id, client_id=self.group_id,
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
                if self.on_fetch is not None:
                    await self.on_fetch(records, consumer, batch.offsets)
                await self.write_with_retry(batch)
                await self.commit(consumer, batch.offsets)
        finally:
            await consumer.stop()
            if self.pool is not None:
                await self.pool.close()

    async def write_with_retry(self, batch: SinkBatch) -> None:
        """Write the batch, waiting out unavailability; if PostgreSQL refuses some row, write the rows one
        by one and dead-letter each refused one. Returns once every row is stored or dead-lettered."""
        refusal = await self.until_available(lambda: self.write(batch.messages, batch.scores))
        if refusal is None:
            return
        log.warning("PostgreSQL refused a row of a %d-row batch (%s: %s): writing the rows one by one",
                    len(batch.messages) + len(batch.scores), type(refusal).__name__, refusal)
        for message, origin in zip(batch.messages, origins(batch.messages, batch.message_origins), strict=True):
            error = await self.until_available(lambda m=message: self.write([m], []))
            if error is not None:
                await self.dead_letter("chat_messages", origin, error)
        for score, origin in zip(batch.scores, origins(batch.scores, batch.score_origins), strict=True):
            error = await self.until_available(lambda s=score: self.write([], [s]))
            if error is not None:
                await self.dead_letter("viewer_scores", origin, error)

    async def until_available(self, write: Callable[[], Awaitable[None]]) -> BaseException | None:
        """Run `write`, retrying with back-off while PostgreSQL is unavailable (degraded meanwhile).
        Returns None when written, or PostgreSQL's refusal; any other error propagates."""
        attempt = 0
        while True:
            try:
                await write()
            except REFUSED as error:
                self.metrics.set_degraded("postgres", False)  # it answered: it is up
                return error
            except Exception as error:
                if not is_unavailable(error):
                    log.exception("PostgreSQL write failed with an error that is neither unavailability nor "
                                  "a refused row: stopping the sink")
                    self.metrics.set_degraded("postgres", True)
                    raise
                self.metrics.set_degraded("postgres", True)
                self.metrics.sink_retries.inc()
                delay = backoff(attempt, cap=self.max_backoff)
                log.warning("PostgreSQL unavailable (%s: %s); retry in %.1f s", type(error).__name__, error, delay)
                await self._drop_pool()
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self.metrics.set_degraded("postgres", False)
            return None

    async def write(self, messages: Sequence[ChatMessage], scores: Sequence[DonorScore]) -> None:
        from infra.postgres import create_pool
        from infra.repository import save_messages, save_scores

        if self.pool is None:
            self.pool = await create_pool(self.database_url)
        new_messages = await save_messages(self.pool, messages, source=SOURCE)
        self.written["chat_messages"] += new_messages
        self.metrics.rows_written.labels("chat_messages").inc(new_messages)
        new_scores = await save_scores(self.pool, scores)
        self.written["viewer_scores"] += new_scores
        self.metrics.rows_written.labels("viewer_scores").inc(new_scores)

    async def dead_letter(self, table: str, origin: Origin, error: BaseException) -> None:
        letter = refused_letter(origin, error)
        self.refused += 1
        self.metrics.refused_rows.labels(table).inc()
        log.error("dead letter %s: %s", letter.location, letter.reason)
        if self.send_dead_letter is None:
            log.error("no dead-letters topic configured: the refused row is only in this log: %s", letter.raw)
            return
        await self.send_dead_letter(letter)

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


# ---------------------------------------------------------------- viewer history reads
CacheKey = tuple[str, str]  # (stream_id, viewer_id)


class HistoryCache:
    def __init__(self, maxsize: int = 200_000) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[CacheKey, ViewerHistory] = OrderedDict()
        self.failed = False  # the last lookup failed (PostgreSQL down)

    def get(self, key: CacheKey) -> ViewerHistory | None:
        history = self._items.get(key)
        if history is not None:
            self._items.move_to_end(key)
        return history

    def put(self, key: CacheKey, history: ViewerHistory) -> None:
        self._items[key] = history
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def forget_stream(self, stream_id: str) -> None:
        for key in [k for k in self._items if k[0] == stream_id]:
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    async def lookup(
        self, pool: object, wanted: Iterable[tuple[str, str, float]]
    ) -> dict[CacheKey, ViewerHistory | None]:
        """(stream_id, viewer_id, stream origin as unix seconds) -> history; one query per stream."""
        found: dict[CacheKey, ViewerHistory | None] = {}
        missing: dict[tuple[str, float], list[str]] = {}
        for stream_id, viewer_id, origin in wanted:
            cached = self.get((stream_id, viewer_id))
            if cached is not None:
                found[(stream_id, viewer_id)] = cached
            else:
                missing.setdefault((stream_id, origin), []).append(viewer_id)
        for (stream_id, origin), viewer_ids in missing.items():
            before = datetime.fromtimestamp(origin, UTC)
            try:
                rows = await viewer_histories(pool, viewer_ids, before=before, exclude_stream=stream_id)  # type: ignore[arg-type]
            except Exception as error:  # noqa: BLE001 - PostgreSQL down: score without history for now
                if not self.failed:
                    log.warning("viewer history unavailable (%s: %s); scoring without it", type(error).__name__, error)
                self.failed = True
                found.update({(stream_id, v): None for v in viewer_ids})
                continue
            self.failed = False
            for viewer_id in viewer_ids:
                self.put((stream_id, viewer_id), rows[viewer_id])
                found[(stream_id, viewer_id)] = rows[viewer_id]
        return found
