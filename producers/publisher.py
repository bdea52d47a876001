"""The one Kafka producer every chat producer (live, replay, simulate) writes through.

`KafkaPublisher` wraps aiokafka's `AIOKafkaProducer`:

- chat messages go to `chat-messages`, keyed `stream_id|viewer_id` (infra.topics.viewer_key), so
  one viewer's messages land on one partition, in the order they were published;
- every published message gets `produced_at` (unix seconds) so consumers can measure latency;
- records are batched (`linger_ms`), and at most `max_in_flight` records are outstanding: a
  producer faster than the broker waits in `publish` instead of filling memory;
- aiokafka retries retriable errors itself until a batch expires (`request_timeout_ms`); a record
  whose batch still fails is sent again with capped exponential back-off, and after `retries`
  attempts the failure is surfaced as `KafkaUnavailable` from the next `publish`/`flush` call.

No idempotent or transactional producer: aiokafka's InitProducerId fails on Tansu. Delivery is
at-least-once; consumers dedupe by message id. A record resent by our own retry can land after
newer records of the same viewer, which only happens when the broker was failing anyway.

A broker that comes back with empty storage (the embedded Tansu broker restarted; see
stream_agents/recovery/broker_reset.py) is noticed by its new cluster id, checked every
RESET_POLL_SECONDS and once more on close. The publisher then recreates our topics with their
partition counts (its own: chat-messages, dead-letters; before more records auto-create them with
the broker's default of 4) and reports
how many records the lost broker had acknowledged (`broker_resets`, logged as a warning): those
its consumers had not read yet are gone. They are not sent again: the worker's dedupe after a
reset is by message id within each viewer's window, so re-sending what it had already applied
could count a message twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from infra.errors import KafkaUnavailable
from infra.events import ChatMessage, DeadLetter
from infra.settings import Settings
from infra.topics import CHAT_MESSAGES, DEAD_LETTERS, topic_name, viewer_key

log = logging.getLogger(__name__)

RESET_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class BrokerReset:
    """The broker came back with empty storage while this publisher was using it."""

    old_cluster: str
    new_cluster: str
    acknowledged_before: int  # records the lost broker had acknowledged to this publisher

    def describe(self) -> str:
        return (f"the Kafka broker restarted with empty storage (cluster {self.old_cluster} -> {self.new_cluster}): "
                f"{self.acknowledged_before} record(s) it had acknowledged to this producer are gone unless a "
                "consumer had read them; the worker reports how many it had read but not scored "
                "(lost_on_broker_reset); topics recreated")


@dataclass
class PublisherCounters:
    sent: int = 0  # acknowledged by the broker
    failed: int = 0  # given up after every retry
    retried: int = 0  # re-sends after a failed delivery or enqueue
    dead_letters: int = 0  # of `sent`, how many were dead letters
    resets: list[BrokerReset] = field(default_factory=list)  # brokers that lost their storage meanwhile


class KafkaPublisher:
    """Async context manager: `async with KafkaPublisher(settings) as publisher: await publisher.publish(m)`."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str | None = None,
        linger_ms: int = 5,
        max_batch_size: int = 64 * 1024,
        max_in_flight: int = 20_000,
        retries: int = 5,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        request_timeout_ms: int = 15_000,
        client_id: str = "donorcast-producer",
    ) -> None:
        resolved = bootstrap or settings.kafka_bootstrap
        if not resolved:
            raise KafkaUnavailable(
                "no Kafka address: set DONORCAST_KAFKA_BOOTSTRAP or start the embedded broker (donorcast up)"
            )
        self.bootstrap = resolved
        self.settings = settings
        self.chat_topic = topic_name(CHAT_MESSAGES, settings)
        self.dead_letter_topic = topic_name(DEAD_LETTERS, settings)
        self.counters = PublisherCounters()
        self._producer_options = {
            "bootstrap_servers": resolved,
            "client_id": client_id,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            "request_timeout_ms": request_timeout_ms,
            "enable_idempotence": False,
        }
        self._retries = retries
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._slots = asyncio.Semaphore(max_in_flight)
        self._outstanding: set[asyncio.Future[object]] = set()
        self._error: KafkaUnavailable | None = None
        self._producer: object | None = None
        self._acknowledged_at_reset = 0
        self._watch: asyncio.Task[None] | None = None
        self._cluster: Any = None  # infra.kafka.ClusterWatch, from start() on

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        producer = AIOKafkaProducer(**self._producer_options)
        try:
            await producer.start()
        except (KafkaError, OSError) as error:
            await producer.stop()
            raise KafkaUnavailable(self._unreachable(error)) from None
        self._producer = producer
        from infra.kafka import ClusterWatch

        self._cluster = ClusterWatch(self.bootstrap, topic=self.chat_topic, timeout=2.0)
        await self._cluster.changed()  # learns the cluster id we start on
        if self._cluster.known is not None:  # a broker that says none cannot tell us it restarted
            self._watch = asyncio.create_task(self._watch_broker())

    async def close(self) -> None:
        """Flush what is outstanding, then stop the producer (always)."""
        if self._producer is None:
            return
        try:
            await self.flush()
            await self.check_broker()
        finally:
            if self._watch is not None:
                self._watch.cancel()
                await asyncio.gather(self._watch, return_exceptions=True)
            if self._cluster is not None:
                await self._cluster.close()
            producer, self._producer = self._producer, None
            await producer.stop()  # type: ignore[attr-defined]

    # ------------------------------------------------------------ broker restarts (embedded Tansu)

    async def check_broker(self) -> BrokerReset | None:
        """Notice a broker that came back with empty storage: recreate the topics, report what it had."""
        change = await self._cluster.changed()
        if change is None:
            return None
        from infra.kafka import ensure_topics

        old, current = change
        reset = BrokerReset(old, current, self.counters.sent - self._acknowledged_at_reset)
        self._cluster.accept(current)
        self._acknowledged_at_reset = self.counters.sent
        # Only the topics this producer writes: donor-scores and the changelogs are the worker's to
        # recreate (it first lets its own in-flight writes settle, see stream_agents/recovery/broker_reset.py).
        await ensure_topics(self.bootstrap, self.settings, specs=(CHAT_MESSAGES, DEAD_LETTERS))
        self.counters.resets.append(reset)
        log.warning(reset.describe())
        return reset

    async def _watch_broker(self) -> None:
        while True:
            await asyncio.sleep(RESET_POLL_SECONDS)
            try:
                await self.check_broker()
            except Exception as error:  # noqa: BLE001 - reported, then watched again
                log.warning("checking the Kafka broker after a restart failed: %s", error)

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            await self.close()
            return
        # Already failing: still deliver what we can, but never mask the original error.
        try:
            await self.close()
        except Exception:  # noqa: BLE001, S110 - the caller's exception is the one to report
            pass

    # ------------------------------------------------------------ publishing

    async def publish(self, message: ChatMessage) -> ChatMessage:
        """Queue one chat message; returns the event as sent (with `produced_at`)."""
        stamped = message.model_copy(update={"produced_at": time.time()})
        key = viewer_key(stamped.stream_id, stamped.viewer_id)
        await self._send(self.chat_topic, key, stamped.model_dump_json().encode())
        return stamped

    async def publish_dead_letter(self, letter: DeadLetter) -> None:
        """Queue one rejected record for the dead-letters topic, keyed by the component that rejected it."""
        await self._send(self.dead_letter_topic, letter.source.encode(), letter.model_dump_json().encode(), dead=True)

    async def flush(self) -> None:
        """Wait until every queued record is acknowledged or has failed for good; raise if any failed."""
        producer = self._require_started()
        while self._outstanding:
            await producer.flush()  # type: ignore[attr-defined]
            await asyncio.gather(*list(self._outstanding), return_exceptions=True)
        self._raise_if_failed()

    # ------------------------------------------------------------ internals

    async def _send(self, topic: str, key: bytes, value: bytes, *, dead: bool = False) -> None:
        self._raise_if_failed()
        await self._slots.acquire()
        try:
            delivery = await self._enqueue(topic, key, value)
        except BaseException:
            self._slots.release()
            raise
        self._track(delivery, topic, key, value, dead, attempt=0)

    async def _enqueue(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[object]:
        """Hand the record to aiokafka's accumulator; retry when even that fails (no metadata, full buffer)."""
        from aiokafka.errors import KafkaError

        producer = self._require_started()
        for attempt in range(self._retries + 1):
            try:
                return await producer.send(topic, value=value, key=key)  # type: ignore[attr-defined, no-any-return]
            except KafkaError as error:
                if attempt == self._retries:
                    self.counters.failed += 1
                    self._error = KafkaUnavailable(self._gave_up(topic, error))
                    raise self._error from None
                self.counters.retried += 1
                await asyncio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def _track(
        self, delivery: Awaitable[object], topic: str, key: bytes, value: bytes, dead: bool, attempt: int
    ) -> None:
        future = asyncio.ensure_future(delivery)
        self._outstanding.add(future)

        def done(finished: asyncio.Future[object]) -> None:
            self._outstanding.discard(finished)
            error = None if finished.cancelled() else finished.exception()
            if finished.cancelled() or error is None:
                self._slots.release()
                if not finished.cancelled():
                    self.counters.sent += 1
                    self.counters.dead_letters += dead
                return
            if attempt >= self._retries or self._error is not None:
                # Once one record has failed for good the broker is gone: fail the rest fast.
                self._slots.release()
                self.counters.failed += 1
                self._error = self._error or KafkaUnavailable(self._gave_up(topic, error))
                return
            self.counters.retried += 1
            retry = asyncio.ensure_future(self._resend(topic, key, value, dead, attempt + 1))
            self._outstanding.add(retry)
            retry.add_done_callback(self._outstanding.discard)

        future.add_done_callback(done)

    async def _resend(self, topic: str, key: bytes, value: bytes, dead: bool, attempt: int) -> None:
        """Send a record whose delivery failed again, after back-off; it keeps its in-flight slot."""
        from aiokafka.errors import KafkaError

        await asyncio.sleep(self._backoff(attempt - 1))
        producer = self._require_started()
        try:
            self._raise_if_failed()
            delivery = await producer.send(topic, value=value, key=key)  # type: ignore[attr-defined]
        except (KafkaError, KafkaUnavailable) as error:
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(error)
        self._track(delivery, topic, key, value, dead, attempt)

    def _backoff(self, attempt: int) -> float:
        return float(min(self._backoff_max, self._backoff_initial * 2**attempt))

    def _require_started(self) -> object:
        if self._producer is None:
            raise RuntimeError("KafkaPublisher used outside `async with` (or after close)")
        return self._producer

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _unreachable(self, error: BaseException) -> str:
        return (
            f"cannot reach Kafka at {self.bootstrap} ({type(error).__name__}: {error}). "
            "Check DONORCAST_KAFKA_BOOTSTRAP, or unset it and run `donorcast up` for the embedded broker."
        )

    def _gave_up(self, topic: str, error: BaseException) -> str:
        return (
            f"Kafka at {self.bootstrap} did not accept records for {topic} after {self._retries} retries "
            f"({type(error).__name__}: {error}); {self.counters.failed} record(s) not delivered. "
            "Check the broker, or DONORCAST_KAFKA_BOOTSTRAP."
        )
