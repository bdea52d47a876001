"""`donorcast watch STREAM`: the dashboard's live leaderboard in the terminal, for people on a server.

By default it reads PostgreSQL with the dashboard's own queries (`dashboard`), so it
needs neither a browser nor an open web port; `--url http://host:6066` reads a running dashboard's
JSON API (`/api/snapshot`) instead, sending DONORCAST_DASHBOARD_TOKEN when one is set. Either way it
shows what the page shows: the top-k viewers with rank changes, a trend sparkline and who actually
paid (hit: they were in the top k just before paying; miss: they were not), then recent payments.
Names and chat text are printed as plain text, never interpreted as rich markup.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from infra.errors import DatabaseUnavailable, InputError
from infra.settings import Settings

SPARK = "▁▂▃▄▅▆▇█"
CHANGE_SHOWN_SECONDS = 15.0
KNOWN_SHOWN = 20  # streams listed when the one asked for is unknown
Fetch = Callable[[str, int], Awaitable[dict[str, Any]]]
ListStreams = Callable[[], Awaitable[list[dict[str, Any]]]]


# ---------------------------------------------------------------- where snapshots come from

def database_fetch(settings: Settings) -> tuple[Fetch, ListStreams, Callable[[], Awaitable[None]]]:
    """Snapshots straight from PostgreSQL (the summary refreshed every few seconds, like the page),
    the streams it knows, and how to close the connection."""
    from dashboard import SUMMARY_SECONDS, DashboardData, Database, degraded
    from infra.services import resolve_database_url

    data = DashboardData(Database(resolve_database_url(settings)), currency=settings.display_currency)
    cached: dict[str, Any] = {"summary": None, "at": 0.0}

    async def fetch(stream_id: str, k: int) -> dict[str, Any]:
        try:
            if cached["summary"] is None or time.monotonic() - cached["at"] > SUMMARY_SECONDS:
                cached["summary"] = await data.summary(stream_id, k) or {}
                cached["at"] = time.monotonic()
            return await data.snapshot(stream_id, k, summary=cached["summary"])
        except DatabaseUnavailable as error:
            return degraded(stream_id, k, str(error))

    async def streams() -> list[dict[str, Any]]:
        return await data.streams(KNOWN_SHOWN + 1)

    return fetch, streams, data.db.close


def api_fetch(url: str, token: str | None) -> tuple[Fetch, ListStreams]:
    """Snapshots, and the streams it knows, from a running dashboard's JSON API."""
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise InputError(f"--url must start with http:// or https:// (got {url!r})")

    def get(path: str, **query: object) -> dict[str, Any]:
        request = urllib.request.Request(f"{base}{path}?{urllib.parse.urlencode(query)}",  # noqa: S310 - scheme checked
                                         headers={"X-Donorcast-Token": token} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                body = json.loads(error.read())
            except ValueError:
                body = {}
            if error.code == 503 and body.get("status") == "degraded":
                return body
            return {"status": "error", "http_status": error.code,
                    "problems": [f"HTTP {error.code}: {body.get('error') or error.reason}"]}
        except (OSError, ValueError) as error:
            return {"status": "error", "problems": [f"cannot reach {base}: {error}"]}

    async def fetch(stream_id: str, k: int) -> dict[str, Any]:
        return await asyncio.to_thread(get, "/api/snapshot", stream=stream_id, k=k)

    async def streams() -> list[dict[str, Any]]:
        answer: Any = await asyncio.to_thread(get, "/api/streams", limit=KNOWN_SHOWN + 1)
        return answer if isinstance(answer, list) else []

    return fetch, streams


# ---------------------------------------------------------------- rendering

def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = max(high - low, 0.05)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5))] for v in values[-16:])


def money(payment: dict[str, Any]) -> str:
    if payment.get("amount_text"):
        return str(payment["amount_text"])
    if payment.get("amount") is not None:
        return f"{payment['amount']:.2f} {payment.get('currency') or ''}".strip()
    return str(payment.get("kind", "paid"))


