"""Event contracts: what travels on Kafka and between packages. JSON on the wire, pydantic v2.

Every event carries `schema_version`; a consumer rejects versions it does not know with a
validation error naming the field, and the record goes to `dead-letters` (never silently dropped).
"""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

MAX_TEXT_CHARS = 4000  # YouTube caps chat at 200 chars; anything longer is a broken or hostile record
EARLIEST_TIMESTAMP = datetime(2005, 1, 1, tzinfo=UTC)  # before YouTube existed: a unit bug, not chat
FUTURE_TOLERANCE = timedelta(days=2)
# Bounds on every number that is stored or summed: a value outside them is a broken or hostile record
# (two amounts of 1.7e308 overflow PostgreSQL's sum and break a stream's summary for good).
MAX_EVENT_USD = 100_000.0  # one payment; YouTube caps a Super Chat at 500 USD, Twitch and others stay far below
MAX_EVENT_UNITS = 1e10  # one payment in a currency without a rate (e.g. LBP, IRR): still far above any real one
MAX_EVENT_COUNT = 1e7  # bits, gifted memberships and subs: a count, currency XXX
MAX_OFFSET_SECONDS = 10 * 366 * 86400.0  # a stream older than ten years (either side of its start)
MAX_INT32 = 2**31 - 1  # PostgreSQL integer columns (rank, n_messages)


def max_amount(currency: str | None) -> float:
    """The largest amount one event may carry in this currency (per-currency table in infra.money)."""
    from infra.money import USD_PER_UNIT  # infra.money imports this module

    if currency is None or currency == "XXX":
        return MAX_EVENT_COUNT
    rate = USD_PER_UNIT.get(currency)
    return MAX_EVENT_USD / rate if rate else MAX_EVENT_UNITS


class MessageKind(StrEnum):
    TEXT = "text"
    PAID_MESSAGE = "paid_message"  # Super Chat
    PAID_STICKER = "paid_sticker"  # Super Sticker
    MEMBERSHIP_NEW = "membership_new"  # bought a membership
    MEMBERSHIP_GIFT = "membership_gift"  # bought memberships for others
    MEMBERSHIP_GIFT_RECEIVED = "membership_gift_received"  # was given one: not a payment by this viewer
    MEMBERSHIP_MILESTONE = "membership_milestone"  # renewal announcement of an existing member
    BITS = "bits"  # Twitch cheer
    SUBSCRIPTION = "subscription"  # Twitch sub / resub
    GIFT_SUBSCRIPTION = "gift_subscription"  # Twitch gifted subs
    DONATION = "donation"  # YouTube Giving / charity announcement
    SYSTEM = "system"  # engagement, mode changes, ...: kept, never scored


# Events where the viewer pays now: the `paid` label and the live outcome marker.
PAID_KINDS = frozenset(
    {
        MessageKind.PAID_MESSAGE,
        MessageKind.PAID_STICKER,
        MessageKind.MEMBERSHIP_NEW,
        MessageKind.MEMBERSHIP_GIFT,
        MessageKind.BITS,
        MessageKind.SUBSCRIPTION,
        MessageKind.GIFT_SUBSCRIPTION,
        MessageKind.DONATION,
    }
)
# Events whose text or existence reveals money or membership: never part of a model input.
NON_INPUT_KINDS = PAID_KINDS | {
    MessageKind.MEMBERSHIP_GIFT_RECEIVED,
    MessageKind.MEMBERSHIP_MILESTONE,
    MessageKind.SYSTEM,
}

Platform = Literal["youtube", "twitch", "other"]


# U+0000 cannot be stored in PostgreSQL text and lone surrogates cannot be encoded as UTF-8 JSON:
# one such character would fail a whole COPY batch or a Kafka send. They never occur in real chat
# text, so NUL is stripped and a lone surrogate becomes U+FFFD; the rest is kept as it was, and a
# ChatMessage counts what was changed in `sanitized_chars` (the flag: > 0).
_NUL = "\x00"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: object, changed: list[int]) -> object:
    if isinstance(value, str):
        if _NUL not in value and (value.isascii() or _SURROGATE.search(value) is None):
            return value  # the common case, without building a new string
        nuls = value.count(_NUL)
        text, surrogates = _SURROGATE.subn("\ufffd", value.replace(_NUL, "") if nuls else value)
        changed[0] += nuls + surrogates
        return text
    if isinstance(value, list | tuple):
        return type(value)(_storable(item, changed) for item in value)
    return value


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _replace_unstorable_characters(cls, data: object) -> object:
        if isinstance(data, dict):
            changed = [0]
            data = {key: _storable(value, changed) for key, value in data.items()}
            if changed[0] and "sanitized_chars" in cls.model_fields:
                before = data.get("sanitized_chars", 0)
                data["sanitized_chars"] = (before if isinstance(before, int) else 0) + changed[0]
        return data


