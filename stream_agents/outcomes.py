"""Paid events are outcomes, not inputs: "this viewer donated at t". They are recorded on the viewer's
header (changelog-backed: how many, when first, and the rank the viewer had just before paying),
which gives live precision@k and hit-rate@k per stream, and kept in a short in-memory log of recent
payments for the dashboard. The messages themselves reach PostgreSQL through the persist sink like
every other chat item. They never enter a sequence.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from stream_agents.embed import ViewerUpdate
from stream_agents.leaderboard import Leaderboards
from stream_agents.validate import Incoming

RECENT_PER_STREAM = 200


@dataclass(frozen=True)
class PaidOutcome:
    stream_id: str
    viewer_id: str
    viewer_name: str
    message_id: str
    kind: str
    amount: float | None
    currency: str | None
    amount_text: str | None
    at: float  # unix seconds, event time
    rank_before: int | None
    probability_before: float | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class OutcomeLog:
    """Recent payments per stream (what the dashboard marks); derived, bounded, lost on restart."""

    def __init__(self, per_stream: int = RECENT_PER_STREAM) -> None:
        self.per_stream = per_stream
        self.streams: dict[str, deque[PaidOutcome]] = {}

    def add(self, outcome: PaidOutcome) -> None:
        self.streams.setdefault(outcome.stream_id, deque(maxlen=self.per_stream)).append(outcome)

    def recent(self, stream_id: str) -> list[PaidOutcome]:
        return list(self.streams.get(stream_id, ()))

    def forget_stream(self, stream_id: str) -> None:
        self.streams.pop(stream_id, None)


def record_paid(
    updates: dict[str, ViewerUpdate], paid: Sequence[Incoming], boards: Leaderboards, log: OutcomeLog
) -> tuple[int, int]:
    """Apply paid events to their viewers' headers; returns (recorded, already applied before a restart)."""
    recorded = duplicates = 0
    now = time.time()
    for item in paid:
        update, message = updates[item.key], item.message
        header = update.header
        if item.offset <= header.last_paid_offset:
            duplicates += 1
            continue
        at = message.timestamp.timestamp()
        rank = boards.rank(item.key)
        header.paid_events += 1
        if header.first_paid_at is None:
            header.first_paid_at, header.rank_before_paid = at, rank
        header.last_paid_offset = item.offset
        header.viewer_name = message.author_name or header.viewer_name
        header.updated_at = now
        update.changed = True
        recorded += 1
        log.add(PaidOutcome(
            stream_id=message.stream_id, viewer_id=message.viewer_id, viewer_name=message.author_name,
            message_id=message.message_id, kind=message.kind.value, amount=message.amount,
            currency=message.currency, amount_text=message.amount_text, at=at, rank_before=rank,
            probability_before=header.probability,
        ))
    return recorded, duplicates
