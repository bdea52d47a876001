"""`drain_producer` against faust's real producer and the real embedded broker: it returns only once
every table write queued before it was acknowledged, where faust's own flush gives up on a slow buffer.

A slow buffer is what a loaded machine gives (CI: 2 cores, a worker embedding): each hand-off from
faust's buffer to aiokafka is made to take longer than the 0.1 s faust's flush waits between sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest

from infra.settings import Settings
from infra.topics import DONOR_SCORES, topic_name
from stream_agents.app import drain_producer

SLOW_HANDOFF_SECONDS = 0.2  # longer than faust's 0.1 s between sends, so its flush returns early


@pytest.fixture
async def producer(topics: Settings) -> AsyncIterator[Any]:
    app = faust.App(f"{topics.topic_prefix}drain", broker=f"kafka://{topics.kafka_bootstrap}",
                    store="memory://", web_enabled=False)
    buffer = app.producer.buffer
    send = buffer._send_pending

    async def slow_send(fut: Any) -> None:
        await asyncio.sleep(SLOW_HANDOFF_SECONDS)
        await send(fut)

    buffer._send_pending = slow_send  # before start: the buffer's task looks it up once
    await app.producer.start()
    try:
        yield app, app.topic(topic_name(DONOR_SCORES, topics), key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw")
    finally:
        await app.producer.stop()


def queue_writes(topic: Any, n: int) -> list[Any]:
    """Table writes go this way: `send_soon` puts them in faust's buffer and returns at once. One key,
    so one partition: their offsets say the order they reached the broker in."""
    return [topic.send_soon(key=b"one viewer", value=str(i).encode()) for i in range(n)]


async def test_faust_flush_returns_with_writes_still_queued(producer: tuple[Any, Any]) -> None:
    app, topic = producer
    writes = queue_writes(topic, 4)
    await app.producer.flush()
    assert app.producer.buffer.size > 0 and not all(w.done() for w in writes)  # the cause drain_producer fixes
    await drain_producer(app.producer)


async def test_drain_returns_once_every_queued_write_is_acknowledged(producer: tuple[Any, Any]) -> None:
    app, topic = producer
    writes = queue_writes(topic, 4)
    await drain_producer(app.producer)
    assert app.producer.buffer.size == 0
    assert all(w.done() and not w.cancelled() and w.exception() is None for w in writes)
    offsets = [w.result().offset for w in writes]
    assert offsets == list(range(offsets[0], offsets[0] + len(writes)))  # on the broker, in the order written
