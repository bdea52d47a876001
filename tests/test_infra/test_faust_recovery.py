"""Guards infra/tansu_compat.py: a faust table must come back exactly after kill -9 of its worker.

Without the correction, Tansu's wrong ListOffsets answer makes faust stop reading the changelog
early and the table comes back stale (the shared broker notes saw 1 of 4 restarts correct).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from infra.kafka import free_port

APP = Path(__file__).with_name("faust_counter_app.py")
REPO = Path(__file__).resolve().parents[2]
KEYS = [f"user{i}" for i in range(100)]


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(APP), "worker", "-l", "warn"],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )


def read_counts(port: int) -> dict[str, int]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/counts/", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return {}


def wait_for_total(port: int, total: int, timeout: float, log: Path) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = read_counts(port)
        if sum(counts.values()) >= total:
            return counts
        time.sleep(0.5)
    raise AssertionError(f"worker reached {sum(counts.values())}/{total}; log:\n{log.read_text()[-3000:]}")


async def create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, keys: list[str]) -> None:
    # linger > 0 so records share batches: exactly the case Tansu's ListOffsets gets wrong.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for key in keys:
            await producer.send(topic, key=key.encode(), value=b"1")  # enqueues; flushed below
        await producer.flush()
    finally:
        await producer.stop()


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_table_recovers_exactly_after_restart(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    env = {
        **os.environ, "COUNTER_BOOTSTRAP": kafka_bootstrap, "COUNTER_PREFIX": topic_prefix,
        "COUNTER_WEB_PORT": str(port), "COUNTER_DATADIR": str(tmp_path / "faust"), "PYTHONPATH": str(REPO),
    }
    log = tmp_path / "worker.log"
    topic = f"{topic_prefix}counter-in"
    first = [KEYS[i % len(KEYS)] for i in range(3000)]
    second = [KEYS[(i * 7) % len(KEYS)] for i in range(2000)]

    # Created up front with the app's partition count; an auto-created topic would get the broker default.
    asyncio.run(create_topic(kafka_bootstrap, topic))
    worker = start_worker(env, log)
    try:
        asyncio.run(produce(kafka_bootstrap, topic, first))
        wait_for_total(port, len(first), timeout=90, log=log)
        time.sleep(1.0)  # let changelog writes and the 0.5 s offset commit land
        os.kill(worker.pid, stop_signal)
        worker.wait(timeout=30)

        asyncio.run(produce(kafka_bootstrap, topic, second))
        worker = start_worker(env, log)
        counts = wait_for_total(port, len(first) + len(second), timeout=120, log=log)
        time.sleep(1.5)  # nothing more may arrive: a stale table would also show up as a short total
        counts = read_counts(port)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert counts == dict(collections.Counter(first + second))
