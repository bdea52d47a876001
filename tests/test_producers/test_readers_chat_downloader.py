"""chat-downloader output (current, 2020 dev and 2020 legacy schemas; JSON, JSON lines, CSV) and
`item_to_message`, on files written here in the tool's real shapes."""

from __future__ import annotations

import csv
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.events import MAX_TEXT_CHARS, ChatMessage, MessageKind
from producers.readers import Rejected, item_to_message, open_reader, read_chat_file
from producers.readers.chat_downloader import ChatDownloaderReader, ChatReplayCsvReader
from producers.readers.money import parse_money

T0 = 1_700_000_000_000_000  # µs, 2023-11-14
MEMBER_BADGE = {"title": "Member (6 months)", "icons": [{"url": "https://yt3.ggpht.com/x=s16-c-k", "id": "source"}]}
MOD_BADGE = {"title": "Moderator", "icon_name": "moderator"}
OWNER_BADGE = {"title": "Owner", "icon_name": "owner"}


def item(message_type: str, n: int, **extra: object) -> dict[str, object]:
    """An item exactly as chat-downloader >= 0.1 yields / writes it."""
    base: dict[str, object] = {
        "action_type": "add_chat_item",
        "author": {"id": f"UC{n:022d}", "name": f"@viewer{n}", "images": []},
        "message": f"hello {n}",
        "message_id": f"Ch{n:024d}",
        "message_type": message_type,
        "time_in_seconds": float(n),
        "time_text": f"0:{n:02d}",
        "timestamp": T0 + n * 1_000_000,
    }
    base.update(extra)
    return base


def stream_items() -> list[dict[str, object]]:
    paid = item("paid_message", 3, money={"amount": 5000.0, "currency": "JPY", "currency_symbol": "¥", "text": "¥5,000"},
                message="初スパです:smiling_face_with_smiling_eyes:",
                emotes=[{"id": "😊", "name": ":smiling_face_with_smiling_eyes:", "is_custom_emoji": False}])
    return [
        item("text_message", 1, author={"id": "UC1", "name": "Ann", "badges": [MEMBER_BADGE]}),
        item("text_message", 2, author={"id": "UC2", "name": "Mo", "badges": [MOD_BADGE]}, message="ok :_hiHeart:"),
        paid,
        {**paid, "action_type": "add_live_chat_ticker_item", "message_type": "ticker_paid_message_item",
         "ticker_duration": 1800},
        item("paid_sticker", 4, money={"amount": 2.0, "currency": "USD", "text": "$2.00"}, message=None),
        item("membership_item", 5, message=None, header_secondary_text="Welcome to Club!"),
        item("membership_item", 6, header_primary_text="Member for 23 months", header_secondary_text="Club",
             message="still here"),
        item("sponsorships_gift_purchase_announcement", 7, message="Gifted 5 Club memberships"),
        item("sponsorships_gift_redemption_announcement", 8, message="was gifted a membership by @viewer7"),
        # a replay that starts after a Super Chat still shows it in the ticker: keep it, once
        item("ticker_paid_message_item", 9, money={"amount": 10.0, "currency": "EUR", "text": "€10.00"},
             timestamp=T0 - 60_000_000, action_type="add_live_chat_ticker_item"),
        item("placeholder_item", 10),
        item("text_message", 11, author={"id": "UC3", "name": "Own", "badges": [OWNER_BADGE]}, message=None),
    ]


