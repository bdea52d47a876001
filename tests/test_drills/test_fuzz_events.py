"""Fuzz drill: the event validator (`infra.events.parse_chat_message` / `ChatMessage`).

FUZZ_EXAMPLES (3k) mutated records per path (wire bytes and in-memory dicts), derandomised so CI sees the same cases
every run. Each case must end as a valid ChatMessage that keeps the contract's invariants, or as a
ValueError whose message names the bad field; anything else (another exception type, a message that
breaks an invariant) fails the drill.
"""

from __future__ import annotations

import json
import math
import random
import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from infra.events import (
    EARLIEST_TIMESTAMP,
    FUTURE_TOLERANCE,
    MAX_TEXT_CHARS,
    ChatMessage,
    MessageKind,
    parse_chat_message,
)
from tests.test_drills.hostile import (
    FUZZ_EXAMPLES,
    HUGE_TEXT,
    Wire,
    mutate,
    mutation_programs,
    program_from,
    seeds,
)

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BASE_RECORDS: list[dict[str, object]] = [
    {"stream_id": "s1", "message_id": "m1", "timestamp": "2024-05-01T12:00:00Z", "author_id": "UC1",
     "author_name": "Ann", "text": "hello", "badges": ["Member (2 months)"], "is_member": True},
    {"stream_id": "s1", "message_id": "m2", "timestamp": "2024-05-01T12:00:01+09:00", "author_name": "Bob",
     "kind": "paid_message", "amount": 5.0, "currency": "USD", "amount_text": "$5.00", "text": "take it",
     "offset_seconds": 61.5, "produced_at": 1714564800.5},
    {"platform": "twitch", "stream_id": "v1", "message_id": "m3", "timestamp": 1714564800, "author_id": "42",
     "author_name": "cheer", "kind": "bits", "amount": 500, "currency": "XXX", "amount_text": "500 bits"},
    {"stream_id": "s2", "message_id": "m4", "timestamp": "2024-05-01T12:00:00", "kind": "membership_gift",
     "amount": 5, "currency": "XXX", "replayed_at": "2024-05-02T00:00:00Z", "truncated": False,
     "schema_version": 1, "viewer_id": "ignored: computed"},
    {"stream_id": "s3", "message_id": "m5", "timestamp": "2024-05-01T12:00:00Z", "kind": "paid_sticker",
     "amount": 0.99, "currency": "EUR", "text": ""},
]
FIELDS = {*ChatMessage.model_fields, "record"}


def check_error(error: ValueError, record: object) -> None:
    """Each '; '-separated part names a field of the contract, a key of the record, or 'record'."""
    message = str(error)
    assert message, "an empty error message"
    keys = FIELDS | ({str(k) for k in record} if isinstance(record, dict) else set())
    for part in message.split("; "):
        named = any(part.startswith((f"{key}: ", f"{key}.")) for key in keys)
        assert named and part.split(": ", 1)[-1].strip(), f"not a field-level reason: {part[:200]!r}"


def check_message(message: ChatMessage, source_text: object) -> None:
    """The invariants every consumer relies on."""
    assert message.stream_id and message.message_id
    assert len(message.text) <= MAX_TEXT_CHARS
    if isinstance(source_text, str) and len(source_text) > MAX_TEXT_CHARS:
        assert message.truncated and message.text == source_text[:MAX_TEXT_CHARS]
    assert message.timestamp.tzinfo is not None
    assert EARLIEST_TIMESTAMP <= message.timestamp <= datetime.now(UTC) + FUTURE_TOLERANCE
    if message.amount is not None:
        assert math.isfinite(message.amount) and message.amount >= 0
    if message.currency is not None:
        assert re.fullmatch(r"[A-Z]{3}", message.currency)
    if message.kind in (MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER):
        assert message.amount is not None
    for value in (message.offset_seconds, message.produced_at):
        assert value is None or math.isfinite(value)
    assert message.viewer_id == (message.author_id or f"name:{message.author_name}")


