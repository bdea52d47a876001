"""The live dashboard: a page, a JSON API and a Server-Sent-Events feed on the worker's web server.

One server, not two: `register_dashboard(app, settings, database_url)` adds these routes to the faust
worker's aiohttp application (called from `create_app`). Every number comes from PostgreSQL (the
persist sink's `viewer_scores`, `viewer_scores_latest` and `chat_messages`), so any one worker shows
all partitions, even when several workers split them. If PostgreSQL cannot be reached, the API says
`"status": "degraded"` (503 on data routes) and the page shows a banner instead of failing.

JSON API (GET; `stream` is a stream id, `k` the leaderboard size, 1..100 live, 1..1000 in exports)
--------------------------------------------------------------------------------------------------
    /dashboard/                          the page (plain HTML/CSS/JS from stream_agents/static/)
    /api/health                          {"status": "ok"|"degraded", "database", "problems", "model_version"}
    /api/streams?limit=200               streams, newest activity first: stream_id, platform, title, state
                                         ("live" | "replaying" | "ended"), scored_viewers, last_scored_at, ...
    /api/leaderboard?stream=&k=20        top-k viewers by donor likelihood: rank, viewer_id, viewer_name,
                                         probability, n_messages, trend (recent probabilities, oldest first),
                                         top_message_ids, paid (this stream's payments), rank_before_paid, hit
    /api/paid?stream=&k=20&limit=20      recent paid events, newest first: kind, amount, currency, amount_text,
                                         time, viewer, rank_before (the payer's rank just before paying), hit
    /api/activity?stream=                chat items and paid events per minute of stream time
    /api/summary?stream=&k=20            per-stream summary: messages, viewers, payers, paid totals per
                                         currency, scored viewers, precision@k, hit rate@k, model versions
    /api/viewer?stream=&viewer=          drill-down: latest score, rank, score history, the viewer's messages
                                         with timestamps; `moved_score` marks the score's top_message_ids
    /api/snapshot?stream=&k=20           what the live feed sends: leaderboard + paid + activity + summary
    /api/events?stream=&k=20             Server-Sent Events: `event: snapshot` about every second when it
                                         changed (only the top-k travel, never the whole audience)
    /api/export/leaderboard.csv|.json    ?stream=&k=: the current leaderboard as a download
    /api/export/summary.csv|.json        ?stream=&k=: the per-stream summary as a download

Security: chat text and names are data; the page renders them with textContent only, responses carry a
strict Content-Security-Policy, CSV cells that a spreadsheet would run as a formula (= + - @, tab, CR)
get a leading apostrophe. Binding to a non-loopback address needs DONORCAST_DASHBOARD_TOKEN; when a
token is set, every route but /healthz, /metrics and /metrics/summary (counters, no chat or viewer data)
requires it as `Authorization: Bearer <token>`, `X-Donorcast-Token: <token>`, `?token=<token>`, or the
HttpOnly SameSite=Strict cookie the server sets after the first authorised request.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hmac
import io
import ipaddress
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.errors import DatabaseUnavailable, InputError
from infra.events import PAID_KINDS
from infra.settings import Settings

if TYPE_CHECKING:
    import asyncpg
    import faust
    from aiohttp import web

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {  # name -> content type; nothing else under /dashboard/static/ is served
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAID = [kind.value for kind in PAID_KINDS]
MAX_LIVE_K = 100  # the live feed and page: only the top of the board travels
MAX_EXPORT_K = 1000
TREND_POINTS = 24
RECENT_PAID = 20
ACTIVITY_MINUTES = 240
VIEWER_MESSAGES = 300
ACTIVE_SECONDS = 60.0  # a stream scored this recently is live or replaying
SETTLE_SECONDS = 20.0  # a payer's rank-before is final once its payment is this old (late scores)
SQL_RANKS = 20  # up to this many payments' rank-before by SQL; more by one sweep over the score history
SUMMARY_SECONDS = 3.0  # the feed refreshes the (heavier) summary this often
QUERY_TIMEOUT = 10.0
RETRY_SECONDS = 2.0  # after a failed connection, wait this long before trying PostgreSQL again
TOKEN_COOKIE = "donorcast_token"
TOKEN_EXEMPT = frozenset({"/healthz", "/metrics", "/metrics/summary"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


# ---------------------------------------------------------------- binding and access token

def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in {"localhost", "ip6-localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name or "" (all interfaces): reachable from elsewhere


def dashboard_token(settings: Settings) -> str | None:
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else ""
    return token or None


def check_bind(settings: Settings) -> None:
    """Refuse to serve viewer data on a network address without an access token."""
    if not is_loopback(settings.web_host) and dashboard_token(settings) is None:
        raise InputError(
            f"refusing to serve the dashboard on {settings.web_host!r} (not a loopback address) without an "
            "access token: set DONORCAST_DASHBOARD_TOKEN to a long random string, or bind to 127.0.0.1 "
            "(DONORCAST_WEB_HOST)"
        )


def supplied_token(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return (request.headers.get("X-Donorcast-Token") or request.query.get("token")
            or request.cookies.get(TOKEN_COOKIE))


def token_middleware(token: str) -> Any:
    """aiohttp middleware: 401 unless the request carries the token (constant-time comparison)."""
    from aiohttp import web

    expected = token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
        if request.path in TOKEN_EXEMPT:
            return await handler(request)
        given = supplied_token(request)
        if given is None or not hmac.compare_digest(given.encode(), expected):
            return web.json_response(
                {"error": "dashboard token required: Authorization: Bearer <token>, X-Donorcast-Token, "
                          "or ?token=<token> (DONORCAST_DASHBOARD_TOKEN)"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="donorcast"', **SECURITY_HEADERS},
            )
        response = await handler(request)
        if request.cookies.get(TOKEN_COOKIE) != token and not response.prepared:
            # The page's own requests (EventSource, downloads, assets) then need no token in their URL.
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return require_token


# ---------------------------------------------------------------- JSON and CSV

def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: a string starting like a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else dumps(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in columns])
    return out.getvalue()


LEADERBOARD_COLUMNS = ("rank", "viewer_id", "viewer_name", "probability", "n_messages", "paid_events",
                       "paid_amounts", "rank_before_paid", "hit", "model_version", "event_time", "scored_at")
SUMMARY_COLUMNS = ("stream_id", "platform", "title", "state", "first_message_at", "last_message_at",
                   "messages", "viewers", "paid_events", "payers", "paid_totals", "scored_viewers", "k",
                   "precision_at_k", "hit_rate_at_k", "payers_ranked_before_paying", "model_versions")


# ---------------------------------------------------------------- PostgreSQL

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, ConnectionError)


def _connection_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (*_CONNECTION_ERRORS, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.UndefinedTableError)


class Database:
    """A lazily opened asyncpg pool that turns an unreachable server into `DatabaseUnavailable` and a
    `problem` the API reports, and tries again (at most every RETRY_SECONDS) on the next request."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.pool: asyncpg.Pool | None = None
        self.problem: str | None = None if url else "no PostgreSQL configured (DONORCAST_DATABASE_URL)"
        self._retry_at = 0.0
        self._lock = asyncio.Lock()

    async def run(self, query: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`await query(pool, *args)`, with connection failures reported instead of raised raw."""
        pool = await self._pool()
        try:
            result = await query(pool, *args)
        except _connection_errors() as error:
            await self._failed(f"PostgreSQL query failed: {type(error).__name__}: {error}")
            raise DatabaseUnavailable(self.problem) from None
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
        "SELECT currency, round(sum(amount)::numeric, 2) AS amount FROM chat_messages "
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


# ---------------------------------------------------------------- what the page shows

@dataclass
class RankBefore:
    rank: int | None
    probability: float | None
    settled: bool


@dataclass
class DashboardData:
    """Leaderboards, payments, activity and summaries of one stream, built from PostgreSQL."""

    db: Database
    runtime: Any = None  # stream_agents.pipeline.Runtime of this worker, for its model version
    ranks: dict[tuple[str, str], RankBefore] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        model = getattr(getattr(self.runtime, "models", None), "current", None)
        problems = [self.db.problem] if self.db.problem else []
        return {"status": "degraded" if problems else "ok",
                "database": "unreachable" if problems else "ok",
                "problems": problems, "model_version": model.version if model else None}

    async def check(self) -> dict[str, Any]:
        """Health after one round trip to PostgreSQL (so a fresh server reports the truth)."""
        with contextlib.suppress(DatabaseUnavailable):
            await self.db.run(lambda pool: pool.fetchval("SELECT 1", timeout=QUERY_TIMEOUT))
        return self.health()

    async def streams(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self.db.run(q_streams, limit)

    async def ranks_before(self, stream_id: str, payments: Sequence[dict[str, Any]]) -> dict[str, RankBefore]:
        """Rank just before each payment, cached once the payment is settled. A few are computed in SQL
        (index probes); many at once (a long stream opened late) in one sweep over the score history."""
        wanted = [p for p in payments if not ((cached := self.ranks.get((stream_id, p["message_id"])))
                                               and cached.settled)]
        if wanted:
            if len(wanted) <= SQL_RANKS:
                found = await self.db.run(q_ranks_before, stream_id, wanted)
            else:
                history = await self.db.run(q_score_history, stream_id, max(p["time"] for p in wanted))
                found = await asyncio.to_thread(sweep_ranks, history, wanted)
            if len(self.ranks) > 100_000:
                self.ranks.clear()
            for p in wanted:
                rank, probability = found.get(p["message_id"], (None, None))
                self.ranks[(stream_id, p["message_id"])] = RankBefore(rank, probability, bool(p["settled"]))
        return {p["message_id"]: self.ranks[(stream_id, p["message_id"])] for p in payments}

    async def paid(self, stream_id: str, k: int, limit: int = RECENT_PAID) -> list[dict[str, Any]]:
        events = await self.db.run(q_recent_paid, stream_id, limit)
        ranks = await self.ranks_before(stream_id, events)
        return [payment_json(e, ranks[e["message_id"]], k) for e in events]

    async def leaderboard(self, stream_id: str, k: int) -> list[dict[str, Any]]:
        top = await self.db.run(q_top, stream_id, k)
        ids = [entry["viewer_id"] for entry in top]
        trends = await self.db.run(q_trends, stream_id, ids, TREND_POINTS) if ids else {}
        payments = await self.db.run(q_paid_of, stream_id, ids) if ids else []
        by_viewer: dict[str, list[dict[str, Any]]] = {}
        for payment in payments:
            by_viewer.setdefault(payment["viewer_id"], []).append(payment)
        firsts = [items[0] for items in by_viewer.values()]
        ranks = await self.ranks_before(stream_id, firsts) if firsts else {}
        board = []
        for entry in top:
            paid = by_viewer.get(entry["viewer_id"], [])
            before = ranks.get(paid[0]["message_id"]) if paid else None
            board.append({
                **entry, "trend": trends.get(entry["viewer_id"], []), "paid_events": len(paid),
                "paid": [{k_: p[k_] for k_ in ("kind", "amount", "currency", "amount_text", "time")} for p in paid],
                "first_paid_at": paid[0]["time"] if paid else None,
                "rank_before_paid": before.rank if before else None,
                "hit": hit_at(before, k) if before else None,
            })
        return board

    async def activity(self, stream_id: str, minutes: int = ACTIVITY_MINUTES) -> list[dict[str, Any]]:
        return await self.db.run(q_activity, stream_id, minutes)

    async def summary(self, stream_id: str, k: int) -> dict[str, Any] | None:
        stream = await self.db.run(q_stream, stream_id)
        if stream is None:
            return None
        counts = await self.db.run(q_counts, stream_id)
        top = await self.db.run(q_top, stream_id, k)
        firsts = await self.db.run(q_first_payments, stream_id)
        ranks = await self.ranks_before(stream_id, firsts) if firsts else {}
        payers = {p["viewer_id"] for p in firsts}
        ranked = [r for r in ranks.values() if r.rank is not None]
        return {
            "stream_id": stream_id, "platform": stream["platform"], "title": stream["title"],
            "state": stream["state"], "url": stream["url"], **counts,
            "scored_viewers": stream["scored_viewers"], "k": k,
            "precision_at_k": sum(1 for e in top if e["viewer_id"] in payers) / len(top) if top else None,
            # a payer who paid before their first score counts as a miss
            "hit_rate_at_k": sum(1 for r in ranked if r.rank <= k) / len(ranks) if ranks else None,
            "payers_ranked_before_paying": len(ranked),
        }

    async def viewer(self, stream_id: str, viewer_id: str) -> dict[str, Any] | None:
        return await self.db.run(q_viewer, stream_id, viewer_id, VIEWER_MESSAGES)

    async def snapshot(self, stream_id: str, k: int, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything the page needs for one stream, in one answer (what the live feed pushes)."""
        return {
            "status": "ok", "problems": [], "stream_id": stream_id, "k": k,
            "summary": summary if summary is not None else await self.summary(stream_id, k),
            "leaderboard": await self.leaderboard(stream_id, k),
            "paid": await self.paid(stream_id, k),
            "activity": await self.activity(stream_id),
            "model_version": self.health()["model_version"],
        }


def payment_json(event: dict[str, Any], before: RankBefore, k: int) -> dict[str, Any]:
    out = {key: event[key] for key in ("message_id", "viewer_id", "viewer_name", "kind", "amount", "currency",
                                       "amount_text", "time")}
    out.update(rank_before=before.rank, probability_before=before.probability, hit=hit_at(before, k))
    return out


def hit_at(before: RankBefore, k: int) -> bool:
    """Was the payer in the top k just before paying?"""
    return before.rank is not None and before.rank <= k


def degraded(stream_id: str | None, k: int, problem: str) -> dict[str, Any]:
    return {"status": "degraded", "problems": [problem], "stream_id": stream_id, "k": k}


# ---------------------------------------------------------------- the live feed

@dataclass
class _Channel:
    queues: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    summary: dict[str, Any] | None = None
    summary_at: float = 0.0


class LiveFeed:
    """One snapshot loop per (stream, k) that has subscribers, however many pages watch it; each
    subscriber holds only the newest snapshot (a slow browser skips, it never queues up)."""

    def __init__(self, data: DashboardData, interval: float = 1.0) -> None:
        self.data = data
        self.interval = interval
        self.channels: dict[tuple[str, int], _Channel] = {}

    async def subscribe(self, stream_id: str, k: int) -> AsyncIterator[dict[str, Any]]:
        key = (stream_id, k)
        channel = self.channels.setdefault(key, _Channel())
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1)
        channel.queues.add(queue)
        if channel.task is None:
            channel.task = asyncio.create_task(self._run(key, channel))
        try:
            while (snapshot := await queue.get()) is not None:
                yield snapshot
        finally:
            channel.queues.discard(queue)
            if not channel.queues and self.channels.get(key) is channel:
                del self.channels[key]
                if channel.task is not None:
                    channel.task.cancel()

    async def _run(self, key: tuple[str, int], channel: _Channel) -> None:
        stream_id, k = key
        while True:
            snapshot = await self.build(stream_id, k, channel)
            for queue in list(channel.queues):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(snapshot)
            await asyncio.sleep(self.interval)

    async def build(self, stream_id: str, k: int, channel: _Channel) -> dict[str, Any]:
        try:
            if channel.summary is None or time.monotonic() - channel.summary_at > SUMMARY_SECONDS:
                channel.summary = await self.data.summary(stream_id, k)
                channel.summary_at = time.monotonic()
            return await self.data.snapshot(stream_id, k, summary=channel.summary or {})
        except DatabaseUnavailable as error:
            return degraded(stream_id, k, str(error))
        except Exception as error:  # noqa: BLE001 - the feed outlives one bad query; the page shows why
            log.exception("dashboard snapshot of %s failed", stream_id)
            return degraded(stream_id, k, f"{type(error).__name__}: {error}")

    def close(self) -> None:
        """Stop every loop and end every subscription (the server is stopping)."""
        for channel in self.channels.values():
            if channel.task is not None:
                channel.task.cancel()
            for queue in channel.queues:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)
        self.channels.clear()


