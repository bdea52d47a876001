"""The live dashboard: a page, a JSON API and a Server-Sent-Events feed on the worker's web server.

One server, not two: `register_dashboard(app, settings, database_url)` adds these routes to the faust
worker's aiohttp application (called from `create_app`). Every number comes from PostgreSQL (the
persist sink's `viewer_scores`, `viewer_scores_latest` and `chat_messages`), so any one worker shows
all partitions, even when several workers split them. If PostgreSQL cannot be reached, the API says
`"status": "degraded"` (503 on data routes) and the page shows a banner instead of failing.

JSON API (GET; `stream` is a stream id, `k` the leaderboard size, 1..100 live, 1..1000 in exports)
--------------------------------------------------------------------------------------------------
    /dashboard/                          the stream page (plain HTML/CSS/JS from dashboard/static/; charts are
                                         uPlot, vendored in static/vendor/); ?stream=&k=&viewer= opens a viewer
    /dashboard/overview                  every stream, channel totals, search by name, a date range
    /dashboard/viewer?viewer=            one viewer across streams: scores, ranks, payments
    /api/health                          {"status": "ok"|"degraded", "database", "problems", "model_version", "model_tier"}
    /api/streams?limit=200               streams, newest activity first: stream_id, platform, title, state
                                         ("live" | "replaying" | "ended"), scored_viewers, last_scored_at, ...
    /api/leaderboard?stream=&k=20        top-k viewers by donor likelihood: rank, viewer_id, viewer_name,
                                         probability, n_messages, trend (recent probabilities, oldest first),
                                         top_message_ids, paid (this stream's payments), rank_before_paid, hit
    /api/paid?stream=&k=20&limit=20      recent paid events, newest first: kind, amount, currency, amount_text,
                                         time, viewer, rank_before (the payer's rank just before paying), hit
    /api/activity?stream=                chat items and paid events per minute of stream time (stream_minute:
                                         whole minutes since the stream's first message)
    /api/summary?stream=&k=20            per-stream summary: messages, viewers, payers, base_rate (payers so
                                         far / viewers, or the model's mean before anyone paid; `source` says
                                         which), paid totals per currency, revenue in the display currency
                                         (ECB rate of each event's date) with its per-currency breakdown,
                                         revenue_curve, top_donors, paid_counts (bits, gifts: counts, not
                                         money), scored viewers, precision@k, hit rate@k, model versions
    /api/viewer?stream=&viewer=          drill-down: latest score, rank, score history, the viewer's messages
                                         with timestamps; `moved_score` marks the explanation's messages;
                                         `explanation` says where it came from (the scorer, computed on demand
                                         for a viewer outside the scorer's top 20) or why there is none
    /api/overview?from=&to=&k=20         every stream (live and replaying first): messages/min, payers,
                                         revenue, top 3, precision@k so far; totals per channel
    /api/viewer-history?viewer=          one viewer across streams; /api/viewers?q= finds viewers by name
    /api/snapshot?stream=&k=20           what the live feed sends: leaderboard + paid + activity + summary
    /api/events?stream=&k=20             Server-Sent Events: `event: snapshot` about every second when it
                                         changed (only the top-k travel, never the whole audience)
    /api/export/leaderboard.csv|.json    ?stream=&k=: the current leaderboard as a download
    /api/export/summary.csv|.json        ?stream=&k=: the per-stream summary as a download

Security (details and reasons in access.py): chat text and names are data; the page renders them with
textContent only, responses carry a strict Content-Security-Policy, CSV cells a spreadsheet would run as
a formula get a leading apostrophe (@handles and numbers stay as they are). Only the Host names
127.0.0.1/localhost/[::1] on the listening port (and DONORCAST_PUBLIC_URL's host with a token) are
answered (421 otherwise); requests a browser sent from another origin are 403; anything but GET/HEAD/
OPTIONS must be application/json (415); faust's own views (/, /table/, /router/) are not served.
Binding to a non-loopback address, however it is set, needs DONORCAST_DASHBOARD_TOKEN (16+ characters);
with a token, every route but /healthz, /metrics and /metrics/summary (counters, no chat or viewer
data) requires it as `Authorization: Bearer <token>`, `X-Donorcast-Token: <token>`, `?token=<token>`,
or the HttpOnly SameSite=Strict cookie (Secure behind https) set after the first authorised request.
Bad parameters (control characters, an export k outside 1..1000) and values PostgreSQL refuses are 400;
an export of an unknown stream is 404.

Modules, in the order a request meets them: access (bind and token), routes (HTTP), feed (live
events), data (what the page shows), revenue (money in one currency: infra.money converts), explain
(explanations on demand), queries (PostgreSQL), encode (JSON, CSV, response headers); watch is the
terminal view of the same data.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from dashboard.access import (
    AccessPolicy,
    access_middleware,
    check_bind,
    dashboard_token,
    is_loopback,
)
from dashboard.data import DashboardData, degraded
from dashboard.encode import csv_cell, to_csv
from dashboard.feed import SUMMARY_SECONDS, LiveFeed
from dashboard.queries import Database
from dashboard.routes import DashboardRoutes
from infra.errors import InputError
from infra.settings import Settings

if TYPE_CHECKING:
    import faust

__all__ = ["SUMMARY_SECONDS", "DashboardData", "Database", "check_bind", "csv_cell", "dashboard_token", "degraded",
           "is_loopback", "register_dashboard", "to_csv"]


def register_dashboard(app: faust.App, settings: Settings, database_url: str | None, *,
                       runtime: Any = None) -> DashboardRoutes:
    """Add the dashboard routes and the access rules (Host, Origin, paths, token: see access.py) to the
    worker's web server. Raises InputError for a non-loopback bind without a good token, before anything
    starts; the same rule runs again on the address faust finally binds, just before it listens."""
    check_bind(settings)
    web_app = app.web.web_app  # type: ignore[attr-defined] - faust's aiohttp driver
    web_app.middlewares.insert(0, access_middleware(AccessPolicy.from_settings(settings)))
    web_app.on_startup.append(lambda _: refuse_unsafe_bind(settings, app.conf.web_bind))
    data = DashboardData(Database(database_url), runtime=runtime, currency=settings.display_currency)
    routes = DashboardRoutes(data, LiveFeed(data))
    routes.add_to(web_app.router)

    @app.on_before_shutdown.connect
    async def stop_dashboard(sender: faust.App, **kwargs: object) -> None:
        await routes.close()

    return routes


async def refuse_unsafe_bind(settings: Settings, bound: str) -> None:
    """The bind rule on the address really bound (`--web-bind` sets it after the app was built). Runs in
    the web server's startup, before its socket opens: the process stops with one line, no traceback."""
    try:
        check_bind(settings, bound)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None  # not a crash to log with a traceback: the worker stops
