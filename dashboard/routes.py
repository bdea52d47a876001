"""The HTTP routes: the page and its static files, the JSON API, exports and the live events."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard import revenue
from dashboard.data import ACTIVITY_MINUTES, RECENT_PAID, DashboardData, degraded, with_lift
from dashboard.encode import (
    LEADERBOARD_COLUMNS,
    SECURITY_HEADERS,
    SUMMARY_COLUMNS,
    dumps,
    json_response,
    text_response,
    to_csv,
)
from dashboard.feed import LiveFeed
from dashboard.queries import QueryRejected
from infra.errors import DatabaseUnavailable
from infra.money import is_money

if TYPE_CHECKING:
    from aiohttp import web

STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {  # name -> content type; nothing else under /dashboard/static/ is served
    "app.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "overview.js": "text/javascript; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",  # uPlot (MIT), vendored: vendor/LICENSE
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
}
PAGES = {"": "index.html", "overview": "overview.html", "viewer": "viewer.html"}
MAX_LIVE_K = 100  # the live feed and page: only the top of the board travels
MAX_EXPORT_K = 1000


class BadRequest(ValueError):
    pass


# NUL cannot be stored or compared in PostgreSQL text, and no id we store has control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text_param(request: web.Request, name: str, what: str, longest: int) -> str:
    value = request.query.get(name, "")
    if not 1 <= len(value) <= longest:
        raise BadRequest(f"give ?{name}=<{what}> (1 to {longest} characters)")
    if _CONTROL.search(value):
        raise BadRequest(f"?{name}= must not contain control characters (NUL, newline, ...)")
    return value


def _stream_param(request: web.Request) -> str:
    return _text_param(request, "stream", "stream id", 200)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int, *, strict: bool = False) -> int:
    """A whole number; out of range is clamped, or (strict) refused."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{1,6}", raw) or (strict and not low <= int(raw) <= high):
        raise BadRequest(f"?{name}= must be a whole number from {low} to {high}")
    return max(low, min(high, int(raw)))


