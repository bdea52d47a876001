"""`donorcast ingest PATH...`: chat files of any supported format -> PostgreSQL, bulk and idempotent.

Each file is read by its reader (format detected or given) in a worker thread, batch by batch,
while the previous batch is written with COPY (`infra.repository.save_messages`: duplicates by
(platform, message_id) are skipped, so running the same ingest twice inserts nothing the second
time). What a file tells about its streams (channel, title, URL) goes into `streams`. Records that
cannot be read are never lost: each is written, with its location and reason, to
`<state_dir>/rejected/<UTC time>.jsonl`, and the summary shows the first few.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from infra.errors import InputError
from infra.events import ChatMessage
from producers.readers import ChatReader, Rejected, expand, reader_for
from producers.readers.detect import format_name

SHOWN_REASONS = 5


@dataclass
class IngestSummary:
    files: int = 0
    messages: int = 0  # valid messages read
    new_rows: int = 0  # of which were not in the database yet
    viewers: int = 0
    members: int = 0  # distinct viewers seen with a member badge
    paid_events: int = 0
    streams: int = 0
    rejected: int = 0
    first_rejections: list[str] = field(default_factory=list)
    rejected_path: Path | None = None
    skipped: Counter[str] = field(default_factory=Counter)  # items deliberately not stored, by type
    failed_files: list[str] = field(default_factory=list)  # files we could not read at all, with why
    warnings: list[str] = field(default_factory=list)
    formats: Counter[str] = field(default_factory=Counter)  # files per format
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        return self.messages - self.new_rows

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class _Tally:
    """Running counts over everything read (viewer sets live here, not in the summary)."""

    def __init__(self, summary: IngestSummary, rejected_path: Path | None) -> None:
        self.summary = summary
        self.viewers: set[str] = set()
        self.members: set[str] = set()
        self.streams: set[tuple[str, str]] = set()
        self.rejected_path = rejected_path
        self._rejected_file: IO[str] | None = None

    def message(self, message: ChatMessage) -> None:
        self.summary.messages += 1
        viewer = message.viewer_id
        self.viewers.add(viewer)
        if message.is_member:
            self.members.add(viewer)
        if message.is_paid:
            self.summary.paid_events += 1

    def rejected(self, record: Rejected) -> None:
        self.summary.rejected += 1
        if len(self.summary.first_rejections) < SHOWN_REASONS:
            self.summary.first_rejections.append(f"{record.location}: {record.reason}")
        if self.rejected_path is not None:
            if self._rejected_file is None:
                self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
                self._rejected_file = self.rejected_path.open("a", encoding="utf-8")
                self.summary.rejected_path = self.rejected_path
            self._rejected_file.write(record.to_json() + "\n")

    def close(self) -> None:
        self.summary.viewers = len(self.viewers)
        self.summary.members = len(self.members)
        self.summary.streams = len(self.streams)
        if self._rejected_file is not None:
            self._rejected_file.close()


def _next_batch(events: Iterator[ChatMessage | Rejected], size: int, tally: _Tally) -> list[ChatMessage]:
    """Up to `size` messages (runs in a worker thread: parsing overlaps the database write)."""
    batch: list[ChatMessage] = []
    for event in events:
        if isinstance(event, Rejected):
            tally.rejected(event)
            continue
        tally.message(event)
        batch.append(event)
        if len(batch) >= size:
            break
    return batch


async def _ingest_file(reader: ChatReader, pool, tally: _Tally, batch_size: int, on_batch) -> None:  # type: ignore[no-untyped-def]
    from infra.repository import save_messages

    events = reader.read()
    source = f"file:{reader.name}"
    pending: asyncio.Task[int] | None = None
    while True:
        batch = await asyncio.to_thread(_next_batch, events, batch_size, tally)
        if pending is not None:
            tally.summary.new_rows += await pending
        if not batch:
            break
        pending = asyncio.create_task(save_messages(pool, batch, source=source))
        on_batch(len(batch))
    await _save_streams(reader, pool)


async def _save_streams(reader: ChatReader, pool) -> None:  # type: ignore[no-untyped-def]
    from infra.repository import upsert_channel, upsert_stream

    for info in reader.streams.values():
        if info.channel_id:
            await upsert_channel(pool, info.platform, info.channel_id, name=info.channel_name)
        if info.channel_id or info.title or info.url:
            await upsert_stream(pool, platform=info.platform, stream_id=info.stream_id, channel_id=info.channel_id,
                                title=info.title, url=info.url)


def _files(paths: Sequence[Path | str], summary: IngestSummary) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        try:
            files.extend(expand(Path(path)))
        except InputError as error:
            summary.failed_files.append(str(error))
    return files


async def ingest(
    paths: Sequence[Path | str],
    pool,  # type: ignore[no-untyped-def]
    *,
    format: str = "auto",
    batch_size: int = 5000,
    progress: bool = True,
    rejected_path: Path | None = None,
) -> IngestSummary:
    """Read every file under `paths` and store its messages; returns what was read and stored."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    fmt = format_name(format)
    summary = IngestSummary()
    tally = _Tally(summary, rejected_path)
    started = time.perf_counter()
    files = _files(paths, summary)
    explicit = {Path(p) for p in paths}
    bar = Progress(
        TextColumn("[bold]{task.description}", justify="left"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[messages]:,} msgs  {task.fields[rate]:,.0f}/s"), TimeElapsedColumn(),
        disable=not progress, transient=False,
    )
    with bar:
        task = bar.add_task("ingest", total=len(files), messages=0, rate=0.0)

        def on_batch(count: int) -> None:
            elapsed = time.perf_counter() - started
            bar.update(task, messages=summary.messages, rate=summary.messages / elapsed if elapsed else 0.0)

        for file in files:
            bar.update(task, description=file.name[:40])
            try:
                reader = reader_for(file, fmt, in_folder=file not in explicit)
            except InputError as error:
                summary.failed_files.append(str(error))
                reader = None
            if reader is None:  # a README or index file inside a data folder, or unreadable
                if file not in explicit:
                    summary.skipped["file of no chat format"] += 1
                bar.advance(task)
                continue
            records_before = summary.messages + summary.rejected
            try:
                await _ingest_file(reader, pool, tally, batch_size, on_batch)
                summary.files += 1
                summary.formats[reader.name] += 1
                if file in explicit and summary.messages + summary.rejected == records_before and not reader.skipped:
                    summary.failed_files.append(_nothing_in(file, reader))
            except InputError as error:
                summary.failed_files.append(str(error))
            tally.streams.update((info.platform, info.stream_id) for info in reader.streams.values())
            summary.skipped.update(reader.skipped)
            summary.warnings.extend(reader.warnings)
            bar.advance(task)
            on_batch(0)
    tally.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _nothing_in(file: Path, reader: ChatReader) -> str:
    """Why a named file that was read gave no record at all (e.g. an empty file read with --format)."""
    size = file.stat().st_size
    cause = "empty file (0 bytes)" if size == 0 else f"{size:,} bytes, but no chat record in them"
    return f"{file}: {cause} (read as {reader.name})"


