"""`donorcast collect CHANNEL_URL` and `donorcast update CHANNEL`: a channel's archive into PostgreSQL.

collect: discover the streams page -> metadata (YouTube Data API) -> channel and stream rows ->
chat of every ended stream whose chat is not complete yet.
update: the same for a channel collected before, plus every stream of it already in the database
whose chat is pending, partial or failed. The seed's updater only looked past the newest stream in
its sheet, so a stream that failed once was never fetched again.

Upcoming and live streams are not stored: they have no chat replay yet, and a later `update`
finds them as new once they have ended. The streams table is the only state: a run stopped at any
point leaves rows pending or partial, and the next run picks them up.

The orchestration (`collect_channel`, `update_channel`) takes its collaborators (discovery,
metadata client, chat source, pool) as arguments, so tests run it for real on recorded inputs.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from infra.errors import InputError
from producers.archive.urls import StreamRef, channel_key_from_url, channel_streams_url, check_navigable

if TYPE_CHECKING:
    import asyncpg
    from rich.progress import Progress

    from infra.settings import Settings
    from producers.archive.backoff import Backoff
    from producers.archive.discover import Discovery
    from producers.archive.download import ChatItemSource, DownloadResult
    from producers.archive.metadata import YouTubeMetadata
    from producers.archive.state import KnownStream

SOURCE = "archive"
Discover = Callable[[str], "Discovery"]  # streams page URL -> what is on it


@dataclass(frozen=True)
class PlannedStream:
    platform: str
    stream_id: str
    url: str
    title: str
    published_at: datetime | None
    channel_id: str | None
    actual_start: datetime | None = None  # from the Data API; None for Twitch and for rows read back
    actual_end: datetime | None = None


@dataclass
class CollectReport:
    channel_id: str | None = None
    channel_name: str = ""
    page_url: str = ""
    discovered: int = 0  # streams on the page
    new: int = 0  # of those, not in the database before
    skipped_upcoming: list[str] = field(default_factory=list)
    skipped_live: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # on the page, but the API returned nothing
    retried: int = 0  # incomplete streams from earlier runs taken up again
    left_pending: list[str] = field(default_factory=list)  # beyond --max-streams: the next run does them
    results: list[DownloadResult] = field(default_factory=list)

    def count(self, chat_status: str) -> int:
        return sum(1 for r in self.results if r.chat_status == chat_status)

    @property
    def messages_saved(self) -> int:
        return sum(r.saved for r in self.results)


class RunProgress:
    """The rich display of a run; every method is a no-op without a Progress (tests, --quiet)."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._overall: int | None = None
        self._stream: int | None = None

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.log(text)

    def stage(self, text: str) -> None:
        if self._progress is not None:
            if self._overall is None:
                self._overall = self._progress.add_task(text, total=None)
            else:
                self._progress.update(self._overall, description=text)

    def streams(self, total: int) -> None:
        self.stage("streams")
        if self._progress is not None and self._overall is not None:
            self._progress.update(self._overall, total=total, completed=0)

    def stream_started(self, stream: PlannedStream) -> None:
        if self._progress is not None:
            label = (stream.title or stream.stream_id)[:48]
            self._stream = self._progress.add_task(f"  {stream.stream_id} {label}", total=None)

    def items(self, n: int) -> None:
        if self._progress is not None and self._stream is not None:
            self._progress.advance(self._stream, n)

    def stream_done(self, result: DownloadResult) -> None:
        if self._progress is None:
            return
        if self._stream is not None:
            self._progress.remove_task(self._stream)
            self._stream = None
        if self._overall is not None:
            self._progress.advance(self._overall, 1)
        colour = {"complete": "green", "partial": "yellow"}.get(result.chat_status, "red")
        detail = f" ({result.error})" if result.error else ""
        self.note(f"[{colour}]{result.chat_status}[/{colour}] {result.stream_id}: "
                  f"{result.saved} new messages, {result.rejected} rejected{detail}")


# ---------------------------------------------------------------- orchestration


async def collect_channel(
    pool: asyncpg.Pool,
    channel_url: str,
    *,
    discover: Discover,
    metadata: YouTubeMetadata | None,
    chat: ChatItemSource,
    max_streams: int | None = None,
    chat_backoff: Backoff | None = None,
    chat_batch_size: int = 500,
    allow_any_host: bool = False,
    progress: Progress | None = None,
) -> CollectReport:
    """Everything on the channel's streams page into the database; chat of the ended streams."""
    view = RunProgress(progress)
    page_url = channel_streams_url(channel_url, allow_any_host=allow_any_host)
    report = CollectReport(page_url=page_url)
    view.stage("scrolling the streams page")
    refs = await _discover(discover, page_url, report, view)
    planned = await _describe_and_store(pool, refs, metadata, report, view, channel_hint=page_url)
    known = await _known(pool, planned)
    todo = [s for s in planned if known.get(s.stream_id) is None or known[s.stream_id].chat_status != "complete"]
    await _download_all(pool, todo, chat, report, view, max_streams=max_streams, backoff=chat_backoff,
                        batch_size=chat_batch_size)
    return report


