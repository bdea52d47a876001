"""Fuzz drill through the whole path: random and mutated records go through Kafka into a running worker
(real Tansu, real PostgreSQL, the worker process; the stand-in scorer, as the drill is about records,
not the model). Property: each record the event contract accepts is stored exactly once (or refused by
PostgreSQL and dead-lettered exactly once) and counted into its viewer's score; each record it rejects
is dead-lettered exactly once; the worker never stops and goes on scoring good records afterwards.

A new seed every run, printed with any failure: replay it with DONORCAST_FUZZ_SEED=<seed>. Bounded:
DONORCAST_FUZZ_WORKER_EXAMPLES batches (default 8) of 10 to 40 records each.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from infra.events import MAX_RAW_BYTES, ChatMessage, DeadLetter, parse_chat_message
from infra.kafka import ensure_topics, free_port
from infra.settings import Settings
from infra.topics import CHAT_MESSAGES, DEAD_LETTERS, topic_name
from tests.test_drills.hostile import mutate, program_from
from tests.test_drills.worker_support import differences, expected_inputs, read_all, wait_rows
from tests.test_stream_agents.harness import WorkerProcess, start_worker, synthetic_stream
from tests.test_stream_agents.scorer_double import promote_double

pytestmark = pytest.mark.slow

FUZZ_SEED = int(os.environ.get("DONORCAST_FUZZ_SEED") or secrets.randbits(32))
EXAMPLES = int(os.environ.get("DONORCAST_FUZZ_WORKER_EXAMPLES", "8"))
REPLAY = f"fuzz seed {FUZZ_SEED} (replay: DONORCAST_FUZZ_SEED={FUZZ_SEED})"
T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
KINDS = ("good", "good", "mutated", "mutated", "mutated", "bytes")


@dataclass
class Expected:
    """What the worker must have made of every record sent so far (the contract is the oracle)."""

    sent: int = 0
    valid: dict[tuple[str, str], ChatMessage] = field(default_factory=dict)  # (platform, message_id) -> message
    rejected: Counter[bytes] = field(default_factory=Counter)  # dead letter raw bytes -> times sent
    used_ids: set[str] = field(default_factory=set)


def good_record(rng: random.Random, batch: int, i: int) -> dict[str, Any]:
    viewer = rng.randrange(5)
    record: dict[str, Any] = {
        "stream_id": f"fz{batch % 2}", "message_id": f"fz{batch}-{i}",
        "timestamp": (T0 + timedelta(seconds=batch * 100 + i)).isoformat(),
        "author_id": f"UC{viewer}", "author_name": f"viewer {viewer}", "text": rng.choice(["love it", "gg", "hi"]),
    }
    if rng.random() < 0.15:
        record.update(kind="paid_message", amount=rng.choice([1.0, 5.0, 20.0]), currency="USD", amount_text="$5.00")
    return record


def wire(rng: random.Random, kind: str, batch: int, i: int) -> bytes:
    """One record's bytes: a valid record, a mutated one (hostile values, deleted or reshaped fields), or
    random or cut bytes."""
    record = good_record(rng, batch, i)
    if kind == "good":
        return json.dumps(record).encode()
    if kind == "mutated":
        mutated = mutate(record, program_from(rng.randrange(2**62)))
        return json.dumps(mutated, allow_nan=True, default=str).encode("utf-8", "surrogatepass")
    raw = json.dumps(record).encode()
    return rng.choice([rng.randbytes(rng.randint(0, 40)), raw[: rng.randint(0, len(raw) - 1)],
                       raw.replace(b'"', b"'", 1), b"\xff" + raw])


batches = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**32)), min_size=10, max_size=40)


@pytest.fixture
def fuzz_worker(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, WorkerProcess]]:
    assert settings.kafka_bootstrap
    asyncio.run(ensure_topics(settings.kafka_bootstrap, settings))
    promote_double(settings.registry_dir)
    worker = start_worker(settings, free_port(), tmp_path / "worker.log", model_double=True)
    try:
        worker.wait_ready(90)
        yield settings, worker
    finally:
        worker.stop()


async def send(settings: Settings, records: list[bytes], keys: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for value, key in zip(records, keys, strict=True):
            await producer.send_and_wait(topic_name(CHAT_MESSAGES, settings), value=value, key=key)
    finally:
        await producer.stop()


async def check(settings: Settings, expected: Expected) -> None:
    """Everything sent so far, counted: stored once or refused once, dead-lettered once, scored."""
    from infra.postgres import create_pool

    # The worker counts a record read before it sends the record's dead letter: read again until they match
    # (or the topic stops changing for good).
    for _ in range(20):
        letters = [DeadLetter.model_validate_json(r.value) for r in await read_all(settings, DEAD_LETTERS, idle=1.0)]
        rejected = Counter(letter.raw_bytes() for letter in letters if letter.source == "stream_agents.validate")
        if rejected == expected.rejected:
            break
    problem = differences(rejected, expected.rejected)
    assert not problem, f"dead letters of rejected records (each exactly once): {problem}"
    refused: Counter[tuple[str, str]] = Counter()
    for letter in letters:
        if letter.source != "stream_agents.validate":
            message = parse_chat_message(letter.raw)  # a row PostgreSQL refused: a valid record
            refused[(message.platform, message.message_id)] += 1
    pool = await create_pool(settings.database_url or "")
    try:
        want = Counter(dict.fromkeys(expected.valid, 1))
        inputs = expected_inputs(list(expected.valid.values()))

        def settled(state: dict[str, Any]) -> bool:
            return state["stored"] + refused == want and all(state["latest"].get(k) == n for k, n in inputs.items())

        async def state() -> dict[str, Any]:
            rows = await pool.fetch("SELECT platform, message_id, count(*) AS n FROM chat_messages GROUP BY 1, 2")
            base = await wait_rows(pool, lambda _: True, 0)
            return {"stored": Counter({(r["platform"], r["message_id"]): r["n"] for r in rows}),
                    "latest": base["latest"]}

        for _ in range(60):
            now = await state()
            if settled(now):
                break
            await asyncio.sleep(0.5)
        problem = differences(now["stored"] + refused, want)
        assert not problem, f"valid records: stored or refused, exactly once each: {problem}"
        short = {k: (now["latest"].get(k), n) for k, n in inputs.items() if now["latest"].get(k) != n}
        assert not short, f"viewers whose latest score misses valid inputs (got, want): {list(short.items())[:5]}"
    finally:
        await pool.close()


def test_random_and_mutated_records_through_kafka_into_a_running_worker(
    fuzz_worker: tuple[Settings, WorkerProcess],
) -> None:
    settings_, worker = fuzz_worker
    expected = Expected()
    counter = itertools.count()

    @seed(FUZZ_SEED)
    # No shrinking: the worker's state accumulates over the examples, so a smaller replay would not
    # reproduce; the seed does.
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(batch=batches)
    def property_holds(batch: list[tuple[str, int]]) -> None:
        n = next(counter)
        records, keys = [], []
        for i, (kind, case) in enumerate(batch):
            raw = wire(random.Random(case), kind, n, i)
            try:
                message = parse_chat_message(raw)
            except ValueError:
                expected.rejected[raw[:MAX_RAW_BYTES]] += 1
                key = b"junk|fuzz"
            else:
                if message.message_id in expected.used_ids:
                    continue  # a mutation that repeats an id: the contract dedupes it, the oracle would blur
                expected.used_ids.add(message.message_id)
                expected.valid[(message.platform, message.message_id)] = message
                key = f"{message.stream_id}|{message.viewer_id}".encode()
            records.append(raw)
            keys.append(key)
        asyncio.run(send(settings_, records, keys))
        expected.sent += len(records)
        worker.wait_until(lambda s: s["records_in"] == expected.sent, 60, f"the worker to read {expected.sent}")
        asyncio.run(check(settings_, expected))

    try:
        property_holds()
        # ... and the worker goes on scoring good records afterwards.
        tail = synthetic_stream("after", viewers=10, messages=60, donors=2, seed=FUZZ_SEED % 1000)
        from tests.test_stream_agents.harness import publish

        asyncio.run(publish(settings_, tail))
        expected.sent += len(tail)
        expected.valid.update({(m.platform, m.message_id): m for m in tail})
        worker.wait_until(lambda s: s["records_in"] == expected.sent, 60, "the worker to read the good tail")
        asyncio.run(check(settings_, expected))
        assert worker.process.poll() is None
    except BaseException as error:
        raise AssertionError(f"[{REPLAY}] {error}\n{worker.log_tail()}") from error
    print(f"\n{REPLAY}: {expected.sent} records through the worker, {len(expected.valid)} valid (stored or "
          f"refused once each), {sum(expected.rejected.values())} rejected (dead-lettered once each)")
