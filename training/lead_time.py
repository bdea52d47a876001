"""Lead time: how long before paying a payer first shows in the top k of their stream's live board.

    streams -> every viewer scored after each of their messages (training.batch_score, `--at
    each-message`: the live agents' scores) -> the stream's board replayed in time order, each viewer
    holding their latest score -> per payer: first paid event - first moment in the top k, counted
    only if that moment came before the payment (after it, the board is no help to the streamer)

A payer who never reaches the top k before paying is "not caught" (lead 0 is not the same thing and
is never recorded). Reported per set: payers, share caught, median lead in minutes with a 95 %
bootstrap interval over streams, for the model and for the message-count board (score = messages
so far; ties by who chatted first) replayed the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from training.build_dataset import DatasetConfig, StreamData, compact_stream


@dataclass(frozen=True)
class BoardEvent:
    """A viewer's score changed at `seconds` (since the stream's first message)."""

    seconds: float
    viewer: str
    score: float


@dataclass
class StreamLeads:
    stream_id: str
    payers: int
    leads_minutes: list[float] = field(default_factory=list)  # one per caught payer


def first_top_k(events: Sequence[BoardEvent], k: int) -> dict[str, float]:
    """Each viewer's first moment in the top k of the board (events in time order; a viewer is on the
    board from their first event on, with their latest score; ties go to whoever joined first)."""
    index: dict[str, int] = {}
    scores = np.full(len({e.viewer for e in events}), -np.inf)
    entered: dict[str, float] = {}
    names: list[str] = []
    for event in events:
        slot = index.setdefault(event.viewer, len(index))
        if slot == len(names):
            names.append(event.viewer)
        scores[slot] = event.score
        seen = len(names)
        if seen <= k:
            top = range(seen)
        else:
            # stable order on (-score, join order): the k best, ties to the earlier viewer
            top = np.lexsort((np.arange(seen), -scores[:seen]))[:k]
        for slot_in_top in top:
            entered.setdefault(names[slot_in_top], event.seconds)
    return entered


def stream_leads(stream_id: str, events: Sequence[BoardEvent], first_paid: dict[str, float], k: int) -> StreamLeads:
    """Lead of every payer of one stream (`first_paid`: viewer -> seconds of their first paid event)."""
    entered = first_top_k(sorted(events, key=lambda e: e.seconds), k)
    leads = StreamLeads(stream_id, payers=len(first_paid))
    for viewer, paid_at in first_paid.items():
        at = entered.get(viewer)
        if at is not None and at < paid_at:
            leads.leads_minutes.append((paid_at - at) / 60.0)
    return leads


def summarise(streams: Sequence[StreamLeads], *, rounds: int = 1000, seed: int = 0) -> dict[str, float]:
    """Payers, share caught, and the median lead (minutes) with a bootstrap interval over streams."""
    payers = sum(s.payers for s in streams)
    leads = [lead for s in streams for lead in s.leads_minutes]
    out = {"payers": float(payers), "caught": float(len(leads)),
           "caught_share": len(leads) / payers if payers else float("nan"),
           "median_lead_minutes": float(np.median(leads)) if leads else float("nan"),
           "median_ci_low": float("nan"), "median_ci_high": float("nan")}
    with_payers = [s for s in streams if s.payers]
    if leads and with_payers:
        rng = np.random.default_rng(seed)
        medians = []
        for _ in range(rounds):
            drawn = rng.integers(0, len(with_payers), len(with_payers))
            pooled = [lead for i in drawn for lead in with_payers[i].leads_minutes]
            if pooled:
                medians.append(np.median(pooled))
        out["median_ci_low"], out["median_ci_high"] = (float(np.quantile(medians, 0.025)),
                                                       float(np.quantile(medians, 0.975)))
    return out


def first_payments(stream: StreamData, label: str) -> tuple[datetime, dict[str, float]]:
    """The stream's first message time and each payer's first paid event (seconds from it)."""
    compact = compact_stream(stream, DatasetConfig(label=label))  # type: ignore[arg-type]
    if compact is None:
        return stream.messages[0].timestamp if stream.messages else datetime.min, {}
    return compact.info.start, {v: f.first_paid for v, f in compact.viewers.items() if f.first_paid is not None}


def lead_times(streams: Iterable[StreamData], scorer: Any, *, cache: Any = None, k: int = 10,
               label: str = "paid") -> dict[str, list[StreamLeads]]:
    """{"model": [...], "message count": [...]}, one StreamLeads per stream."""
    from training.batch_score import score_streams

    out: dict[str, list[StreamLeads]] = {"model": [], "message count": []}
    for stream in streams:
        start, paid = first_payments(stream, label)
        model_events, count_events = [], []
        for line in score_streams([stream], scorer, cache=cache, at="each-message"):
            # Every score, payers' later ones too: they stay on the live board; only an entry before the
            # payment counts (stream_leads).
            seconds = (datetime.fromisoformat(line.snapshot_time) - start).total_seconds()
            model_events.append(BoardEvent(seconds, line.viewer_id, line.score))
            count_events.append(BoardEvent(seconds, line.viewer_id, float(line.n_messages)))
        out["model"].append(stream_leads(stream.stream_id, model_events, paid, k))
        out["message count"].append(stream_leads(stream.stream_id, count_events, paid, k))
    return out
