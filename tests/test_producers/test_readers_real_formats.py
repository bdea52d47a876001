"""Every real file under ../shared/data/formats parses, with its paid events, memberships, authors
and times right. Expected numbers come from the folder READMEs (counted as unique events: a
Super Chat and its ticker copy are one payment)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.events import ChatMessage, MessageKind
from producers.readers import Rejected, detect_format, open_reader
from producers.readers.chat_downloader import item_to_message
from producers.readers.youtube_raw import ITEM_ACTIONS, find_actions, renderer_to_item

T = MessageKind.TEXT
PM, PS = MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER
NEW, MILESTONE, GIFT = MessageKind.MEMBERSHIP_NEW, MessageKind.MEMBERSHIP_MILESTONE, MessageKind.MEMBERSHIP_GIFT
DON, SYS = MessageKind.DONATION, MessageKind.SYSTEM

# file -> (format, kind counts, distinct author ids, paid (amount, currency) sorted)
EXPECTED: dict[str, tuple[str, dict[MessageKind, int], int, list[tuple[float, str]]]] = {
    "75ohmantenna-chat-downloader-fork/youtube-shu-pokopia-10m-events.json":
        ("chat-downloader", {MILESTONE: 2, NEW: 1, PM: 1, SYS: 1}, 4, [(5000.0, "JPY")]),
    "xenova-chat-downloader/chat_downloader_2021-07/zVCs9Cug_qM.json": ("chat-downloader", {T: 10}, 10, []),
    "xenova-chat-downloader/chat_downloader_dev_2020-12/test_superchats.json":
        ("chat-downloader", {T: 347, PM: 38, NEW: 1, SYS: 1}, 349, []),
    "xenova-chat-downloader/chat_downloader_dev_2020-12/test_donation_announcements.json":
        ("chat-downloader", {T: 1137, DON: 57, NEW: 8, SYS: 1}, 1164, []),
    "xenova-chat-downloader/chat_replay_downloader_2020/wXspodtIxYU_100-200s_all_types.json":
        ("chat-downloader", {T: 717, PM: 15, NEW: 4}, 678, []),
    "xenova-chat-downloader/chat_replay_downloader_2020/wXspodtIxYU_100-200s_all_types.csv":
        ("chat-replay-csv", {T: 717, PM: 15, NEW: 4}, 678, []),
    "xenova-chat-downloader/chat_replay_downloader_2020/wXspodtIxYU_0-100s_messages.json":
        ("chat-downloader", {T: 681}, 648, []),
    "xenova-chat-downloader/chat_replay_downloader_2020/wXspodtIxYU_0-100s_messages.csv":
        ("chat-replay-csv", {T: 681}, 648, []),
    "xenova-chat-downloader/chat_replay_downloader_2020/97w16cYskVI_0-100s_superchat.json":
        ("chat-downloader", {PM: 69}, 69, []),
    "xenova-chat-downloader/chat_replay_downloader_2020/97w16cYskVI_0-100s_superchat.csv":
        ("chat-replay-csv", {PM: 69}, 69, []),
    "xenova-chat-downloader/youtube_raw_actions/youtube_actions.json":
        ("youtube-raw", {T: 1, SYS: 2, NEW: 1, DON: 1, PS: 2, PM: 1}, 5, [(9.99, "USD"), (10.0, "USD"), (20.0, "USD")]),
    "koshkokoshka-yt-chat-to-video/temp_chat.live_chat.2026-01-14.json": ("youtube-raw", {T: 652, SYS: 1}, 34, []),
    "koshkokoshka-yt-chat-to-video/temp_chat.live_chat.2026-01-28.json": ("youtube-raw", {T: 225, SYS: 1}, 14, []),
    "OMUCHAT-provider/get_live_chat_superchat_tky5A2gLuZo.json": ("youtube-raw", {T: 1, PM: 1}, 2, [(320.0, "JPY")]),
    "LinaTsukusu-youtube-chat/youtube-example/comment-all-response.json":
        ("youtube-raw", {T: 65, PM: 3}, 67, [(610.0, "JPY"), (1000.0, "JPY"), (1840.0, "JPY")]),
    "LinaTsukusu-youtube-chat/testdata/get_live_chat.super-chat.json": ("youtube-raw", {PM: 1}, 1, [(1000.0, "JPY")]),
    "LinaTsukusu-youtube-chat/testdata/get_live_chat.super-chat-no-msg.json": ("youtube-raw", {PM: 1}, 1, [(320.0, "JPY")]),
    "LinaTsukusu-youtube-chat/testdata/get_live_chat.super-sticker.json": ("youtube-raw", {PS: 1}, 1, [(90.0, "JPY")]),
    "LinaTsukusu-youtube-chat/testdata/get_live_chat.membership-gift.json": ("youtube-raw", {GIFT: 1}, 1, []),
    "LinaTsukusu-youtube-chat/testdata/get_live_chat.subscribe-member.json": ("youtube-raw", {NEW: 1}, 1, []),
    "LinaTsukusu-youtube-chat/testdata/get_live_chat.no-chat.json": ("youtube-raw", {}, 0, []),
    "taizan-hokuto-pytchat/chatreplay.json": ("youtube-raw", {T: 47, PM: 1}, 24, [(20.0, "CZK")]),
    "taizan-hokuto-pytchat/compatible/superchat.json": ("youtube-raw", {PM: 1}, 1, [(846.0, "JPY")]),
    "taizan-hokuto-pytchat/compatible/supersticker.json": ("youtube-raw", {PS: 1}, 1, [(200.0, "JPY")]),
    "taizan-hokuto-pytchat/compatible/newSponsor_rev.json": ("youtube-raw", {NEW: 1}, 1, []),
    "taizan-hokuto-pytchat/default/superchat.json": ("youtube-raw", {PM: 1}, 1, [(800.0, "JPY")]),
    "taizan-hokuto-pytchat/default/supersticker.json": ("youtube-raw", {PS: 1}, 1, [(200.0, "JPY")]),
    "taizan-hokuto-pytchat/default/newSponsor_current.json": ("youtube-raw", {NEW: 1}, 1, []),
    "taizan-hokuto-pytchat/default/newSponsor_lagacy.json": ("youtube-raw", {NEW: 1}, 1, []),
    "taizan-hokuto-pytchat/default/replay_member_text.json": ("youtube-raw", {T: 1}, 1, []),
    "taizan-hokuto-pytchat/paramgen_firstread.json": ("youtube-raw", {T: 2}, 2, []),
    "taizan-hokuto-pytchat/unregistered_currency.json": ("youtube-raw", {PM: 1}, 1, [(10800.0, "XXX")]),
    "taizan-hokuto-pytchat/compatible/API_SuperChat.json": ("youtube-api", {PM: 1}, 1, [(200.0, "JPY")]),
    "taizan-hokuto-pytchat/compatible/API_NewSponsor.json": ("youtube-api", {NEW: 1}, 1, []),
    "taizan-hokuto-pytchat/compatible/API_TextMessage.json": ("youtube-api", {T: 1}, 1, []),
    "taizan-hokuto-pytchat/default/jsonified_item.json": ("pytchat", {PM: 1}, 1, [(800.0, "JPY")]),
    "taizan-hokuto-pytchat/default/jsonified_list.json": ("pytchat", {PM: 1}, 1, [(800.0, "JPY")]),
}
# Anonymised recordings whose timestamps were all set to 0: no record has a time we could store.
# file -> (kinds of chat items, kinds of ticker items); the README counts renderers of both.
ZERO_TIME = {"taizan-hokuto-pytchat/calculator/superchat_0.json": ({T: 46, PM: 4}, {PM: 2}),
             "taizan-hokuto-pytchat/test_stream.json": ({T: 2, PM: 1, PS: 1}, {PM: 1, NEW: 1})}
SMALL_FILES = [f"LinaTsukusu-youtube-chat/testdata/get_live_chat.{n}.json" for n in (
    "custom-emoji", "from-member", "from-moderator", "from-owner", "from-verified", "global-emoji1", "global-emoji2",
    "normal")]


def read(path: Path) -> tuple[list[ChatMessage], list[Rejected]]:
    events = list(open_reader(path).read())
    return [e for e in events if isinstance(e, ChatMessage)], [e for e in events if isinstance(e, Rejected)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_file(shared_data: Path, name: str) -> None:
    fmt, kinds, authors, paid = EXPECTED[name]
    path = shared_data / "formats" / name
    assert detect_format(path) == fmt
    messages, rejected = read(path)
    assert rejected == []
    assert Counter(m.kind for m in messages) == Counter(kinds)
    assert len({m.author_id for m in messages if m.author_id}) == authors
    if paid:
        assert sorted((m.amount, m.currency) for m in messages if m.kind in (PM, PS)) == paid
    assert all(m.timestamp > datetime(2010, 1, 1, tzinfo=UTC) for m in messages)
    assert all(m.amount is not None and m.currency for m in messages if m.kind in (PM, PS))


@pytest.mark.parametrize("name", SMALL_FILES)
def test_single_message_samples(shared_data: Path, name: str) -> None:
    (message,), rejected = read(shared_data / "formats" / name)
    assert not rejected and message.kind is T and message.author_name == "authorName"
    assert message.timestamp.year == 2021  # the anonymiser set every time to 2021-01-01
    role = name.split(".")[1]
    assert message.is_member == (role == "from-member")
    assert message.is_moderator == (role == "from-moderator")
    assert message.is_owner == (role == "from-owner")
    if role == "custom-emoji":
        assert ":" in message.text  # a channel emote stays its :name:


def test_unique_paid_events_match_the_readmes(shared_data: Path) -> None:
    formats = shared_data / "formats"
    superchats, _ = read(formats / "xenova-chat-downloader/chat_downloader_dev_2020-12/test_superchats.json")
    paying = [m for m in superchats if m.is_paid]
    assert len(paying) == 39 and len({m.viewer_id for m in paying}) == 38  # README: 39 unique, 38 donors
    gura, _ = read(formats / "xenova-chat-downloader/chat_replay_downloader_2020/97w16cYskVI_0-100s_superchat.json")
    assert len({m.viewer_id for m in gura}) == 69
    assert {"GBP", "USD", "EUR", "JPY", "CAD"} <= {m.currency for m in gura}
    donations, _ = read(formats / "xenova-chat-downloader/chat_downloader_dev_2020-12/test_donation_announcements.json")
    gifts = [m for m in donations if m.kind is DON]
    assert all(m.amount and m.currency for m in gifts)
    assert Counter(m.author_name for m in gifts)["Anonymous"] == 35


def test_times_authors_and_badges_are_right(shared_data: Path) -> None:
    formats = shared_data / "formats"
    shu, _ = read(formats / "75ohmantenna-chat-downloader-fork/youtube-shu-pokopia-10m-events.json")
    paid = next(m for m in shu if m.kind is PM)
    assert paid.author_id == "UCgUIToG-dkZzyQMCkX6-JOg" and paid.amount_text == "¥5,000"
    assert paid.timestamp == datetime(2026, 3, 20, 0, 32, 47, 316949, tzinfo=UTC)
    assert paid.offset_seconds == pytest.approx(584.137)
    assert [m.text for m in shu if m.kind is NEW] == ["Welcome to Yaminions!"]
    replay, _ = read(formats / "taizan-hokuto-pytchat/chatreplay.json")
    czk = next(m for m in replay if m.kind is PM)
    assert (czk.author_name, czk.text, czk.offset_seconds) == ("Svatopluk Čech", "Hello from Czech Republic", 3269.119)
    noel, _ = read(formats / "OMUCHAT-provider/get_live_chat_superchat_tky5A2gLuZo.json")
    sc = next(m for m in noel if m.kind is PM)
    assert sc.is_member and sc.badges[0].startswith("メンバー")
    ytdlp, _ = read(formats / "koshkokoshka-yt-chat-to-video/temp_chat.live_chat.2026-01-14.json")
    assert sum(m.is_moderator for m in ytdlp) == 74 and sum(m.is_owner for m in ytdlp) == 18
    assert all(m.offset_seconds is not None for m in ytdlp)
    offsets = [m.offset_seconds for m in ytdlp if m.kind is T]
    assert offsets == sorted(offsets)


@pytest.mark.parametrize("name", sorted(ZERO_TIME))
def test_anonymised_zero_times_are_rejected_with_the_reason(shared_data: Path, name: str) -> None:
    """These recordings carry timestampUsec 0: nothing can be stored, every record is reported.
    Their structure still maps right: with a time put in, the same renderers give the kinds."""
    path = shared_data / "formats" / name
    messages, rejected = read(path)
    assert messages == [] and rejected
    assert all("timestamp: 0" in r.reason for r in rejected)
    chat: Counter[MessageKind] = Counter()
    tickers: Counter[MessageKind] = Counter()
    for action, body, offset in find_actions(json.loads(path.read_text(encoding="utf-8"))):
        if action not in ITEM_ACTIONS:
            continue
        item = {**renderer_to_item(body[ITEM_ACTIONS[action]], offset), "timestamp": 1_600_000_000_000_000}
        message = item_to_message(item, stream_id="s", keep_tickers=True)
        if message is not None:
            (tickers if item["message_type"].startswith("ticker_") else chat)[message.kind] += 1
    assert (chat, tickers) == tuple(Counter(kinds) for kinds in ZERO_TIME[name])


def test_every_chat_file_in_formats_is_covered(shared_data: Path) -> None:
    formats = shared_data / "formats"
    chat_files = {str(p.relative_to(formats)) for p in formats.rglob("*") if p.is_file() and detect_format(p)}
    assert chat_files == set(EXPECTED) | set(ZERO_TIME) | set(SMALL_FILES)
