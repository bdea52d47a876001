"""What the page shows, assembled from the queries: leaderboard, payments with the payer's rank before
paying, activity and the per-stream summary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dashboard import revenue
from dashboard.explain import Explanation, explain_on_demand
from dashboard.queries import (
    QUERY_TIMEOUT,
    Database,
    q_activity,
    q_count_events,
    q_counts,
    q_find_viewers,
    q_first_payments,
    q_money_events,
    q_overview,
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
    q_viewer_payments,
    q_viewer_streams,
    sweep_ranks,
)
from infra.errors import DatabaseUnavailable
from infra.money import ecb_rates, is_money

if TYPE_CHECKING:
    from datetime import datetime

TREND_POINTS = 24
RECENT_PAID = 20
ACTIVITY_MINUTES = 240
VIEWER_MESSAGES = 300
SQL_RANKS = 20  # up to this many payments' rank-before by SQL; more by one sweep over the score history
LOW_EVIDENCE_MESSAGES = 3  # a score from fewer messages than this is shown as "low confidence"
WHAT_IS_THIS = ("Chance to pay: the model's calibrated probability that this viewer pays (Super Chat, "
                "membership, bits, ...) in this stream, from their chat so far. Lift: that chance divided by "
                "the stream's base rate.")


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
    currency: str = "USD"  # the display currency (Settings.display_currency)
    ranks: dict[tuple[str, str], RankBefore] = field(default_factory=dict)
    # explanations computed on demand, per score (an open drill-down refreshes every few seconds)
    explained: dict[tuple[str, str, int, Any], Explanation] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        model = getattr(getattr(self.runtime, "models", None), "current", None)
        problems = [self.db.problem] if self.db.problem else []
        return {"status": "degraded" if problems else "ok",
                "database": "unreachable" if problems else "ok",
                "problems": problems, "model_version": model.version if model else None,
                "model_tier": getattr(model, "tier", None)}

    async def check(self) -> dict[str, Any]:
        """Health after one round trip to PostgreSQL (so a fresh server reports the truth)."""
        with contextlib.suppress(DatabaseUnavailable):
            await self.db.run(lambda pool: pool.fetchval("SELECT 1", timeout=QUERY_TIMEOUT))
        return self.health()

    async def streams(self, limit: int = 200) -> list[dict[str, Any]]:
        streams = await self.db.run(q_streams, limit)
        titles = unique_titles(streams)
        for stream in streams:
            stream["display_title"] = titles[stream["stream_id"]]
        return streams

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
        await asyncio.to_thread(ecb_rates)
        return [{**payment_json(e, ranks[e["message_id"]], k), **revenue.display_amount(e, self.currency)}
                for e in events]

    async def leaderboard(self, stream_id: str, k: int) -> list[dict[str, Any]]:
        await asyncio.to_thread(ecb_rates)
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
                "paid": [{**{k_: p[k_] for k_ in ("kind", "amount", "currency", "amount_text", "time")},
                          **revenue.display_amount(p, self.currency)} for p in paid],
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
            "display_title": unique_titles([{**stream, "first_message_at": counts["first_message_at"]}])[stream_id],
            "state": stream["state"], "url": stream["url"], **counts,
            "scored_viewers": stream["scored_viewers"], "k": k,
            "precision_at_k": sum(1 for e in top if e["viewer_id"] in payers) / len(top) if top else None,
            # a payer who paid before their first score counts as a miss
            "hit_rate_at_k": sum(1 for r in ranked if r.rank <= k) / len(ranks) if ranks else None,
            "payers_ranked_before_paying": len(ranked),
            "base_rate": base_rate(counts),
            **await self.money(stream_id, counts.get("first_message_at"), counts.get("last_message_at")),
        }

    async def money(self, stream_id: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
        """Revenue in the display currency (breakdown per currency), its curve, top donors, counts."""
        await asyncio.to_thread(ecb_rates)  # loads the rate file once, off the event loop
        events = await self.db.run(q_money_events, [stream_id])
        return {"revenue": revenue.breakdown(events, self.currency),
                "revenue_curve": revenue.curve(events, self.currency, start, end),
                "top_donors": revenue.top_donors(events, self.currency),
                "paid_counts": revenue.counts(await self.db.run(q_count_events, [stream_id]))}

    async def viewer(self, stream_id: str, viewer_id: str) -> dict[str, Any] | None:
        """The drill-down, with the messages that moved the score: stored with the score (the top of the
        board), else computed now (explain.py), else the reason there are none."""
        found = await self.db.run(q_viewer, stream_id, viewer_id, VIEWER_MESSAGES)
        if found is None:
            return None
        score = found["score"]
        stored = tuple(score["top_message_ids"]) if score else ()
        if stored:
            explanation = Explanation(stored, "scorer", "explained by the live scorer when it scored")
        elif score is None:
            explanation = Explanation((), None, "not scored yet: the worker scores a viewer after their first "
                                                "chat message")
        else:
            key = (stream_id, viewer_id, score["n_messages"], score["event_time"])
            explanation = self.explained.get(key) or await explain_on_demand(self.runtime, stream_id, viewer_id)
            if explanation.source is not None:
                if len(self.explained) > 1000:
                    self.explained.clear()
                self.explained[key] = explanation
        moved = set(explanation.message_ids)
        for message in found["messages"]:
            message["moved_score"] = message["message_id"] in moved
        found["explanation"] = explanation.to_json()
        if score:
            found["low_confidence"] = score["n_messages"] < LOW_EVIDENCE_MESSAGES
        return found

    async def viewer_history(self, viewer_id: str) -> dict[str, Any] | None:
        """One viewer across every stream: scores, ranks and payments (money in the display currency)."""
        await asyncio.to_thread(ecb_rates)
        streams = await self.db.run(q_viewer_streams, viewer_id, 200)
        if not streams:
            return None
        payments = await self.db.run(q_viewer_payments, viewer_id, 500)
        money = [p for p in payments if p["amount"] is not None and is_money(p["kind"], p["currency"])]
        for stream in streams:
            stream["display_title"] = display_title(stream)
            paid_here = [p for p in money if p["stream_id"] == stream["stream_id"]]
            stream["revenue"] = revenue.breakdown(paid_here, self.currency)
            stream["low_confidence"] = (stream["n_messages"] or 0) < LOW_EVIDENCE_MESSAGES
        return {"viewer_id": viewer_id, "viewer_name": streams[0]["viewer_name"], "streams": streams,
                "payments": payments, "revenue": revenue.breakdown(money, self.currency)}

    async def find_viewers(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        return await self.db.run(q_find_viewers, text, limit)

    async def overview(self, limit: int, since: datetime | None, until: datetime | None, k: int = 20
                       ) -> dict[str, Any]:
        """Every stream (live and replaying first) with its rates, revenue, top 3 and precision@k so
        far, and totals per channel."""
        await asyncio.to_thread(ecb_rates)
        streams = await self.db.run(q_overview, limit, since, until, k)
        ids = [s["stream_id"] for s in streams]
        events = await self.db.run(q_money_events, ids) if ids else []
        counted = await self.db.run(q_count_events, ids) if ids else []
        titles = unique_titles(streams)
        channels: dict[str, dict[str, Any]] = {}
        for stream in streams:
            paid_here = [e for e in events if e["stream_id"] == stream["stream_id"]]
            stream["display_title"] = titles[stream["stream_id"]]
            stream["revenue"] = revenue.breakdown(paid_here, self.currency)
            stream["paid_counts"] = revenue.counts([c for c in counted if c["stream_id"] == stream["stream_id"]])
            name = stream["channel_name"] or stream["channel_id"] or "(no channel)"
            channel = channels.setdefault(name, {"channel": name, "streams": 0, "messages": 0, "payers": 0,
                                                 "events": []})
            channel["streams"] += 1
            channel["messages"] += stream["messages"]
            channel["payers"] += stream["payers"]
            channel["events"].extend(paid_here)
        totals = [{**{k_: v for k_, v in c.items() if k_ != "events"},
                   "revenue": revenue.breakdown(c["events"], self.currency)} for c in channels.values()]
        return {"currency": self.currency, "k": k, "streams": streams,
                "channels": sorted(totals, key=lambda c: -c["revenue"]["total"])}

    async def snapshot(self, stream_id: str, k: int, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything the page needs for one stream, in one answer (what the live feed pushes)."""
        summary = summary if summary is not None else await self.summary(stream_id, k)
        return {
            "status": "ok", "problems": [], "stream_id": stream_id, "k": k, "currency": self.currency,
            "what_is_this": WHAT_IS_THIS,
            "summary": summary,
            "leaderboard": with_lift(await self.leaderboard(stream_id, k), (summary or {}).get("base_rate")),
            "paid": await self.paid(stream_id, k),
            "activity": await self.activity(stream_id),
            "model_version": self.health()["model_version"],
            "model_tier": self.health()["model_tier"],
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


def base_rate(counts: dict[str, Any]) -> dict[str, Any]:
    """The stream's base rate: payers so far / viewers so far; before anyone paid, the model's mean
    probability over scored viewers (said in `source`)."""
    viewers, payers, mean = counts.get("viewers") or 0, counts.get("payers") or 0, counts.get("model_mean")
    if viewers and payers:
        return {"value": payers / viewers, "source": "observed", "payers": payers, "viewers": viewers,
                "model_mean": mean, "text": f"{payers} of {viewers} viewers paid so far"}
    if mean is not None:
        return {"value": mean, "source": "model mean", "payers": payers, "viewers": viewers, "model_mean": mean,
                "text": "nobody paid yet: the model's mean over scored viewers"}
    return {"value": None, "source": None, "payers": payers, "viewers": viewers, "model_mean": None,
            "text": "no viewers yet"}


def with_lift(board: list[dict[str, Any]], base: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each row's lift over the base rate, and whether its score rests on too few messages."""
    rate = (base or {}).get("value")
    for row in board:
        row["lift"] = row["probability"] / rate if rate else None
        row["low_confidence"] = row["n_messages"] < LOW_EVIDENCE_MESSAGES
    return board


def display_title(stream: dict[str, Any]) -> str:
    """The stream's title, else the file it was ingested from, else its id."""
    if stream.get("title"):
        return stream["title"]
    source = stream.get("source") or ""
    if source.startswith("file:"):
        return source.removeprefix("file:").rsplit("/", 1)[-1]
    return stream["stream_id"]


def unique_titles(streams: list[dict[str, Any]]) -> dict[str, str]:
    """stream_id -> 'title · date', and the id too where two streams would still read the same."""
    titles = {}
    for stream in streams:
        when = stream.get("published_at") or stream.get("first_message_at") or stream.get("last_event_time")
        titles[stream["stream_id"]] = display_title(stream) + (f" · {when:%Y-%m-%d}" if when else "")
    seen: dict[str, int] = {}
    for title in titles.values():
        seen[title] = seen.get(title, 0) + 1
    return {sid: (f"{t} · {sid}" if seen[t] > 1 and t != sid else t) for sid, t in titles.items()}
