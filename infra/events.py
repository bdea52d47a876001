"""Event contracts: what travels on Kafka and between packages. JSON on the wire, pydantic v2.

Every event carries `schema_version`; a consumer rejects versions it does not know with a
validation error naming the field, and the record goes to `dead-letters` (never silently dropped).
"""

from __future__ import annotations

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
    computed_field,
    field_validator,
    model_validator,
)

MAX_TEXT_CHARS = 4000  # YouTube caps chat at 200 chars; anything longer is a broken or hostile record
EARLIEST_TIMESTAMP = datetime(2005, 1, 1, tzinfo=UTC)  # before YouTube existed: a unit bug, not chat
FUTURE_TOLERANCE = timedelta(days=2)


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
# text, so they become U+FFFD and the rest of the message is kept as it was.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: object) -> object:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list | tuple):
        return type(value)(_storable(item) for item in value)
    return value


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _replace_unstorable_characters(cls, data: object) -> object:
        if isinstance(data, dict):
            return {key: _storable(value) for key, value in data.items()}
        return data


class ChatMessage(Event):
    """One chat item of one stream, whatever its source."""

    schema_version: Literal[1] = 1
    platform: Platform = "youtube"
    stream_id: str = Field(min_length=1, max_length=200)
    message_id: str = Field(min_length=1, max_length=300)
    timestamp: datetime
    offset_seconds: float | None = Field(None, description="seconds since stream start (replays)")
    author_id: str | None = Field(None, max_length=200, description="channel id where the source has one")
    author_name: str = Field("", max_length=500)
    text: str = ""
    kind: MessageKind = MessageKind.TEXT
    amount: float | None = Field(None, ge=0)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217; XXX = unknown")
    amount_text: str | None = Field(None, max_length=100, description="as shown, e.g. '¥5,000'")
    badges: tuple[str, ...] = ()
    is_member: bool = False
    is_moderator: bool = False
    is_owner: bool = False
    truncated: bool = False
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

    @field_validator("timestamp", "replayed_at")
    @classmethod
    def _plausible_time(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value < EARLIEST_TIMESTAMP:
            raise ValueError(f"timestamp {value.isoformat()} is before 2005: wrong unit?")
        if value > datetime.now(UTC) + FUTURE_TOLERANCE:
            raise ValueError(f"timestamp {value.isoformat()} is in the future")
        return value

    @field_validator("amount", "offset_seconds", "produced_at")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
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
    rank: int | None = Field(None, ge=1, description="rank within the stream when scored")
    n_messages: int = Field(ge=0)
    model_version: str
    top_message_ids: tuple[str, ...] = ()
    event_time: datetime = Field(description="timestamp of the newest message the score saw")
    scored_at: datetime
    produced_at: float | None = Field(None, description="produce time of the newest message (latency)")

    @field_validator("probability")
    @classmethod
    def _finite_probability(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class DeadLetter(Event):
    """A record we could not use, with where it came from and why; the raw bytes are kept."""

    schema_version: Literal[1] = 1
    source: str = Field(description="component that rejected it, e.g. 'stream_agents.validate'")
    location: str = Field("", description="topic[partition]@offset or file:line")
    reason: str
    raw: str = Field("", description="the original record, decoded with replacement, at most 64 KiB")
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad field, e.g. `timestamp: timestamp ... is in the future`."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{field}: {item['msg']}")
    return "; ".join(parts)


def parse_chat_message(raw: bytes | str) -> ChatMessage:
    """Decode one wire record; raises ValueError with a field-level message."""
    try:
        return ChatMessage.model_validate_json(raw)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None