def write_json(path: Path, items: list[object]) -> Path:
    path.write_text(json.dumps(items, indent=4, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, items: list[object]) -> Path:
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return path


def messages_of(events: list[ChatMessage | Rejected]) -> list[ChatMessage]:
    return [e for e in events if isinstance(e, ChatMessage)]


def test_current_schema_every_kind(tmp_path: Path) -> None:
    reader = open_reader(write_json(tmp_path / "dQw4w9WgXcQ.json", stream_items()))
    assert isinstance(reader, ChatDownloaderReader)
    events = list(reader.read())
    assert not [e for e in events if isinstance(e, Rejected)]
    by_id = {m.message_id: m for m in messages_of(events)}
    kinds = {int(mid[2:]): m.kind for mid, m in by_id.items()}
    assert kinds == {
        1: MessageKind.TEXT, 2: MessageKind.TEXT, 3: MessageKind.PAID_MESSAGE, 4: MessageKind.PAID_STICKER,
        5: MessageKind.MEMBERSHIP_NEW, 6: MessageKind.MEMBERSHIP_MILESTONE, 7: MessageKind.MEMBERSHIP_GIFT,
        8: MessageKind.MEMBERSHIP_GIFT_RECEIVED, 9: MessageKind.PAID_MESSAGE, 11: MessageKind.TEXT,
    }
    m = {int(mid[2:]): msg for mid, msg in by_id.items()}
    assert m[1].is_member and m[1].badges == ("Member (6 months)",) and m[1].author_id == "UC1"
    assert m[2].is_moderator and not m[2].is_member and m[2].text == "ok :_hiHeart:"
    assert m[11].is_owner and m[11].text == ""
    assert (m[3].amount, m[3].currency, m[3].amount_text) == (5000.0, "JPY", "¥5,000")
    assert m[3].text == "初スパです😊"  # the emoji the viewer sent, not chat-downloader's shortcut
    assert (m[4].amount, m[4].currency, m[4].text) == (2.0, "USD", "")
    assert m[5].text == "Welcome to Club!" and m[5].is_member
    assert m[6].text == "still here" and m[6].is_member
    assert (m[7].amount, m[7].currency, m[7].amount_text) == (5.0, "XXX", "5 gifted memberships")
    assert m[9].timestamp == datetime.fromtimestamp((T0 - 60_000_000) / 1e6, UTC)
    assert m[3].timestamp == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=T0 + 3_000_000)
    assert m[3].offset_seconds == 3.0 and m[3].stream_id == "dQw4w9WgXcQ"
    assert reader.skipped["placeholder_item"] == 1
    assert reader.skipped["ticker_paid_message_item (duplicate)"] == 1
    assert [x.timestamp for x in messages_of(events)] == sorted(x.timestamp for x in messages_of(events))


def test_json_lines_read_like_the_array(tmp_path: Path) -> None:
    as_array = messages_of(list(read_chat_file(write_json(tmp_path / "s.json", stream_items()))))
    as_lines = messages_of(list(read_chat_file(write_jsonl(tmp_path / "s.jsonl", stream_items()))))
    assert [m.model_dump(exclude={"stream_id"}) for m in as_array] == [
        m.model_dump(exclude={"stream_id"}) for m in as_lines
    ]
    assert len(as_array) == 10


def test_item_to_message_is_what_live_and_archive_call() -> None:
    items = stream_items()
    paid = item_to_message(items[2], stream_id="abc")
    assert paid is not None and paid.kind is MessageKind.PAID_MESSAGE and paid.stream_id == "abc"
    assert item_to_message(items[3], stream_id="abc") is None  # the ticker repeat of it
    assert item_to_message(items[10], stream_id="abc") is None  # placeholder
    with pytest.raises(ValueError, match="not an object"):
        item_to_message(["not", "a", "dict"], stream_id="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timestamp: missing"):
        item_to_message({**items[0], "timestamp": None}, stream_id="abc")
    with pytest.raises(ValueError, match="message_id: missing"):
        item_to_message({k: v for k, v in items[0].items() if k != "message_id"}, stream_id="abc")
    with pytest.raises(ValueError, match="money"):
        item_to_message({k: v for k, v in items[2].items() if k != "money"}, stream_id="abc")
    future = T0 + 10**15
    with pytest.raises(ValueError, match="timestamp.*future"):
        item_to_message({**items[0], "timestamp": future}, stream_id="abc")


