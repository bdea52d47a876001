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
from infra.money import MONEY_KINDS

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

PAID = [kind.value for kind in PAID_KINDS]
MONEY = [kind.value for kind in MONEY_KINDS]
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
               (SELECT min(m.ts) FROM chat_messages m WHERE m.stream_id = s.stream_id) AS first_message_at,
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
    """Per minute of stream time (`stream_minute`: whole minutes since the stream's first message)."""
    rows = await pool.fetch(
        """
        WITH start AS (SELECT min(ts) AS t0 FROM chat_messages WHERE stream_id = $1),
        per AS (
            SELECT floor(extract(epoch FROM ts - (SELECT t0 FROM start)) / 60)::int AS stream_minute,
                   count(*) FILTER (WHERE kind <> ALL($3::text[])) AS messages,
                   count(*) FILTER (WHERE kind = ANY($3::text[])) AS paid
            FROM chat_messages WHERE stream_id = $1 GROUP BY 1 ORDER BY 1 DESC LIMIT $2)
        SELECT (SELECT t0 FROM start) + make_interval(mins => stream_minute) AS minute, stream_minute, messages, paid
        FROM per
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
        "SELECT model_version, count(*) AS viewers, avg(probability) AS mean FROM viewer_scores_latest "
        "WHERE stream_id = $1 GROUP BY 1 ORDER BY 2 DESC",
        stream_id, timeout=QUERY_TIMEOUT,
    )
    scored = sum(r["viewers"] for r in versions)
    return {**dict(row), "paid_totals": {r["currency"]: float(r["amount"]) for r in totals},
            "model_versions": {r["model_version"]: r["viewers"] for r in versions},
            "model_mean": sum(r["mean"] * r["viewers"] for r in versions) / scored if scored else None}


async def q_money_events(pool: asyncpg.Pool, stream_ids: list[str]) -> list[dict[str, Any]]:
    """Every payment in a real currency (not counts: bits, gifted memberships), oldest first."""
    rows = await pool.fetch(
        "SELECT stream_id, viewer_id, author_name AS viewer_name, kind, amount, currency, ts AS time "
        "FROM chat_messages WHERE stream_id = ANY($1::text[]) AND kind = ANY($2::text[]) "
        "AND amount IS NOT NULL AND currency IS NOT NULL AND currency <> 'XXX' ORDER BY ts, id",
        stream_ids, MONEY, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in rows]


async def q_count_events(pool: asyncpg.Pool, stream_ids: list[str]) -> list[dict[str, Any]]:
    """Paid events that are not money (bits, memberships, subs, gifts): events and their summed count."""
    rows = await pool.fetch(
        "SELECT stream_id, kind, count(*) AS events, sum(amount) AS amount FROM chat_messages "
        "WHERE stream_id = ANY($1::text[]) AND kind = ANY($2::text[]) "
        "AND NOT (kind = ANY($3::text[]) AND amount IS NOT NULL AND currency IS NOT NULL AND currency <> 'XXX') "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        stream_ids, PAID, MONEY, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in rows]


async def q_overview(pool: asyncpg.Pool, limit: int, since: datetime | None, until: datetime | None,
                     k: int) -> list[dict[str, Any]]:
    """Per stream: its row, chat counts, messages per minute over its newest 5 minutes of stream time,
    payers, the top 3 by likelihood and precision@k of the current top k."""
    rows = await pool.fetch(
        """
        WITH chat AS (
            SELECT stream_id, count(*) FILTER (WHERE kind <> ALL($5::text[])) AS messages,
                   count(DISTINCT viewer_id) AS viewers,
                   count(DISTINCT viewer_id) FILTER (WHERE kind = ANY($5::text[])) AS payers,
                   min(ts) AS first_message_at, max(ts) AS last_message_at
            FROM chat_messages GROUP BY stream_id),
        picked AS (
            SELECT s.platform, s.stream_id, s.title, s.source, s.status, s.published_at, s.channel_id,
                   coalesce(ch.name, '') AS channel_name, c.messages, c.viewers, c.payers,
                   c.first_message_at, c.last_message_at
            FROM streams s JOIN chat c ON c.stream_id = s.stream_id
            LEFT JOIN channels ch ON ch.platform = s.platform AND ch.channel_id = s.channel_id
            WHERE ($2::timestamptz IS NULL OR c.last_message_at >= $2)
              AND ($3::timestamptz IS NULL OR c.first_message_at < $3)),
        ranked AS (
            SELECT l.stream_id, l.viewer_id, l.viewer_name, l.probability, l.scored_at,
                   row_number() OVER (PARTITION BY l.stream_id ORDER BY l.probability DESC, l.viewer_id) AS rank
            FROM viewer_scores_latest l WHERE l.stream_id IN (SELECT stream_id FROM picked)),
        board AS (
            SELECT r.stream_id, count(*) AS scored_viewers, max(r.scored_at) AS last_scored_at,
                   count(*) FILTER (WHERE r.rank <= $4) AS top_k,
                   count(*) FILTER (WHERE r.rank <= $4 AND EXISTS (
                       SELECT 1 FROM chat_messages m WHERE m.stream_id = r.stream_id AND m.viewer_id = r.viewer_id
                       AND m.kind = ANY($5::text[]))) AS top_k_paid,
                   jsonb_agg(jsonb_build_object('viewer_id', r.viewer_id, 'viewer_name', r.viewer_name,
                                                'probability', r.probability) ORDER BY r.rank)
                       FILTER (WHERE r.rank <= 3) AS top3
            FROM ranked r GROUP BY r.stream_id),
        recent AS (
            SELECT m.stream_id, count(*) AS recent_messages FROM chat_messages m JOIN picked p USING (stream_id)
            WHERE m.ts > p.last_message_at - interval '5 minutes' AND m.kind <> ALL($5::text[])
            GROUP BY m.stream_id)
        SELECT p.*, coalesce(b.scored_viewers, 0) AS scored_viewers, b.last_scored_at,
               coalesce(b.top_k, 0) AS top_k, coalesce(b.top_k_paid, 0) AS top_k_paid,
               coalesce(b.top3::text, '[]') AS top3, coalesce(r.recent_messages, 0) AS recent_messages,
               coalesce(b.last_scored_at > now() - make_interval(secs => $6), false) AS active
        FROM picked p LEFT JOIN board b USING (stream_id) LEFT JOIN recent r USING (stream_id)
        ORDER BY b.last_scored_at DESC NULLS LAST, p.last_message_at DESC, p.stream_id
        LIMIT $1
        """,
        limit, since, until, k, PAID, ACTIVE_SECONDS, timeout=QUERY_TIMEOUT * 3,
    )
    import json

    out = []
    for r in rows:
        row = stream_state(dict(r))
        row["top3"] = json.loads(row["top3"])
        span = (row["last_message_at"] - row["first_message_at"]).total_seconds() / 60
        row["messages_per_minute"] = row.pop("recent_messages") / max(1.0, min(5.0, span))
        row["precision_at_k"] = row["top_k_paid"] / row["top_k"] if row["top_k"] else None
        out.append(row)
    return out


async def q_viewer_streams(pool: asyncpg.Pool, viewer_id: str, limit: int) -> list[dict[str, Any]]:
    """One viewer across streams: chat counts, payments, latest score and rank in each, newest first."""
    rows = await pool.fetch(
        """
        SELECT c.stream_id, s.title, s.source, c.messages, c.paid_events, c.first_at, c.last_at, c.viewer_name,
               l.probability, l.n_messages,
               CASE WHEN l.probability IS NULL THEN NULL ELSE 1 + (
                   SELECT count(*) FROM viewer_scores_latest o WHERE o.stream_id = c.stream_id
                   AND (o.probability > l.probability OR (o.probability = l.probability AND o.viewer_id < $1)))
               END AS rank
        FROM (SELECT stream_id, count(*) FILTER (WHERE kind <> ALL($3::text[])) AS messages,
                     count(*) FILTER (WHERE kind = ANY($3::text[])) AS paid_events,
                     min(ts) AS first_at, max(ts) AS last_at, max(author_name) AS viewer_name
              FROM chat_messages WHERE viewer_id = $1 GROUP BY stream_id) c
        LEFT JOIN LATERAL (SELECT title, source FROM streams WHERE stream_id = c.stream_id LIMIT 1) s ON true
        LEFT JOIN viewer_scores_latest l ON l.stream_id = c.stream_id AND l.viewer_id = $1
        ORDER BY c.last_at DESC LIMIT $2
        """,
        viewer_id, limit, PAID, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in rows]


async def q_viewer_payments(pool: asyncpg.Pool, viewer_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT stream_id, kind, amount, currency, amount_text, ts AS time FROM chat_messages "
        "WHERE viewer_id = $1 AND kind = ANY($2::text[]) ORDER BY ts DESC, id DESC LIMIT $3",
        viewer_id, PAID, limit, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in rows]


async def q_find_viewers(pool: asyncpg.Pool, text: str, limit: int) -> list[dict[str, Any]]:
    """Viewers whose name or id contains `text` (case-insensitive), among scored viewers."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await pool.fetch(
        "SELECT viewer_id, max(viewer_name) AS viewer_name, count(*) AS streams, max(probability) AS best "
        "FROM viewer_scores_latest WHERE viewer_name ILIKE $1 OR viewer_id ILIKE $1 "
        "GROUP BY viewer_id ORDER BY best DESC, viewer_id LIMIT $2",
        pattern, limit, timeout=QUERY_TIMEOUT,
    )
    return [dict(r) for r in rows]


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