def hit_text(rank_before: int | None, hit: bool | None) -> Text:
    before = "no score yet" if rank_before is None else f"was #{rank_before}"
    return Text.assemble(("HIT" if hit else "MISS", "bold green" if hit else "bold red"), f" {before}")


@dataclass
class RankChanges:
    """Rank moves between refreshes, each shown for a few seconds (like the page)."""

    previous: dict[str, int] = field(default_factory=dict)
    changed: dict[str, tuple[int | None, float]] = field(default_factory=dict)

    def update(self, board: list[dict[str, Any]], now: float) -> dict[str, Text]:
        if self.previous:
            for entry in board:
                before = self.previous.get(entry["viewer_id"])
                if before != entry["rank"]:
                    self.changed[entry["viewer_id"]] = (before, now)
        self.previous = {e["viewer_id"]: e["rank"] for e in board}
        marks = {}
        for entry in board:
            before, at = self.changed.get(entry["viewer_id"], (entry["rank"], 0.0))
            if now - at > CHANGE_SHOWN_SECONDS or before == entry["rank"]:
                marks[entry["viewer_id"]] = Text("·", style="dim")
            elif before is None:
                marks[entry["viewer_id"]] = Text("new", style="cyan")
            else:
                delta = before - entry["rank"]
                marks[entry["viewer_id"]] = Text(f"{'▲' if delta > 0 else '▼'}{abs(delta)}",
                                                 style="green" if delta > 0 else "red")
        return marks


def render(snapshot: dict[str, Any], last_good: dict[str, Any] | None, changes: RankChanges,
           now: float | None = None) -> RenderableType:
    now = time.monotonic() if now is None else now
    problem = None
    if snapshot.get("status") != "ok":
        problem = Text("; ".join(snapshot.get("problems") or ["no data"]), style="bold red")
        snapshot = last_good or {"leaderboard": [], "paid": [], "summary": {}, "k": snapshot.get("k", 0)}
    summary, k = snapshot.get("summary") or {}, snapshot.get("k", 0)
    board = snapshot.get("leaderboard") or []
    marks = changes.update(board, now)

    title = Text.assemble((summary.get("title") or snapshot.get("stream_id") or "", "bold"),
                          f"  {summary.get('state', '')}")
    table = Table(title=title, expand=False, caption=caption(summary, k))
    for column, justify in (("#", "right"), ("Δ", "left"), ("viewer", "left"), ("lift", "right"),
                            ("chance to pay", "right"), ("trend", "left"), ("msgs", "right"), ("donated?", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "viewer")  # type: ignore[arg-type]
    for entry in board:
        donated: Text = Text("—", style="dim")
        if entry.get("paid_events"):
            donated = Text.assemble(("paid " + ", ".join(money(p) for p in entry.get("paid", [])), "yellow"), " ",
                                    hit_text(entry.get("rank_before_paid"), entry.get("hit")))
        table.add_row(str(entry["rank"]), marks[entry["viewer_id"]],
                      Text(entry.get("viewer_name") or entry["viewer_id"], overflow="ellipsis"),
                      "—" if entry.get("lift") is None else f"{entry['lift']:.1f}×",
                      f"{entry['probability'] * 100:.1f}%", Text(sparkline(entry.get("trend") or []), style="blue"),
                      messages_text(entry), donated)
    if not board:
        table.add_row("", "", Text("waiting for scores…", style="dim"), "", "", "", "", "")

    paid = Table(title="recent paid events", expand=False, show_edge=False)
    for column in ("time", "amount", "viewer", "before"):
        paid.add_column(column)
    for event in (snapshot.get("paid") or [])[:8]:
        paid.add_row(clock(event.get("time")), Text(money(event), style="yellow"),
                     Text(event.get("viewer_name") or event.get("viewer_id", "")),
                     hit_text(event.get("rank_before"), event.get("hit")))
    parts: list[RenderableType] = [table, paid]
    if problem is not None:
        parts.insert(0, Text.assemble(("DEGRADED: ", "bold red"), problem, " (showing the last data)"))
    return Group(*parts)


def messages_text(entry: dict[str, Any]) -> Text | str:
    n = entry.get("n_messages", "")
    return Text(f"{n}, low confidence", style="dim") if entry.get("low_confidence") else str(n)


def caption(summary: dict[str, Any], k: int) -> str:
    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.0f}%"

    base = summary.get("base_rate") or {}
    revenue = summary.get("revenue") or {}
    money_part = f"revenue {revenue['total']:,.2f} {revenue['currency']} · " if revenue else ""
    base_part = f"base rate {base['value'] * 100:.1f}% ({base['text']}) · " if base.get("value") is not None else ""
    return (f"{summary.get('messages', 0)} messages · {summary.get('scored_viewers', 0)} viewers scored · "
            f"{summary.get('payers', 0)} payers · {base_part}{money_part}"
            f"precision@{k} {pct(summary.get('precision_at_k'))} · "
            f"hit rate@{k} {pct(summary.get('hit_rate_at_k'))} · updated {time.strftime('%H:%M:%S')}")


