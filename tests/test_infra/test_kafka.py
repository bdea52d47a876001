"""Against the real embedded Tansu broker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from infra.errors import KafkaUnavailable
from infra.kafka import EmbeddedKafka, check_reachable, consumer
from infra.process import ServiceRecord, is_alive
from infra.settings import Settings, load_settings
from infra.topics import CHAT_MESSAGES, topic_name


async def _consume(bootstrap: str, topic: str, group: str, want: int, timeout: float = 30) -> list[bytes]:
    """Through the project's one consumer factory: a new group starts at the earliest record, and only
    what was committed by hand is not read again."""
    reader = consumer(bootstrap, topic, group_id=group, session_timeout_ms=3000, heartbeat_interval_ms=500)
    await reader.start()
    values: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(values) < want and asyncio.get_running_loop().time() < deadline:
            batches = await reader.getmany(timeout_ms=500, max_records=want - len(values))
            for records in batches.values():
                values.extend(r.value for r in records)
        await reader.commit()
    finally:
        await reader.stop()
    return values


async def test_group_consumer_resumes_from_committed_offsets(topics: Settings) -> None:
    bootstrap = topics.kafka_bootstrap
    assert bootstrap is not None
    topic = topic_name(CHAT_MESSAGES, topics)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(1000):
            await producer.send(topic, key=f"v{i % 37}".encode(), value=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()

    group = f"g-{uuid.uuid4().hex[:6]}"
    first = await _consume(bootstrap, topic, group, want=400)
    second = await _consume(bootstrap, topic, group, want=600)  # a restarted consumer, same group
    assert len(first) == 400 and len(second) == 600
    assert sorted(int(v) for v in first + second) == list(range(1000)), "lost or duplicated records"


def test_topics_have_their_partitions(topics: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=topics.kafka_bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic_name(CHAT_MESSAGES, topics)])
            return len(described["partitions"])
        finally:
            await admin.close()

    assert asyncio.run(describe()) == 4


def test_unreachable_external_kafka_names_address_and_setting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(KafkaUnavailable, match=rf"127.0.0.1:{port}.*DONORCAST_KAFKA_BOOTSTRAP"):
            check_reachable(f"127.0.0.1:{port}", timeout=1)


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        broker = EmbeddedKafka(load_settings(state_dir=tmp_path))
        with pytest.raises(KafkaUnavailable, match=r"exited|did not answer"):
            broker.start(port=port, timeout=5)
    assert broker.running() is None


def test_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """No orphan broker after the process that started it is killed with SIGKILL."""
    code = (
        "import sys, time; from infra.kafka import EmbeddedKafka; from infra.settings import load_settings;"
        f"EmbeddedKafka(load_settings(state_dir={str(tmp_path)!r})).start(); print('up', flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "up"
    record = ServiceRecord.load(tmp_path / "run" / "kafka.json")
    assert record is not None and is_alive(record.pid, "tansu")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while is_alive(record.pid, "tansu") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_alive(record.pid, "tansu"), "orphaned broker"
    # the stale record is noticed and cleaned on the next look
    assert EmbeddedKafka(load_settings(state_dir=tmp_path)).running() is None
