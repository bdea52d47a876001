"""Rolling per-viewer sequences: the last N input messages of each viewer in each stream, with their
embeddings (float16 bytes), times and ids, in two changelog-backed faust Tables.

Why two tables and not one value per viewer: Tansu keeps every changelog record forever (no
compaction), and a whole 64-message sequence of 384-d float16 vectors is ~50 KB. Rewriting it on
every message would grow the broker by tens of MB per second at our rates. So the sequence is a ring:

- `viewer_to_sequence`   key "stream|viewer"          -> `ViewerSequence` (counters, times, last score;
                                                          a few hundred bytes of JSON)
- `viewer_slot_to_message` key "stream|viewer<US>slot" -> one `StoredMessage` (id, times, text,
                                                          float16 embedding; ~0.9 KB)

so one message costs one slot write plus one small header write. Both tables put every key on the
partition of its "stream|viewer" part (the chat-messages key), so a viewer's rows are recovered by
whichever worker owns that chat-messages partition: no repartition topic.

Appending is idempotent: the header remembers the newest source offset applied, and a message id
already in the window is not appended twice, so at-least-once redelivery after a crash leaves the
sequence exactly as if every message had been seen once.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream_agents.validate import Incoming

SLOT_SEPARATOR = "\x1f"  # ASCII unit separator: never part of a stream or viewer id we produce
_SLOT_FORMAT = struct.Struct("<BIddHIH")  # version, number, timestamp, seconds_since_start, id/text/dim lengths
_SLOT_VERSION = 1


def slot_key(viewer_key: str, slot: int) -> str:
    return f"{viewer_key}{SLOT_SEPARATOR}{slot}"


def viewer_key_of_slot(key: str) -> str:
    return key.rpartition(SLOT_SEPARATOR)[0]


def split_viewer_key(key: str) -> tuple[str, str]:
    """'stream|viewer' -> (stream, viewer); the viewer id may itself contain '|'."""
    stream_id, _, viewer_id = key.partition("|")
    return stream_id, viewer_id


# ---------------------------------------------------------------- one stored message

@dataclass(frozen=True)
class StoredMessage:
    """One input message as the sequence keeps it."""

    message_id: str
    number: int  # 1-based position among the viewer's input messages in this stream
    timestamp: float  # unix seconds, event time
    seconds_since_start: float
    text: str  # raw text: re-embedded if the promoted model brings another encoder
    embedding: np.ndarray  # (D,) float16

    def to_bytes(self) -> bytes:
        message_id, text = self.message_id.encode(), self.text.encode()
        vector = np.ascontiguousarray(self.embedding, dtype="<f2")
        head = _SLOT_FORMAT.pack(
            _SLOT_VERSION, self.number, self.timestamp, self.seconds_since_start,
            len(message_id), len(text), vector.shape[0],
        )
        return head + message_id + text + vector.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> StoredMessage:
        version, number, timestamp, since_start, id_len, text_len, dim = _SLOT_FORMAT.unpack_from(data)
        if version != _SLOT_VERSION:
            raise ValueError(f"unknown stored-message format version {version}")
        at = _SLOT_FORMAT.size
        message_id = data[at : at + id_len].decode()
        at += id_len
        text = data[at : at + text_len].decode()
        at += text_len
        embedding = np.frombuffer(data, dtype="<f2", count=dim, offset=at)
        return cls(message_id, number, timestamp, since_start, text, embedding)

    def with_embedding(self, embedding: np.ndarray) -> StoredMessage:
        return StoredMessage(
            self.message_id, self.number, self.timestamp, self.seconds_since_start, self.text,
            np.asarray(embedding, dtype=np.float16),
        )


# ---------------------------------------------------------------- the per-viewer header

@dataclass
class ViewerSequence:
    """Everything about one viewer in one stream except the stored messages themselves."""

    capacity: int  # ring size, fixed when the viewer first appears (a settings change cannot misread it)
    count: int = 0  # input messages appended so far in this stream
    last_offset: int = -1  # newest chat-messages offset of an input applied (redelivery is skipped)
    last_paid_offset: int = -1  # the same for paid events
    viewer_name: str = ""
    origin: float | None = None  # stream time origin (unix s) used for messages without offset_seconds
    first_time: float | None = None
    last_time: float | None = None
    last_produced_at: float | None = None
    previous_seconds: float | None = None  # seconds_since_start of the newest message that left the ring
    updated_at: float = 0.0  # wall clock of the last change: idle expiry when a stream stops sending
    space: str = ""  # embedding space (encoder) of the stored vectors
    probability: float | None = None
    model_version: str = ""
    paid_events: int = 0
    first_paid_at: float | None = None
    rank_before_paid: int | None = None  # rank when the viewer first paid: live hit-rate@k
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ViewerSequence:
        return cls(**json.loads(data))

    def numbers(self) -> range:
        """Message numbers currently held, oldest first."""
        return range(max(1, self.count - self.capacity + 1), self.count + 1)

    def slot(self, number: int) -> int:
        return (number - 1) % self.capacity


def is_duplicate(header: ViewerSequence, window: list[StoredMessage], offset: int, message_id: str) -> bool:
    """Already applied: an offset at or before the newest applied one (redelivery after a crash),
    or an id already in the window (a producer that sent the same message twice)."""
    return offset <= header.last_offset or any(m.message_id == message_id for m in window)


def append(
    header: ViewerSequence,
    window: list[StoredMessage],
    *,
    message_id: str,
    timestamp: float,
    since_start: float,
    text: str,
    embedding: np.ndarray,
    offset: int,
    now: float,
) -> StoredMessage:
    """Add one message to the header and the in-memory window (oldest first); returns the stored message.
    The caller writes it to its slot. Pure: no table access."""
    header.count += 1
    stored = StoredMessage(
        message_id, header.count, timestamp, since_start, text, np.asarray(embedding, dtype=np.float16)
    )
    window.append(stored)
    while len(window) > header.capacity:
        header.previous_seconds = window.pop(0).seconds_since_start
    header.last_offset = max(header.last_offset, offset)
    header.first_time = timestamp if header.first_time is None else header.first_time
    header.last_time = timestamp if header.last_time is None else max(header.last_time, timestamp)
    header.updated_at = now
    return stored


class Activity(Protocol):
    updated_at: float
    last_time: float | None


def is_idle(header: Activity, *, now: float, stream_clock: float | None, idle_seconds: float) -> bool:
    """Expired: no message for `idle_seconds` of stream time (replays run faster than the wall clock),
    or of wall time (a stream that stopped sending has no clock any more)."""
    if now - header.updated_at > idle_seconds:
        return True
    return (
        stream_clock is not None
        and header.last_time is not None
        and stream_clock - header.last_time > idle_seconds
    )


# ---------------------------------------------------------------- the two tables

class SequenceStore:
    """Reads and writes viewer sequences in the two tables (any mapping works: tests use dicts)."""

    def __init__(self, headers: Any, slots: Any, capacity: int) -> None:
        self.headers = headers
        self.slots = slots
        self.capacity = capacity

    def header(self, key: str) -> ViewerSequence | None:
        data = self.headers.get(key)
        return None if data is None else ViewerSequence.from_bytes(data)

    def header_or_new(self, key: str) -> ViewerSequence:
        return self.header(key) or ViewerSequence(capacity=self.capacity)

    def window(self, key: str, header: ViewerSequence) -> list[StoredMessage]:
        """The stored messages, oldest first. A missing slot (never expected) is skipped, not invented."""
        window = []
        for number in header.numbers():
            data = self.slots.get(slot_key(key, header.slot(number)))
            if data is None:
                continue
            stored = StoredMessage.from_bytes(data)
            if stored.number == number:
                window.append(stored)
        return window

    def write_message(self, key: str, header: ViewerSequence, stored: StoredMessage) -> None:
        self.slots[slot_key(key, header.slot(stored.number))] = stored.to_bytes()

    def save(self, key: str, header: ViewerSequence) -> None:
        self.headers[key] = header.to_bytes()

    def delete(self, key: str, header: ViewerSequence | None = None) -> None:
        header = header or self.header(key)
        if header is None:
            return
        for number in header.numbers():
            self.slots.pop(slot_key(key, header.slot(number)), None)
        self.headers.pop(key, None)

    def items(self, keep: Callable[[str], bool] = lambda key: True) -> list[tuple[str, ViewerSequence]]:
        """Every (key, header) whose key `keep` accepts (e.g. only partitions this worker owns)."""
        return [(key, ViewerSequence.from_bytes(data)) for key, data in list(self.headers.items()) if keep(key)]


# ---------------------------------------------------------------- one micro-batch's view of a viewer

@dataclass
class ViewerUpdate:
    """One viewer touched by the current micro-batch: its header and window, loaded once."""

    key: str
    header: ViewerSequence
    window: list[StoredMessage]
    newest: Incoming | None = None  # newest input message of this viewer in the batch
    appended: list[StoredMessage] = field(default_factory=list)
    duplicates: int = 0
    changed: bool = False


def load_updates(store: SequenceStore, keys: Sequence[str]) -> dict[str, ViewerUpdate]:
    updates = {}
    for key in dict.fromkeys(keys):
        header = store.header(key)
        if header is None:
            updates[key] = ViewerUpdate(key, store.header_or_new(key), [])
        else:
            updates[key] = ViewerUpdate(key, header, store.window(key, header))
    return updates
