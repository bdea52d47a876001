"""The analyst's numbers through the real routes on a real PostgreSQL: revenue in one display currency
at the ECB rate of each event's date, counts kept apart from money, base rate and lift, low-confidence
scores, explanations (or why there are none), the overview across streams, a viewer across streams,
and unique titles. Expected money is computed here with the currencyconverter package directly."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from infra.events import ChatMessage, MessageKind
from infra.money import DISPLAY_CURRENCIES
from infra.repository import save_messages, save_scores, upsert_channel, upsert_stream
from tests.test_dashboard.conftest import serve
from tests.test_dashboard.sample_stream import score
from tests.test_dashboard.test_api import get_json

# Just before midnight, so the payments fall on two dates with different ECB rates.
START = datetime(2026, 3, 2, 23, 58, tzinfo=UTC)
MONEY_STREAM = "money-4"
PAYMENTS = [  # (viewer, minute, kind, amount, currency)
    ("UCaud", 0.5, MessageKind.PAID_MESSAGE, 160.99, "AUD"),
    ("UCcad", 1.0, MessageKind.PAID_STICKER, 7.00, "CAD"),
    ("UCeur", 2.5, MessageKind.PAID_MESSAGE, 6.99, "EUR"),  # 00:00:30 on 2026-03-03
    ("UCidr", 3.0, MessageKind.PAID_MESSAGE, 75000.0, "IDR"),
    ("UCaud", 4.0, MessageKind.DONATION, 20.00, "AUD"),
]
COUNTS = [("UCbits", 1.5, MessageKind.BITS, 1200.0, "XXX"), ("UCgift", 2.0, MessageKind.MEMBERSHIP_GIFT, 5.0, "XXX")]


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def ecb_total(to: str) -> float:
    from currency_converter import CurrencyConverter

    rates = CurrencyConverter(fallback_on_missing_rate=True, fallback_on_wrong_date=True)
    return sum(rates.convert(amount, currency, to, date=at(minute).date())
               for _, minute, _, amount, currency in PAYMENTS)


async def write_money_stream(pool: asyncpg.Pool) -> None:
    messages, scores = [], []
    for i, (viewer, minute, kind, amount, currency) in enumerate(PAYMENTS + COUNTS):
        messages.append(ChatMessage(stream_id=MONEY_STREAM, message_id=f"t{i}", timestamp=at(minute - 0.2),
                                    author_id=viewer, author_name=viewer.lower(), text="hello there"))
        messages.append(ChatMessage(stream_id=MONEY_STREAM, message_id=f"p{i}", timestamp=at(minute),
                                    author_id=viewer, author_name=viewer.lower(), kind=kind, amount=amount,
                                    currency=currency, amount_text=f"{amount} {currency}"))
    for i in range(4):  # chatters who never pay, one of them with plenty of messages
        for j in range(1 + 3 * (i == 0)):
            messages.append(ChatMessage(stream_id=MONEY_STREAM, message_id=f"c{i}-{j}", timestamp=at(0.1 * j + i),
                                        author_id=f"UCchat{i}", author_name=f"chatter {i}", text="gg"))
    await save_messages(pool, messages, source="file:/data/money-4.json")
    viewers = sorted({m.viewer_id for m in messages})
    for rank, viewer in enumerate(viewers):
        n = 4 if viewer == "UCchat0" else 1
        scores.append(score(MONEY_STREAM, viewer, viewer.lower(), 4.5, 0.9 - rank * 0.05, n,
                            ("c0-0",) if viewer == "UCchat0" else ()))
    await save_scores(pool, scores)


async def test_revenue_in_one_currency_at_each_events_ecb_rate(dashboard_settings: Any, database_url: str,
                                                                pool: asyncpg.Pool) -> None:
    await write_money_stream(pool)
    async with serve(dashboard_settings(), database_url) as client:
        summary = await get_json(client, f"/api/summary?stream={MONEY_STREAM}&k=20")
    async with serve(dashboard_settings(display_currency="EUR"), database_url) as client:
        in_euro = await get_json(client, f"/api/summary?stream={MONEY_STREAM}&k=20")
        exported = await client.get(f"/api/export/summary.csv?stream={MONEY_STREAM}&k=20")
        (row,) = list(csv.DictReader(io.StringIO(await exported.text())))
    revenue = summary["revenue"]
    assert revenue["currency"] == "USD"
    assert revenue["total"] == pytest.approx(ecb_total("USD"), abs=0.01)
    assert in_euro["revenue"]["total"] == pytest.approx(ecb_total("EUR"), abs=0.01)
    by = {r["currency"]: r for r in revenue["by_currency"]}
    assert set(by) == {"AUD", "CAD", "EUR", "IDR"}
    assert by["AUD"]["amount"] == pytest.approx(180.99) and by["AUD"]["events"] == 2
    assert sum(r["converted"] for r in by.values()) == pytest.approx(revenue["total"], abs=0.03)
    assert "ECB rate of 2026-03-03" in by["EUR"]["rates"] and "ECB rate of 2026-03-02" in by["CAD"]["rates"]
    # counts are counts: 1200 bits and 5 gifted memberships, never money
    counts = {c["unit"]: c["count"] for c in summary["paid_counts"]}
    assert counts == {"bits": 1200, "gifted memberships": 5}
    assert "XXX" not in by
    # the cumulative curve over stream time ends at the total; the top donor is the AUD viewer
    curve = summary["revenue_curve"]
    assert [p[0] for p in curve] == sorted(p[0] for p in curve) and curve[-1][1] == pytest.approx(revenue["total"])
    assert curve[0][0] == pytest.approx(0.5)  # minutes since the stream's first message (a chatter's, at START)
    # it ends at the latest message, here the last payment itself (no second point at the same minute)
    assert len(curve) == len(PAYMENTS) and curve[-1][0] == pytest.approx(4.0)
    assert summary["top_donors"][0]["viewer_id"] == "UCaud"
    assert summary["top_donors"][0]["total"] == pytest.approx(by["AUD"]["converted"], abs=0.01)
    # the export keeps the breakdown per currency
    assert float(row["revenue"]) == pytest.approx(ecb_total("EUR"), abs=0.01) and row["display_currency"] == "EUR"
    assert "160.99" not in row["revenue_breakdown"] and "180.99 AUD = " in row["revenue_breakdown"]
    assert "1200 bits" in row["paid_counts"]


async def test_base_rate_lift_low_confidence_and_explanations(dashboard_settings: Any, database_url: str,
                                                              pool: asyncpg.Pool) -> None:
    await write_money_stream(pool)
    async with serve(dashboard_settings(), database_url) as client:
        snapshot = await get_json(client, f"/api/snapshot?stream={MONEY_STREAM}&k=20")
        stored = await get_json(client, f"/api/viewer?stream={MONEY_STREAM}&viewer=UCchat0")
        unexplained = await get_json(client, f"/api/viewer?stream={MONEY_STREAM}&viewer=UCeur")
        exported = await client.get(f"/api/export/leaderboard.csv?stream={MONEY_STREAM}&k=20")
        rows = list(csv.DictReader(io.StringIO(await exported.text())))
        paid = await get_json(client, f"/api/paid?stream={MONEY_STREAM}&k=20&limit=50")
    base = snapshot["summary"]["base_rate"]
    # 6 payers (4 money, bits, gift) of 10 viewers
    assert (base["source"], base["payers"], base["viewers"]) == ("observed", 6, 10)
    assert base["value"] == pytest.approx(0.6)
    assert "chance" in snapshot["what_is_this"].lower()
    board = {r["viewer_id"]: r for r in snapshot["leaderboard"]}
    assert board["UCchat0"]["low_confidence"] is False and board["UCeur"]["low_confidence"] is True
    for row in snapshot["leaderboard"]:
        assert row["lift"] == pytest.approx(row["probability"] / 0.6)
    assert stored["explanation"]["source"] == "scorer"
    assert [m["message_id"] for m in stored["messages"] if m["moved_score"]] == ["c0-0"]
    # no model in this server: the panel is told why, not left empty
    assert unexplained["explanation"]["source"] is None and "runs no model" in unexplained["explanation"]["reason"]
    assert unexplained["low_confidence"] is True
    # each paid event also in the display currency at its own date's rate; counts have no money value
    from currency_converter import CurrencyConverter

    rates = CurrencyConverter(fallback_on_missing_rate=True, fallback_on_wrong_date=True)
    by_kind = {(p["viewer_id"], p["kind"]): p for p in paid}
    eur = by_kind[("UCeur", "paid_message")]
    assert eur["display_amount"] == pytest.approx(rates.convert(6.99, "EUR", "USD", date=date(2026, 3, 3)), abs=0.005)
    assert eur["rate"] == "ECB 2026-03-03"
    assert by_kind[("UCbits", "bits")]["display_amount"] is None
    exported_rows = {r["viewer_id"]: r for r in rows}
    assert exported_rows["UCaud"]["paid_total"] and "AUD = " in exported_rows["UCaud"]["paid_breakdown"]
    assert exported_rows["UCeur"]["low_confidence"] == "True"


async def test_overview_viewer_pages_and_unique_titles(dashboard_settings: Any, database_url: str,
                                                       pool: asyncpg.Pool) -> None:
    await write_money_stream(pool)
    for sid, day in (("dup-1", 5), ("dup-2", 6), ("dup-3", 6)):
        await save_messages(pool, [
            ChatMessage(stream_id=sid, message_id=f"{sid}-a", timestamp=datetime(2026, 3, day, 12, tzinfo=UTC),
                        author_id="UCaud", author_name="ucaud", text="hi again"),
            ChatMessage(stream_id=sid, message_id=f"{sid}-p", timestamp=datetime(2026, 3, day, 12, 5, tzinfo=UTC),
                        author_id="UCaud", author_name="ucaud", kind=MessageKind.PAID_MESSAGE, amount=2.0,
                        currency="USD", amount_text="$2.00")], source="test")
        await upsert_channel(pool, "youtube", "UCnova", name="Nova")
        await upsert_stream(pool, platform="youtube", stream_id=sid, channel_id="UCnova", title="Nova plays Balatro #2")
        await save_scores(pool, [score(sid, "UCaud", "ucaud", 0, 0.7, 1, ())])
    async with serve(dashboard_settings(), database_url) as client:
        overview = await get_json(client, "/api/overview")
        march_6 = await get_json(client, "/api/overview?from=2026-03-06&to=2026-03-06")
        await get_json(client, "/api/overview?from=2026-03-06&to=2026-03-05", status=400)
        await get_json(client, "/api/overview?from=yesterday", status=400)
        streams = await get_json(client, "/api/streams")
        history = await get_json(client, "/api/viewer-history?viewer=UCaud")
        found = await get_json(client, "/api/viewers?q=UCA")
        await get_json(client, "/api/viewer-history?viewer=nobody", status=404)
    by_id = {s["stream_id"]: s for s in overview["streams"]}
    assert set(by_id) == {MONEY_STREAM, "dup-1", "dup-2", "dup-3"}
    money = by_id[MONEY_STREAM]
    assert money["display_title"] == "money-4.json · 2026-03-02"  # ingested without a title: its file name
    assert money["payers"] == 6 and money["revenue"]["total"] == pytest.approx(ecb_total("USD"), abs=0.01)
    assert [v["viewer_id"] for v in money["top3"]] == ["UCaud", "UCbits", "UCcad"]
    assert money["precision_at_k"] == pytest.approx(6 / 10)
    assert money["messages_per_minute"] > 0
    titles = [by_id[s]["display_title"] for s in ("dup-1", "dup-2", "dup-3")]
    assert titles[0] == "Nova plays Balatro #2 · 2026-03-05"
    assert len(set(titles)) == 3 and titles[1].endswith("· dup-2") and titles[2].endswith("· dup-3")
    assert {s["stream_id"]: s["display_title"] for s in streams}["dup-1"] == titles[0]
    nova = next(c for c in overview["channels"] if c["channel"] == "Nova")
    assert (nova["streams"], nova["payers"], nova["revenue"]["total"]) == (3, 3, 6.0)
    assert {s["stream_id"] for s in march_6["streams"]} == {"dup-2", "dup-3"}
    assert {s["stream_id"] for s in history["streams"]} == {MONEY_STREAM, "dup-1", "dup-2", "dup-3"}
    assert history["revenue"]["total"] == pytest.approx(6.0 + next(
        r["converted"] for r in money["revenue"]["by_currency"] if r["currency"] == "AUD"), abs=0.02)
    assert all(s["rank"] == 1 for s in history["streams"])
    assert [v["viewer_id"] for v in found] == ["UCaud"]


def test_display_currencies_are_ones_the_ecb_quotes() -> None:
    from currency_converter import CurrencyConverter

    rates = CurrencyConverter(fallback_on_missing_rate=True, fallback_on_wrong_date=True)
    assert DISPLAY_CURRENCIES <= rates.currencies
    for code in DISPLAY_CURRENCIES:
        assert rates.convert(1, "EUR", code, date=date(2026, 3, 2)) > 0