async def update_channel(
    pool: asyncpg.Pool,
    channel: str,
    *,
    discover: Discover | None,
    metadata: YouTubeMetadata | None,
    chat: ChatItemSource,
    max_streams: int | None = None,
    chat_backoff: Backoff | None = None,
    chat_batch_size: int = 500,
    allow_any_host: bool = False,
    progress: Progress | None = None,
) -> CollectReport:
    """New streams of a collected channel, and every stream of it whose chat is not complete.

    `discover=None` skips the page (no browser): only the incomplete streams already known."""
    from producers.archive.state import INCOMPLETE_CHAT, all_channels, channel_streams, find_channel

    found = await find_channel(pool, _channel_keys(channel, allow_any_host))
    if found is None:
        if "://" in channel and discover is not None:
            return await collect_channel(
                pool, channel, discover=discover, metadata=metadata, chat=chat, max_streams=max_streams,
                chat_backoff=chat_backoff, chat_batch_size=chat_batch_size, allow_any_host=allow_any_host,
                progress=progress,
            )
        known = ", ".join(f"{c.name or c.channel_id} ({c.url})" for c in await all_channels(pool)) or "none yet"
        raise InputError(
            f"no collected channel matches {channel!r} (collected: {known}); "
            "run `donorcast collect CHANNEL_URL` first"
        )
    view = RunProgress(progress)
    report = CollectReport(channel_id=found.channel_id, channel_name=found.name, page_url=found.url)
    planned: list[PlannedStream] = []
    if discover is not None:
        view.stage("scrolling the streams page")
        refs = await _discover(discover, found.url, report, view)
        before = await _known(pool, refs)
        # New, or known only from an ingested file (no channel yet): both need metadata and a row.
        fresh = [r for r in refs if r.stream_id not in before or before[r.stream_id].channel_id is None]
        described = await _describe_and_store(pool, fresh, metadata, report, view, channel_hint=found.url)
        planned = [s for s in described if s.stream_id not in before or before[s.stream_id].chat_status != "complete"]
    stored = await channel_streams(pool, found.platform, found.channel_id)
    planned_ids = {s.stream_id for s in planned}
    incomplete = [
        _planned_from_row(s) for s in stored
        if s.chat_status in INCOMPLETE_CHAT and s.status not in ("upcoming", "live") and s.stream_id not in planned_ids
    ]
    report.retried = len(incomplete)
    await _download_all(pool, incomplete + planned, chat, report, view, max_streams=max_streams,
                        backoff=chat_backoff, batch_size=chat_batch_size)
    return report


async def _discover(discover: Discover, page_url: str, report: CollectReport, view: RunProgress) -> list[StreamRef]:
    discovery = await asyncio.to_thread(discover, page_url)
    report.discovered = len(discovery.streams)
    view.note(f"{len(discovery.streams)} streams on {page_url} "
              f"({discovery.scroll.rounds} scrolls, stopped: {discovery.scroll.stopped_because})")
    return discovery.streams


async def _known(pool: asyncpg.Pool, streams: Sequence[PlannedStream | StreamRef]) -> dict[str, KnownStream]:
    """Rows already in the database for these streams, by stream id."""
    from producers.archive.state import known_streams

    known: dict[str, KnownStream] = {}
    for platform in {s.platform for s in streams}:
        known.update(await known_streams(pool, platform, [s.stream_id for s in streams if s.platform == platform]))
    return known


