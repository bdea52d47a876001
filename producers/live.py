"""`donorcast live URL`: the chat of a running YouTube or Twitch stream, into Kafka.

chat-downloader's iterator is blocking (HTTP polling for YouTube, IRC for Twitch), so it runs in
a daemon thread that hands items to the event loop through a bounded hand-off; the loop maps
each item with `producers.readers.chat_downloader.item_to_message` and publishes it. The messages
reach PostgreSQL through the worker's sink (one writer, idempotent), like every other producer's;
what only this command knows, the stream's URL, title and "live" status, it records itself.

A live chat connection ends or fails for ordinary reasons (network, YouTube continuation
errors, the stream restarting), so the loop reconnects with capped exponential back-off and
dedupes by message id (a bounded LRU set) because a new connection replays recent items. It
gives up with `RetriesExceeded` after `max_failures` failed connections in a row, treats
`end_after` clean ends in a row without a new message as the end of the stream, and never
retries errors that cannot heal (video not found, chat disabled, login required ...).

Ctrl-C (or SIGTERM) stops it cleanly: the iterator is abandoned, what was received is
published and flushed, and a summary is printed. A second Ctrl-C aborts at once.

Only YouTube and Twitch hosts are accepted unless `--allow-any-host`: the URL is fetched by
chat-downloader on this machine, so an arbitrary URL would make us an open fetcher.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlsplit

import typer

from infra.errors import DatabaseUnavailable, InputError, RetriesExceeded
from infra.events import DeadLetter

if TYPE_CHECKING:
    import asyncpg

    from infra.settings import Settings
    from producers.publisher import KafkaPublisher

# Host (or any subdomain of it) -> platform.
ALLOWED_HOSTS: dict[str, str] = {
    "youtube.com": "youtube",
    "youtu.be": "youtube",
    "youtube-nocookie.com": "youtube",
    "twitch.tv": "twitch",
}
# chat-downloader message groups per platform: viewer chat and every way of paying.
MESSAGE_GROUPS: dict[str, list[str]] = {
    "youtube": ["messages", "superchat"],
    "twitch": ["messages", "bits", "subscriptions", "upgrades"],
}
# chat-downloader errors that another connection cannot fix.
PERMANENT_ERRORS = frozenset(
    {
        "VideoNotFound", "VideoUnavailable", "VideoUnplayable", "LoginRequired", "NoChatReplay",
        "ChatDisabled", "InvalidURL", "URLNotProvided", "SiteNotSupported", "UserNotFound",
        "InvalidParameter", "CookieError",
    }
)
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
DEAD_LETTER_SOURCE = "producers.live"


# ---------------------------------------------------------------- what we connect to


@dataclass
class LiveTarget:
    url: str
    platform: str
    stream_id: str | None  # None until the first connection tells us (channel URLs)


def host_platform(host: str) -> str | None:
    host = host.lower().rstrip(".")
    for allowed, platform in ALLOWED_HOSTS.items():
        if host == allowed or host.endswith("." + allowed):
            return platform
    return None


def resolve_target(url: str, *, allow_any_host: bool = False, stream_id: str | None = None) -> LiveTarget:
    """Check the URL and work out its platform and, where the URL names it, the stream id."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"not an http(s) URL: {url!r}")
    if "\\" in url or parts.username is not None or parts.password is not None:
        # Parsers disagree on these: `https://evil.example\@www.youtube.com/` is youtube.com to
        # Python and evil.example to a browser. No chat URL needs either.
        raise InputError(f"refusing {url!r}: backslashes and user info are not allowed in a chat URL")
    platform = host_platform(parts.hostname)
    if platform is None:
        if not allow_any_host:
            raise InputError(
                f"refusing {parts.hostname!r}: only YouTube and Twitch URLs are accepted "
                "(pass --allow-any-host to let chat-downloader try another site)"
            )
        platform = "other"
    return LiveTarget(url=url.strip(), platform=platform, stream_id=stream_id or stream_id_from_url(url, platform))


def stream_id_from_url(url: str, platform: str) -> str | None:
    """YouTube: the video id (watch?v=, youtu.be/, /live/, /shorts/, /embed/). Twitch: `v<id>` for a
    video, `<channel>@<UTC date>` for a channel's live stream. None when the URL does not say."""
    parts = urlsplit(url.strip())
    segments = [s for s in parts.path.split("/") if s]
    if platform == "youtube":
        candidates = parse_qs(parts.query).get("v", [])
        if parts.hostname and parts.hostname.lower().endswith("youtu.be") and segments:
            candidates.append(segments[0])
        if len(segments) >= 2 and segments[0] in ("live", "shorts", "embed", "v", "e"):
            candidates.append(segments[1])
        return next((c for c in candidates if _VIDEO_ID.match(c)), None)
    if platform == "twitch" and segments:
        if segments[0] == "videos" and len(segments) > 1 and segments[1].isdigit():
            return f"v{segments[1]}"
        if len(segments) == 1:
            return f"{segments[0].lower()}@{datetime.now(UTC):%Y-%m-%d}"
    return None


