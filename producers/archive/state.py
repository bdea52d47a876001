"""What the database already says about a channel's streams: the collector's only state.

There is no separate progress file: a stream row's `chat_status` (pending | partial | complete |
failed) and the messages already saved are what `update` resumes from after any interruption.
All queries are parameterised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

INCOMPLETE_CHAT = ("pending", "partial", "failed")


@dataclass(frozen=True)
class KnownStream:
    platform: str
    stream_id: str
    channel_id: str | None
    title: str
    url: str
    published_at: datetime | None
    status: str
    chat_status: str
    chat_error: str | None


@dataclass(frozen=True)
class KnownChannel:
    platform: str
    channel_id: str
    name: str
    url: str


_STREAM_COLUMNS = "platform, stream_id, channel_id, title, url, published_at, status, chat_status, chat_error"


def _stream(row: asyncpg.Record) -> KnownStream:
    return KnownStream(**dict(row))


async def known_streams(pool: asyncpg.Pool, platform: str, stream_ids: Sequence[str]) -> dict[str, KnownStream]:
    rows = await pool.fetch(
        f"SELECT {_STREAM_COLUMNS} FROM streams WHERE platform = $1 AND stream_id = ANY($2::text[])",  # noqa: S608
        platform, list(stream_ids),
    )
    return {row["stream_id"]: _stream(row) for row in rows}


async def channel_streams(pool: asyncpg.Pool, platform: str, channel_id: str) -> list[KnownStream]:
    rows = await pool.fetch(
        f"SELECT {_STREAM_COLUMNS} FROM streams WHERE platform = $1 AND channel_id = $2 "  # noqa: S608
        "ORDER BY published_at NULLS LAST, stream_id",
        platform, channel_id,
    )
    return [_stream(row) for row in rows]


async def find_channel(pool: asyncpg.Pool, keys: Sequence[str]) -> KnownChannel | None:
    """A collected channel by id, page URL or name (case-insensitive), first match in `keys` order."""
    for key in keys:
        row = await pool.fetchrow(
            "SELECT platform, channel_id, name, url FROM channels "
            "WHERE channel_id = $1 OR url = $1 OR lower(name) = lower($1) "
            "ORDER BY (channel_id = $1) DESC, (url = $1) DESC LIMIT 1",
            key,
        )
        if row is not None:
            return KnownChannel(**dict(row))
    return None


async def all_channels(pool: asyncpg.Pool) -> list[KnownChannel]:
    rows = await pool.fetch("SELECT platform, channel_id, name, url FROM channels ORDER BY platform, name")
    return [KnownChannel(**dict(row)) for row in rows]


async def saved_message_count(pool: asyncpg.Pool, platform: str, stream_id: str) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM chat_messages WHERE platform = $1 AND stream_id = $2", platform, stream_id
    ))


async def last_saved_offset(pool: asyncpg.Pool, platform: str, stream_id: str) -> float | None:
    """Replay offset (seconds) of the latest message saved for the stream, if any has one."""
    value = await pool.fetchval(
        "SELECT max(offset_seconds) FROM chat_messages WHERE platform = $1 AND stream_id = $2",
        platform, stream_id,
    )
    return None if value is None else float(value)
