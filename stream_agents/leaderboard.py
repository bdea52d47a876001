"""Per-stream leaderboards: rank of a viewer by donor probability, top-k, activity for expiry.

This is an index, not state: every field comes from the `viewer_to_sequence` headers (which hold each
viewer's latest probability and times and are changelog-backed), and `Leaderboards.rebuild` recreates
it from them after a restart or rebalance. Keeping a whole leaderboard as a table value instead would
write the entire board to the changelog on every score.

With several workers each one ranks the viewers of the partitions it owns; the dashboard merges the
donor-scores topic for a global view.

Paid events are outcomes, not inputs: "this viewer donated at t". They are recorded on the viewer's
header (changelog-backed: how many, when first, and the rank the viewer had just before paying),
which gives live precision@k and hit-rate@k per stream, and kept in a short in-memory log of recent
payments for the dashboard. The messages themselves reach PostgreSQL through the persist sink like
every other chat item. They never enter a sequence.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

from sortedcontainers import SortedList

from stream_agents.sequences import ViewerSequence, ViewerUpdate, split_viewer_key
from stream_agents.validate import Incoming


@dataclass(frozen=True)
class BoardEntry:
    viewer_id: str
    viewer_name: str
    probability: float | None
    n_messages: int
    last_time: float | None
    updated_at: float
    paid_events: int = 0
    first_paid_at: float | None = None
    rank_before_paid: int | None = None
    model_version: str = ""

    @classmethod
    def from_header(cls, viewer_id: str, header: ViewerSequence) -> BoardEntry:
        return cls(
            viewer_id=viewer_id, viewer_name=header.viewer_name, probability=header.probability,
            n_messages=header.count, last_time=header.last_time, updated_at=header.updated_at,
            paid_events=header.paid_events, first_paid_at=header.first_paid_at,
            rank_before_paid=header.rank_before_paid, model_version=header.model_version,
        )


class Leaderboard:
    """One stream: viewers ordered by probability (highest first, ties by viewer id)."""

    def __init__(self) -> None:
        self.entries: dict[str, BoardEntry] = {}
        self._order: SortedList = SortedList()  # (-probability, viewer_id) for ranked viewers
        self.origin: float | None = None  # earliest stream time origin among its viewers

    def __len__(self) -> int:
        return len(self.entries)

    def update(self, entry: BoardEntry, origin: float | None = None) -> None:
        self.remove(entry.viewer_id)
        self.entries[entry.viewer_id] = entry
        if entry.probability is not None:
            self._order.add((-entry.probability, entry.viewer_id))
        if origin is not None and (self.origin is None or origin < self.origin):
            self.origin = origin

    def remove(self, viewer_id: str) -> None:
        old = self.entries.pop(viewer_id, None)
        if old is not None and old.probability is not None:
            self._order.discard((-old.probability, old.viewer_id))

    def rank(self, viewer_id: str) -> int | None:
        """1 = most likely donor; None for a viewer without a score."""
        entry = self.entries.get(viewer_id)
        if entry is None or entry.probability is None:
            return None
        return int(self._order.index((-entry.probability, viewer_id))) + 1

    def top(self, k: int) -> list[BoardEntry]:
        return [self.entries[viewer_id] for _, viewer_id in self._order[:k]]

    @property
    def clock(self) -> float | None:
        """Newest event time seen in the stream (its clock for idle expiry)."""
        times = [e.last_time for e in self.entries.values() if e.last_time is not None]
        return max(times) if times else None

    def precision_at(self, k: int) -> float | None:
        """Share of the current top-k who have paid in this stream."""
        top = self.top(k)
        return sum(1 for e in top if e.paid_events) / len(top) if top else None

    def hit_rate_at(self, k: int) -> float | None:
        """Share of payers whose rank just before their first payment was within the top k."""
        payers = [e for e in self.entries.values() if e.paid_events]
        if not payers:
            return None
        return sum(1 for e in payers if e.rank_before_paid is not None and e.rank_before_paid <= k) / len(payers)


class Leaderboards:
    """All streams this worker holds viewers of."""

    def __init__(self) -> None:
        self.streams: dict[str, Leaderboard] = {}
        self.stale = True  # rebuilt from the headers after startup and after every rebalance

    def board(self, stream_id: str) -> Leaderboard:
        board = self.streams.get(stream_id)
        if board is None:
            board = self.streams[stream_id] = Leaderboard()
        return board

    def update(self, key: str, header: ViewerSequence) -> None:
        stream_id, viewer_id = split_viewer_key(key)
        self.board(stream_id).update(BoardEntry.from_header(viewer_id, header), header.origin)

    def remove(self, key: str) -> None:
        stream_id, viewer_id = split_viewer_key(key)
        board = self.streams.get(stream_id)
        if board is not None:
            board.remove(viewer_id)
            if not board.entries:
                del self.streams[stream_id]

    def rank(self, key: str) -> int | None:
        stream_id, viewer_id = split_viewer_key(key)
        board = self.streams.get(stream_id)
        return board.rank(viewer_id) if board else None

    def origin(self, stream_id: str) -> float | None:
        board = self.streams.get(stream_id)
        return board.origin if board else None

    def rebuild(self, headers: Iterable[tuple[str, ViewerSequence]]) -> None:
        self.streams = {}
        for key, header in headers:
            self.update(key, header)
        self.stale = False

    def __iter__(self) -> Iterator[tuple[str, Leaderboard]]:
        return iter(list(self.streams.items()))

    @property
    def viewers(self) -> int:
        return sum(len(board) for board in self.streams.values())


# ---------------------------------------------------------------- paid outcomes
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
