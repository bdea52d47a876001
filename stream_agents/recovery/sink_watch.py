"""The PostgreSQL sink's part of a broker reset: notice it from the sink's own consumer, and count
what the sink never wrote.

The sink reads chat-messages and donor-scores with its own consumer group, so it sees a restarted
embedded broker on its own: offsets going backwards. It then asks the broker watch (which resets the
worker if the cluster id changed), and the watch asks it, during the reset, how many chat-messages
records the old broker held that the sink never fetched, so never wrote (`lost_on_broker_reset`,
storage).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any


class SinkWatch:
    def __init__(self, chat_topic: str, check: Callable[[], Awaitable[Any]]) -> None:
        self.chat_topic = chat_topic
        self.check = check  # the broker watch's cluster-id check
        self.next_offsets: dict[Any, int] = {}  # TopicPartition -> after the newest record fetched (so written)
        self.seen_end: dict[Any, int] = {}  # chat-messages TopicPartition -> end seen on the current broker

    async def fetched(self, records: dict[Any, Sequence[Any]], consumer: Any, offsets: dict[Any, int]) -> None:
        """A fetched batch, before it is written (from then on it is written or dead-lettered)."""
        if self.went_backwards(records):
            await self.check()
        self.observe_ends(consumer)
        self.next_offsets.update(offsets)

    def went_backwards(self, records: dict[Any, Sequence[Any]]) -> bool:
        return any(items and items[0].offset < self.next_offsets.get(tp, 0) for tp, items in records.items())

    def observe_ends(self, consumer: Any) -> None:
        for tp in consumer.assignment():
            end = consumer.highwater(tp) if tp.topic == self.chat_topic else None
            if end is not None and end > self.seen_end.get(tp, -1):
                self.seen_end[tp] = end

    def lost_on_reset(self) -> int:
        """The broker lost its storage: chat-messages records it held that the sink never fetched (so never
        wrote); offsets restart from the new broker's."""
        lost = sum(max(0, end - self.next_offsets.get(tp, 0)) for tp, end in self.seen_end.items())
        self.seen_end.clear()
        self.next_offsets.clear()
        return lost