async def _describe_and_store(
    pool: asyncpg.Pool,
    refs: Sequence[StreamRef],
    metadata: YouTubeMetadata | None,
    report: CollectReport,
    view: RunProgress,
    *,
    channel_hint: str,
) -> list[PlannedStream]:
    """Metadata for the discovered streams; channel and ended-stream rows upserted; ended streams returned."""
    from infra.repository import upsert_channel, upsert_stream

    known_before = await _known(pool, refs)
    report.new = sum(1 for r in refs if r.stream_id not in known_before)
    youtube_ids = [r.stream_id for r in refs if r.platform == "youtube"]
    planned: list[PlannedStream] = []
    channel_ids: Counter[str] = Counter()
    channel_names: dict[str, str] = {}
    if youtube_ids:
        if metadata is None:
            raise InputError(
                "stream metadata needs the YouTube Data API: set DONORCAST_YOUTUBE_API_KEY "
                "(`donorcast update CHANNEL --no-discover` retries incomplete streams without it)"
            )
        view.stage(f"metadata of {len(youtube_ids)} streams (YouTube Data API)")
        result = await asyncio.to_thread(metadata.fetch, youtube_ids)
        report.unavailable = result.missing
        for video in result.videos:
            if video.channel_id:
                channel_ids[video.channel_id] += 1
                channel_names[video.channel_id] = video.channel_title
            if video.status == "upcoming":
                report.skipped_upcoming.append(video.video_id)
            elif video.status == "live":
                report.skipped_live.append(video.video_id)
            else:
                planned.append(PlannedStream("youtube", video.video_id, f"https://www.youtube.com/watch?v={video.video_id}",
                                             video.title, video.published_at, video.channel_id,
                                             video.actual_start, video.actual_end))
    twitch_login = channel_key_from_url(channel_hint) if any(r.platform == "twitch" for r in refs) else None
    planned += [PlannedStream("twitch", r.stream_id, r.url, r.title, None, twitch_login)
                for r in refs if r.platform == "twitch"]

    channel_id = channel_ids.most_common(1)[0][0] if channel_ids else (twitch_login or report.channel_id)
    if channel_id:
        report.channel_id, report.channel_name = channel_id, channel_names.get(channel_id, report.channel_name)
        platform = "twitch" if twitch_login and channel_id == twitch_login else "youtube"
        await upsert_channel(pool, platform, channel_id, name=report.channel_name, url=channel_hint)
    for stream in planned:
        await upsert_stream(
            pool, platform=stream.platform, stream_id=stream.stream_id, channel_id=stream.channel_id,
            title=stream.title, url=stream.url, published_at=stream.published_at, status="completed",
            source=SOURCE, actual_start=stream.actual_start, actual_end=stream.actual_end,
        )
    if report.skipped_upcoming or report.skipped_live:
        view.note(f"skipped {len(report.skipped_upcoming)} upcoming and {len(report.skipped_live)} live streams "
                  "(no chat replay yet; `donorcast update` takes them once they have ended)")
    return planned


def _planned_from_row(row: KnownStream) -> PlannedStream:
    from producers.archive.urls import platform_of_host, watch_url

    # The stored URL may come from an ingested dataset (liveIds.json, a seed database): chat-downloader
    # fetches it, so only a YouTube/Twitch URL is used as it is; anything else becomes the watch page.
    url = row.url if row.url and platform_of_host(urlsplit(row.url).hostname) is not None else ""
    url = url or watch_url("twitch" if row.platform == "twitch" else "youtube", row.stream_id)
    return PlannedStream(row.platform, row.stream_id, url, row.title, row.published_at, row.channel_id)


async def _download_all(
    pool: asyncpg.Pool,
    streams: Sequence[PlannedStream],
    chat: ChatItemSource,
    report: CollectReport,
    view: RunProgress,
    *,
    max_streams: int | None,
    backoff: Backoff | None,
    batch_size: int,
) -> None:
    from producers.archive.download import StreamTarget, download_chat

    # Oldest first, as the seed's sheet was; streams without a date last.
    ordered = sorted(streams, key=lambda s: (s.published_at is None, s.published_at or datetime.min, s.stream_id))
    if max_streams is not None:
        report.left_pending = [s.stream_id for s in ordered[max_streams:]]
        ordered = ordered[:max_streams]
    view.streams(len(ordered))
    for stream in ordered:
        view.stream_started(stream)
        result = await download_chat(
            pool, StreamTarget(stream.platform, stream.stream_id, stream.url), chat,
            backoff=backoff, batch_size=batch_size, on_items=view.items,
        )
        report.results.append(result)
        view.stream_done(result)


def _channel_keys(channel: str, allow_any_host: bool) -> list[str]:
    """Ways a user may name a collected channel: its id, page URL (any form), name or @handle."""
    keys = [channel.strip()]
    if "://" in channel:
        try:
            keys.append(channel_streams_url(channel, allow_any_host=allow_any_host))
        except InputError:
            pass
    elif channel.startswith("@"):
        keys.append(f"https://www.youtube.com/{channel.strip()}/streams")
    return keys


# ---------------------------------------------------------------- commands


