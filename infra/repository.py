"""Typed PostgreSQL access. Every query is parameterised; bulk writes go through COPY into a temp
table and `INSERT ... ON CONFLICT DO NOTHING`, so any batch can be written again safely.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import asyncpg

from infra.events import PAID_KINDS, ChatMessage, DonorScore, MessageKind
from infra.money import MONEY_KINDS, USD_PER_UNIT

_MESSAGE_COLUMNS = (
    "platform", "message_id", "stream_id", "author_id", "author_name", "viewer_id", "text", "kind",
    "amount", "currency", "amount_text", "badges", "is_member", "is_moderator", "is_owner", "truncated",
    "ts", "offset_seconds",
)
_SCORE_COLUMNS = (
    "stream_id", "viewer_id", "viewer_name", "probability", "rank", "n_messages", "model_version",
    "top_message_ids", "event_time", "scored_at",
)


# ---------------------------------------------------------------- migrations

def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped in infra/migrations, in order."""
    found = []
    for entry in resources.files("infra.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet recorded in schema_migrations; return the names applied."""
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        # One migrator at a time, even with several workers starting together.
        await conn.execute("SELECT pg_advisory_xact_lock(724011)")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied_now.append(name)
    return applied_now


# ---------------------------------------------------------------- chat messages

def _message_row(message: ChatMessage) -> tuple[object, ...]:
    return (
        message.platform, message.message_id, message.stream_id, message.author_id, message.author_name,
        message.viewer_id, message.text, message.kind.value, message.amount, message.currency,
        message.amount_text, list(message.badges), message.is_member, message.is_moderator,
        message.is_owner, message.truncated, message.timestamp, message.offset_seconds,
    )


async def save_messages(pool: asyncpg.Pool, messages: Sequence[ChatMessage], source: str = "") -> int:
    """Insert messages (and their streams); duplicates by (platform, message_id) are skipped.
    Returns how many rows were new."""
    if not messages:
        return 0
    rows = [_message_row(m) for m in messages]
    columns = ", ".join(_MESSAGE_COLUMNS)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming_messages "
            "(LIKE chat_messages INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table("incoming_messages", records=rows, columns=list(_MESSAGE_COLUMNS))
        await conn.execute(
            "INSERT INTO streams (platform, stream_id, source) "
            "SELECT DISTINCT platform, stream_id, $1 FROM incoming_messages ON CONFLICT DO NOTHING",
            source,
        )
        status = await conn.execute(
            f"INSERT INTO chat_messages ({columns}) SELECT {columns} FROM incoming_messages "  # noqa: S608 - fixed column list
            "ON CONFLICT (platform, message_id) DO NOTHING"
        )
    return int(status.rsplit(" ", 1)[-1])


def _record_to_message(row: asyncpg.Record) -> ChatMessage:
    return ChatMessage.model_construct(
        platform=row["platform"], stream_id=row["stream_id"], message_id=row["message_id"],
        timestamp=row["ts"], offset_seconds=row["offset_seconds"], author_id=row["author_id"],
        author_name=row["author_name"], text=row["text"], kind=MessageKind(row["kind"]),
        amount=row["amount"], currency=row["currency"], amount_text=row["amount_text"],
        badges=tuple(row["badges"]), is_member=row["is_member"], is_moderator=row["is_moderator"],
        is_owner=row["is_owner"], truncated=row["truncated"], schema_version=1, replayed_at=None,
        produced_at=None,
    )


async def stream_messages(pool: asyncpg.Pool, stream_id: str) -> list[ChatMessage]:
    """All items of one stream in time order (ties by insertion order)."""
    columns = ", ".join(_MESSAGE_COLUMNS)
    rows = await pool.fetch(
        f"SELECT {columns} FROM chat_messages WHERE stream_id = $1 ORDER BY ts, id",  # noqa: S608
        stream_id,
    )
    return [_record_to_message(row) for row in rows]


@dataclass(frozen=True)
class StreamSummary:
    platform: str
    stream_id: str
    channel_id: str | None
    title: str
    published_at: datetime | None
    first_message_at: datetime | None
    n_messages: int
    n_viewers: int
    n_paid: int
    chat_status: str


async def list_streams(pool: asyncpg.Pool, channel_id: str | None = None) -> list[StreamSummary]:
    rows = await pool.fetch(
        """
        SELECT s.platform, s.stream_id, s.channel_id, s.title, s.published_at, s.chat_status,
               min(m.ts) AS first_message_at, count(m.id) AS n_messages,
               count(DISTINCT m.viewer_id) AS n_viewers,
               count(m.id) FILTER (WHERE m.kind = ANY($2::text[])) AS n_paid
        FROM streams s LEFT JOIN chat_messages m ON m.stream_id = s.stream_id AND m.platform = s.platform
        WHERE $1::text IS NULL OR s.channel_id = $1
        GROUP BY s.platform, s.stream_id
        ORDER BY coalesce(s.published_at, min(m.ts)), s.stream_id
        """,
        channel_id,
        [kind.value for kind in PAID_KINDS],
    )
    return [
        StreamSummary(
            platform=r["platform"], stream_id=r["stream_id"], channel_id=r["channel_id"], title=r["title"],
            published_at=r["published_at"], first_message_at=r["first_message_at"],
            n_messages=r["n_messages"], n_viewers=r["n_viewers"], n_paid=r["n_paid"],
            chat_status=r["chat_status"],
        )
        for r in rows
    ]


async def upsert_stream(
    pool: asyncpg.Pool,
    *,
    platform: str,
    stream_id: str,
    channel_id: str | None = None,
    title: str | None = None,
    url: str | None = None,
    published_at: datetime | None = None,
    status: str | None = None,
    chat_status: str | None = None,
    chat_error: str | None = None,
    source: str | None = None,
    actual_start: datetime | None = None,
    actual_end: datetime | None = None,
) -> None:
    """Create or update a stream row; None leaves a field as it is."""
    await pool.execute(
        """
        INSERT INTO streams (platform, stream_id, channel_id, title, url, published_at, status,
                             chat_status, chat_error, source, chat_fetched_at, actual_start, actual_end)
        VALUES ($1, $2, $3, coalesce($4, ''), coalesce($5, ''), $6, coalesce($7, 'unknown'),
                coalesce($8, 'pending'), $9, coalesce($10, ''),
                CASE WHEN $8 IN ('complete', 'partial') THEN now() END, $11, $12)
        ON CONFLICT (platform, stream_id) DO UPDATE SET
            channel_id = coalesce(EXCLUDED.channel_id, streams.channel_id),
            title = CASE WHEN $4 IS NULL THEN streams.title ELSE EXCLUDED.title END,
            url = CASE WHEN $5 IS NULL THEN streams.url ELSE EXCLUDED.url END,
            published_at = coalesce(EXCLUDED.published_at, streams.published_at),
            status = CASE WHEN $7 IS NULL THEN streams.status ELSE EXCLUDED.status END,
            chat_status = CASE WHEN $8 IS NULL THEN streams.chat_status ELSE EXCLUDED.chat_status END,
            chat_error = CASE WHEN $8 IS NULL THEN streams.chat_error ELSE EXCLUDED.chat_error END,
            chat_fetched_at = coalesce(EXCLUDED.chat_fetched_at, streams.chat_fetched_at),
            source = CASE WHEN $10 IS NULL THEN streams.source ELSE EXCLUDED.source END,
            actual_start = coalesce(EXCLUDED.actual_start, streams.actual_start),
            actual_end = coalesce(EXCLUDED.actual_end, streams.actual_end),
            updated_at = now()
        """,
        platform, stream_id, channel_id, title, url, published_at, status, chat_status, chat_error, source,
        actual_start, actual_end,
    )


async def upsert_channel(pool: asyncpg.Pool, platform: str, channel_id: str, name: str = "", url: str = "") -> None:
    await pool.execute(
        "INSERT INTO channels (platform, channel_id, name, url) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (platform, channel_id) DO UPDATE SET "
        "name = CASE WHEN EXCLUDED.name = '' THEN channels.name ELSE EXCLUDED.name END, "
        "url = CASE WHEN EXCLUDED.url = '' THEN channels.url ELSE EXCLUDED.url END",
        platform, channel_id, name, url,
    )


# ---------------------------------------------------------------- scores

def _score_row(score: DonorScore) -> tuple[object, ...]:
    return (
        score.stream_id, score.viewer_id, score.viewer_name, score.probability, score.rank,
        score.n_messages, score.model_version, list(score.top_message_ids), score.event_time, score.scored_at,
    )


async def save_scores(pool: asyncpg.Pool, scores: Sequence[DonorScore]) -> int:
    """Append to the history (idempotent) and move each viewer's latest row forward. Returns new history rows."""
    if not scores:
        return 0
    columns = ", ".join(_SCORE_COLUMNS)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming_scores "
            "(LIKE viewer_scores INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table(
            "incoming_scores", records=[_score_row(s) for s in scores], columns=list(_SCORE_COLUMNS)
        )
        status = await conn.execute(
            f"INSERT INTO viewer_scores ({columns}) SELECT {columns} FROM incoming_scores "  # noqa: S608
            "ON CONFLICT DO NOTHING"
        )
        # Newest per viewer within the batch, then only forward in time.
        await conn.execute(
            f"""
            INSERT INTO viewer_scores_latest ({columns})
            SELECT DISTINCT ON (stream_id, viewer_id) {columns} FROM incoming_scores
            ORDER BY stream_id, viewer_id, event_time DESC, n_messages DESC, scored_at DESC
            ON CONFLICT (stream_id, viewer_id) DO UPDATE SET
                viewer_name = EXCLUDED.viewer_name, probability = EXCLUDED.probability,
                rank = EXCLUDED.rank, n_messages = EXCLUDED.n_messages,
                model_version = EXCLUDED.model_version, top_message_ids = EXCLUDED.top_message_ids,
                event_time = EXCLUDED.event_time, scored_at = EXCLUDED.scored_at
            WHERE (EXCLUDED.event_time, EXCLUDED.n_messages, EXCLUDED.scored_at)
                  >= (viewer_scores_latest.event_time, viewer_scores_latest.n_messages,
                      viewer_scores_latest.scored_at)
            """  # noqa: S608
        )
    return int(status.rsplit(" ", 1)[-1])


