"""Poison-record drill: text that is valid JSON and a valid ChatMessage today, but that PostgreSQL
(U+0000) or UTF-8 (a lone surrogate, e.g. a JSON "\\ud83d" escape left by a cut emoji) cannot hold.

Each such record must end like any bad record: repaired or rejected with a reason, never a crash of a
whole file, replay or batch, and never a sink stuck retrying forever. These tests fail today; they are
strict xfails naming the fix (see the reasons), so they turn red the moment the fix lands and their
marks must be removed.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from infra.events import ChatMessage, parse_chat_message
from infra.repository import save_messages, stream_messages

T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
POISON = {"NUL": "a\x00b", "lone surrogate": "cut emoji \ud83d"}
FIELDS = ("text", "author_name", "author_id", "message_id", "stream_id", "amount_text")

VALIDATOR_FIX = (
    "infra/events.py ChatMessage accepts U+0000 and lone surrogates (U+D800-U+DFFF) in its strings: "
    "model_dump_json() then raises PydanticSerializationError (publisher, replay, dead letters) and "
    "PostgreSQL rejects U+0000 (CharacterNotInRepertoireError), failing the whole COPY batch. Fix: a "
    "mode='before' validator that replaces both with U+FFFD in every str field (keeps the message, "
    "lossless for real chat)"
)


def message(field: str, value: str, n: int = 0) -> ChatMessage:
    fields = {"stream_id": "s1", "message_id": f"m{n}", "timestamp": T0 + timedelta(seconds=n),
              "author_id": "UC1", "author_name": "Ann", "text": "hi", "kind": "paid_message", "amount": 1.0,
              "currency": "USD", "amount_text": "$1.00"}
    return ChatMessage(**{**fields, field: value})


@pytest.mark.xfail(strict=True, reason=VALIDATOR_FIX)
@pytest.mark.parametrize("poison", sorted(POISON))
async def test_a_valid_chat_message_can_always_be_published_and_stored(poison: str, pool: asyncpg.Pool) -> None:
    accepted = 0
    for n, field in enumerate(FIELDS):
        try:
            event = message(field, POISON[poison], n)
        except ValueError as error:
            assert field in str(error)  # rejected, naming the field: fine
            continue
        wire = event.model_dump_json().encode("utf-8")  # what the publisher sends
        assert parse_chat_message(wire) == event
        assert await save_messages(pool, [event]) == 1
        accepted += 1
    assert await pool.fetchval("SELECT count(*) FROM chat_messages") == accepted


@pytest.mark.xfail(strict=True, reason=VALIDATOR_FIX + " (ingest: one such record loses its whole 5000-message batch "
                   "and stops the run)")
async def test_ingest_keeps_the_good_records_of_a_file_holding_a_poison_record(pool: asyncpg.Pool,
                                                                            tmp_path: Path) -> None:
    from producers.ingest import ingest

    items = [{"message_id": f"m{i}", "message_type": "text_message", "message": text, "timestamp": 1_700_000_000_000_000 + i,
              "author": {"id": f"UC{i}", "name": f"v{i}"}}
             for i, text in enumerate(["fine", "null \u0000 byte", "also fine", "cut \ud83d emoji", "last"])]
    path = tmp_path / "dQw4w9WgXcQ.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")  # \\u escapes: valid JSON
    summary = await ingest([path], pool, progress=False)
    stored = {m.message_id for m in await stream_messages(pool, "dQw4w9WgXcQ")}
    assert {"m0", "m2", "m4"} <= stored
    assert len(stored) + summary.rejected == len(items)


@pytest.mark.xfail(strict=True, reason=(
    "stream_agents/persist.py PostgresSink.write_with_retry retries every exception forever: a batch "
    "holding one message PostgreSQL cannot store (U+0000) is retried with back-off until the worker "
    "stops, nothing after it is ever persisted and /healthz stays degraded. Fix: retry only connection "
    "errors (OSError, asyncpg.PostgresConnectionError, InterfaceError, CannotConnectNowError, "
    "TimeoutError); on a data error (asyncpg.DataError and subclasses) write the batch's records one by "
    "one, dead-letter the ones that fail with their reason and commit the batch. " + VALIDATOR_FIX))
async def test_one_poison_record_does_not_stall_the_postgres_sink(kafka_bootstrap: str, database_url: str,
                                                                  pool: asyncpg.Pool) -> None:
    from stream_agents.metrics import Metrics
    from stream_agents.persist import PostgresSink, SinkBatch

    metrics = Metrics()
    sink = PostgresSink(bootstrap=kafka_bootstrap, database_url=database_url, topics=("chat", "scores"),
                        group_id="drill-poison", metrics=metrics, max_backoff=0.5)
    good = [message("text", "fine", 0), message("text", "fine too", 2)]
    batch = SinkBatch(messages=[good[0], message("text", POISON["NUL"], 1), good[1]])
    try:
        await asyncio.wait_for(sink.write_with_retry(batch), timeout=8)
    except TimeoutError:
        pass
    finally:
        await sink._drop_pool()
    stored = {m.message_id for m in await stream_messages(pool, "s1")}
    assert stored >= {"m0", "m2"}, f"still retrying after 8 s ({metrics.value('donorcast_postgres_retries_total'):.0f} retries)"
    assert not metrics.is_degraded("postgres")
