"""Records the consumer skipped are noticed by offset and read directly, in order, from real Kafka."""

from __future__ import annotations

from types import SimpleNamespace

from infra.events import parse_chat_message
from infra.kafka import partition_for_key
from infra.settings import Settings
from infra.topics import CHAT_MESSAGES, topic_name
from stream_agents.metrics import Metrics
from stream_agents.recovery.gaps import GapFiller
from stream_agents.validate import in_offset_order
from tests.test_stream_agents.harness import publish, synthetic_stream


def event(partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(value=b"delivered", message=SimpleNamespace(partition=partition, offset=offset))


def test_events_are_put_in_offset_order_once_per_offset() -> None:
    ordered = in_offset_order([event(1, 5), event(0, 3), event(1, 4), event(1, 5)])
    assert {p: [e.message.offset for e in items] for p, items in ordered.items()} == {1: [4, 5], 0: [3]}


async def test_a_skipped_range_is_read_before_the_batch_that_jumped(topics: Settings) -> None:
    messages = [m.model_copy(update={"author_id": "UC1"}) for m in synthetic_stream("s", viewers=1, messages=30, donors=0)]
    await publish(topics, messages)  # one viewer: every record on one partition, offsets 0..29
    partition = partition_for_key(b"s|UC1", topics.topic_partitions)
    metrics = Metrics()
    applied: dict[int, int] = {}
    gaps = GapFiller(bootstrap=topics.kafka_bootstrap, topic=topic_name(CHAT_MESSAGES, topics),
                     applied=applied.get, metrics=metrics)
    try:
        first = await gaps.complete([event(partition, o) for o in range(0, 5)])
        assert [r.message.offset for r in first] == [0, 1, 2, 3, 4]  # nothing applied yet: from the beginning
        jumped = await gaps.complete([event(partition, o) for o in (12, 11, 13)])
        assert [r.message.offset for r in jumped] == list(range(5, 14))
        assert [parse_chat_message(r.value).message_id for r in jumped[:6]] == [m.message_id for m in messages[5:11]]
        again = await gaps.complete([event(partition, o) for o in (13, 14)])  # redelivery: nothing to read
        assert [r.message.offset for r in again] == [13, 14]
        applied[partition] = 16  # a rebalance, and the recovered table says 16 was applied (another worker)
        gaps.forget([partition])
        taken_over = await gaps.complete([event(partition, 20)])
        assert [r.message.offset for r in taken_over] == [17, 18, 19, 20]
        caught_up = await gaps.read(partition, 21, 30)  # the stall watchdog's direct read
        assert [r.message.offset for r in caught_up] == list(range(21, 30)) and gaps.expected[partition] == 30
        assert metrics.value("donorcast_refetched_records_total") == 6 + 3 + 9
        assert metrics.value("donorcast_lost_records_total") == 0
    finally:
        await gaps.close()
