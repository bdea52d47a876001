"""Every Kafka topic in one table: name, partitions, what the key is.

Keys are `stream_id|viewer_id` so that one viewer's messages stay in order on one partition and
the agents' per-viewer table needs no repartition.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    partitions: int | None = None  # None = settings.topic_partitions
    compacted: bool = False


CHAT_MESSAGES = TopicSpec("chat-messages", key="stream_id|viewer_id")
DEAD_LETTERS = TopicSpec("dead-letters", key="source", partitions=1)
DONOR_SCORES = TopicSpec("donor-scores", key="stream_id|viewer_id")

ALL_TOPICS: tuple[TopicSpec, ...] = (CHAT_MESSAGES, DEAD_LETTERS, DONOR_SCORES)


def topic_name(spec: TopicSpec, settings: Settings) -> str:
    return f"{settings.topic_prefix}{spec.name}"


def partitions_of(spec: TopicSpec, settings: Settings) -> int:
    return spec.partitions or settings.topic_partitions


def viewer_key(stream_id: str, viewer_id: str) -> bytes:
    return f"{stream_id}|{viewer_id}".encode()
