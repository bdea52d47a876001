"""The dashboard's PostgreSQL queries (all parameterised), on a connection that reports a degraded state
instead of failing when PostgreSQL is away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from infra.errors import DatabaseUnavailable
from infra.events import PAID_KINDS

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

PAID = [kind.value for kind in PAID_KINDS]
ACTIVE_SECONDS = 60.0  # a stream scored this recently is live or replaying
SETTLE_SECONDS = 20.0  # a payer's rank-before is final once its payment is this old (late scores)
QUERY_TIMEOUT = 10.0
RETRY_SECONDS = 2.0  # after a failed connection, wait this long before trying PostgreSQL again


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, ConnectionError)


def _connection_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (*_CONNECTION_ERRORS, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.UndefinedTableError)


class QueryRejected(ValueError):
    """PostgreSQL refused a value of the request (asyncpg DataError: NUL in text, out of range, ...):
    the request's fault, answered 400, never a 500 or a retry loop."""


def _data_errors() -> tuple[type[BaseException], ...]:
    import asyncpg
    from asyncpg.exceptions import _base as asyncpg_base

    # server side (SQLSTATE class 22) and client side (a value asyncpg cannot encode)
    return (asyncpg.DataError, asyncpg_base.DataError)


class Database:
    """A lazily opened asyncpg pool that turns an unreachable server into `DatabaseUnavailable` and a
    `problem` the API reports, and tries again (at most every RETRY_SECONDS) on the next request."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.pool: asyncpg.Pool | None = None
        self.problem: str | None = None if url else "no PostgreSQL configured (DONORCAST_DATABASE_URL)"
        self._retry_at = 0.0
        self._lock = asyncio.Lock()
        self._last_rejection = ""

    async def run(self, query: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`await query(pool, *args)`, with connection failures reported instead of raised raw."""
        pool = await self._pool()
        try:
            result = await query(pool, *args)
        except _connection_errors() as error:
            await self._failed(f"PostgreSQL query failed: {type(error).__name__}: {error}")
            raise DatabaseUnavailable(self.problem) from None
        except _data_errors() as error:
            said = f"dashboard query {getattr(query, '__name__', query)}: {type(error).__name__}: {str(error)[:300]}"
            if said != self._last_rejection:  # one line, not one per live-feed refresh
                log.warning("%s", said)
                self._last_rejection = said
            raise QueryRejected(f"the database refused this request's values ({type(error).__name__})") from None
        self.problem = None
        return result

    async def _pool(self) -> asyncpg.Pool:
        if self.url is None:
            raise DatabaseUnavailable(self.problem)
        if self.pool is not None:
            return self.pool
        async with self._lock:
            if self.pool is None:
                if time.monotonic() < self._retry_at:
                    raise DatabaseUnavailable(self.problem)
                from infra.postgres import create_pool

                try:
                    self.pool = await create_pool(self.url, min_size=1, max_size=3, timeout=5.0)
                except DatabaseUnavailable as error:
                    await self._failed(str(error))
                    raise
        return self.pool

    async def _failed(self, problem: str) -> None:
        self.problem = problem
        self._retry_at = time.monotonic() + RETRY_SECONDS
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.terminate()  # its connections point at a server that went away

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()


# Each query is a plain `async def q_...(pool, ...)`: parameterised SQL, rows out as dicts.

async def q_streams(pool: asyncpg.Pool, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """
        SELECT s.platform, s.stream_id, s.title, s.url, s.status, s.published_at, s.source,
               coalesce(v.scored_viewers, 0) AS scored_viewers, v.last_scored_at, v.last_event_time,
               coalesce(v.last_scored_at > now() - make_interval(secs => $2), false) AS active
        FROM streams s
        LEFT JOIN (SELECT stream_id, count(*) AS scored_viewers, max(scored_at) AS last_scored_at,
                          max(event_time) AS last_event_time
                   FROM viewer_scores_latest GROUP BY stream_id) v ON v.stream_id = s.stream_id
        ORDER BY v.last_scored_at DESC NULLS LAST, s.published_at DESC NULLS LAST, s.stream_id
        LIMIT $1
        """,
        limit, ACTIVE_SECONDS, timeout=QUERY_TIMEOUT,
    )
    return [stream_state(dict(r)) for r in rows]


