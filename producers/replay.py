"""`donorcast replay`: archived streams back into Kafka, at their original pace or faster.

Each stream is replayed by its own asyncio task. A message is due at
`start + (its timestamp - the stream's first timestamp) / speed` on the monotonic clock, so sleeps
never accumulate drift: a late wake-up makes the next sleep shorter, not the schedule longer.
`--speed max` skips the schedule and sends as fast as the publisher accepts.

Events keep their source `timestamp` (event time) and gain `replayed_at` (wall time of the
replay); the publisher adds `produced_at`. Records a reader rejected go to the dead-letters topic
with their reason and location, before the stream they came with starts.

Sources: `--stream ID` reads a stream from PostgreSQL, `--file PATH` reads any chat file the
readers understand; a file holding several streams becomes several concurrent replays.

If the broker restarts with empty storage during a replay (the embedded broker), the publisher
recreates the topics and the summary says how many acknowledged messages that broker took with
it (producers/publisher.py); the replay itself goes on into the new broker.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from infra.errors import InputError
from infra.events import ChatMessage, DeadLetter

if TYPE_CHECKING:
    import asyncpg
    from rich.progress import Progress

    from infra.settings import Settings
    from producers.publisher import KafkaPublisher

YIELD_EVERY = 200  # at max speed, let other streams and the producer's sender run this often


# ---------------------------------------------------------------- what is replayed


def parse_speed(text: str | float) -> float | None:
    """'max' -> None (no schedule); otherwise a positive, finite factor ('10' = ten times faster)."""
    if isinstance(text, str) and text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"speed must be a positive number or 'max' (got {text!r})") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"speed must be a positive number or 'max' (got {text!r})")
    return value


@dataclass
class ReplaySource:
    """One stream's messages, in time order, and where they came from (for progress and summary)."""

    label: str
    stream_id: str
    messages: list[ChatMessage]


def split_by_stream(label: str, messages: Iterable[ChatMessage]) -> list[ReplaySource]:
    """One ReplaySource per stream id, in order of first appearance, each sorted by time (stable)."""
    groups: dict[str, list[ChatMessage]] = {}
    for message in messages:
        groups.setdefault(message.stream_id, []).append(message)
    sources = []
    for stream_id, items in groups.items():
        items.sort(key=lambda m: m.timestamp)
        name = label if len(groups) == 1 else f"{label} [{stream_id}]"
        sources.append(ReplaySource(label=name, stream_id=stream_id, messages=items))
    return sources


def sources_from_file(path: Path, format: str = "auto") -> tuple[list[ReplaySource], list[DeadLetter]]:
    """Read a chat file: its streams, and a dead letter for every record the reader rejected."""
    from producers.readers import read_chat_file

    messages: list[ChatMessage] = []
    rejected: list[DeadLetter] = []
    for item in read_chat_file(path, format=format):
        if isinstance(item, ChatMessage):
            messages.append(item)
        else:
            rejected.append(item.to_dead_letter())
    return split_by_stream(str(path), messages), rejected


async def sources_from_database(pool: asyncpg.Pool, stream_ids: Sequence[str]) -> list[ReplaySource]:
    from infra.repository import stream_messages

    sources = []
    for stream_id in stream_ids:
        messages = await stream_messages(pool, stream_id)
        if not messages:
            raise InputError(
                f"stream {stream_id!r} has no messages in PostgreSQL (see `donorcast ingest` / `donorcast collect`)"
            )
        sources.append(ReplaySource(label=f"stream {stream_id}", stream_id=stream_id, messages=messages))
    return sources


def sources_from_simulation(streams: Iterable[Any]) -> list[ReplaySource]:
    """SimulatedStream objects (anything with `.messages`) as replay sources."""
    sources: list[ReplaySource] = []
    for stream in streams:
        sources.extend(split_by_stream("simulated", stream.messages))
    for source in sources:
        source.label = f"simulated {source.stream_id}"
    return sources


# ---------------------------------------------------------------- replaying


@dataclass
class StreamResult:
    label: str
    stream_id: str
    total: int
    sent: int = 0
    source_seconds: float = 0.0  # event-time span of the stream
    wall_seconds: float = 0.0
    max_late_seconds: float = 0.0  # worst lag behind the schedule when a message was published


