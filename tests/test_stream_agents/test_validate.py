"""Every record is sorted into exactly one kind; rejects carry reason and location."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from infra.events import ChatMessage, MessageKind
from stream_agents.validate import Incoming, sort_events


def event(value: bytes | None, offset: int, key: bytes | None = None, partition: int = 2) -> SimpleNamespace:
    return SimpleNamespace(value=value, message=SimpleNamespace(topic="t-chat", partition=partition,
                                                                offset=offset, key=key))


def message(kind: MessageKind = MessageKind.TEXT, **fields: object) -> bytes:
    base = {"stream_id": "s1", "message_id": f"id-{kind.value}", "timestamp": datetime(2026, 3, 1, tzinfo=UTC),
            "author_id": "UC1", "author_name": "a", "text": "hi", "kind": kind}
    return ChatMessage(**{**base, **fields}).model_dump_json().encode()


def test_sorted_into_exactly_one_kind_with_reasons_for_rejects() -> None:
    events = [
        event(message(), 0, key=b"s1|UC1"),
        event(message(MessageKind.PAID_MESSAGE, amount=5.0, currency="USD"), 1, key=b"s1|UC1"),
        event(message(MessageKind.MEMBERSHIP_MILESTONE), 2, key=b"s1|UC1"),
        event(b"{broken", 3),
        event(None, 4),
        event(b'{"stream_id": "s1", "message_id": "x", "timestamp": "2026-03-01T00:00:00Z", "amount": -1}', 5),
        event(message(text="key mismatch"), 6, key=b"other"),
    ]
    batch = sort_events(events)
    assert len(batch) == len(events)
    assert [i.offset for i in batch.inputs] == [0, 6]
    assert [i.offset for i in batch.paid] == [1]
    assert [i.offset for i in batch.other] == [2]
    assert [d.location for d in batch.rejected] == ["t-chat[2]@3", "t-chat[2]@4", "t-chat[2]@5"]
    assert "amount" in batch.rejected[2].reason and batch.rejected[0].raw == "{broken"
    assert batch.rejected[1].reason == "record: empty value"
    first: Incoming = batch.inputs[0]
    assert first.key == "s1|UC1" and first.key_matches and not batch.inputs[1].key_matches