def clock(value: datetime | str | None) -> str:
    if not value:
        return ""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError:
        return str(value)
    return moment.strftime("%H:%M:%S")


# ---------------------------------------------------------------- the command

def is_unknown(snapshot: dict[str, Any]) -> bool:
    """No such stream: the database answered without a summary of it, or the API said 404."""
    return (snapshot.get("status") == "ok" and not snapshot.get("summary")) or snapshot.get("http_status") == 404


def unknown_stream(stream_id: str, known: list[dict[str, Any]]) -> Text:
    """'unknown stream X' and the streams there are (newest activity first), as plain text."""
    if not known:
        return Text(f"unknown stream {stream_id!r}: no streams are stored yet "
                    "(donorcast ingest, replay, live or demo adds them)", style="red")
    lines = [f"unknown stream {stream_id!r}; known streams (newest activity first):"]
    for stream in known[:KNOWN_SHOWN]:
        title = f"  {stream['title']}" if stream.get("title") else ""
        lines.append(f"  {stream['stream_id']}{title}  ({stream.get('state', '')})")
    if len(known) > KNOWN_SHOWN:
        lines.append("  … (the dashboard's stream picker lists them all)")
    return Text("\n".join(lines))


async def watch(fetch: Fetch, stream_id: str, k: int, interval: float, once: bool, console: Console,
                list_streams: ListStreams | None = None) -> int:
    from rich.live import Live

    changes, last_good = RankChanges(), None
    snapshot = await fetch(stream_id, k)
    if is_unknown(snapshot) and list_streams is not None:
        console.print(unknown_stream(stream_id, await list_streams()))
        return 1
    if once:
        console.print(render(snapshot, None, changes))
        return 0 if snapshot.get("status") == "ok" else 1
    with Live(render(snapshot, None, changes), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            if snapshot.get("status") == "ok":
                last_good = snapshot
            await asyncio.sleep(interval)
            snapshot = await fetch(stream_id, k)
            live.update(render(snapshot, last_good, changes))


def watch_command(
    ctx: typer.Context,
    stream: Annotated[str, typer.Argument(help="stream id (as in the dashboard's stream picker)")],
    top: Annotated[int, typer.Option("--top", "-k", min=1, max=100, help="leaderboard size")] = 20,
    url: Annotated[str | None, typer.Option(help="read a running dashboard's API, e.g. http://127.0.0.1:6066; "
                                                 "default: PostgreSQL directly")] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print the leaderboard once and exit")] = False,
) -> None:
    """The live donor-likelihood leaderboard of one stream in the terminal (Ctrl-C stops)."""
    from dashboard import dashboard_token
    from infra.cli import settings_from

    settings = settings_from(ctx)
    console = Console()
    close: Callable[[], Awaitable[None]] | None = None
    if url:
        fetch, streams = api_fetch(url, dashboard_token(settings))
    else:
        fetch, streams, close = database_fetch(settings)

    async def main() -> int:
        try:
            return await watch(fetch, stream, top, interval, once, console, streams)
        finally:
            if close is not None:
                await close()

    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)