def stream_state(row: dict[str, Any]) -> dict[str, Any]:
    active = row.pop("active", False)
    row["state"] = ("live" if row.get("status") == "live" else "replaying") if active else "ended"
    return row


async def q_stream(pool: asyncpg.Pool, stream_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        """
        SELECT s.platform, s.stream_id, s.title, s.url, s.status, s.published_at, s.source,
               v.scored_viewers, v.last_scored_at, v.last_event_time,
               coalesce(v.last_scored_at > now() - make_interval(secs => $2), false) AS active
        FROM streams s,
             LATERAL (SELECT count(*) AS scored_viewers, max(scored_at) AS last_scored_at,
                             max(event_time) AS last_event_time
                      FROM viewer_scores_latest WHERE stream_id = s.stream_id) v
        WHERE s.stream_id = $1
        ORDER BY s.platform LIMIT 1
        """,
        stream_id, ACTIVE_SECONDS, timeout=QUERY_TIMEOUT,
    )
    return stream_state(dict(row)) if row else None


async def q_stream_exists(pool: asyncpg.Pool, stream_id: str) -> bool:
    """Known as a stream, or seen in chat or scores (a live stream may not have a streams row yet)."""
    return bool(await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM streams WHERE stream_id = $1) "
        "OR EXISTS (SELECT 1 FROM viewer_scores_latest WHERE stream_id = $1) "
        "OR EXISTS (SELECT 1 FROM chat_messages WHERE stream_id = $1)",
        stream_id, timeout=QUERY_TIMEOUT,
    ))


async def q_top(pool: asyncpg.Pool, stream_id: str, k: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT viewer_id, viewer_name, probability, n_messages, model_version, top_message_ids, "
        "event_time, scored_at FROM viewer_scores_latest WHERE stream_id = $1 "
        "ORDER BY probability DESC, viewer_id LIMIT $2",
        stream_id, k, timeout=QUERY_TIMEOUT,
    )
    return [{"rank": i + 1, **dict(r)} for i, r in enumerate(rows)]


async def q_trends(pool: asyncpg.Pool, stream_id: str, viewer_ids: list[str], points: int) -> dict[str, list[float]]:
    rows = await pool.fetch(
        """
        SELECT viewer_id, array_agg(probability ORDER BY event_time, n_messages, scored_at) AS trend
        FROM (SELECT viewer_id, probability, event_time, n_messages, scored_at,
                     row_number() OVER (PARTITION BY viewer_id
                                        ORDER BY event_time DESC, n_messages DESC, scored_at DESC) AS age
              FROM viewer_scores WHERE stream_id = $1 AND viewer_id = ANY($2::text[])) recent
        WHERE age <= $3 GROUP BY viewer_id
        """,
        stream_id, viewer_ids, points, timeout=QUERY_TIMEOUT,
    )
    return {r["viewer_id"]: list(r["trend"]) for r in rows}


_PAID_COLUMNS = ("message_id, viewer_id, author_name AS viewer_name, kind, amount, currency, amount_text, ts AS time, "
                 f"ingested_at < now() - make_interval(secs => {int(SETTLE_SECONDS)}) AS settled")


async def q_paid_of(pool: asyncpg.Pool, stream_id: str, viewer_ids: list[str]) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT {_PAID_COLUMNS} FROM chat_messages "  # noqa: S608 - fixed column list
        "WHERE stream_id = $1 AND viewer_id = ANY($2::text[]) AND kind = ANY($3::text[]) ORDER BY ts, id",
        stream_id, viewer_ids, PAID, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in rows]


async def q_recent_paid(pool: asyncpg.Pool, stream_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT {_PAID_COLUMNS} FROM chat_messages "  # noqa: S608 - fixed column list
        "WHERE stream_id = $1 AND kind = ANY($3::text[]) ORDER BY ts DESC, id DESC LIMIT $2",
        stream_id, limit, PAID, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in rows]


