"""KafkaPublisher against the real embedded Tansu: keys, partitions, order, stamps, dead letters, failures."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from infra.errors import KafkaUnavailable
from infra.events import ChatMessage, DeadLetter, parse_chat_message
from infra.kafka import EmbeddedKafka, ensure_topics, free_port
from infra.settings import Settings, load_settings
from infra.topics import CHAT_MESSAGES, DEAD_LETTERS, topic_name, viewer_key
from producers.publisher import KafkaPublisher
from tests.test_producers.kafka_reader import TopicReader, read_topic

T0 = datetime(2024, 5, 1, 18, 0, tzinfo=UTC)


def chat(stream: str, viewer: str, seq: int) -> ChatMessage:
    return ChatMessage(
        stream_id=stream,
        message_id=f"{stream}-{viewer}-{seq}",
        timestamp=T0 + timedelta(seconds=seq),
        author_id=viewer,
        author_name=viewer.upper(),
        text=f"message {seq} from {viewer}",
    )


async def test_one_viewer_one_partition_in_order_with_produced_at(topics: Settings) -> None:
    viewers = [f"UC{i:02d}" for i in range(12)]
    sent = [chat(stream, viewer, seq) for seq in range(5) for stream in ("s1", "s2") for viewer in viewers]
    before = time.time()
    async with KafkaPublisher(topics) as publisher:
        returned = [await publisher.publish(message) for message in sent]
    after = time.time()
    assert publisher.counters.sent == len(sent) and publisher.counters.failed == 0
    assert all(before <= m.produced_at <= after for m in returned)  # type: ignore[operator]

    records = await read_topic(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), len(sent))
    assert len(records) == len(sent)
    by_key: dict[bytes, list] = defaultdict(list)
    for record in records:
        by_key[record.key].append(record)
    partitions_used = set()
    for message in sent:
        key = viewer_key(message.stream_id, message.viewer_id)
        assert key == f"{message.stream_id}|{message.author_id}".encode()
        assert len({r.partition for r in by_key[key]}) == 1, f"{key!r} spread over partitions"
        partitions_used.add(by_key[key][0].partition)
    assert len(partitions_used) > 1  # 24 keys over 4 partitions: the key, not a constant, decides
    for key, group in by_key.items():
        decoded = [parse_chat_message(r.value) for r in sorted(group, key=lambda r: r.offset)]
        assert [m.timestamp for m in decoded] == sorted(m.timestamp for m in decoded), key
        assert all(before <= m.produced_at <= after for m in decoded)  # type: ignore[operator]
    ids = sorted(parse_chat_message(r.value).message_id for r in records)
    assert ids == sorted(m.message_id for m in sent)


async def test_dead_letters_land_on_dead_letters_topic(topics: Settings) -> None:
    letter = DeadLetter(source="test.reader", location="chat.json:7", reason="timestamp: missing", raw='{"x": 1}')
    async with KafkaPublisher(topics) as publisher:
        await publisher.publish_dead_letter(letter)
        await publisher.publish(chat("s1", "UCa", 0))
    assert publisher.counters.dead_letters == 1 and publisher.counters.sent == 2

    dead_topic, chat_topic = topic_name(DEAD_LETTERS, topics), topic_name(CHAT_MESSAGES, topics)
    async with TopicReader(topics.kafka_bootstrap, dead_topic, chat_topic) as reader:
        records = await reader.read(2, settle=0.5)
    letters = [r for r in records if r.topic == dead_topic]
    assert len(letters) == 1 and len(records) == 2
    assert letters[0].key == b"test.reader"
    assert DeadLetter.model_validate_json(letters[0].value) == letter
    assert [parse_chat_message(r.value).message_id for r in records if r.topic == chat_topic] == ["s1-UCa-0"]


async def test_unreachable_broker_names_address_and_setting(tmp_path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = load_settings(state_dir=tmp_path, kafka_bootstrap=address)
    with pytest.raises(KafkaUnavailable) as raised:
        async with KafkaPublisher(settings, request_timeout_ms=2000):
            pass
    assert address in str(raised.value) and "DONORCAST_KAFKA_BOOTSTRAP" in str(raised.value)


async def test_broker_lost_midway_is_retried_then_surfaced(tmp_path) -> None:
    # A broker of our own, so that killing it harms no other test.
    settings = load_settings(state_dir=tmp_path / "own", topic_prefix="lost-")
    broker = EmbeddedKafka(settings)
    record = broker.start()
    try:
        settings = load_settings(state_dir=tmp_path / "own", topic_prefix="lost-", kafka_bootstrap=record.url)
        await ensure_topics(record.url, settings)
        publisher = KafkaPublisher(
            settings, request_timeout_ms=800, retries=2, backoff_initial=0.05, backoff_max=0.1
        )
        with pytest.raises(KafkaUnavailable) as raised:
            async with publisher:
                await publisher.publish(chat("s1", "UCa", 0))
                await publisher.flush()
                assert publisher.counters.sent == 1
                os.kill(record.pid, signal.SIGKILL)  # the broker crashes
                started = time.monotonic()
                for seq in range(1, 1000):  # raises once the first record has failed for good
                    await publisher.publish(chat("s1", "UCa", seq))
        elapsed = time.monotonic() - started
        assert record.url in str(raised.value) and "DONORCAST_KAFKA_BOOTSTRAP" in str(raised.value)
        assert publisher.counters.retried >= 2
        assert publisher.counters.failed >= 1
        assert elapsed < 30
    finally:
        broker.stop()