def json_or(raw: bytes, default: object) -> object:
    """What the damaged bytes still decode to (their keys are what an error may name)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return default


class WireCase(tuple):  # type: ignore[type-arg]
    """(bytes on the wire, the record they were built from, whether the bytes were damaged)."""

    def __repr__(self) -> str:
        return f"WireCase(seed={self[3]}, raw={self[0]!r})"


def wire_case(seed: int) -> WireCase:
    """A mutated valid record as JSON, then maybe cut short, given invalid UTF-8 or made non-JSON."""
    rng = random.Random(seed)
    record = mutate(rng.choice(BASE_RECORDS), program_from(rng.randrange(2**62)))
    if rng.random() < 0.1 and isinstance(record, dict):
        record = {**record, "text": HUGE_TEXT}
    raw = json.dumps(record, allow_nan=True, default=str).encode("utf-8", "surrogatepass")
    damage = rng.randrange(6)
    if damage == 1:
        raw = raw[: rng.randint(0, len(raw))]
    elif damage == 2:
        at = rng.randint(0, len(raw))
        raw = raw[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\", b'"', b"]"]) + raw[at:]
    return WireCase((Wire(raw), record, damage in (1, 2), seed))


wire_records = seeds.map(wire_case)


@FUZZ
@given(case=wire_records)
@example(case=(b'{"stream_id":"s","message_id":"m","timestamp":"2024-01-01T00:00:00Z","amount":NaN}', None, True, -1))
@example(case=(b'{"stream_id":"s","message_id":"m","timestamp":"2999-01-01T00:00:00Z"}', None, True, -1))
@example(case=(b"[" * 100_000, None, True, -1))
@example(case=(b"\xff\xfe\x00", None, True, -1))
def test_wire_records_become_a_valid_message_or_a_field_level_error(case: tuple[bytes, object, bool, int]) -> None:
    raw, record, damaged, _ = case
    try:
        message = parse_chat_message(raw)
    except ValueError as error:
        check_error(error, json_or(raw, record))
        return
    check_message(message, record.get("text") if isinstance(record, dict) and not damaged else None)
    # What a consumer re-publishes parses back to the same event.
    assert parse_chat_message(message.model_dump_json().encode()) == message


@FUZZ
@given(base=st.sampled_from(BASE_RECORDS), program=mutation_programs)
def test_in_memory_records_raise_only_validation_errors(base: dict[str, object], program: list) -> None:
    record = mutate(base, program)
    try:
        message = ChatMessage.model_validate(record)
    except ValidationError as error:
        assert error.errors(), "a ValidationError with no errors"
        return
    check_message(message, record.get("text") if isinstance(record, dict) else None)


def test_out_of_order_and_far_future_timestamps() -> None:
    """Order is not the validator's business (readers sort, replays sort); the future is."""
    older = parse_chat_message(json.dumps({**BASE_RECORDS[0], "timestamp": "2024-05-01T11:00:00Z"}))
    newer = parse_chat_message(json.dumps(BASE_RECORDS[0]))
    assert older.timestamp < newer.timestamp
    with pytest.raises(ValueError, match=r"^timestamp: .*in the future"):
        parse_chat_message(json.dumps({**BASE_RECORDS[0], "timestamp": "2100-01-01T00:00:00Z"}))
    with pytest.raises(ValueError, match=r"^timestamp: .*before 2005"):
        parse_chat_message(json.dumps({**BASE_RECORDS[0], "timestamp": 86_400}))
    with pytest.raises(ValueError, match=r"^amount: "):
        parse_chat_message(json.dumps({**BASE_RECORDS[1], "amount": -5}))
    with pytest.raises(ValueError, match=r"^currency: "):
        parse_chat_message(json.dumps({**BASE_RECORDS[1], "currency": "usd"}))
