from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from infra.events import (
    MAX_RAW_BYTES,
    MAX_TEXT_CHARS,
    ChatMessage,
    DeadLetter,
    DonorScore,
    MessageKind,
    parse_chat_message,
)

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def make(**fields: object) -> ChatMessage:
    base = {"stream_id": "s1", "message_id": "m1", "timestamp": NOW, "author_id": "UCabc", "author_name": "Ann"}
    return ChatMessage(**{**base, **fields})


def test_round_trip_keeps_every_field_and_text_exactly() -> None:
    text = "héllo 🎉 \u200b مرحبا <b>x</b>"
    message = make(text=text, kind=MessageKind.PAID_MESSAGE, amount=5.0, currency="USD", badges=("Member (2 months)",))
    again = parse_chat_message(message.model_dump_json())
    assert again == message
    assert again.text == text
    assert json.loads(message.model_dump_json())["viewer_id"] == "UCabc"


def test_viewer_falls_back_to_display_name_without_channel_id() -> None:
    assert make(author_id=None).viewer_id == "name:Ann"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timestamp": datetime.now(UTC) + timedelta(days=30)}, "timestamp"),
        ({"timestamp": datetime(1999, 1, 1, tzinfo=UTC)}, "timestamp"),
        ({"amount": float("nan"), "kind": "paid_message", "currency": "USD"}, "amount"),
        ({"amount": -3.0}, "amount"),
        ({"currency": "dollars"}, "currency"),
        ({"kind": "bogus"}, "kind"),
        ({"stream_id": ""}, "stream_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_payload_names_the_field(change: dict[str, object], field: str) -> None:
    payload = json.loads(make().model_dump_json()) | change
    with pytest.raises(ValueError, match=rf"^{field}"):
        parse_chat_message(json.dumps(payload, default=str))


def test_paid_message_without_amount_is_rejected() -> None:
    with pytest.raises(ValidationError, match="needs an amount"):
        make(kind=MessageKind.PAID_MESSAGE)


def test_huge_text_is_truncated_and_flagged_not_dropped() -> None:
    message = make(text="x" * (MAX_TEXT_CHARS * 3))
    assert len(message.text) == MAX_TEXT_CHARS
    assert message.truncated


def test_garbage_bytes_give_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Invalid JSON|invalid"):
        parse_chat_message(b"\xff\xfe{not json")


def test_paid_and_input_kinds() -> None:
    assert make(kind=MessageKind.PAID_STICKER, amount=2.0, currency="EUR").is_paid
    assert not make(kind=MessageKind.PAID_STICKER, amount=2.0, currency="EUR").is_model_input
    assert make().is_model_input and not make().is_paid
    assert not make(kind=MessageKind.MEMBERSHIP_MILESTONE).is_model_input


def test_score_and_dead_letter_contracts() -> None:
    score = DonorScore(
        stream_id="s", viewer_id="v", probability=0.3, rank=1, n_messages=2, model_version="v1",
        event_time=NOW, scored_at=NOW,
    )
    assert DonorScore.model_validate_json(score.model_dump_json()) == score
    with pytest.raises(ValidationError, match="probability"):
        DonorScore(**(score.model_dump() | {"probability": 1.5}))
    letter = DeadLetter(source="test", reason="bad", raw="{")
    assert letter.schema_version == 1 and letter.failed_at.tzinfo is not None


@pytest.mark.parametrize("raw", [b'{"text": "plain"}', b"\x00\x01 NUL first", b"\xff not UTF-8", "lone \ud800"])
def test_a_dead_letter_keeps_the_exact_bytes_of_any_record(raw: bytes | str) -> None:
    letter = DeadLetter.of(raw, source="test", location="t[0]@1", reason="bad")
    wire = DeadLetter.model_validate_json(letter.model_dump_json())
    exact = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    assert wire.raw_bytes() == exact
    assert bool(wire.raw_base64) == (exact != b'{"text": "plain"}')  # base64 only where text cannot hold it
    big = DeadLetter.of(b"x" * (MAX_RAW_BYTES + 10), source="test", location="", reason="big")
    assert big.raw_bytes() == b"x" * MAX_RAW_BYTES and not big.raw_base64


def test_nul_is_stripped_counted_and_flagged() -> None:
    message = make(text="a\x00b\x00", author_name="\x00Ann", badges=("Mem\x00ber",))
    assert (message.text, message.author_name, message.badges) == ("ab", "Ann", ("Member",))
    assert message.sanitized_chars == 4
    assert parse_chat_message(message.model_dump_json().encode()) == message  # the count survives the wire
    assert make(text="clean").sanitized_chars == 0


def test_lone_surrogates_become_replacement_characters_and_are_counted() -> None:
    message = make(text="cut \ud83d emoji", author_name="\udfff")
    assert message.text == "cut \ufffd emoji" and message.author_name == "\ufffd"
    assert message.sanitized_chars == 2
    assert parse_chat_message(message.model_dump_json().encode()) == message  # encodable


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 1.7e308, "kind": "paid_message", "currency": "USD"}, r"^amount: 1\.7e\+308 USD is above the per-event maximum 100000"),
        ({"amount": 100_001.0, "kind": "donation", "currency": "USD"}, r"^amount: 100001 USD is above"),
        ({"amount": 20_000_000.0, "kind": "paid_message", "currency": "JPY"}, r"^amount: 2e\+07 JPY is above"),
        ({"amount": 1e11, "kind": "paid_message", "currency": "LBP"}, r"^amount: 1e\+11 LBP is above"),
        ({"amount": 1e8, "kind": "bits", "currency": "XXX"}, r"^amount: 1e\+08 XXX is above"),
        ({"offset_seconds": 1e300}, "^offset_seconds"),
        ({"offset_seconds": -4e8}, "^offset_seconds"),
        ({"offset_seconds": float("inf")}, "^offset_seconds"),
        ({"produced_at": 1e18}, "^produced_at"),  # nanoseconds where seconds belong
        ({"replayed_at": datetime(1970, 1, 1, tzinfo=UTC)}, "^replayed_at"),
    ],
)
def test_numbers_outside_sane_bounds_are_refused_with_the_reason(change: dict[str, object], field: str) -> None:
    payload = json.loads(make().model_dump_json()) | change
    with pytest.raises(ValueError, match=field):
        parse_chat_message(json.dumps(payload, default=str))


