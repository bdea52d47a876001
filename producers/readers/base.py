"""What every reader shares: the `Rejected` record, stream metadata, and the `ChatReader` base.

A reader turns one file of one source format into `ChatMessage | Rejected`, in file order (or
time order where the source is unsorted). It never raises for a bad record: the record becomes a
`Rejected` with its location and a field-level reason, and reading goes on. It never touches
Kafka or PostgreSQL; `producers.ingest` and the publishers do that.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError

from infra.events import ChatMessage, DeadLetter, describe_validation_error

T = TypeVar("T")

MAX_RAW_BYTES = 64 * 1024  # same cap as DeadLetter.raw: enough to debug, never a memory hazard


def clip_raw(raw: object) -> str:
    """The original record as text, at most 64 KiB (UTF-8), for a Rejected or a dead letter."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(raw)
    # A lone surrogate (a JSON "\ud800" escape) cannot be written as UTF-8: keep it visible as U+FFFD.
    encoded = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode("utf-8")
    if len(encoded) <= MAX_RAW_BYTES:
        return encoded.decode("utf-8")
    return encoded[:MAX_RAW_BYTES].decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class Rejected:
    """A record we could not turn into a ChatMessage, kept with where it was and why."""

    source: str  # reader name, e.g. "chat-downloader"
    location: str  # "file:line" or "file#item N"
    reason: str
    raw: str  # the original record, at most 64 KiB

    def to_dead_letter(self) -> DeadLetter:
        return DeadLetter(source=f"producers.readers.{self.source}", location=self.location,
                          reason=self.reason, raw=self.raw)

    def to_json(self) -> str:
        return json.dumps(
            {"source": self.source, "location": self.location, "reason": self.reason, "raw": self.raw},
            ensure_ascii=False,
        )


@dataclass
class StreamInfo:
    """What a file tells about a stream besides its messages (used by ingest to fill `streams`)."""

    platform: str
    stream_id: str
    channel_id: str | None = None
    channel_name: str = ""
    title: str | None = None
    url: str | None = None


def build_message(fields: dict[str, Any]) -> ChatMessage:
    """ChatMessage(**fields), with a one-line field-level ValueError instead of pydantic's report."""
    try:
        return ChatMessage(**fields)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None


def reason_of(error: Exception) -> str:
    """A one-line, field-level reason for a failed record."""
    if isinstance(error, ValidationError):
        return describe_validation_error(error)
    text = str(error) or type(error).__name__
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


@dataclass
class ChatReader:
    """Base of all readers: one file, one `read()`.

    Subclasses set `name` (the format name `open_reader` accepts) and implement `read()`.
    While reading they fill `streams` (metadata), `skipped` (items deliberately not turned into
    messages, by type: tickers, placeholders, deletions ...) and `warnings` (file-level notes).
    """

    path: Path
    stream_id: str | None = None  # override for formats whose files do not name their stream
    streams: dict[str, StreamInfo] = field(default_factory=dict, init=False)
    skipped: Counter[str] = field(default_factory=Counter, init=False)
    warnings: list[str] = field(default_factory=list, init=False)

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def read(self) -> Iterator[ChatMessage | Rejected]:
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers for subclasses

    def reject(self, location: str, error: Exception | str, raw: object) -> Rejected:
        reason = error if isinstance(error, str) else reason_of(error)
        return Rejected(source=self.name, location=location, reason=reason, raw=clip_raw(raw))

    def at_line(self, line_no: int) -> str:
        return f"{self.path}:{line_no}"

    def at_item(self, index: int) -> str:
        return f"{self.path}#item {index}"

    def note_stream(self, info: StreamInfo) -> None:
        known = self.streams.get(info.stream_id)
        if known is None:
            self.streams[info.stream_id] = info
            return
        for name in ("channel_id", "title", "url"):
            if getattr(known, name) is None and getattr(info, name) is not None:
                setattr(known, name, getattr(info, name))
        if not known.channel_name and info.channel_name:
            known.channel_name = info.channel_name

    def guarded(self, location: str, raw: object, build: Callable[[], T]) -> T | Rejected:
        """Run one record's conversion; any failure becomes a Rejected at `location`."""
        try:
            return build()
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as error:
            return self.reject(location, error, raw)