async def latest_scores(pool: asyncpg.Pool, stream_id: str, limit: int = 50) -> list[DonorScore]:
    rows = await pool.fetch(
        f"SELECT {', '.join(_SCORE_COLUMNS)} FROM viewer_scores_latest WHERE stream_id = $1 "  # noqa: S608
        "ORDER BY probability DESC, viewer_id LIMIT $2",
        stream_id, limit,
    )
    return [
        DonorScore(
            stream_id=r["stream_id"], viewer_id=r["viewer_id"], viewer_name=r["viewer_name"],
            probability=r["probability"], rank=i + 1, n_messages=r["n_messages"],
            model_version=r["model_version"], top_message_ids=tuple(r["top_message_ids"]),
            event_time=r["event_time"], scored_at=r["scored_at"],
        )
        for i, r in enumerate(rows)
    ]


# ---------------------------------------------------------------- viewer history

@dataclass(frozen=True)
class ViewerHistory:
    """What was known about a viewer before a stream began: legitimate features in deployment."""

    viewer_id: str
    past_streams: int = 0
    past_messages: int = 0
    past_paid_events: int = 0
    past_paid_amount: float = 0.0  # approximate USD of money events (infra.money.usd_value)
    was_member: bool = False


async def viewer_histories(
    pool: asyncpg.Pool, viewer_ids: Iterable[str], before: datetime, exclude_stream: str | None = None
) -> dict[str, ViewerHistory]:
    """History strictly before `before` (and outside `exclude_stream`) for each viewer."""
    ids = list(dict.fromkeys(viewer_ids))
    if not ids:
        return {}
    rows = await pool.fetch(
        """
        SELECT viewer_id,
               count(DISTINCT stream_id) AS past_streams,
               count(*) FILTER (WHERE kind = 'text') AS past_messages,
               count(*) FILTER (WHERE kind = ANY($4::text[])) AS past_paid_events,
               coalesce(sum(m.amount * fx.usd) FILTER (WHERE kind = ANY($5::text[])), 0) AS past_paid_amount,
               bool_or(is_member) AS was_member
        FROM chat_messages m
        LEFT JOIN unnest($6::text[], $7::float8[]) AS fx(currency, usd) ON fx.currency = m.currency
        WHERE viewer_id = ANY($1::text[]) AND ts < $2 AND ($3::text IS NULL OR stream_id <> $3)
        GROUP BY viewer_id
        """,
        ids, before, exclude_stream, [kind.value for kind in PAID_KINDS], [kind.value for kind in MONEY_KINDS],
        list(USD_PER_UNIT), list(USD_PER_UNIT.values()),
    )
    found = {
        r["viewer_id"]: ViewerHistory(
            viewer_id=r["viewer_id"], past_streams=r["past_streams"], past_messages=r["past_messages"],
            past_paid_events=r["past_paid_events"], past_paid_amount=float(r["past_paid_amount"]),
            was_member=bool(r["was_member"]),
        )
        for r in rows
    }
    return {vid: found.get(vid, ViewerHistory(viewer_id=vid)) for vid in ids}


# ---------------------------------------------------------------- model versions

async def record_model_version(
    pool: asyncpg.Pool, version: str, path: str, metrics: dict[str, object], note: str = "", promoted: bool = False
) -> None:
    await pool.execute(
        "INSERT INTO model_versions (version, path, metrics, note, promoted_at) "
        "VALUES ($1, $2, $3::jsonb, $4, CASE WHEN $5 THEN now() END) "
        "ON CONFLICT (version) DO UPDATE SET metrics = EXCLUDED.metrics, note = EXCLUDED.note, "
        "promoted_at = coalesce(EXCLUDED.promoted_at, model_versions.promoted_at)",
        version, path, json.dumps(metrics, default=str), note, promoted,
    )


async def count_rows(pool: asyncpg.Pool, table: str) -> int:
    if table not in {"chat_messages", "viewer_scores", "viewer_scores_latest", "streams", "channels", "model_versions"}:
        raise ValueError(f"unknown table {table!r}")
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608 - allow-listed name