# ---------------------------------------------------------------- HTTP

class BadRequest(ValueError):
    pass


def _stream_param(request: web.Request) -> str:
    stream_id = request.query.get("stream", "")
    if not 1 <= len(stream_id) <= 200:
        raise BadRequest("give ?stream=<stream id> (1 to 200 characters)")
    return stream_id


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{1,6}", raw):
        raise BadRequest(f"?{name}= must be a whole number from {low} to {high}")
    return max(low, min(high, int(raw)))


def _filename(stream_id: str, what: str, extension: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stream_id)[:80] or "stream"
    return f"donorcast-{safe}-{what}.{extension}"


class DashboardRoutes:
    """The aiohttp handlers; each validates its parameters, asks DashboardData, answers JSON/CSV/SSE."""

    def __init__(self, data: DashboardData, feed: LiveFeed, stopping: asyncio.Event | None = None) -> None:
        self.data = data
        self.feed = feed
        self.stopping = stopping or asyncio.Event()

    async def close(self) -> None:
        """End every live feed (open pages reconnect to the next server) and close the pool."""
        self.stopping.set()
        self.feed.close()
        await self.data.db.close()

    def add_to(self, router: web.UrlDispatcher) -> None:
        handlers = {
            "/dashboard": self.redirect, "/dashboard/": self.page, "/dashboard/static/{name}": self.static,
            "/api/health": self.health, "/api/streams": self.streams, "/api/leaderboard": self.leaderboard,
            "/api/paid": self.paid, "/api/activity": self.activity, "/api/summary": self.summary,
            "/api/viewer": self.viewer, "/api/snapshot": self.snapshot, "/api/events": self.events,
            "/api/export/{what}.{extension}": self.export,
        }
        for path, handler in handlers.items():
            router.add_get(path, self._guard(handler))

    @staticmethod
    def _guard(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
               ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except BadRequest as error:
                return json_response({"error": str(error)}, status=400)
            except DatabaseUnavailable as error:
                return json_response(degraded(request.query.get("stream"), 0, str(error)), status=503)

        return guarded

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        raise web.HTTPFound("/dashboard/" + (f"?{request.query_string}" if request.query_string else ""))

    async def page(self, request: web.Request) -> web.StreamResponse:
        return _file_response("index.html", "text/html; charset=utf-8")

    async def static(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return _file_response(name, STATIC_FILES[name])

    async def health(self, request: web.Request) -> web.StreamResponse:
        return json_response(await self.data.check())

    async def streams(self, request: web.Request) -> web.StreamResponse:
        return json_response(await self.data.streams(_int_param(request, "limit", 200, 1, 1000)))

    async def leaderboard(self, request: web.Request) -> web.StreamResponse:
        k = _int_param(request, "k", 20, 1, MAX_EXPORT_K)
        return json_response(await self.data.leaderboard(_stream_param(request), k))

    async def paid(self, request: web.Request) -> web.StreamResponse:
        stream_id = _stream_param(request)
        k = _int_param(request, "k", 20, 1, MAX_EXPORT_K)
        return json_response(await self.data.paid(stream_id, k, _int_param(request, "limit", RECENT_PAID, 1, 500)))

    async def activity(self, request: web.Request) -> web.StreamResponse:
        minutes = _int_param(request, "minutes", ACTIVITY_MINUTES, 1, 10_000)
        return json_response(await self.data.activity(_stream_param(request), minutes))

    async def summary(self, request: web.Request) -> web.StreamResponse:
        summary = await self.data.summary(_stream_param(request), _int_param(request, "k", 20, 1, MAX_EXPORT_K))
        return json_response(summary if summary else {"error": "no such stream"}, status=200 if summary else 404)

    async def viewer(self, request: web.Request) -> web.StreamResponse:
        stream_id, viewer_id = _stream_param(request), request.query.get("viewer", "")
        if not 1 <= len(viewer_id) <= 600:
            raise BadRequest("give ?viewer=<viewer id>")
        found = await self.data.viewer(stream_id, viewer_id)
        return json_response(found if found else {"error": "no such viewer in this stream"},
                             status=200 if found else 404)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        k = _int_param(request, "k", 20, 1, MAX_LIVE_K)
        return json_response(await self.data.snapshot(_stream_param(request), k))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: a `snapshot` event whenever the stream's snapshot changed (checked every
        second), a comment every 15 s otherwise so proxies keep the connection open."""
        from aiohttp import web

        stream_id, k = _stream_param(request), _int_param(request, "k", 20, 1, MAX_LIVE_K)
        response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        last, sent_at = "", time.monotonic()
        try:
            async with contextlib.aclosing(self.feed.subscribe(stream_id, k)) as snapshots:
                async for snapshot in snapshots:
                    if self.stopping.is_set():
                        break
                    body = dumps(snapshot)
                    if body != last:
                        await response.write(f"event: snapshot\ndata: {body}\n\n".encode())
                        last, sent_at = body, time.monotonic()
                    elif time.monotonic() - sent_at > 15:
                        await response.write(b": still here\n\n")
                        sent_at = time.monotonic()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the browser went away, or the server is stopping
        return response

    async def export(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        what, extension = request.match_info["what"], request.match_info["extension"]
        if what not in ("leaderboard", "summary") or extension not in ("csv", "json"):
            raise web.HTTPNotFound()
        stream_id, k = _stream_param(request), _int_param(request, "k", 20, 1, MAX_EXPORT_K)
        if what == "leaderboard":
            rows = [export_row(entry) for entry in await self.data.leaderboard(stream_id, k)]
            columns = LEADERBOARD_COLUMNS
        else:
            summary = await self.data.summary(stream_id, k)
            if summary is None:
                return json_response({"error": "no such stream"}, status=404)
            rows, columns = [summary], SUMMARY_COLUMNS
        disposition = {"Content-Disposition": f'attachment; filename="{_filename(stream_id, what, extension)}"'}
        if extension == "json":
            return json_response(rows if what == "leaderboard" else rows[0], headers=disposition)
        return text_response(to_csv([flat_row(r) for r in rows], columns), "text/csv; charset=utf-8",
                             headers=disposition)


def export_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: entry.get(key) for key in LEADERBOARD_COLUMNS} | {"paid": entry.get("paid", [])}


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """Nested values as one readable cell each, for CSV."""
    flat = dict(row)
    if "paid" in row:
        flat["paid_amounts"] = "; ".join(p.get("amount_text") or f"{p.get('amount')} {p.get('currency')}"
                                         for p in row["paid"] if p.get("amount") is not None or p.get("amount_text"))
    if isinstance(row.get("paid_totals"), dict):
        flat["paid_totals"] = "; ".join(f"{amount:.2f} {currency}" for currency, amount in row["paid_totals"].items())
    if isinstance(row.get("model_versions"), dict):
        flat["model_versions"] = "; ".join(row["model_versions"])
    return flat


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return text_response(dumps(value), "application/json; charset=utf-8", status, headers)


def text_response(text: str, content_type: str, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    from aiohttp import web

    return web.Response(body=text.encode(), status=status,
                        headers={**SECURITY_HEADERS, "Content-Type": content_type, **(headers or {})})


def _file_response(name: str, content_type: str) -> web.Response:
    from aiohttp import web

    return web.Response(body=(STATIC_DIR / name).read_bytes(),
                        headers={**SECURITY_HEADERS, "Content-Type": content_type})


# ---------------------------------------------------------------- wiring into the worker

def register_dashboard(app: faust.App, settings: Settings, database_url: str | None, *,
                       runtime: Any = None) -> DashboardRoutes:
    """Add the dashboard routes (and, with a token, the token check on every route) to the worker's
    web server. Raises InputError for a non-loopback bind without a token, before anything starts."""
    check_bind(settings)
    web_app = app.web.web_app  # type: ignore[attr-defined] - faust's aiohttp driver
    token = dashboard_token(settings)
    if token is not None:
        web_app.middlewares.append(token_middleware(token))
    data = DashboardData(Database(database_url), runtime=runtime)
    routes = DashboardRoutes(data, LiveFeed(data))
    routes.add_to(web_app.router)

    @app.on_before_shutdown.connect
    async def stop_dashboard(sender: faust.App, **kwargs: object) -> None:
        await routes.close()

    return routes