async def q_first_payments(pool: asyncpg.Pool, stream_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT DISTINCT ON (viewer_id) {_PAID_COLUMNS} FROM chat_messages "  # noqa: S608 - fixed columns
        "WHERE stream_id = $1 AND kind = ANY($2::text[]) ORDER BY viewer_id, ts, id",
        stream_id, PAID, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in rows]


async def q_ranks_before(pool: asyncpg.Pool, stream_id: str, payments: list[dict[str, Any]]
                         ) -> dict[str, tuple[int | None, float | None]]:
    """message_id -> (the payer's rank among every viewer's latest score before the payment, their
    probability then); (None, None) when the payer had no score yet (paid before chatting).

    A viewer's latest score before t is their row in viewer_scores_latest when that is older than t;
    only viewers scored since t need a history lookup (an index probe each), so a recent payment
    costs little even in a stream with many thousands of viewers."""
    rows = await pool.fetch(
        """
        SELECT p.message_id, mine.probability,
               CASE WHEN mine.probability IS NULL THEN NULL ELSE 1
                   + (SELECT count(*) FROM viewer_scores_latest l
                      WHERE l.stream_id = $1 AND l.event_time < p.ts AND l.probability > mine.probability)
                   + (SELECT count(*) FROM viewer_scores_latest l
                      CROSS JOIN LATERAL (
                          SELECT h.probability FROM viewer_scores h
                          WHERE h.stream_id = $1 AND h.viewer_id = l.viewer_id AND h.event_time < p.ts
                          ORDER BY h.event_time DESC, h.n_messages DESC, h.scored_at DESC LIMIT 1) then_
                      WHERE l.stream_id = $1 AND l.event_time >= p.ts AND then_.probability > mine.probability)
               END AS rank
        FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS p(message_id, viewer_id, ts)
        LEFT JOIN LATERAL (
            SELECT probability FROM viewer_scores
            WHERE stream_id = $1 AND viewer_id = p.viewer_id AND event_time < p.ts
            ORDER BY event_time DESC, n_messages DESC, scored_at DESC LIMIT 1) mine ON true
        """,
        stream_id, [p["message_id"] for p in payments], [p["viewer_id"] for p in payments],
        [p["time"] for p in payments], timeout=QUERY_TIMEOUT,
    )
    return {r["message_id"]: (r["rank"], r["probability"]) for r in rows}


async def q_score_history(pool: asyncpg.Pool, stream_id: str, until: datetime) -> list[tuple[str, float, datetime]]:
    """(viewer_id, probability, event_time) of every score before `until`, oldest first."""
    rows = await pool.fetch(
        "SELECT viewer_id, probability, event_time FROM viewer_scores WHERE stream_id = $1 AND event_time < $2 "
        "ORDER BY event_time, n_messages, scored_at",
        stream_id, until, timeout=QUERY_TIMEOUT * 3,
    )
    return [(r["viewer_id"], r["probability"], r["event_time"]) for r in rows]


def sweep_ranks(history: Sequence[tuple[str, float, datetime]], payments: Sequence[dict[str, Any]]
                ) -> dict[str, tuple[int | None, float | None]]:
    """The same answer as q_ranks_before for many payments at once: walk the score history in time
    order keeping every viewer's latest probability in a sorted list, and read each payer's rank
    when the walk reaches their payment. One pass: O((scores + payments) log viewers)."""
    from sortedcontainers import SortedList

    latest: dict[str, float] = {}
    order = SortedList()
    found: dict[str, tuple[int | None, float | None]] = {}
    position = 0
    for payment in sorted(payments, key=lambda p: p["time"]):
        while position < len(history) and history[position][2] < payment["time"]:
            viewer_id, probability, _ = history[position]
            if viewer_id in latest:
                order.remove(latest[viewer_id])
            latest[viewer_id] = probability
            order.add(probability)
            position += 1
        mine = latest.get(payment["viewer_id"])
        found[payment["message_id"]] = (None, None) if mine is None else (1 + len(order) - order.bisect_right(mine), mine)
    return found


async def q_activity(pool: asyncpg.Pool, stream_id: str, minutes: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """
        SELECT date_trunc('minute', ts) AS minute,
               count(*) FILTER (WHERE kind <> ALL($3::text[])) AS messages,
               count(*) FILTER (WHERE kind = ANY($3::text[])) AS paid
        FROM chat_messages WHERE stream_id = $1 GROUP BY 1 ORDER BY 1 DESC LIMIT $2
        """,
        stream_id, minutes, PAID, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in reversed(rows)]