ChatIterable = Iterable[dict[str, Any]]
IteratorFactory = Callable[[LiveTarget], ChatIterable]


def chat_downloader_iterator(target: LiveTarget) -> ChatIterable:
    """The real source: chat-downloader's Chat object (iterable of item dicts, with `.id`/`.title`)."""
    from chat_downloader import ChatDownloader

    groups = MESSAGE_GROUPS.get(target.platform, ["messages"])
    # interruptible_retry would read stdin ("press Enter") from our worker thread; and a few quick
    # attempts are enough because a failed connection comes back to our own capped back-off.
    return ChatDownloader().get_chat(  # type: ignore[no-any-return]
        target.url, message_groups=groups, interruptible_retry=False, max_attempts=3
    )


def is_permanent(error: BaseException) -> bool:
    return any(cls.__name__ in PERMANENT_ERRORS for cls in type(error).__mro__)


# ---------------------------------------------------------------- small parts


class SeenIds:
    """The most recent `capacity` message ids: enough to cover what a reconnect replays."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, message_id: str) -> bool:
        """True if new (and remembered); False if seen recently (and refreshed)."""
        if message_id in self._ids:
            self._ids.move_to_end(message_id)
            return False
        self._ids[message_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next connection after `failures` failed ones in a row (>= 1)."""
        return float(min(self.maximum, self.initial * self.factor ** max(0, failures - 1)))


@dataclass
class LiveStats:
    connections: int = 0
    reconnects: int = 0
    received: int = 0  # items from chat-downloader
    published: int = 0  # new messages sent to Kafka
    duplicates: int = 0  # already seen (replayed by a reconnect)
    skipped: int = 0  # items that are not chat (placeholders, tickers, deletions ...)
    rejected: int = 0  # broken items, sent to dead-letters
    stream_recorded: bool = False  # the streams row (URL, title, status) is in PostgreSQL
    ended: bool = False  # the stream's chat ended (rather than we were stopped)
    errors: list[str] = field(default_factory=list)  # one line per failed connection
    started: float = field(default_factory=time.monotonic)

    def describe(self, target: LiveTarget) -> str:
        elapsed = time.monotonic() - self.started
        how = "chat ended" if self.ended else "stopped"
        return (
            f"live {target.url} ({target.platform}, stream {target.stream_id}): {how} after {elapsed:.0f} s; "
            f"{self.published} messages published{'' if self.stream_recorded else ' (stream not recorded)'}, "
            f"{self.duplicates} duplicates dropped, "
            f"{self.skipped} non-chat items skipped, {self.rejected} rejected to dead-letters, "
            f"{self.reconnects} reconnect(s)"
        )


# ---------------------------------------------------------------- one connection, in a thread


class _Connection:
    """Runs the blocking chat iterator in a daemon thread; the loop reads `(kind, payload)` events.

    kinds: "opened" (the chat object), "item" (a dict), "end" (None), "error" (the exception).
    The thread waits for room in a bounded window, so a slow consumer slows the iterator down."""

    def __init__(self, factory: IteratorFactory, target: LiveTarget, window: int = 1000) -> None:
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._room = threading.Semaphore(window)
        self._abandon = threading.Event()
        self._thread = threading.Thread(
            target=self._pump, args=(factory, target), name="chat-iterator", daemon=True
        )
        self._thread.start()

    def _emit(self, kind: str, payload: Any) -> bool:
        while not self._room.acquire(timeout=0.2):
            if self._abandon.is_set():
                return False
        if self._abandon.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _pump(self, factory: IteratorFactory, target: LiveTarget) -> None:
        try:
            chat = factory(target)
            if not self._emit("opened", chat):
                return
            for item in chat:
                if not self._emit("item", item):
                    return
            self._emit("end", None)
        except BaseException as error:  # noqa: BLE001 - every failure is reported to the loop
            self._emit("error", error)

    def consumed(self) -> None:
        self._room.release()

    def abandon(self) -> None:
        """Stop taking items; a thread blocked inside chat-downloader exits at its next item."""
        self._abandon.set()


# ---------------------------------------------------------------- the loop


