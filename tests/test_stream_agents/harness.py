"""Helpers for the worker tests: synthetic chat, a worker subprocess, and readers of its outputs.

Everything here talks to the real services: messages go through `producers.publisher.KafkaPublisher`
into the real chat-messages topic, the worker is a real process (so kill -9 is real), and outputs are
read back from Kafka topics, the worker's HTTP endpoints and PostgreSQL.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from infra.events import ChatMessage, MessageKind
from infra.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DONOR_LINES = ("love this stream", "thanks for the content", "amazing play", "I support you")
OTHER_LINES = ("lol", "what game is this", "gg", "hello chat", "first time here", "nice", "KEKW")


# ---------------------------------------------------------------- synthetic chat

def synthetic_stream(stream_id: str, *, viewers: int, messages: int, donors: int, seed: int = 0,
                     start: datetime | None = None) -> list[ChatMessage]:
    """A stream in time order: donors (the first `donors` viewers) chat warmly and pay once midway."""
    rng = random.Random(seed)
    start = start or datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
    out, paid = [], set()
    for i in range(messages):
        viewer = rng.randrange(viewers)
        is_donor = viewer < donors
        t = start + timedelta(seconds=i * 0.5)
        text = rng.choice(DONOR_LINES if is_donor and rng.random() < 0.7 else OTHER_LINES)
        out.append(ChatMessage(
            stream_id=stream_id, message_id=f"{stream_id}-m{i}", timestamp=t, offset_seconds=i * 0.5,
            author_id=f"UC{viewer:05d}", author_name=f"viewer {viewer}", text=text,
        ))
        if is_donor and viewer not in paid and i > messages // 2:
            paid.add(viewer)
            out.append(ChatMessage(
                stream_id=stream_id, message_id=f"{stream_id}-p{i}", timestamp=t, offset_seconds=i * 0.5,
                author_id=f"UC{viewer:05d}", author_name=f"viewer {viewer}", text="take my money",
                kind=MessageKind.PAID_MESSAGE, amount=5.0, currency="USD", amount_text="$5.00",
            ))
    return out


MALFORMED = (
    b"not json at all",
    b'{"stream_id": "s", "message_id": "x"}',  # no timestamp
    json.dumps({"stream_id": "s", "message_id": "y", "timestamp": "2026-03-01T18:00:00Z",
                "kind": "paid_message", "text": "no amount"}).encode(),
    json.dumps({"stream_id": "s", "message_id": "z", "timestamp": "1970-01-01T00:00:00Z"}).encode(),
)


def reference_sequences(messages: Iterable[ChatMessage], capacity: int) -> dict[tuple[str, str], list[str]]:
    """(stream, viewer) -> ids of the last `capacity` model-input messages, oldest first."""
    held: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in messages:
        if m.is_model_input:
            ids = held[(m.stream_id, m.viewer_id)]
            if m.message_id not in ids:
                ids.append(m.message_id)
                del ids[:-capacity]
    return dict(held)


async def publish(settings: Settings, messages: Sequence[ChatMessage], raw: Sequence[bytes] = ()) -> None:
    """Valid messages through the project's publisher; malformed records straight onto the topic."""
    from aiokafka import AIOKafkaProducer

    from infra.topics import CHAT_MESSAGES, topic_name
    from producers.publisher import KafkaPublisher

    async with KafkaPublisher(settings) as publisher:
        for message in messages:
            await publisher.publish(message)
    if raw:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for value in raw:
                await producer.send_and_wait(topic_name(CHAT_MESSAGES, settings), value=value, key=b"junk|junk")
        finally:
            await producer.stop()


async def read_topic(settings: Settings, spec: Any, *, timeout: float = 10.0, expect: int | None = None) -> list[Any]:
    """Every record of a topic (all partitions, from the start), read without a consumer group."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from infra.topics import partitions_of, topic_name

    name = topic_name(spec, settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign([TopicPartition(name, p) for p in range(partitions_of(spec, settings))])
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            got = [r for items in batch.values() for r in items]
            records.extend(got)
            if got:
                quiet_since = time.monotonic()
            if expect is not None and len(records) >= expect:
                break
            if expect is None and time.monotonic() - quiet_since > 1.5:
                break
    finally:
        await consumer.stop()
    return records


# ---------------------------------------------------------------- a worker process

@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:  # noqa: S310 - loopback
            body = response.read()
        return json.loads(body) if path != "/metrics" else body.decode()

    def post(self, path: str, payload: Any, timeout: float = 30.0) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def summary(self) -> dict[str, Any]:
        return self.get("/metrics/summary")

    def wait_until(self, condition: Any, timeout: float, what: str, poll: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                last = self.summary()
                if condition(last):
                    return last
            except OSError:
                pass
            time.sleep(poll)
        raise AssertionError(f"timed out waiting for {what}; last summary {last}\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_until(lambda s: s["model_version"] is not None, timeout, "the worker to serve a model")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_worker(settings: Settings, port: int, log_path: Path, *, model_double: bool) -> WorkerProcess:
    """`python -m stream_agents worker` (or its scorer-double twin) on this test's settings."""
    from infra.workers import spawn_worker

    module = "tests.test_stream_agents.fake_model_worker" if model_double else "stream_agents"
    process = spawn_worker(settings.model_copy(update={"web_port": port}), log_path=log_path, module=module,
                           die_with_parent_process=False)
    return WorkerProcess(process, port, log_path)


class BackgroundPublisher:
    """Publish messages from a thread (its own event loop) at about `rate` per second, so a test can
    kill and restart the worker while the replay is still going."""

    def __init__(self, settings: Settings, messages: Sequence[ChatMessage], rate: float, raw: Sequence[bytes] = ()):
        import threading

        self.settings, self.messages, self.rate, self.raw = settings, messages, rate, raw
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundPublisher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self, timeout: float = 120.0) -> None:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        import asyncio

        async def paced() -> None:
            from producers.publisher import KafkaPublisher

            async with KafkaPublisher(self.settings) as publisher:
                started = time.monotonic()
                for i, message in enumerate(self.messages):
                    await publisher.publish(message)
                    ahead = i / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            if self.raw:
                await publish(self.settings, [], raw=self.raw)

        try:
            asyncio.run(paced())
        except BaseException as error:  # noqa: BLE001 - re-raised in join()
            self.error = error


async def postgres_state(pool: Any) -> dict[str, Any]:
    return {
        "messages": await pool.fetchval("SELECT count(*) FROM chat_messages"),
        "distinct_messages": await pool.fetchval("SELECT count(DISTINCT (platform, message_id)) FROM chat_messages"),
        "scores": await pool.fetchval("SELECT count(*) FROM viewer_scores"),
        "score_keys": {
            (r["stream_id"], r["viewer_id"], r["event_time"], r["n_messages"], r["model_version"])
            for r in await pool.fetch(
                "SELECT stream_id, viewer_id, event_time, n_messages, model_version FROM viewer_scores")
        },
        "latest": {(r["stream_id"], r["viewer_id"]): r["n_messages"]
                   for r in await pool.fetch("SELECT stream_id, viewer_id, n_messages FROM viewer_scores_latest")},
    }


def score_key(score: Any) -> tuple[Any, ...]:
    return (score.stream_id, score.viewer_id, score.event_time, score.n_messages, score.model_version)
