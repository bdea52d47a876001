"""Against the real embedded PostgreSQL (a fresh migrated database per test)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import asyncpg

from infra.events import ChatMessage, DonorScore, MessageKind
from infra.repository import (
    count_rows,
    latest_scores,
    migrate,
    migration_files,
    save_messages,
    save_scores,
    stream_messages,
    viewer_histories,
)

START = datetime(2025, 3, 1, 18, 0, tzinfo=UTC)


def messages(n: int, stream: str = "s1") -> list[ChatMessage]:
    return [
        ChatMessage(
            stream_id=stream, message_id=f"{stream}-{i}", timestamp=START + timedelta(milliseconds=37 * i),
            author_id=f"UC{i % 997}", author_name=f"viewer {i % 997}", text=f"message {i} 😀",
        )
        for i in range(n)
    ]


async def test_migrations_apply_twice_cleanly(pool: asyncpg.Pool) -> None:
    assert await migrate(pool) == []  # the fixture already migrated
    assert await migrate(pool) == []
    versions = await pool.fetch("SELECT version FROM schema_migrations")
    assert sorted(r["version"] for r in versions) == [v for v, _, _ in migration_files()] == [1, 2]


async def test_bulk_insert_of_100k_is_idempotent(pool: asyncpg.Pool) -> None:
    batch = messages(100_000)
    started = time.perf_counter()
    assert await save_messages(pool, batch, source="test") == 100_000
    elapsed = time.perf_counter() - started
    assert await save_messages(pool, batch, source="test") == 0
    assert await count_rows(pool, "chat_messages") == 100_000
    assert await count_rows(pool, "streams") == 1
    print(f"100k messages via COPY in {elapsed:.2f} s")


async def test_hostile_text_is_stored_verbatim(pool: asyncpg.Pool) -> None:
    hostile = "'); DROP TABLE chat_messages; -- \\x00 <script>alert(1)</script>"
    message = ChatMessage(
        stream_id="s'; DROP TABLE streams;--", message_id="m'1", timestamp=START,
        author_name="Robert'); DROP TABLE students;--", text=hostile,
    )
    assert await save_messages(pool, [message]) == 1
    (stored,) = await stream_messages(pool, "s'; DROP TABLE streams;--")
    assert stored.text == hostile and stored.author_name == message.author_name
    assert await count_rows(pool, "streams") == 1


async def test_scores_history_is_idempotent_and_latest_moves_forward(pool: asyncpg.Pool) -> None:
    def score(p: float, minutes: int, n: int) -> DonorScore:
        return DonorScore(
            stream_id="s1", viewer_id="UC1", probability=p, n_messages=n, model_version="v1",
            event_time=START + timedelta(minutes=minutes), scored_at=START + timedelta(minutes=minutes, seconds=1),
        )

    newer, older = score(0.9, 5, 3), score(0.2, 1, 1)
    assert await save_scores(pool, [newer]) == 1
    assert await save_scores(pool, [older, newer]) == 1  # newer is a duplicate
    assert await count_rows(pool, "viewer_scores") == 2
    (latest,) = await latest_scores(pool, "s1")
    assert latest.probability == 0.9 and latest.rank == 1  # an older score never overwrites a newer one


async def test_viewer_history_only_sees_the_past(pool: asyncpg.Pool) -> None:
    past = ChatMessage(
        stream_id="old", message_id="p1", timestamp=START, author_id="UC9", kind=MessageKind.PAID_MESSAGE,
        amount=5.0, currency="USD", is_member=True,
    )
    future = ChatMessage(
        stream_id="new", message_id="f1", timestamp=START + timedelta(days=2), author_id="UC9",
        kind=MessageKind.PAID_MESSAGE, amount=50.0, currency="USD",
    )
    await save_messages(pool, [past, future])
    history = (await viewer_histories(pool, ["UC9", "UCnone"], before=START + timedelta(days=1)))
    assert history["UC9"].past_paid_events == 1 and history["UC9"].past_paid_amount == 5.0
    assert history["UC9"].was_member
    assert history["UCnone"].past_streams == 0


async def test_history_amounts_are_dollars_and_counts_are_not_money(pool: asyncpg.Pool) -> None:
    yen = ChatMessage(
        stream_id="old", message_id="y1", timestamp=START, author_id="UC7", kind=MessageKind.PAID_MESSAGE,
        amount=1000.0, currency="JPY",
    )
    bits = ChatMessage(
        stream_id="old", message_id="b1", timestamp=START, author_id="UC7", kind=MessageKind.BITS,
        amount=500.0, currency="XXX", platform="twitch",
    )
    await save_messages(pool, [yen, bits])
    history = (await viewer_histories(pool, ["UC7"], before=START + timedelta(days=1)))["UC7"]
    assert history.past_paid_events == 2
    assert 5.0 < history.past_paid_amount < 8.0  # ¥1000 ≈ $6.6; the 500 bits add nothing


def test_embedded_postgres_restarts_in_the_same_process(service_tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from infra.postgres import EmbeddedPostgres
    from infra.settings import load_settings

    server = EmbeddedPostgres(load_settings(state_dir=service_tmp_path))
    first = server.start()
    try:
        assert server.stop()
        assert server.running() is None
        second = server.start()
        assert second.url == first.url

        async def ping() -> int:
            conn = await asyncpg.connect(second.url)
            try:
                return int(await conn.fetchval("SELECT 1"))
            finally:
                await conn.close()

        assert asyncio.run(ping()) == 1
    finally:
        server.stop()