@dataclass
class ReplaySummary:
    speed: float | None
    streams: list[StreamResult] = field(default_factory=list)
    dead_letters: int = 0
    wall_seconds: float = 0.0
    broker_resets: list[Any] = field(default_factory=list)  # producers.publisher.BrokerReset

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.streams)

    @property
    def rate(self) -> float:
        return self.sent / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def describe(self) -> str:
        pace = "max" if self.speed is None else f"{self.speed:g}x"
        lines = [
            f"replayed {self.sent} messages of {len(self.streams)} stream(s) at {pace} in "
            f"{self.wall_seconds:.1f} s ({self.rate:,.0f} msg/s); {self.dead_letters} rejected record(s) "
            "sent to dead-letters"
        ]
        for s in self.streams:
            late = "" if self.speed is None else f", worst lag {s.max_late_seconds * 1000:.0f} ms"
            lines.append(
                f"  {s.label}: {s.sent}/{s.total} messages, {s.source_seconds:.0f} s of chat in "
                f"{s.wall_seconds:.1f} s{late}"
            )
        lines += [f"  warning: {reset.describe()}" for reset in self.broker_resets]
        return "\n".join(lines)


OnSent = Callable[[ReplaySource], None]


async def replay_source(
    publisher: KafkaPublisher,
    source: ReplaySource,
    *,
    speed: float | None,
    result: StreamResult | None = None,
    on_sent: OnSent | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> StreamResult:
    """Publish one stream's messages on its (scaled) schedule; returns what was sent."""
    result = result or StreamResult(source.label, source.stream_id, total=len(source.messages))
    if not source.messages:
        return result
    first = source.messages[0].timestamp
    result.source_seconds = (source.messages[-1].timestamp - first).total_seconds()
    started = clock()
    for index, message in enumerate(source.messages):
        if speed is not None:
            due = started + (message.timestamp - first).total_seconds() / speed
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.max_late_seconds = max(result.max_late_seconds, -delay)
        elif index % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
        await publisher.publish(message.model_copy(update={"replayed_at": datetime.now(UTC)}))
        result.sent += 1
        if on_sent is not None:
            on_sent(source)
    result.wall_seconds = clock() - started
    return result


async def replay(
    publisher: KafkaPublisher,
    sources: Sequence[ReplaySource],
    *,
    speed: float | None,
    dead_letters: Sequence[DeadLetter] = (),
    summary: ReplaySummary | None = None,
    on_sent: OnSent | None = None,
) -> ReplaySummary:
    """Dead letters first, then every source concurrently; returns after the publisher has flushed.

    Pass your own `summary` to read partial counts if the replay is interrupted."""
    summary = summary or ReplaySummary(speed=speed)
    started = time.monotonic()
    for letter in dead_letters:
        await publisher.publish_dead_letter(letter)
        summary.dead_letters += 1
    summary.streams = [StreamResult(s.label, s.stream_id, total=len(s.messages)) for s in sources]
    try:
        await asyncio.gather(
            *(
                replay_source(publisher, source, speed=speed, result=result, on_sent=on_sent)
                for source, result in zip(sources, summary.streams, strict=True)
            )
        )
        await publisher.flush()
        await publisher.check_broker()  # a restart after the last acknowledgement is reported too
    finally:
        summary.broker_resets = list(publisher.counters.resets)
        summary.wall_seconds = time.monotonic() - started
    return summary


# ---------------------------------------------------------------- progress display


def _progress() -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:,.0f} msg/s", style="cyan")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), speed_estimate_period=5.0,
    )


async def replay_with_progress(
    publisher: KafkaPublisher,
    sources: Sequence[ReplaySource],
    *,
    speed: float | None,
    dead_letters: Sequence[DeadLetter] = (),
    summary: ReplaySummary | None = None,
) -> ReplaySummary:
    """`replay` with a rich progress bar: one line for all streams, one per stream when there are few."""
    with _progress() as progress:
        total = progress.add_task("all streams", total=sum(len(s.messages) for s in sources))
        per_stream = {}
        if 1 < len(sources) <= 8:
            per_stream = {id(s): progress.add_task(f"  {s.label}", total=len(s.messages)) for s in sources}

        def advance(source: ReplaySource) -> None:
            progress.advance(total)
            if per_stream:
                progress.advance(per_stream[id(source)])

        return await replay(
            publisher, sources, speed=speed, dead_letters=dead_letters, summary=summary, on_sent=advance
        )


