"""One small stream with hand-computed expectations, written through infra.repository (the persist
sink's own functions): who leads, who paid, the rank each payer had just before paying.

Latest probabilities: UCa 0.8 > UCb 0.4 > UCc 0.35 > name:Eve 0.1. UCa pays at minute 3 while first
(a hit at k=2), Carol pays at 3.5 while third (a miss at k=2), UCd pays before ever chatting (no score).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from infra.events import ChatMessage, DonorScore, MessageKind
from infra.repository import save_messages, save_scores, upsert_stream

T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
STREAM = "s1"
FORMULA_NAME = '=HYPERLINK("http://evil.example","click")'
HTML_NAME = "<img src=x onerror=alert(1)>"
VIEWERS = {"UCa": FORMULA_NAME, "UCb": HTML_NAME, "UCc": "Carol", "UCd": "-dave"}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def text(mid: str, author: str | None, name: str, minute: float, body: str) -> ChatMessage:
    return ChatMessage(stream_id=STREAM, message_id=mid, timestamp=at(minute), author_id=author,
                       author_name=name, text=body, offset_seconds=minute * 60)


def paid(mid: str, author: str, minute: float, kind: MessageKind, amount: float | None,
         currency: str | None, amount_text: str | None) -> ChatMessage:
    return ChatMessage(stream_id=STREAM, message_id=mid, timestamp=at(minute), author_id=author,
                       author_name=VIEWERS[author], kind=kind, amount=amount, currency=currency,
                       amount_text=amount_text)


MESSAGES = [
    text("a1", "UCa", FORMULA_NAME, 0.1, "hi"),
    text("b1", "UCb", HTML_NAME, 0.2, "<script>alert(1)</script>"),
    text("c1", "UCc", "Carol", 0.3, "nice"),
    text("e1", None, "Eve", 0.4, "yo"),
    paid("d1", "UCd", 0.5, MessageKind.MEMBERSHIP_NEW, None, None, None),  # paid before ever chatting
    text("a2", "UCa", FORMULA_NAME, 1.1, "love it"),
    text("b2", "UCb", HTML_NAME, 1.2, "hello"),
    text("a3", "UCa", FORMULA_NAME, 2.1, "thanks"),
    text("c2", "UCc", "Carol", 2.5, "gg"),
    paid("ap", "UCa", 3.0, MessageKind.PAID_MESSAGE, 5.0, "USD", "$5.00"),
    paid("cp", "UCc", 3.5, MessageKind.PAID_STICKER, 500.0, "JPY", "¥500"),
]
# (viewer, name, minute, probability, n_messages, top message ids)
SCORES = [
    ("UCa", FORMULA_NAME, 0.1, 0.2, 1, ("a1",)),
    ("UCb", HTML_NAME, 0.2, 0.6, 1, ("b1",)),
    ("UCc", "Carol", 0.3, 0.3, 1, ("c1",)),
    ("name:Eve", "Eve", 0.4, 0.1, 1, ("e1",)),
    ("UCa", FORMULA_NAME, 1.1, 0.5, 2, ("a2",)),
    ("UCb", HTML_NAME, 1.2, 0.4, 2, ("b1",)),
    ("UCa", FORMULA_NAME, 2.1, 0.8, 3, ("a2", "a3")),
    ("UCc", "Carol", 2.5, 0.35, 2, ("c2",)),
]


def score(stream: str, viewer: str, name: str, minute: float, p: float, n: int, top: tuple[str, ...],
          scored_at: datetime | None = None) -> DonorScore:
    return DonorScore(stream_id=stream, viewer_id=viewer, viewer_name=name, probability=p, n_messages=n,
                      model_version="v-test", top_message_ids=top, event_time=at(minute),
                      scored_at=scored_at or datetime.now(UTC))


async def write_sample(pool: asyncpg.Pool) -> None:
    await save_messages(pool, MESSAGES, source="test")
    await upsert_stream(pool, platform="youtube", stream_id=STREAM, title="Test <b>stream</b>")
    await save_scores(pool, [score(STREAM, *row) for row in SCORES])
    old = ChatMessage(stream_id="s-old", message_id="o1", timestamp=at(-3000), author_id="UCz", text="old")
    await save_messages(pool, [old], source="test")
    await save_scores(pool, [score("s-old", "UCz", "Zed", -3000, 0.9, 1, ("o1",),
                                   scored_at=datetime.now(UTC) - timedelta(days=2))])


