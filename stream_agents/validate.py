"""The bad-message policy: every record read from chat-messages is parsed with the event contract and
sorted into exactly one of four kinds. Nothing is dropped silently:

- rejected  -> a `DeadLetter` (reason, topic[partition]@offset, the raw record) for the dead-letters topic;
- paid      -> an outcome (the viewer donated at t): recorded, persisted, never part of a sequence;
- other     -> valid but never a model input (system notices, gifts received, milestones): persisted, counted;
- inputs    -> the messages that are embedded and appended to the viewer's sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.events import ChatMessage, DeadLetter, parse_chat_message

SOURCE = "stream_agents.validate"


@dataclass(frozen=True)
class Incoming:
    """A valid message and where it was read."""

    message: ChatMessage
    key: str  # "stream|viewer", computed from the message (the table key)
    partition: int
    offset: int
    key_matches: bool  # the Kafka key was the viewer key: the producer partitioned it as we expect


@dataclass
class SortedBatch:
    inputs: list[Incoming] = field(default_factory=list)
    paid: list[Incoming] = field(default_factory=list)
    other: list[Incoming] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    last_offsets: dict[int, int] = field(default_factory=dict)  # partition -> newest offset in the batch

    def __len__(self) -> int:
        return len(self.inputs) + len(self.paid) + len(self.other) + len(self.rejected)


def location(topic: str, partition: int, offset: int) -> str:
    return f"{topic}[{partition}]@{offset}"


def dead_letter(raw: bytes | str | None, reason: str, where: str) -> DeadLetter:
    return DeadLetter.of(raw, source=SOURCE, location=where, reason=reason)


def classify(raw: bytes | None, kafka_key: bytes | None, topic: str, partition: int, offset: int) -> Incoming | DeadLetter:
    """One record -> a valid `Incoming` or the `DeadLetter` saying why not."""
    where = location(topic, partition, offset)
    if not raw:
        return dead_letter(raw, "record: empty value", where)
    try:
        message = parse_chat_message(raw)
    except ValueError as error:
        return dead_letter(raw, str(error) or "record: not a chat message", where)
    key = f"{message.stream_id}|{message.viewer_id}"
    return Incoming(message, key, partition, offset, key_matches=kafka_key == key.encode())


def in_offset_order(events: Sequence[Any]) -> dict[int, list[Any]]:
    """Events per partition, by offset, each offset once (a rebalance can deliver one twice)."""
    by_partition: dict[int, dict[int, Any]] = {}
    for event in events:
        by_partition.setdefault(event.message.partition, {}).setdefault(event.message.offset, event)
    return {p: [found[o] for o in sorted(found)] for p, found in by_partition.items()}


def sort_events(events: Sequence[Any]) -> SortedBatch:
    """faust events (raw bytes values) -> a SortedBatch, each list in read order."""
    batch = SortedBatch()
    for event in events:
        record = event.message
        item = classify(event.value, record.key, record.topic, record.partition, record.offset)
        batch.last_offsets[record.partition] = max(batch.last_offsets.get(record.partition, -1), record.offset)
        if isinstance(item, DeadLetter):
            batch.rejected.append(item)
        elif item.message.is_paid:
            batch.paid.append(item)
        elif item.message.is_model_input:
            batch.inputs.append(item)
        else:
            batch.other.append(item)
    return batch