async def q_counts(pool: asyncpg.Pool, stream_id: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        """
        SELECT count(*) FILTER (WHERE kind <> ALL($2::text[])) AS messages,
               count(*) FILTER (WHERE kind = ANY($2::text[])) AS paid_events,
               count(DISTINCT viewer_id) AS viewers,
               count(DISTINCT viewer_id) FILTER (WHERE kind = ANY($2::text[])) AS payers,
               min(ts) AS first_message_at, max(ts) AS last_message_at
        FROM chat_messages WHERE stream_id = $1
        """,
        stream_id, PAID, timeout=QUERY_TIMEOUT,
    )
    totals = await pool.fetch(
        # Amounts in an unknown currency (XXX: e.g. a count of gifted memberships) are not money to add up.
        # Summed as numeric: a double-precision sum of huge (pre-bounds) amounts would overflow and fail.
        "SELECT currency, round(sum(amount::numeric), 2) AS amount FROM chat_messages "
        "WHERE stream_id = $1 AND kind = ANY($2::text[]) AND amount IS NOT NULL AND currency <> 'XXX' "
        "GROUP BY 1 ORDER BY 1",
        stream_id, PAID, timeout=QUERY_TIMEOUT,
    )
    versions = await pool.fetch(
        "SELECT model_version, count(*) AS viewers FROM viewer_scores_latest WHERE stream_id = $1 "
        "GROUP BY 1 ORDER BY 2 DESC",
        stream_id, timeout=QUERY_TIMEOUT,
    )
    return {**dict(row), "paid_totals": {r["currency"]: float(r["amount"]) for r in totals},
            "model_versions": {r["model_version"]: r["viewers"] for r in versions}}


async def q_viewer(pool: asyncpg.Pool, stream_id: str, viewer_id: str, limit: int) -> dict[str, Any] | None:
    latest = await pool.fetchrow(
        "SELECT viewer_name, probability, n_messages, model_version, top_message_ids, event_time, scored_at "
        "FROM viewer_scores_latest WHERE stream_id = $1 AND viewer_id = $2",
        stream_id, viewer_id, timeout=QUERY_TIMEOUT,
    )
    messages = await pool.fetch(
        "SELECT message_id, ts AS time, offset_seconds, kind, text, amount, currency, amount_text, truncated, "
        "author_name FROM chat_messages WHERE stream_id = $1 AND viewer_id = $2 ORDER BY ts DESC, id DESC LIMIT $3",
        stream_id, viewer_id, limit, timeout=QUERY_TIMEOUT,
    )
    if latest is None and not messages:
        return None
    history = await pool.fetch(
        "SELECT probability, event_time, n_messages, model_version FROM viewer_scores "
        "WHERE stream_id = $1 AND viewer_id = $2 ORDER BY event_time DESC, n_messages DESC, scored_at DESC LIMIT $3",
        stream_id, viewer_id, limit, timeout=QUERY_TIMEOUT,
    )
    rank = None
    if latest is not None:
        rank = 1 + await pool.fetchval(
            "SELECT count(*) FROM viewer_scores_latest WHERE stream_id = $1 AND "
            "(probability > $2 OR (probability = $2 AND viewer_id < $3))",
            stream_id, latest["probability"], viewer_id, timeout=QUERY_TIMEOUT,
        )
    moved = set(latest["top_message_ids"]) if latest else set()
    name = latest["viewer_name"] if latest else (messages[0]["author_name"] if messages else "")
    return {
        "stream_id": stream_id, "viewer_id": viewer_id, "viewer_name": name, "rank": rank,
        "score": {k: latest[k] for k in latest.keys() if k != "viewer_name"} if latest else None,
        "history": [dict(r) for r in reversed(history)],
        "messages": [{**{k: r[k] for k in r.keys() if k != "author_name"},
                      "paid": r["kind"] in PAID, "moved_score": r["message_id"] in moved}
                     for r in reversed(messages)],
    }