# ---------------------------------------------------------------- command

def rejected_file(state_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(state_dir) / "rejected" / f"{stamp}.jsonl"


def print_summary(summary: IngestSummary) -> None:
    """The counts table (only when messages were read: a table of zeros says nothing) and notes."""
    from rich.table import Table

    console = Console()
    if summary.messages:
        table = Table("ingest", "count", title="ingest summary")
        rows = [
            ("files read", summary.files), ("streams", summary.streams), ("messages read", summary.messages),
            ("new rows", summary.new_rows), ("already stored", summary.duplicates), ("viewers", summary.viewers),
            ("members", summary.members), ("paid events", summary.paid_events), ("rejected", summary.rejected),
        ]
        for name, value in rows:
            table.add_row(name, f"{value:,}")
        table.add_row("rate", f"{summary.rate:,.0f} msgs/s in {summary.seconds:.1f} s")
        console.print(table)
    if summary.skipped:
        console.print("skipped on purpose: " + ", ".join(f"{k} {v:,}" for k, v in summary.skipped.most_common()))
    for reason in summary.first_rejections:
        console.print(f"[yellow]rejected[/yellow] {escape(reason)}", highlight=False, soft_wrap=True)
    if summary.rejected_path:
        console.print(f"all {summary.rejected:,} rejected records: {summary.rejected_path}", soft_wrap=True)
    for warning in summary.warnings[:10]:
        console.print(f"[yellow]warning[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)


def print_failures(summary: IngestSummary, console: Console) -> int:
    """Files that could not be read, each with its cause, and the verdict; returns the exit code."""
    for failure in summary.failed_files:
        console.print(f"[red]not read[/red] {escape(failure)}", highlight=False, soft_wrap=True)
    if summary.messages == 0:
        if summary.failed_files or summary.first_rejections:
            console.print("[red]nothing could be read[/red] (see the reasons above)")
        elif summary.skipped:
            console.print("[red]nothing could be read[/red]: no chat file among the given paths")
        else:
            console.print("[red]nothing could be read[/red]: no files under the given paths")
        return 1
    if summary.failed_files:
        console.print(f"[red]{len(summary.failed_files)} file(s) not read[/red] (above); "
                      "everything else was read and stored")
        return 1
    return 0


def ingest_command(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="chat files or folders (folders are read recursively)")],
    format: Annotated[str, typer.Option("--format", "-f", help="chat format, or auto to detect per file")] = "auto",
    batch_size: Annotated[int, typer.Option(help="messages per database write")] = 5000,
) -> None:
    """Read chat files of any supported format into PostgreSQL (idempotent: re-running adds nothing)."""
    from infra.cli import settings_from
    from infra.postgres import create_pool
    from infra.repository import migrate
    from infra.services import running_services
    from producers.readers import supported_formats

    console = Console(stderr=True)
    try:
        format_name(format)
    except InputError as error:
        console.print(f"[red]error:[/red] {error}")
        console.print(f"formats: {supported_formats()}")
        raise typer.Exit(2) from None
    settings = settings_from(ctx)
    rejected_path = rejected_file(settings.state_dir)

    async def run(database_url: str) -> IngestSummary:
        pool = await create_pool(database_url)
        try:
            await migrate(pool)
            return await ingest(paths, pool, format=format, batch_size=batch_size, rejected_path=rejected_path)
        finally:
            await pool.close()

    with running_services(settings, kafka=False) as endpoints:
        assert endpoints.database_url is not None
        summary = asyncio.run(run(endpoints.database_url))
    print_summary(summary)
    code = print_failures(summary, console)
    if code:
        raise typer.Exit(code)
