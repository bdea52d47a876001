"""Money in one display currency: totals with their per-currency breakdown, a cumulative curve over
stream time and the top donors by amount. Each amount is converted at the ECB rate of its own date
(infra.money.convert). Counts that are not money (bits, gifted memberships, subs) are counted, never
summed into money."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from infra.money import convert, is_money

COUNT_LABELS = {  # kind -> what its `amount` counts (None: each event is one)
    "bits": "bits", "membership_gift": "gifted memberships", "gift_subscription": "gifted subs",
    "membership_new": None, "subscription": None,
}
TOP_DONORS = 10


def _round(value: float) -> float:
    return round(value, 2)


def breakdown(events: Sequence[dict[str, Any]], currency: str) -> dict[str, Any]:
    """Total in `currency` and, per original currency, the amount paid and what it converted to."""
    per: dict[str, dict[str, Any]] = {}
    total = 0.0
    for event in events:
        converted = convert(float(event["amount"]), event["currency"], currency, event["time"].date())
        row = per.setdefault(event["currency"], {"currency": event["currency"], "amount": 0.0, "converted": 0.0,
                                                 "events": 0, "rates": set()})
        row["amount"] += float(event["amount"])
        row["events"] += 1
        if converted is None:
            row["rates"].add("no rate known: not in the total")
            continue
        row["converted"] += converted.value
        row["rates"].add(converted.source)
        total += converted.value
    rows = sorted(per.values(), key=lambda r: -r["converted"])
    for row in rows:
        row["amount"], row["converted"] = _round(row["amount"]), _round(row["converted"])
        row["rates"] = _rates_text(row["rates"])
    return {"currency": currency, "total": _round(total), "by_currency": rows}


def _rates_text(sources: set[str]) -> str:
    ecb = sorted(s.removeprefix("ECB ") for s in sources if s.startswith("ECB "))
    other = sorted(s for s in sources if not s.startswith("ECB "))
    parts = ([f"ECB rate of {ecb[0]}" if len(ecb) == 1 else f"ECB rates of {ecb[0]} to {ecb[-1]}"] if ecb else [])
    return "; ".join(parts + other)


def display_amount(event: dict[str, Any], currency: str) -> dict[str, Any]:
    """One paid event in the display currency (None for counts and currencies without a rate)."""
    converted = None
    if event.get("amount") is not None and is_money(event["kind"], event.get("currency")):
        converted = convert(float(event["amount"]), event["currency"], currency, event["time"].date())
    return {"display_amount": None if converted is None else _round(converted.value), "display_currency": currency,
            "rate": None if converted is None else converted.source}


def curve(events: Sequence[dict[str, Any]], currency: str, start: datetime | None,
          end: datetime | None = None) -> list[list[float]]:
    """[[minutes since the stream's first message, cumulative revenue], ...], one point per payment and
    one at the stream's latest message (the total so far, held to now)."""
    if start is None:
        return []
    points, running = [], 0.0
    for event in events:
        converted = convert(float(event["amount"]), event["currency"], currency, event["time"].date())
        if converted is None:
            continue
        running += converted.value
        points.append([round((event["time"] - start).total_seconds() / 60, 3), _round(running)])
    last = round((end - start).total_seconds() / 60, 3) if end is not None else None
    if points and last is not None and last > points[-1][0]:
        points.append([last, points[-1][1]])
    return points


def top_donors(events: Sequence[dict[str, Any]], currency: str, n: int = TOP_DONORS) -> list[dict[str, Any]]:
    by_viewer: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_viewer.setdefault(event["viewer_id"], []).append(event)
    donors = []
    for viewer_id, paid in by_viewer.items():
        money = breakdown(paid, currency)
        donors.append({"viewer_id": viewer_id, "viewer_name": paid[-1]["viewer_name"], "total": money["total"],
                       "events": len(paid), "by_currency": money["by_currency"]})
    donors.sort(key=lambda d: (-d["total"], d["viewer_id"]))
    return [{"rank": i + 1, **d} for i, d in enumerate(donors[:n])]


def counts(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-money paid events as counts: '1,200 bits in 3 events', '5 gifted memberships', '2 memberships'."""
    out = []
    for row in rows:
        unit = COUNT_LABELS.get(row["kind"])
        count = int(row["amount"]) if unit and row["amount"] is not None else int(row["events"])
        out.append({"kind": row["kind"], "events": int(row["events"]), "count": count,
                    "unit": unit or {"membership_new": "memberships", "subscription": "subs"}.get(row["kind"],
                                                                                             row["kind"])})
    return out


def describe(money: dict[str, Any]) -> str:
    """'12.34 USD (3.00 EUR = 3.25 USD, ECB rate of 2026-03-01; ...)': one cell for CSV exports."""
    parts = [f"{r['amount']:.2f} {r['currency']} = {r['converted']:.2f} {money['currency']} ({r['rates']})"
             for r in money["by_currency"]]
    return f"{money['total']:.2f} {money['currency']}" + (f" [{'; '.join(parts)}]" if parts else "")