def collect_command(
    ctx: typer.Context,
    channel_url: Annotated[str, typer.Argument(help="channel URL, e.g. https://www.youtube.com/@name")],
    max_streams: Annotated[
        int | None,
        typer.Option("--max-streams", min=1, help="download at most N streams' chat now; the rest stay pending for `update`"),
    ] = None,
    scroll_timeout: Annotated[float, typer.Option(min=5, help="seconds the streams page may be scrolled")] = 600.0,
) -> None:
    """Collect a channel's past streams and their chat (Super Chats included) into PostgreSQL."""
    from infra.cli import settings_from

    settings = settings_from(ctx)
    page_url = channel_streams_url(channel_url)  # a bad URL fails before anything starts
    metadata = _metadata_client(settings, needed=check_navigable(page_url) == "youtube")
    report = _run(settings, lambda pool, progress: collect_channel(
        pool, page_url, discover=_browser_discover(scroll_timeout), metadata=metadata,
        chat=_chat_source(), max_streams=max_streams, progress=progress,
    ))
    _print_report(report, title=f"collect {page_url}")


def update_command(
    ctx: typer.Context,
    channel: Annotated[str, typer.Argument(help="a collected channel: its id (UC...), URL, @handle or name")],
    discover: Annotated[
        bool, typer.Option("--discover/--no-discover", help="scroll the streams page for new streams (needs Chromium)")
    ] = True,
    max_streams: Annotated[
        int | None, typer.Option("--max-streams", min=1, help="download at most N streams' chat in this run")
    ] = None,
    scroll_timeout: Annotated[float, typer.Option(min=5, help="seconds the streams page may be scrolled")] = 600.0,
) -> None:
    """Fetch a channel's new streams and retry every stream whose chat is missing or incomplete."""
    from infra.cli import settings_from

    settings = settings_from(ctx)
    metadata = _metadata_client(settings, needed=False)  # only new YouTube streams need it
    report = _run(settings, lambda pool, progress: update_channel(
        pool, channel, discover=_browser_discover(scroll_timeout) if discover else None, metadata=metadata,
        chat=_chat_source(), max_streams=max_streams, progress=progress,
    ))
    _print_report(report, title=f"update {channel}")


def _metadata_client(settings: Settings, *, needed: bool) -> YouTubeMetadata | None:
    from producers.archive.metadata import YouTubeMetadata

    key = settings.youtube_api_key
    if key is None or not key.get_secret_value().strip():
        if needed:
            raise InputError("collecting a YouTube channel needs the YouTube Data API: set DONORCAST_YOUTUBE_API_KEY")
        return None
    return YouTubeMetadata.from_key(key)


def _browser_discover(scroll_timeout: float) -> Discover:
    from producers.archive.discover import ScrollPolicy, discover_streams

    return functools.partial(discover_streams, policy=ScrollPolicy(timeout_seconds=scroll_timeout))


def _chat_source() -> ChatItemSource:
    from producers.archive.download import chat_downloader_source

    return chat_downloader_source()


def _run(settings: Settings, job: Callable[[asyncpg.Pool, Progress], Awaitable[CollectReport]]) -> CollectReport:
    """Start (or find) PostgreSQL, migrate, run the job under a progress display, stop what we started."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from infra.cli import console
    from infra.postgres import create_pool
    from infra.repository import migrate
    from infra.services import running_services

    async def main(database_url: str) -> CollectReport:
        pool = await create_pool(database_url)
        try:
            await migrate(pool)
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=False) as progress:
                return await job(pool, progress)
        finally:
            await pool.close()

    with running_services(settings, kafka=False) as endpoints:
        assert endpoints.database_url is not None
        return asyncio.run(main(endpoints.database_url))


def _print_report(report: CollectReport, *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_row("channel", f"{report.channel_name} ({report.channel_id})" if report.channel_id else "-")
    table.add_row("streams on page", str(report.discovered))
    table.add_row("new streams", str(report.new))
    table.add_row("incomplete retried", str(report.retried))
    table.add_row("skipped (upcoming / live)", f"{len(report.skipped_upcoming)} / {len(report.skipped_live)}")
    table.add_row("unavailable (private/deleted)", str(len(report.unavailable)))
    table.add_row("chat complete / partial / failed",
                  f"{report.count('complete')} / {report.count('partial')} / {report.count('failed')}")
    table.add_row("left pending (--max-streams)", str(len(report.left_pending)))
    table.add_row("messages saved", str(report.messages_saved))
    table.add_row("items rejected", str(sum(r.rejected for r in report.results)))
    Console().print(table)
    for result in report.results:
        for rejection in result.rejections[:3]:
            Console(stderr=True).print(f"[yellow]rejected[/yellow] {result.stream_id} {rejection}")
    if report.count("partial") or report.count("failed") or report.left_pending:
        Console(stderr=True).print("run `donorcast update` for this channel to retry the incomplete streams")
