"""Poison-record drill: text that is valid JSON but that PostgreSQL (U+0000) or UTF-8 (a lone surrogate,
e.g. a JSON "\\ud83d" escape left by a cut emoji) cannot hold.

Found by this drill: such a record used to fail a whole COPY batch (ingest stopped, the worker's
PostgreSQL sink retried the same batch forever) or a Kafka send. Since infra/events.py strips NUL and
replaces lone surrogates with U+FFFD (counting both in `sanitized_chars`), each such record is kept,
repaired, flagged, and stored with its neighbours. These tests hold that.

A row PostgreSQL still refuses (a constraint, a value out of range) is written apart from its batch
and dead-lettered with PostgreSQL's reason; only unavailability is retried (stream_agents/persist.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from infra.events import ChatMessage, parse_chat_message
from infra.repository import save_messages, stream_messages
from infra.settings import Settings

T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
POISON = {"NUL": "a\x00b", "lone surrogate": "cut emoji \ud83d", "reversed pair": "\udfff\ud800x"}
FIELDS = ("text", "author_name", "author_id", "message_id", "stream_id", "amount_text")


def message(field: str, value: str, n: int = 0) -> ChatMessage:
    fields = {"stream_id": "s1", "message_id": f"m{n}", "timestamp": T0 + timedelta(seconds=n),
              "author_id": "UC1", "author_name": "Ann", "text": "hi", "kind": "paid_message", "amount": 1.0,
              "currency": "USD", "amount_text": "$1.00"}
    return ChatMessage(**{**fields, field: value})


def repaired(value: str) -> str:
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value if c != "\x00")


def changed(value: str) -> int:
    return sum(1 for c in value if c == "\x00" or "\ud800" <= c <= "\udfff")


async def test_poison_characters_are_repaired_then_published_and_stored(pool: asyncpg.Pool) -> None:
    stored = 0
    for poison in POISON.values():
        for field in FIELDS:
            event = message(field, poison, stored)
            assert getattr(event, field) == repaired(poison)
            assert event.sanitized_chars == changed(poison)  # counted, and so flagged
            wire = event.model_dump_json().encode("utf-8")  # what the publisher sends
            assert parse_chat_message(wire) == event
            assert await save_messages(pool, [event]) == 1
            stored += 1
    assert await pool.fetchval("SELECT count(*) FROM chat_messages") == stored
    texts = {m.text for m in await stream_messages(pool, "s1")}
    assert {repaired(p) for p in POISON.values()} <= texts
    # On the wire, an escaped U+0000 is stripped too; an escaped lone surrogate is invalid JSON: a clear error.
    raw = {"stream_id": "s1", "message_id": "w", "timestamp": T0.isoformat(), "text": "a\x00b"}
    assert parse_chat_message(json.dumps(raw)).text == "ab"


async def test_ingest_keeps_every_record_of_a_file_holding_poison(pool: asyncpg.Pool, tmp_path: Path) -> None:
    from producers.ingest import ingest

    texts = ["fine", "null \u0000 byte", "also fine", "cut \ud83d emoji", "last"]
    items = [{"message_id": f"m{i}", "message_type": "text_message", "message": text,
              "timestamp": 1_700_000_000_000_000 + i, "author": {"id": f"UC{i}", "name": f"v{i}"}}
             for i, text in enumerate(texts)]
    path = tmp_path / "dQw4w9WgXcQ.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")  # \\u escapes: valid JSON
    summary = await ingest([path], pool, progress=False)
    stored = {m.message_id: m.text for m in await stream_messages(pool, "dQw4w9WgXcQ")}
    assert (summary.rejected, summary.new_rows) == (0, len(items))
    assert stored == {f"m{i}": repaired(text) for i, text in enumerate(texts)}


async def test_a_batch_with_poison_does_not_stall_the_postgres_sink(kafka_bootstrap: str, database_url: str,
                                                                   pool: asyncpg.Pool) -> None:
    from stream_agents.metrics import Metrics
    from stream_agents.persist import PostgresSink, SinkBatch

    metrics = Metrics()
    sink = PostgresSink(bootstrap=kafka_bootstrap, database_url=database_url, topics=("chat", "scores"),
                        group_id="drill-poison", metrics=metrics, max_backoff=0.5)
    # as the sink decodes them: from the wire
    batch = SinkBatch(messages=[parse_chat_message(message("text", text, n).model_dump_json())
                                for n, text in enumerate(["fine", POISON["NUL"], "fine too"])])
    try:
        await asyncio.wait_for(sink.write_with_retry(batch), timeout=15)
    finally:
        await sink._drop_pool()
    assert {m.message_id for m in await stream_messages(pool, "s1")} == {"m0", "m1", "m2"}
    assert not metrics.is_degraded("postgres") and metrics.value("donorcast_postgres_retries_total") == 0


async def test_a_row_postgres_refuses_is_dead_lettered_and_the_rest_of_its_batch_lands(topics: Settings,
                                                                                      pool: asyncpg.Pool) -> None:
    """The real sink loop (Kafka in, PostgreSQL out) against a row PostgreSQL refuses every time: a CHECK
    constraint this test adds to its own database. Before, the whole batch was retried forever."""
    from infra.events import DeadLetter
    from infra.topics import CHAT_MESSAGES, DEAD_LETTERS, DONOR_SCORES, topic_name
    from producers.publisher import KafkaPublisher
    from stream_agents.metrics import Metrics
    from stream_agents.persist import PostgresSink
    from tests.test_stream_agents.harness import publish, read_topic

    settings = topics
    await pool.execute("ALTER TABLE chat_messages ADD CONSTRAINT drill_refused CHECK (text <> 'refuse me')")
    messages = [message("text", "refuse me" if n == 3 else f"fine {n}", n) for n in range(12)]
    await publish(settings, messages)  # one viewer: one partition, the refused row in the middle
    metrics = Metrics()
    async with KafkaPublisher(settings) as dead_letters:
        sink = PostgresSink(bootstrap=settings.kafka_bootstrap or "", database_url=settings.database_url or "",
                            topics=(topic_name(CHAT_MESSAGES, settings), topic_name(DONOR_SCORES, settings)),
                            group_id=f"{settings.topic_prefix}persist", metrics=metrics,
                            send_dead_letter=dead_letters.publish_dead_letter, max_backoff=0.5)
        task = asyncio.create_task(sink.run())
        try:
            for _ in range(60):
                if sink.refused and sink.written["chat_messages"] == len(messages) - 1:
                    break
                await asyncio.sleep(0.5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    stored = {m.message_id for m in await stream_messages(pool, "s1")}
    assert stored == {m.message_id for m in messages} - {"m3"}
    letters = [DeadLetter.model_validate_json(r.value) for r in await read_topic(settings, DEAD_LETTERS, expect=1)]
    assert len(letters) == 1, letters
    letter = letters[0]
    assert parse_chat_message(letter.raw).message_id == "m3"  # the record as it was read, to replay once fixed
    assert letter.source == "stream_agents.persist" and letter.location.startswith(topic_name(CHAT_MESSAGES, settings))
    assert "CheckViolationError" in letter.reason and "drill_refused" in letter.reason
    assert metrics.value("donorcast_postgres_refused_rows_total", table="chat_messages") == 1
    # a refusal is not an outage: never degraded, never retried
    assert not metrics.is_degraded("postgres") and metrics.value("donorcast_postgres_retries_total") == 0


async def test_only_unavailability_is_retried_a_bug_stops_the_sink(database_url: str) -> None:
    from stream_agents.metrics import Metrics
    from stream_agents.persist import PostgresSink

    metrics = Metrics()
    sink = PostgresSink(bootstrap="unused:9092", database_url=database_url, topics=("chat", "scores"),
                        group_id="unused", metrics=metrics, max_backoff=0.05)
    attempts = []

    async def down_twice_then_up() -> None:
        attempts.append(1)
        if len(attempts) <= 2:
            raise ConnectionRefusedError("connection refused")

    assert await sink.until_available(down_twice_then_up) is None
    assert len(attempts) == 3 and metrics.value("donorcast_postgres_retries_total") == 2
    assert not metrics.is_degraded("postgres")

    async def bug() -> None:
        attempts.append(1)
        raise KeyError("a bug, not an outage")

    attempts.clear()
    try:
        await sink.until_available(bug)
    except KeyError:
        pass
    else:
        raise AssertionError("a non-availability error was swallowed")
    assert len(attempts) == 1  # not retried
