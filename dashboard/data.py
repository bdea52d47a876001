"""What the page shows, assembled from the queries: leaderboard, payments with the payer's rank before
paying, activity and the per-stream summary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dashboard.queries import (
    QUERY_TIMEOUT,
    Database,
    q_activity,
    q_counts,
    q_first_payments,
    q_paid_of,
    q_ranks_before,
    q_recent_paid,
    q_score_history,
    q_stream,
    q_stream_exists,
    q_streams,
    q_top,
    q_trends,
    q_viewer,
    sweep_ranks,
)
from infra.errors import DatabaseUnavailable

if TYPE_CHECKING:
    pass

TREND_POINTS = 24
RECENT_PAID = 20
ACTIVITY_MINUTES = 240
VIEWER_MESSAGES = 300
SQL_RANKS = 20  # up to this many payments' rank-before by SQL; more by one sweep over the score history


@dataclass
class RankBefore:
    rank: int | None
    probability: float | None
    settled: bool


@dataclass
class DashboardData:
    """Leaderboards, payments, activity and summaries of one stream, built from PostgreSQL."""

    db: Database
    runtime: Any = None  # stream_agents.pipeline.Runtime of this worker, for its model version
    ranks: dict[tuple[str, str], RankBefore] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        model = getattr(getattr(self.runtime, "models", None), "current", None)
        problems = [self.db.problem] if self.db.problem else []
        return {"status": "degraded" if problems else "ok",
                "database": "unreachable" if problems else "ok",
                "problems": problems, "model_version": model.version if model else None}

    async def check(self) -> dict[str, Any]:
        """Health after one round trip to PostgreSQL (so a fresh server reports the truth)."""
        with contextlib.suppress(DatabaseUnavailable):
            await self.db.run(lambda pool: pool.fetchval("SELECT 1", timeout=QUERY_TIMEOUT))
        return self.health()

    async def streams(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self.db.run(q_streams, limit)

    async def stream_exists(self, stream_id: str) -> bool:
        return await self.db.run(q_stream_exists, stream_id)

    async def ranks_before(self, stream_id: str, payments: Sequence[dict[str, Any]]) -> dict[str, RankBefore]:
        """Rank just before each payment, cached once the payment is settled. A few are computed in SQL
        (index probes); many at once (a long stream opened late) in one sweep over the score history."""
        wanted = [p for p in payments if not ((cached := self.ranks.get((stream_id, p["message_id"])))
                                               and cached.settled)]
        if wanted:
            if len(wanted) <= SQL_RANKS:
                found = await self.db.run(q_ranks_before, stream_id, wanted)
            else:
                history = await self.db.run(q_score_history, stream_id, max(p["time"] for p in wanted))
                found = await asyncio.to_thread(sweep_ranks, history, wanted)
            if len(self.ranks) > 100_000:
                self.ranks.clear()
            for p in wanted:
                rank, probability = found.get(p["message_id"], (None, None))
                self.ranks[(stream_id, p["message_id"])] = RankBefore(rank, probability, bool(p["settled"]))
        return {p["message_id"]: self.ranks[(stream_id, p["message_id"])] for p in payments}

    async def paid(self, stream_id: str, k: int, limit: int = RECENT_PAID) -> list[dict[str, Any]]:
        events = await self.db.run(q_recent_paid, stream_id, limit)
        ranks = await self.ranks_before(stream_id, events)
        return [payment_json(e, ranks[e["message_id"]], k) for e in events]

    async def leaderboard(self, stream_id: str, k: int) -> list[dict[str, Any]]:
        top = await self.db.run(q_top, stream_id, k)
        ids = [entry["viewer_id"] for entry in top]
        trends = await self.db.run(q_trends, stream_id, ids, TREND_POINTS) if ids else {}
        payments = await self.db.run(q_paid_of, stream_id, ids) if ids else []
        by_viewer: dict[str, list[dict[str, Any]]] = {}
        for payment in payments:
            by_viewer.setdefault(payment["viewer_id"], []).append(payment)
        firsts = [items[0] for items in by_viewer.values()]
        ranks = await self.ranks_before(stream_id, firsts) if firsts else {}
        board = []
        for entry in top:
            paid = by_viewer.get(entry["viewer_id"], [])
            before = ranks.get(paid[0]["message_id"]) if paid else None
            board.append({
                **entry, "trend": trends.get(entry["viewer_id"], []), "paid_events": len(paid),
                "paid": [{k_: p[k_] for k_ in ("kind", "amount", "currency", "amount_text", "time")} for p in paid],
                "first_paid_at": paid[0]["time"] if paid else None,
                "rank_before_paid": before.rank if before else None,
                "hit": hit_at(before, k) if before else None,
            })
        return board

    async def activity(self, stream_id: str, minutes: int = ACTIVITY_MINUTES) -> list[dict[str, Any]]:
        return await self.db.run(q_activity, stream_id, minutes)

    async def summary(self, stream_id: str, k: int) -> dict[str, Any] | None:
        stream = await self.db.run(q_stream, stream_id)
        if stream is None:
            return None
        counts = await self.db.run(q_counts, stream_id)
        top = await self.db.run(q_top, stream_id, k)
        firsts = await self.db.run(q_first_payments, stream_id)
        ranks = await self.ranks_before(stream_id, firsts) if firsts else {}
        payers = {p["viewer_id"] for p in firsts}
        ranked = [r for r in ranks.values() if r.rank is not None]
        return {
            "stream_id": stream_id, "platform": stream["platform"], "title": stream["title"],
            "state": stream["state"], "url": stream["url"], **counts,
            "scored_viewers": stream["scored_viewers"], "k": k,
            "precision_at_k": sum(1 for e in top if e["viewer_id"] in payers) / len(top) if top else None,
            # a payer who paid before their first score counts as a miss
            "hit_rate_at_k": sum(1 for r in ranked if r.rank <= k) / len(ranks) if ranks else None,
            "payers_ranked_before_paying": len(ranked),
        }

    async def viewer(self, stream_id: str, viewer_id: str) -> dict[str, Any] | None:
        return await self.db.run(q_viewer, stream_id, viewer_id, VIEWER_MESSAGES)

    async def snapshot(self, stream_id: str, k: int, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything the page needs for one stream, in one answer (what the live feed pushes)."""
        return {
            "status": "ok", "problems": [], "stream_id": stream_id, "k": k,
            "summary": summary if summary is not None else await self.summary(stream_id, k),
            "leaderboard": await self.leaderboard(stream_id, k),
            "paid": await self.paid(stream_id, k),
            "activity": await self.activity(stream_id),
            "model_version": self.health()["model_version"],
        }


def payment_json(event: dict[str, Any], before: RankBefore, k: int) -> dict[str, Any]:
    out = {key: event[key] for key in ("message_id", "viewer_id", "viewer_name", "kind", "amount", "currency",
                                       "amount_text", "time")}
    out.update(rank_before=before.rank, probability_before=before.probability, hit=hit_at(before, k))
    return out


def hit_at(before: RankBefore, k: int) -> bool:
    """Was the payer in the top k just before paying?"""
    return before.rank is not None and before.rank <= k


def degraded(stream_id: str | None, k: int, problem: str) -> dict[str, Any]:
    return {"status": "degraded", "problems": [problem], "stream_id": stream_id, "k": k}