class LiveProducer:
    """Chat of one live stream -> Kafka (+ its streams row in PostgreSQL, with `pool`). `await run(stop)`
    until stopped or ended."""

    def __init__(
        self,
        target: LiveTarget,
        publisher: KafkaPublisher,
        *,
        pool: asyncpg.Pool | None = None,
        factory: IteratorFactory = chat_downloader_iterator,
        backoff: Backoff = Backoff(),
        max_failures: int = 10,
        end_after: int = 3,
        seen_capacity: int = 100_000,
        db_interval: float = 2.0,
        on_progress: Callable[[LiveStats], None] | None = None,
    ) -> None:
        self.target = target
        self.publisher = publisher
        self.pool = pool
        self.factory = factory
        self.backoff = backoff
        self.max_failures = max_failures
        self.end_after = end_after
        self.seen = SeenIds(seen_capacity)
        self.db_interval = db_interval  # idle wake-up: retry recording the stream, notice a stop
        self.on_progress = on_progress
        self.stats = LiveStats()
        self._title: str | None = None

    async def run(self, stop: asyncio.Event) -> LiveStats:
        failures = 0  # failed connections in a row
        empty_ends = 0  # clean ends in a row that brought nothing new
        try:
            while not stop.is_set():
                self.stats.connections += 1
                published_before = self.stats.published
                outcome, error = await self._one_connection(stop)
                if outcome == "stopped":
                    break
                progressed = self.stats.published > published_before
                if outcome == "error":
                    assert error is not None
                    if is_permanent(error):
                        raise InputError(f"chat of {self.target.url} is not available: {type(error).__name__}: {error}")
                    self.stats.errors.append(f"{type(error).__name__}: {error}")
                    failures = 0 if progressed else failures + 1
                    empty_ends = 0
                    if failures >= self.max_failures:
                        raise RetriesExceeded(
                            f"chat of {self.target.url} failed {failures} times in a row; last error: "
                            f"{self.stats.errors[-1]}"
                        )
                else:  # a clean end: a live chat that ends for good ends again at once
                    failures = 0
                    empty_ends = 0 if progressed else empty_ends + 1
                    if empty_ends >= self.end_after:
                        self.stats.ended = True
                        break
                self.stats.reconnects += 1
                self._report()
                await _wait(stop, self.backoff.delay(max(failures, empty_ends, 1)))
        finally:
            try:
                await self.publisher.flush()
            finally:
                await self._record_stream(last_try=True)  # even when Kafka failed
        return self.stats

    async def _one_connection(self, stop: asyncio.Event) -> tuple[str, BaseException | None]:
        connection = _Connection(self.factory, self.target)
        stopping = asyncio.ensure_future(stop.wait())
        index = 0
        try:
            while True:
                getting = asyncio.ensure_future(connection.events.get())
                done, _ = await asyncio.wait(
                    {getting, stopping}, timeout=self.db_interval, return_when=asyncio.FIRST_COMPLETED
                )
                if getting not in done:
                    getting.cancel()
                    if stopping in done:
                        return "stopped", None
                    await self._record_stream()  # idle: retry a failed write
                    continue
                kind, payload = getting.result()
                connection.consumed()
                if kind == "opened":
                    self._opened(payload)
                elif kind == "item":
                    index += 1
                    await self._handle(payload, index)
                elif kind == "end":
                    return "end", None
                else:
                    return "error", payload
        finally:
            stopping.cancel()
            connection.abandon()

    def _opened(self, chat: object) -> None:
        chat_id = getattr(chat, "id", None)
        if self.target.stream_id is None:
            self.target.stream_id = str(chat_id) if chat_id else _slug(self.target.url)
        title = getattr(chat, "title", None)
        self._title = str(title) if title else self._title

    async def _handle(self, item: Any, index: int) -> None:
        from producers.readers.base import clip_raw
        from producers.readers.chat_downloader import item_to_message

        self.stats.received += 1
        assert self.target.stream_id is not None
        try:
            message = item_to_message(item, stream_id=self.target.stream_id, platform=self.target.platform)
        except (ValueError, TypeError, KeyError) as error:
            self.stats.rejected += 1
            await self.publisher.publish_dead_letter(
                DeadLetter(
                    source=DEAD_LETTER_SOURCE,
                    location=f"{self.target.url}#connection {self.stats.connections} item {index}",
                    reason=str(error) or type(error).__name__,
                    raw=clip_raw(item),
                )
            )
            return
        if message is None:
            self.stats.skipped += 1
            return
        if not self.seen.add(message.message_id):
            self.stats.duplicates += 1
            return
        await self.publisher.publish(message)
        self.stats.published += 1
        await self._record_stream()
        self._report()

    async def _record_stream(self, *, last_try: bool = False) -> None:
        """The streams row (URL, title, status "live"), once a message was published. A failed write is
        tried again later; on the last try it is an error (the messages are in Kafka all the same)."""
        if self.pool is None or self.stats.stream_recorded or self.stats.published == 0:
            return
        from infra.repository import upsert_stream

        try:
            await upsert_stream(
                self.pool, platform=self.target.platform, stream_id=self.target.stream_id or "",
                url=self.target.url, title=self._title, status="live", source="live",
            )
        except (TimeoutError, OSError, _postgres_error()) as error:
            if last_try:
                raise DatabaseUnavailable(
                    f"could not record stream {self.target.stream_id} in PostgreSQL ({error}); its "
                    f"{self.stats.published} messages are in Kafka. Check DONORCAST_DATABASE_URL."
                ) from None
            self.stats.errors.append(f"PostgreSQL: {error}")
            return
        self.stats.stream_recorded = True

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats)