def _plausible_time(value: datetime | None) -> datetime | None:
    """A real moment of chat: after 2005, and not in the future (a unit or clock bug otherwise)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value < EARLIEST_TIMESTAMP:
        raise ValueError(f"timestamp {value.isoformat()} is before 2005: wrong unit?")
    if value > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise ValueError(f"timestamp {value.isoformat()} is in the future")
    return value


def _plausible_unix_time(value: float | None) -> float | None:
    if value is not None:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if not EARLIEST_TIMESTAMP.timestamp() <= value <= (datetime.now(UTC) + FUTURE_TOLERANCE).timestamp():
            raise ValueError(f"unix time {value!r} is before 2005 or in the future: wrong unit?")
    return value


class ChatMessage(Event):
    """One chat item of one stream, whatever its source."""

    schema_version: Literal[1] = 1
    platform: Platform = "youtube"
    stream_id: str = Field(min_length=1, max_length=200)
    message_id: str = Field(min_length=1, max_length=300)
    timestamp: datetime
    offset_seconds: float | None = Field(None, ge=-MAX_OFFSET_SECONDS, le=MAX_OFFSET_SECONDS,
                                         description="seconds since stream start (replays)")
    author_id: str | None = Field(None, max_length=200, description="channel id where the source has one")
    author_name: str = Field("", max_length=500)
    text: str = ""
    kind: MessageKind = MessageKind.TEXT
    # currency before amount: the amount's bound depends on it (pydantic validates in this order)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217; XXX = unknown")
    amount: float | None = Field(None, ge=0, description="at most max_amount(currency) per event")
    amount_text: str | None = Field(None, max_length=100, description="as shown, e.g. '¥5,000'")
    badges: tuple[str, ...] = ()
    is_member: bool = False
    is_moderator: bool = False
    is_owner: bool = False
    truncated: bool = False
    sanitized_chars: int = Field(0, ge=0, le=MAX_INT32,
                                 description="NUL characters stripped and lone surrogates replaced")
    replayed_at: datetime | None = None
    produced_at: float | None = Field(None, description="unix seconds the producer sent it (latency)")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def viewer_id(self) -> str:
        """Stable viewer key: the channel id where the source has one, else the display name."""
        return self.author_id if self.author_id else f"name:{self.author_name}"

    @property
    def is_paid(self) -> bool:
        return self.kind in PAID_KINDS

    @property
    def is_model_input(self) -> bool:
        return self.kind not in NON_INPUT_KINDS

    @model_validator(mode="before")
    @classmethod
    def _truncate_huge_text(cls, data: object) -> object:
        # A huge message is kept, cut, and flagged: dropping it would lose a viewer's activity.
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "viewer_id"}  # computed; in our own JSON
            text = data.get("text")
            if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
                data = {**data, "text": text[:MAX_TEXT_CHARS], "truncated": True}
        return data

    _times = field_validator("timestamp", "replayed_at")(_plausible_time)
    _produced = field_validator("produced_at")(_plausible_unix_time)

    @field_validator("amount", "offset_seconds")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("amount")
    @classmethod
    def _sane_amount(cls, value: float | None, info: ValidationInfo) -> float | None:
        currency = info.data.get("currency")
        if value is not None and value > (ceiling := max_amount(currency)):
            raise ValueError(f"{value:.6g} {currency or '(no currency)'} is above the per-event maximum "
                             f"{ceiling:.6g}: a broken or hostile record")
        return value

    @model_validator(mode="after")
    def _paid_events_have_amounts(self) -> ChatMessage:
        if self.kind in (MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER) and self.amount is None:
            raise ValueError(f"{self.kind.value} needs an amount")
        return self


class DonorScore(Event):
    """The donor likelihood of one viewer in one stream, after their latest message."""

    schema_version: Literal[1] = 1
    stream_id: str = Field(min_length=1)
    viewer_id: str = Field(min_length=1)
    viewer_name: str = ""
    probability: float = Field(ge=0.0, le=1.0)
    rank: int | None = Field(None, ge=1, le=MAX_INT32, description="rank within the stream when scored")
    n_messages: int = Field(ge=0, le=MAX_INT32)
    model_version: str
    top_message_ids: tuple[str, ...] = ()
    event_time: datetime = Field(description="timestamp of the newest message the score saw")
    scored_at: datetime
    produced_at: float | None = Field(None, description="produce time of the newest message (latency)")

    _times = field_validator("event_time", "scored_at")(_plausible_time)
    _produced = field_validator("produced_at")(_plausible_unix_time)

    @field_validator("probability")
    @classmethod
    def _finite_probability(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


MAX_RAW_BYTES = 64 * 1024  # what a dead letter keeps of a record: enough to debug, never a memory hazard


class DeadLetter(Event):
    """A record we could not use, with where it came from and why; the raw bytes are kept."""

    schema_version: Literal[1] = 1
    source: str = Field(description="component that rejected it, e.g. 'stream_agents.validate'")
    location: str = Field("", description="topic[partition]@offset or file:line")
    reason: str
    raw: str = Field("", description="the original record as text, at most 64 KiB (readable, maybe lossy)")
    raw_base64: str = Field("", description="the exact bytes, when `raw` cannot hold them (invalid UTF-8, NUL)")
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(cls, raw: bytes | str | None, *, source: str, location: str, reason: str) -> DeadLetter:
        """The letter for one record as it was read. Text cannot hold every byte string (invalid UTF-8,
        and NUL is stripped like everywhere else), so such a record's bytes also go in base64: replaying
        a fixed record must not depend on what decoding kept."""
        data = (raw or b"") if not isinstance(raw, str) else raw.encode("utf-8", "surrogatepass")
        data = data[:MAX_RAW_BYTES]
        text = data.decode("utf-8", errors="replace")
        lossless = "\x00" not in text and text.encode("utf-8", "surrogatepass") == data
        return cls(source=source, location=location, reason=reason, raw=text,
                   raw_base64="" if lossless else base64.b64encode(data).decode("ascii"))

    def raw_bytes(self) -> bytes:
        """The record's bytes exactly as they were read (cut at 64 KiB)."""
        return base64.b64decode(self.raw_base64) if self.raw_base64 else self.raw.encode()


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad field, e.g. `timestamp: timestamp ... is in the future`."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{field}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_chat_message(raw: bytes | str) -> ChatMessage:
    """Decode one wire record; raises ValueError with a field-level message."""
    try:
        return ChatMessage.model_validate_json(raw)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None
