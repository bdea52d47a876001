"""Poison-record drill: text that is valid JSON but that PostgreSQL (U+0000) or UTF-8 (a lone surrogate,
e.g. a JSON "\\ud83d" escape left by a cut emoji) cannot hold.

Found by this drill: such a record used to fail a whole COPY batch (ingest stopped, the worker's
PostgreSQL sink retried the same batch forever) or a Kafka send. Since infra/events.py replaces both
with U+FFFD, each such record is kept, repaired, and stored with its neighbours. These tests hold that.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from infra.events import ChatMessage, parse_chat_message
from infra.repository import save_messages, stream_messages

T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
POISON = {"NUL": "a\x00b", "lone surrogate": "cut emoji \ud83d", "reversed pair": "\udfff\ud800x"}
FIELDS = ("text", "author_name", "author_id", "message_id", "stream_id", "amount_text")


def message(field: str, value: str, n: int = 0) -> ChatMessage:
    fields = {"stream_id": "s1", "message_id": f"m{n}", "timestamp": T0 + timedelta(seconds=n),
              "author_id": "UC1", "author_name": "Ann", "text": "hi", "kind": "paid_message", "amount": 1.0,
              "currency": "USD", "amount_text": "$1.00"}
    return ChatMessage(**{**fields, field: value})


def repaired(value: str) -> str:
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in value)


async def test_poison_characters_are_repaired_then_published_and_stored(pool: asyncpg.Pool) -> None:
    stored = 0
    for poison in POISON.values():
        for field in FIELDS:
            event = message(field, poison, stored)
            assert getattr(event, field) == repaired(poison)
            wire = event.model_dump_json().encode("utf-8")  # what the publisher sends
            assert parse_chat_message(wire) == event
            assert await save_messages(pool, [event]) == 1
            stored += 1
    assert await pool.fetchval("SELECT count(*) FROM chat_messages") == stored
    texts = {m.text for m in await stream_messages(pool, "s1")}
    assert {repaired(p) for p in POISON.values()} <= texts
    # On the wire, an escaped U+0000 is repaired too; an escaped lone surrogate is invalid JSON: a clear error.
    raw = {"stream_id": "s1", "message_id": "w", "timestamp": T0.isoformat(), "text": "a\x00b"}
    assert parse_chat_message(json.dumps(raw)).text == "a\ufffdb"


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