def _date_param(request: web.Request, name: str) -> datetime | None:
    """?from= / ?to= as a day (YYYY-MM-DD, UTC midnight; `to` is exclusive of the next day)."""
    raw = request.query.get(name, "")
    if not raw:
        return None
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise BadRequest(f"?{name}= must be a date, YYYY-MM-DD (got {raw[:40]!r})") from None
    return day + timedelta(days=1) if name == "to" else day


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
            "/dashboard": self.redirect, "/dashboard/": self.page, "/dashboard/overview": self.page,
            "/dashboard/viewer": self.page, "/dashboard/static/{name}": self.static,
            "/dashboard/static/vendor/{name}": self.static, "/api/overview": self.overview,
            "/api/viewer-history": self.viewer_history, "/api/viewers": self.find_viewers,
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
            except (BadRequest, QueryRejected) as error:
                return json_response({"error": str(error)}, status=400)
            except DatabaseUnavailable as error:
                return json_response(degraded(request.query.get("stream"), 0, str(error)), status=503)

        return guarded

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        raise web.HTTPFound("/dashboard/" + (f"?{request.query_string}" if request.query_string else ""))

    async def page(self, request: web.Request) -> web.StreamResponse:
        return _file_response(PAGES[request.path.removeprefix("/dashboard/")], "text/html; charset=utf-8")

    async def static(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        name = request.path.removeprefix("/dashboard/static/")
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
        stream_id, viewer_id = _stream_param(request), _text_param(request, "viewer", "viewer id", 600)
        found = await self.data.viewer(stream_id, viewer_id)
        return json_response(found if found else {"error": "no such viewer in this stream"},
                             status=200 if found else 404)

    async def overview(self, request: web.Request) -> web.StreamResponse:
        since, until = _date_param(request, "from"), _date_param(request, "to")
        if since and until and until <= since:
            raise BadRequest("?to= must be after ?from=")
        return json_response(await self.data.overview(_int_param(request, "limit", 200, 1, 1000), since, until,
                                                      _int_param(request, "k", 20, 1, MAX_LIVE_K)))

    async def viewer_history(self, request: web.Request) -> web.StreamResponse:
        found = await self.data.viewer_history(_text_param(request, "viewer", "viewer id", 600))
        return json_response(found if found else {"error": "no such viewer"}, status=200 if found else 404)

    async def find_viewers(self, request: web.Request) -> web.StreamResponse:
        return json_response(await self.data.find_viewers(_text_param(request, "q", "part of a name", 100),
                                                          _int_param(request, "limit", 20, 1, 100)))

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
        # Exports are what people keep: a k outside 1..1000 or an unknown stream is an error, never a
        # quietly clamped or header-only file.
        stream_id, k = _stream_param(request), _int_param(request, "k", 20, 1, MAX_EXPORT_K, strict=True)
        if not await self.data.stream_exists(stream_id):
            return json_response({"error": f"no such stream: {stream_id[:200]!r}"}, status=404)
        if what == "leaderboard":
            summary = await self.data.summary(stream_id, k) or {}
            board = with_lift(await self.data.leaderboard(stream_id, k), summary.get("base_rate"))
            rows = [export_row(entry, self.data.currency) for entry in board]
            columns = LEADERBOARD_COLUMNS
        else:
            summary = await self.data.summary(stream_id, k)
            if summary is None:
                return json_response({"error": f"no such stream: {stream_id[:200]!r}"}, status=404)
            rows, columns = [summary], SUMMARY_COLUMNS
        disposition = {"Content-Disposition": f'attachment; filename="{_filename(stream_id, what, extension)}"'}
        if extension == "json":
            return json_response(rows if what == "leaderboard" else rows[0], headers=disposition)
        return text_response(to_csv([flat_row(r) for r in rows], columns), "text/csv; charset=utf-8",
                             headers=disposition)


def export_row(entry: dict[str, Any], currency: str) -> dict[str, Any]:
    money = revenue.breakdown([p for p in entry.get("paid", []) if is_money(p["kind"], p["currency"])
                               and p.get("amount") is not None], currency)
    return ({key: entry.get(key) for key in LEADERBOARD_COLUMNS} | {"paid": entry.get("paid", [])}
            | {"paid_total": money["total"], "display_currency": currency, "paid_breakdown": money["by_currency"]})


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """Nested values as one readable cell each, for CSV."""
    flat = dict(row)
    if "paid" in row:
        flat["paid_amounts"] = "; ".join(p.get("amount_text") or f"{p.get('amount')} {p.get('currency')}"
                                         for p in row["paid"] if p.get("amount") is not None or p.get("amount_text"))
    if isinstance(row.get("paid_breakdown"), list):
        flat["paid_breakdown"] = revenue.describe({"currency": row["display_currency"], "total": row["paid_total"],
                                                   "by_currency": row["paid_breakdown"]})
    if isinstance(row.get("revenue"), dict):
        flat["revenue"] = row["revenue"]["total"]
        flat["display_currency"] = row["revenue"]["currency"]
        flat["revenue_breakdown"] = revenue.describe(row["revenue"])
    if isinstance(row.get("paid_counts"), list):
        flat["paid_counts"] = "; ".join(f"{c['count']} {c['unit']}" for c in row["paid_counts"])
    if isinstance(row.get("base_rate"), dict):
        flat["base_rate"] = row["base_rate"]["value"]
        flat["base_rate_source"] = row["base_rate"]["source"]
    if isinstance(row.get("paid_totals"), dict):
        flat["paid_totals"] = "; ".join(f"{amount:.2f} {currency}" for currency, amount in row["paid_totals"].items())
    if isinstance(row.get("model_versions"), dict):
        flat["model_versions"] = "; ".join(row["model_versions"])
    return flat


def _file_response(name: str, content_type: str) -> web.Response:
    from aiohttp import web

    return web.Response(body=(STATIC_DIR / name).read_bytes(),
                        headers={**SECURITY_HEADERS, "Content-Type": content_type})