def test_early_dev_schema(tmp_path: Path) -> None:
    """Dec 2020 chat-downloader: flat author fields, `id`, amounts as shown, badge titles."""
    rows = [
        {"action_type": "add_chat_item", "author_id": "UCa", "author_name": "Jeremy", "id": "p1",
         "amount": "$4.99", "colours": {"body_background": "#1de9b6ff"}, "message": "joker",
         "message_type": "paid_message", "timestamp": T0},
        {"action_type": "add_live_chat_ticker_item", "author_id": "UCa", "author_name": "Jeremy", "id": "p1",
         "amount": "$4.99", "message": "joker", "message_type": "ticker_paid_message_item", "ticker_duration": 300,
         "timestamp": T0},
        {"action_type": "add_chat_item", "author": "bifta89", "author_badges": ["New member"], "author_id": "UCb",
         "id": "m1", "message": "New member", "message_type": "membership_item", "time_in_seconds": -231,
         "timestamp": T0 + 1},
        {"action_type": "add_chat_item", "id": "d1", "message": "Anonymous donated €50.00",
         "message_type": "donation_announcement", "sub_message": "to UNF", "timestamp": T0 + 2},
        {"action_type": "add_chat_item", "author_id": "UCc", "author_name": "Ru", "id": "p2", "amount": "RUB 400.00",
         "author_badges": ["Member (1 month)"], "message": "привет", "message_type": "paid_message", "timestamp": T0 + 3},
        {"action_type": "mark_chat_items_by_author_as_deleted", "author_id": "UCd", "message": "[message deleted]",
         "message_type": "deleted_state_message"},
    ]
    reader = ChatDownloaderReader(write_json(tmp_path / "test.json", rows))
    got = {m.message_id: m for m in messages_of(list(reader.read()))}
    assert set(got) == {"p1", "m1", "d1", "p2"}
    assert (got["p1"].amount, got["p1"].currency, got["p1"].author_name, got["p1"].author_id) == (4.99, "USD", "Jeremy", "UCa")
    assert got["m1"].kind is MessageKind.MEMBERSHIP_NEW and got["m1"].author_name == "bifta89"
    assert got["m1"].offset_seconds == -231
    assert (got["d1"].kind, got["d1"].amount, got["d1"].currency, got["d1"].author_name) == (
        MessageKind.DONATION, 50.0, "EUR", "Anonymous")
    assert (got["p2"].amount, got["p2"].currency, got["p2"].is_member) == (400.0, "RUB", True)
    assert reader.skipped["deleted_state_message"] == 1


LEGACY_ROWS = [
    {"author": "King", "author_id": "UCk", "message": "LATE", "time_in_seconds": 100, "time_text": "1:40",
     "timestamp": T0, "video_offset_time_msec": 100120},
    {"amount": "CA$19.99", "author": "Auit", "author_id": "UCa", "body_color": {"hex": "#f57c00ff"},
     "message": "I LOVE YOU", "time_in_seconds": 100, "timestamp": T0 + 5},
    {"amount": "CA$19.99", "author": "Auit", "author_id": "UCa", "body_color": {"hex": "#f57c00ff"},
     "message": "I LOVE YOU", "ticker_duration": 600, "time_in_seconds": 100, "timestamp": T0 + 5},
    {"author": "ariessing", "author_id": "UCr", "badges": "New member", "message": "Welcome to Pig Tier!",
     "time_in_seconds": 156, "timestamp": T0 + 9},
    {"author": "ariessing", "author_id": "UCr", "badges": "New member", "body_color": "4279213400",
     "message": "Welcome to Pig Tier!", "ticker_duration": 300, "time_in_seconds": 156, "timestamp": T0 + 9},
    {"author": "Nightbot", "author_id": "UCn", "badges": "Verified, Moderator", "message": "subscribe",
     "time_in_seconds": 197, "timestamp": T0 + 12},
]


def _legacy_check(messages: list[ChatMessage]) -> None:
    kinds = [(m.author_name, m.kind) for m in messages]
    assert kinds == [("King", MessageKind.TEXT), ("Auit", MessageKind.PAID_MESSAGE),
                     ("ariessing", MessageKind.MEMBERSHIP_NEW), ("Nightbot", MessageKind.TEXT)]
    assert (messages[1].amount, messages[1].currency) == (19.99, "CAD")
    assert messages[1].message_id == f"wXspodtIxYU/UCa/{T0 + 5}"
    assert messages[3].is_moderator and messages[3].badges == ("Verified", "Moderator")


def test_legacy_chat_replay_downloader_json_and_csv(tmp_path: Path) -> None:
    from_json = messages_of(list(read_chat_file(write_json(tmp_path / "wXspodtIxYU_100-200s_all.json", LEGACY_ROWS))))
    _legacy_check(from_json)
    csv_path = tmp_path / "wXspodtIxYU_100-200s_all.csv"
    fields = ["amount", "author", "author_id", "badges", "body_color", "header_color", "message", "ticker_duration",
              "time_in_seconds", "time_text", "timestamp", "video_offset_time_msec"]
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in LEGACY_ROWS:
            writer.writerow({k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in row.items()})
    reader = open_reader(csv_path)
    assert isinstance(reader, ChatReplayCsvReader)
    from_csv = messages_of(list(reader.read()))
    _legacy_check(from_csv)
    assert [m.model_dump() for m in from_csv] == [m.model_dump() for m in from_json]


