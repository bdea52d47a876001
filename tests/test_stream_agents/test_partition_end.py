"""Where a chat-messages partition ends, read from the real broker: the stall watchdog's lag is this end
minus the applied offset, so an end short of the truth hides records that were never applied."""

from __future__ import annotations

from infra.settings import Settings
from infra.topics import CHAT_MESSAGES, topic_name
from stream_agents.metrics import Metrics
from stream_agents.recovery.gaps import GapFiller


async def test_the_end_of_a_partition_counts_every_record_of_its_last_batch(topics: Settings) -> None:
    """The stall watchdog compares this end with the applied offset: Tansu's ListOffsets answers the last
    batch's base offset + 1, which made the tail of a partition look applied (lag 0) and never read."""
    from aiokafka import AIOKafkaProducer

    topic = topic_name(CHAT_MESSAGES, topics)
    producer = AIOKafkaProducer(bootstrap_servers=topics.kafka_bootstrap, linger_ms=50)
    await producer.start()
    gaps = GapFiller(bootstrap=topics.kafka_bootstrap, topic=topic, applied=lambda p: None, metrics=Metrics())

    async def batch(partition: int, n: int) -> None:  # n records in one produce batch
        sent = [await producer.send(topic, b"x", partition=partition) for _ in range(n)]
        await producer.flush()
        assert len({(await f).offset for f in sent}) == n

    try:
        await batch(0, 1)
        await batch(0, 10)  # offsets 1..10
        await batch(1, 7)  # offsets 0..6
        assert await gaps.end_offset(0) == 11
        assert await gaps.end_offset(1) == 7
        await batch(0, 5)  # offsets 11..15: a second probe of the same partition sees them
        assert await gaps.end_offset(0) == 16
        assert await gaps.end_offset(1) == 7 and await gaps.end_offset(2) == 0
    finally:
        await producer.stop()
        await gaps.close()