def test_real_amounts_and_offsets_pass() -> None:
    assert make(kind=MessageKind.PAID_MESSAGE, amount=500.0, currency="USD").amount == 500.0
    assert make(kind=MessageKind.PAID_MESSAGE, amount=50_000.0, currency="JPY").amount == 50_000.0
    assert make(kind=MessageKind.PAID_MESSAGE, amount=7_500_000.0, currency="IDR").amount == 7_500_000.0
    assert make(kind=MessageKind.BITS, amount=100_000.0, currency="XXX").amount == 100_000.0
    assert make(offset_seconds=-3600.0).offset_seconds == -3600.0  # chat before the stream started
    assert make(offset_seconds=30 * 86400.0).offset_seconds == 30 * 86400.0


def test_scores_are_bounded_for_their_integer_columns_and_times() -> None:
    base = {"stream_id": "s", "viewer_id": "v", "probability": 0.3, "n_messages": 2, "model_version": "v1",
            "event_time": NOW, "scored_at": NOW}
    for change, field in (({"n_messages": 2**31}, "n_messages"), ({"rank": 2**31}, "rank"),
                          ({"event_time": datetime(1970, 1, 1, tzinfo=UTC)}, "event_time"),
                          ({"scored_at": datetime(9999, 1, 1, tzinfo=UTC)}, "scored_at")):
        with pytest.raises(ValidationError, match=field):
            DonorScore(**(base | change))