def test_twitch_items_through_the_same_mapping(tmp_path: Path) -> None:
    def twitch(n: int, message_type: str, **extra: object) -> dict[str, object]:
        return {"message_id": f"tw-{n}", "message_type": message_type, "timestamp": T0 + n, "message": f"m{n}",
                "author": {"id": f"{n}00", "name": f"user{n}", "display_name": f"User{n}",
                           "badges": [{"name": "subscriber", "version": 12, "title": "1-Year Subscriber"}]},
                **extra}

    rows = [
        twitch(1, "text_message", bits=500, message="cheer500 gg"),
        twitch(2, "resubscription", subscription_type="Tier 1", cumulative_months=7),
        twitch(3, "mystery_subscription_gift", mass_gift_count=5, origin_id="o-1"),
        *[twitch(30 + k, "subscription_gift", origin_id="o-1", gift_recipient_display_name=f"r{k}") for k in range(5)],
        twitch(40, "subscription_gift", origin_id="o-other"),
        twitch(4, "text_message", author={"id": "9", "name": "streamer", "display_name": "Streamer",
                                          "badges": [{"name": "broadcaster", "version": 1}]}),
        twitch(5, "room_state"),
    ]
    reader = ChatDownloaderReader(write_json(tmp_path / "twitch.json", rows))
    got = {m.message_id: m for m in messages_of(list(reader.read()))}
    assert all(m.platform == "twitch" for m in got.values())
    assert (got["tw-1"].kind, got["tw-1"].amount, got["tw-1"].currency, got["tw-1"].amount_text) == (
        MessageKind.BITS, 500.0, "XXX", "500 bits")
    assert got["tw-1"].is_member and got["tw-1"].author_name == "User1"
    assert (got["tw-2"].kind, got["tw-2"].amount_text) == (MessageKind.SUBSCRIPTION, "Tier 1")
    assert (got["tw-3"].kind, got["tw-3"].amount) == (MessageKind.GIFT_SUBSCRIPTION, 5.0)
    assert reader.skipped["subscription_gift (part of a mystery gift)"] == 5  # the 5 are counted once
    assert (got["tw-40"].kind, got["tw-40"].amount) == (MessageKind.GIFT_SUBSCRIPTION, 1.0)
    assert got["tw-4"].is_owner and not got["tw-4"].is_member
    assert reader.skipped["room_state"] == 1


def test_malformed_records_never_stop_a_file(tmp_path: Path) -> None:
    good = stream_items()[:3]
    lines = [json.dumps(good[0]), '{"message_type": "text_message", "timestamp": ', json.dumps(good[1]),
             json.dumps({**good[2], "timestamp": "soon"}), "[1, 2]", json.dumps(good[2])]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    events = list(ChatDownloaderReader(path).read())
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert [r.location for r in rejected] == [f"{path}:2", f"{path}:4", f"{path}:5"]
    assert "invalid JSON" in rejected[0].reason and rejected[0].raw == lines[1]
    assert "timestamp" in rejected[1].reason and "not microseconds" in rejected[1].reason
    assert "not an object" in rejected[2].reason
    assert [m.message_id for m in messages_of(events)] == [good[0]["message_id"], good[1]["message_id"], good[2]["message_id"]]


def test_array_cut_midway_keeps_what_is_readable(tmp_path: Path) -> None:
    """A JSON array damaged in the middle (a crash while writing, a bad edit): the records before
    and after the damage are read, the damaged one is rejected with its position."""
    items = stream_items()[:3]
    text = json.dumps(items, indent=4, ensure_ascii=False)
    second_start = text.index('"message_id": "Ch000000000000000000000002"')
    damaged = text[:second_start] + '"message_id": "Ch2", "timestamp": 17@@' + text[second_start + 60:]
    path = tmp_path / "damaged.json"
    path.write_text(damaged, encoding="utf-8")
    events = list(ChatDownloaderReader(path).read())
    assert [m.message_id for m in messages_of(events)] == [items[0]["message_id"], items[2]["message_id"]]
    (rejected,) = [e for e in events if isinstance(e, Rejected)]
    assert rejected.location == f"{path}#item 2" and "invalid JSON" in rejected.reason