def _postgres_error() -> type[Exception]:
    import asyncpg

    return asyncpg.PostgresError  # type: ignore[no-any-return]


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


def _slug(url: str) -> str:
    parts = urlsplit(url)
    return re.sub(r"[^A-Za-z0-9@._-]+", "-", f"{parts.hostname}{parts.path}").strip("-")[:200]


# ---------------------------------------------------------------- CLI


async def _live_main(
    settings: Settings,
    target: LiveTarget,
    bootstrap: str,
    database_url: str | None,
    factory: IteratorFactory,
    on_progress: Callable[[LiveStats], None] | None,
    stats_out: list[LiveStats],
) -> LiveStats:
    from producers.publisher import KafkaPublisher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    presses = 0

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        stop.set()
        if presses > 1 and main_task is not None:  # second Ctrl-C: do not wait for the flush
            main_task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    pool = None
    try:
        if database_url is not None:
            from infra.postgres import create_pool

            pool = await create_pool(database_url)
        async with KafkaPublisher(settings, bootstrap=bootstrap) as publisher:
            producer = LiveProducer(target, publisher, pool=pool, factory=factory, on_progress=on_progress)
            stats_out.append(producer.stats)
            return await producer.run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if pool is not None:
            await pool.close()


def live_command(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="YouTube or Twitch URL of a live stream")],
    stream_id: Annotated[
        str | None, typer.Option("--stream-id", help="store under this stream id (default: from the URL)")
    ] = None,
    save: Annotated[bool, typer.Option("--save/--no-save", help="record the stream (URL, title) in PostgreSQL; "
                                       "the worker stores the messages")] = True,
    allow_any_host: Annotated[
        bool, typer.Option("--allow-any-host", help="accept URLs of sites other than YouTube and Twitch")
    ] = False,
) -> None:
    """Follow a live stream's chat into Kafka (and PostgreSQL) until Ctrl-C or the chat ends."""
    run_live_cli(ctx, url, stream_id=stream_id, save=save, allow_any_host=allow_any_host)


def run_live_cli(
    ctx: typer.Context,
    url: str,
    *,
    stream_id: str | None = None,
    save: bool = True,
    allow_any_host: bool = False,
    factory: IteratorFactory = chat_downloader_iterator,
) -> LiveStats:
    """The body of `donorcast live`, with the chat source injectable (tests, other sources)."""
    from rich.console import Console

    from infra.cli import settings_from
    from infra.services import running_services
    from producers.replay import note_started_services

    try:
        target = resolve_target(url, allow_any_host=allow_any_host, stream_id=stream_id)
    except InputError as error:
        raise typer.BadParameter(str(error), param_hint="URL") from None
    settings = settings_from(ctx)
    console = Console(stderr=True)
    last_shown = [0.0]

    def show(stats: LiveStats) -> None:
        now = time.monotonic()
        if now - last_shown[0] >= 1.0:
            last_shown[0] = now
            rate = stats.published / max(now - stats.started, 1e-9)
            console.print(
                f"[dim]{stats.published} published ({rate:.1f} msg/s), {stats.duplicates} duplicates, "
                f"{stats.reconnects} reconnects[/dim]",
                highlight=False,
            )

    stats_out: list[LiveStats] = []
    with running_services(settings, postgres=save, keep=True) as endpoints:
        note_started_services(endpoints.started)
        assert endpoints.kafka_bootstrap is not None
        console.print(f"following {target.url} ({target.platform}); Ctrl-C stops")
        try:
            stats = asyncio.run(
                _live_main(settings, target, endpoints.kafka_bootstrap, endpoints.database_url if save else None,
                           factory, show, stats_out)
            )
        except (KeyboardInterrupt, asyncio.CancelledError):
            if stats_out:
                print(stats_out[0].describe(target))
            print("aborted")
            raise typer.Exit(130) from None
    print(stats.describe(target))
    return stats


__all__: Sequence[str] = (
    "ALLOWED_HOSTS", "Backoff", "LiveProducer", "LiveStats", "LiveTarget", "SeenIds",
    "chat_downloader_iterator", "live_command", "resolve_target", "run_live_cli", "stream_id_from_url",
)