# ---------------------------------------------------------------- entry points


def note_started_services(started: list[str]) -> None:
    """Producers keep the embedded services they start (their messages must outlive them): say so."""
    if started:
        from rich.console import Console

        Console(stderr=True).print(
            f"[yellow]note:[/yellow] started embedded {' and '.join(started)}; they keep running for the "
            "worker to read. Stop them with `donorcast down`."
        )


async def _replay_main(
    settings: Settings,
    bootstrap: str,
    database_url: str | None,
    stream_ids: Sequence[str],
    file_sources: Sequence[ReplaySource],
    dead_letters: Sequence[DeadLetter],
    speed: float | None,
    summary: ReplaySummary,
    show_progress: bool = True,
) -> ReplaySummary:
    from producers.publisher import KafkaPublisher

    sources = list(file_sources)
    if stream_ids:
        from infra.postgres import create_pool

        assert database_url is not None
        pool = await create_pool(database_url)
        try:
            sources = await sources_from_database(pool, stream_ids) + sources
        finally:
            await pool.close()
    async with KafkaPublisher(settings, bootstrap=bootstrap) as publisher:
        run = replay_with_progress if show_progress else replay
        return await run(publisher, sources, speed=speed, dead_letters=dead_letters, summary=summary)


def replay_command(
    ctx: typer.Context,
    stream: Annotated[
        list[str] | None, typer.Option("--stream", help="stream id stored in PostgreSQL (repeatable)")
    ] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", help="chat file in any supported format (repeatable)", exists=True, dir_okay=False),
    ] = None,
    speed: Annotated[str, typer.Option(help="1 = real time, 10 = ten times faster, or max")] = "1",
    format: Annotated[str, typer.Option("--format", help="file format of --file (auto detects)")] = "auto",
) -> None:
    """Replay archived streams into Kafka, keeping their inter-message timing scaled by --speed."""
    from infra.cli import settings_from
    from infra.services import running_services

    stream_ids, paths = list(stream or []), list(file or [])
    if not stream_ids and not paths:
        raise typer.BadParameter("give at least one --stream ID or --file PATH")
    try:
        speed_value = parse_speed(speed)
    except InputError as error:
        raise typer.BadParameter(str(error), param_hint="--speed") from None
    settings = settings_from(ctx)

    file_sources: list[ReplaySource] = []
    dead_letters: list[DeadLetter] = []
    for path in paths:  # read files first: a bad path fails before any service starts
        sources, rejected = sources_from_file(path, format)
        file_sources += sources
        dead_letters += rejected

    summary = ReplaySummary(speed=speed_value)
    with running_services(settings, postgres=bool(stream_ids), keep=True) as endpoints:
        note_started_services(endpoints.started)
        assert endpoints.kafka_bootstrap is not None
        try:
            asyncio.run(
                _replay_main(
                    settings, endpoints.kafka_bootstrap, endpoints.database_url, stream_ids,
                    file_sources, dead_letters, speed_value, summary,
                )
            )
        except KeyboardInterrupt:
            print(summary.describe())
            print("interrupted")
            raise typer.Exit(130) from None
    print(summary.describe())


def publish_simulated(
    streams: Iterable[Any], settings: Settings, *, speed: str | float = "max", progress: bool = True
) -> ReplaySummary:
    """`donorcast simulate --to-kafka`: publish simulated streams (objects with `.messages`) to Kafka.

    Starts the embedded broker if none runs (and leaves it running); returns the summary."""
    from infra.services import running_services

    speed_value = parse_speed(speed)
    sources = sources_from_simulation(streams)
    summary = ReplaySummary(speed=speed_value)
    with running_services(settings, postgres=False, keep=True) as endpoints:
        note_started_services(endpoints.started)
        assert endpoints.kafka_bootstrap is not None
        return asyncio.run(
            _replay_main(
                settings, endpoints.kafka_bootstrap, None, (), sources, (), speed_value, summary, progress
            )
        )