def test_text_is_kept_exactly_and_huge_text_is_flagged(tmp_path: Path) -> None:
    texts = ["مرحبا بالعالم \u200f!", "a\u200bb\u200dc", "👨‍👩‍👧 ok", "line\u2028sep", "  spaced  "]
    rows = [item("text_message", i, message=t) for i, t in enumerate(texts)]
    rows.append(item("text_message", 50, message="x" * (MAX_TEXT_CHARS + 10)))
    got = messages_of(list(read_chat_file(write_jsonl(tmp_path / "t.jsonl", rows))))
    assert [m.text for m in got[:5]] == texts
    assert got[5].truncated and len(got[5].text) == MAX_TEXT_CHARS
    assert not any(m.truncated for m in got[:5])


@pytest.mark.parametrize(("shown", "amount", "currency"), [
    ("$4.99", 4.99, "USD"), ("¥5,000", 5000.0, "JPY"), ("￥1,840", 1840.0, "JPY"), ("CA$10.00", 10.0, "CAD"),
    ("A$250.00", 250.0, "AUD"), ("R$ 25,00", 25.0, "BRL"), ("₩1,000", 1000.0, "KRW"), ("£2.00", 2.0, "GBP"),
    ("€1.234,56", 1234.56, "EUR"), ("RUB 400.00", 400.0, "RUB"), ("PHP\xa01,250.00", 1250.0, "PHP"),
    ("CZK 20.00", 20.0, "CZK"), ("NT$75", 75.0, "TWD"), ("[UNREGISTERD]10,800", 10800.0, "XXX"),
    ("₹ 100.00", 100.0, "INR"), ("100 zł", 100.0, "PLN"), ("🪙12", 12.0, "XXX"),
])
def test_money_as_shown(shown: str, amount: float, currency: str) -> None:
    money = parse_money(shown)
    assert (money.amount, money.currency, money.text) == (amount, currency, shown.strip())


def test_money_without_a_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="no number"):
        parse_money("free")


# ---------------------------------------------------------------- fuzz

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
_fields = st.fixed_dictionaries({}, optional={
    "message_type": st.sampled_from(["text_message", "paid_message", "paid_sticker", "membership_item",
                                      "ticker_paid_message_item", "sponsorships_gift_purchase_announcement",
                                      "donation_announcement", "nonsense"]) | _json_values,
    "message_id": st.text(max_size=12) | _json_values,
    "timestamp": st.integers(min_value=-(10**17), max_value=10**17) | _json_values,
    "author": st.fixed_dictionaries({"id": st.text(max_size=5), "name": st.text(max_size=5)}) | _json_values,
    "message": st.text(max_size=30) | _json_values,
    "money": st.fixed_dictionaries({"amount": st.floats(allow_nan=True), "text": st.text(max_size=8)}) | _json_values,
    "amount": st.text(max_size=8) | _json_values,
    "time_in_seconds": st.floats() | _json_values,
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_fields | st.dictionaries(st.text(max_size=8), _json_values, max_size=4), max_size=6))
def test_fuzz_any_records_give_messages_or_rejections(records: list[object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        events = list(ChatDownloaderReader(path).read())
    assert all(isinstance(e, ChatMessage | Rejected) for e in events)
    assert len(events) <= len(records)
    for event in events:
        if isinstance(event, Rejected):
            assert event.reason and event.location.startswith(str(path))


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=300), min_size=1, max_size=5))
def test_fuzz_any_text_survives_exactly(texts: list[str]) -> None:
    rows = [item("text_message", i, message=t) for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        got = messages_of(list(read_chat_file(write_jsonl(Path(tmp) / "t.jsonl", rows))))
    # exactly, except U+0000, which PostgreSQL cannot store (infra.events makes it U+FFFD)
    assert [m.text for m in got] == [t.replace("\x00", "") for t in texts]


def test_rejected_keeps_at_most_64_kib_of_the_record(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps(stream_items()[0]) + "\n" + "{" + "é" * 100_000 + "\n", encoding="utf-8")
    (rejected,) = [e for e in ChatDownloaderReader(path).read() if isinstance(e, Rejected)]
    assert len(rejected.raw.encode("utf-8")) <= 64 * 1024 and rejected.raw.startswith("{éé")
    letter = rejected.to_dead_letter()
    assert (letter.source, letter.location, letter.reason) == (
        "producers.readers.chat-downloader", f"{path}:2", rejected.reason)
    assert json.loads(rejected.to_json())["raw"] == rejected.raw
