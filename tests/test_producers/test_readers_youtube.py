"""Raw YouTube chat (yt-dlp live_chat.json, get_live_chat responses), the Data API's
liveChatMessages.list and pytchat's JSON, on files written here in those real shapes."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.events import ChatMessage, MessageKind
from producers.readers import Rejected, open_reader, read_chat_file
from producers.readers.chat_downloader import item_to_message
from producers.readers.pytchat import PytchatReader
from producers.readers.youtube_api import YouTubeApiReader
from producers.readers.youtube_raw import YouTubeRawReader, renderer_to_item

USEC = 1_700_000_000_000_000
THUMBS = {"thumbnails": [{"url": "https://yt4.ggpht.com/a=s32-c-k", "width": 32, "height": 32},
                         {"url": "https://yt4.ggpht.com/a=s64-c-k", "width": 64, "height": 64}]}
MEMBER = {"liveChatAuthorBadgeRenderer": {
    "customThumbnail": {"thumbnails": [{"url": "https://yt3.ggpht.com/b=s16-c-k"}, {"url": "https://yt3.ggpht.com/b=s32-c-k"}]},
    "tooltip": "Mitglied (1 Jahr)", "accessibility": {"accessibilityData": {"label": "Mitglied (1 Jahr)"}}}}
MODERATOR = {"liveChatAuthorBadgeRenderer": {"icon": {"iconType": "MODERATOR"}, "tooltip": "Moderator"}}


def author(n: int, badges: list[object] | None = None) -> dict[str, object]:
    fields: dict[str, object] = {"authorName": {"simpleText": f"@fan{n}"}, "authorPhoto": THUMBS,
                                 "authorExternalChannelId": f"UCfan{n:020d}"}
    if badges:
        fields["authorBadges"] = badges
    return fields


def text_renderer(n: int, runs: list[object], badges: list[object] | None = None) -> dict[str, object]:
    return {"liveChatTextMessageRenderer": {
        "message": {"runs": runs}, **author(n, badges), "id": f"CkUKGk{n:06d}",
        "timestampUsec": str(USEC + n * 1_000_000), "trackingParams": "CAEQl98BIhMI",
        "contextMenuEndpoint": {"commandMetadata": {"webCommandMetadata": {"ignoreNavigation": True}}}}}


def paid_renderer(n: int, amount: str) -> dict[str, object]:
    return {"liveChatPaidMessageRenderer": {
        "id": f"ChwKGk{n:06d}", "timestampUsec": str(USEC + n * 1_000_000), **author(n, [MEMBER]),
        "purchaseAmountText": {"simpleText": amount}, "message": {"runs": [{"text": "for snacks"}]},
        "headerBackgroundColor": 4278239141, "headerTextColor": 4278190080, "bodyBackgroundColor": 4280150454,
        "bodyTextColor": 4278190080, "authorNameTextColor": 2315255808, "timestampColor": 2147483648}}


RENDERERS = [
    text_renderer(1, [{"text": "hallo "}, {"emoji": {"emojiId": "😀", "shortcuts": [":grinning_face:"],
                                                        "searchTerms": ["grinning"], "image": THUMBS}},
                      {"emoji": {"emojiId": "UCx/abc", "shortcuts": [":_clubHeart:"], "isCustomEmoji": True,
                                 "image": THUMBS}}], [MEMBER]),
    text_renderer(2, [{"text": "מה קורה? \u200f"}], [MODERATOR]),
    paid_renderer(3, "€5.00"),
    {"liveChatPaidStickerRenderer": {"id": "ChwKGk000004", "timestampUsec": str(USEC + 4_000_000), **author(4),
                                     "purchaseAmountText": {"simpleText": "₩2,000"}, "sticker": THUMBS,
                                     "moneyChipBackgroundColor": 4280191205, "stickerDisplayWidth": 40}},
    {"liveChatMembershipItemRenderer": {"id": "ChwKGk000005", "timestampUsec": str(USEC + 5_000_000),
                                        **author(5, [MEMBER]),
                                        "headerSubtext": {"runs": [{"text": "Welcome to "}, {"text": "Club"}, {"text": "!"}]}}},
    {"liveChatMembershipItemRenderer": {"id": "ChwKGk000006", "timestampUsec": str(USEC + 6_000_000),
                                        **author(6, [MEMBER]),
                                        "headerPrimaryText": {"runs": [{"text": "Member for "}, {"text": "12"}, {"text": " months"}]},
                                        "headerSubtext": {"simpleText": "Club"}, "message": {"runs": [{"text": "a year!"}]}}},
    {"liveChatSponsorshipsGiftPurchaseAnnouncementRenderer": {
        "id": "ChwKGk000007", "timestampUsec": str(USEC + 7_000_000), "authorExternalChannelId": "UCgiver",
        "header": {"liveChatSponsorshipsHeaderRenderer": {
            "authorName": {"simpleText": "@giver"}, "authorPhoto": THUMBS,
            "primaryText": {"runs": [{"text": "Gifted ", "bold": True}, {"text": "20", "bold": True},
                                     {"text": " Club memberships", "bold": True}]}, "image": THUMBS}}}},
    {"liveChatSponsorshipsGiftRedemptionAnnouncementRenderer": {
        "id": "ChwKGk000008", "timestampUsec": str(USEC + 8_000_000), **author(8),
        "message": {"runs": [{"text": "received a gift membership by "}, {"text": "@giver"}]}}},
    {"liveChatPlaceholderItemRenderer": {"id": "ChwKGk000009", "timestampUsec": str(USEC + 9_000_000)}},
]
EXPECTED_KINDS = [MessageKind.TEXT, MessageKind.TEXT, MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER,
                  MessageKind.MEMBERSHIP_NEW, MessageKind.MEMBERSHIP_MILESTONE, MessageKind.MEMBERSHIP_GIFT,
                  MessageKind.MEMBERSHIP_GIFT_RECEIVED]


def ticker_of(paid: dict[str, object]) -> dict[str, object]:
    body = paid["liveChatPaidMessageRenderer"]
    assert isinstance(body, dict)
    return {"addLiveChatTickerItemAction": {"item": {"liveChatTickerPaidMessageItemRenderer": {
        "id": body["id"], "amount": body["purchaseAmountText"], "durationSec": 300, "fullDurationSec": 300,
        "showItemEndpoint": {"showLiveChatItemEndpoint": {"renderer": paid}},
        "authorExternalChannelId": body["authorExternalChannelId"]}}, "durationSec": "300"}}


def ytdlp_line(renderer: dict[str, object], offset_ms: int) -> str:
    action = {"clickTrackingParams": "CAEQl98BIhMI", "addChatItemAction": {"item": renderer, "clientId": "x"}}
    return json.dumps({"clickTrackingParams": "CAEQl98BIhMI",
                       "replayChatItemAction": {"actions": [action], "videoOffsetTimeMsec": str(offset_ms)},
                       "videoOffsetTimeMsec": str(offset_ms), "isLive": False}, ensure_ascii=False)


def check_messages(messages: list[ChatMessage]) -> None:
    assert [m.kind for m in messages] == EXPECTED_KINDS
    first, rtl, paid, sticker, new, milestone, gift, received = messages
    assert first.text == "hallo 😀:_clubHeart:" and first.is_member and first.badges == ("Mitglied (1 Jahr)",)
    assert first.author_id == "UCfan00000000000000000001" and first.author_name == "@fan1"
    assert first.timestamp == datetime.fromtimestamp((USEC + 1_000_000) / 1e6, UTC)
    assert rtl.text == "מה קורה? \u200f" and rtl.is_moderator and not rtl.is_member
    assert (paid.amount, paid.currency, paid.amount_text, paid.text) == (5.0, "EUR", "€5.00", "for snacks")
    assert (sticker.amount, sticker.currency) == (2000.0, "KRW")
    assert new.text == "Welcome to Club!" and milestone.text == "a year!"
    assert (gift.amount, gift.currency, gift.author_id, gift.author_name) == (20.0, "XXX", "UCgiver", "@giver")
    assert received.is_member and received.text.startswith("received a gift")


def test_ytdlp_live_chat_json(tmp_path: Path) -> None:
    lines = [ytdlp_line(r, 1000 * i) for i, r in enumerate(RENDERERS, start=1)]
    lines.insert(3, json.dumps({"replayChatItemAction": {"actions": [ticker_of(RENDERERS[2])], "videoOffsetTimeMsec": "3000"}}))
    path = tmp_path / "Stream title [dQw4w9WgXcQ].live_chat.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reader = open_reader(path)
    assert isinstance(reader, YouTubeRawReader)
    events = list(reader.read())
    assert not [e for e in events if isinstance(e, Rejected)]
    messages = [e for e in events if isinstance(e, ChatMessage)]
    check_messages(messages)
    assert {m.stream_id for m in messages} == {"dQw4w9WgXcQ"}
    assert [m.offset_seconds for m in messages] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert reader.skipped["placeholder_item"] == 1
    assert reader.skipped["ticker_paid_message_item (duplicate)"] == 1


def test_get_live_chat_response(tmp_path: Path) -> None:
    actions = [{"addChatItemAction": {"item": r, "clientId": f"c{i}"}} for i, r in enumerate(RENDERERS)]
    actions.append(ticker_of(RENDERERS[2]))
    actions.append({"markChatItemAsDeletedAction": {"deletedStateMessage": {"runs": [{"text": "[message deleted]"}]},
                                                    "targetItemId": "CkUKGk000001"}})
    response = {"responseContext": {"serviceTrackingParams": []}, "continuationContents": {"liveChatContinuation": {
        "continuations": [{"invalidationContinuationData": {"timeoutMs": 10000, "continuation": "0ofMyAN"}}],
        "actions": actions}}}
    path = tmp_path / "get_live_chat.json"
    path.write_text(json.dumps(response, indent=2, ensure_ascii=False), encoding="utf-8")
    reader = open_reader(path)
    assert isinstance(reader, YouTubeRawReader)
    messages = [e for e in reader.read() if isinstance(e, ChatMessage)]
    check_messages(messages)
    assert all(m.offset_seconds is None for m in messages)  # live: no replay offset
    assert reader.skipped["markChatItemAsDeletedAction"] == 1


def test_raw_renderers_map_exactly_like_chat_downloader_items() -> None:
    """The raw path is chat-downloader's own parser + item_to_message: same message either way."""
    for renderer in RENDERERS[:8]:
        item = renderer_to_item(renderer, 12.5)
        assert item_to_message(item, stream_id="s") == item_to_message(json.loads(json.dumps(item)), stream_id="s")


def test_raw_malformed_lines_and_renderers(tmp_path: Path) -> None:
    broken = dict(RENDERERS[0]["liveChatTextMessageRenderer"])  # type: ignore[arg-type]
    del broken["timestampUsec"]
    lines = [ytdlp_line(RENDERERS[0], 1000), '{"replayChatItemAction": {"actions": [', ytdlp_line(
        {"liveChatTextMessageRenderer": broken}, 1500), ytdlp_line(RENDERERS[1], 2000)]
    path = tmp_path / "x.live_chat.json"
    path.write_text("\n".join(lines), encoding="utf-8")
    events = list(read_chat_file(path, format="yt-dlp"))
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert [(r.location, r.reason.split(":")[0]) for r in rejected] == [(f"{path}:2", "invalid JSON"), (f"{path}:3", "timestamp")]
    assert "timestamp: missing" in rejected[1].reason
    assert [m.text for m in events if isinstance(m, ChatMessage)] == ["hallo 😀:_clubHeart:", "מה קורה? \u200f"]


# ---------------------------------------------------------------- Data API

def api_message(n: int, event: str, details_key: str | None = None, details: dict[str, object] | None = None,
                sponsor: bool = False) -> dict[str, object]:
    snippet: dict[str, object] = {"type": event, "liveChatId": "Cg0KC2RRdzR3OVdnWGNR", "authorChannelId": f"UC{n}",
                                  "publishedAt": f"2024-05-01T12:00:{n:02d}.123456+00:00", "hasDisplayContent": True,
                                  "displayMessage": f"display {n}"}
    if details_key:
        snippet[details_key] = details or {}
    return {"kind": "youtube#liveChatMessage", "etag": "e", "id": f"LCC.{n}", "snippet": snippet,
            "authorDetails": {"channelId": f"UC{n}", "channelUrl": f"http://www.youtube.com/channel/UC{n}",
                              "displayName": f"Name {n}", "profileImageUrl": "https://yt3.ggpht.com/x",
                              "isVerified": False, "isChatOwner": n == 9, "isChatSponsor": sponsor,
                              "isChatModerator": False}}


def api_response(items: list[dict[str, object]]) -> dict[str, object]:
    return {"kind": "youtube#liveChatMessageListResponse", "etag": "e", "nextPageToken": "GPai",
            "pollingIntervalMillis": 4000, "pageInfo": {"totalResults": len(items), "resultsPerPage": len(items)},
            "items": items}


def test_data_api_responses(tmp_path: Path) -> None:
    first = [
        api_message(1, "textMessageEvent", "textMessageDetails", {"messageText": "hi 👋"}, sponsor=True),
        api_message(2, "superChatEvent", "superChatDetails", {"amountMicros": "2000000", "currency": "USD",
                                                               "amountDisplayString": "$2.00", "userComment": "gg", "tier": 2}),
        api_message(3, "superStickerEvent", "superStickerDetails", {"amountMicros": "500000000", "currency": "JPY",
                                                                     "amountDisplayString": "¥500", "tier": 3}),
    ]
    second = [
        first[2],  # polls overlap: the same message twice
        api_message(4, "newSponsorEvent", "newSponsorDetails", {"memberLevelName": "Club", "isUpgrade": False}),
        api_message(5, "memberMilestoneChatEvent", "memberMilestoneChatDetails", {"userComment": "1 year", "memberMonth": 12}),
        api_message(6, "membershipGiftingEvent", "membershipGiftingDetails", {"giftMembershipsCount": 3}),
        api_message(7, "messageDeletedEvent", "messageDeletedDetails", {"deletedMessageId": "LCC.1"}),
        {**api_message(8, "textMessageEvent"), "snippet": {"type": "textMessageEvent"}},  # no publishedAt
        api_message(9, "textMessageEvent", "textMessageDetails", {"messageText": "owner here"}),
    ]
    path = tmp_path / "dQw4w9WgXcQ.api.jsonl"
    path.write_text(json.dumps(api_response(first)) + "\n" + json.dumps(api_response(second)) + "\n", encoding="utf-8")
    reader = open_reader(path)
    assert isinstance(reader, YouTubeApiReader)
    events = list(reader.read())
    messages = {m.message_id: m for m in events if isinstance(m, ChatMessage)}
    assert [m.kind for m in messages.values()] == [
        MessageKind.TEXT, MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER, MessageKind.MEMBERSHIP_NEW,
        MessageKind.MEMBERSHIP_MILESTONE, MessageKind.MEMBERSHIP_GIFT, MessageKind.TEXT]
    assert messages["LCC.1"].is_member and messages["LCC.1"].text == "hi 👋"
    assert (messages["LCC.2"].amount, messages["LCC.2"].currency, messages["LCC.2"].text) == (2.0, "USD", "gg")
    assert (messages["LCC.3"].amount, messages["LCC.3"].currency) == (500.0, "JPY")
    assert messages["LCC.6"].amount == 3.0 and messages["LCC.9"].is_owner
    assert messages["LCC.2"].timestamp == datetime(2024, 5, 1, 12, 0, 2, 123456, tzinfo=UTC)
    (rejected,) = [e for e in events if isinstance(e, Rejected)]
    assert rejected.location == f"{path}:2#message 6" and "publishedAt" in rejected.reason
    assert reader.skipped["messageDeletedEvent"] == 1 and reader.skipped["duplicate message id"] == 1


# ---------------------------------------------------------------- pytchat

def pytchat_item(n: int, kind: str, **extra: object) -> dict[str, object]:
    return {"author": {"badgeUrl": "", "type": "", "isVerified": False, "isChatOwner": False, "isChatSponsor": n == 1,
                       "isChatModerator": False, "channelId": f"UC{n}", "channelUrl": f"http://www.youtube.com/channel/UC{n}",
                       "name": f"p{n}", "imageUrl": "https://yt3.ggpht.com/x"},
            "type": kind, "id": f"py{n}", "timestamp": 1_570_678_496_000 + n, "elapsedTime": f"1:0{n}",
            "datetime": "2019-10-10 12:34:56", "message": f"msg {n}", "messageEx": [f"msg {n}"],
            "amountValue": 0.0, "amountString": "", "currency": "", "bgColor": 0, **extra}


def test_pytchat_json(tmp_path: Path) -> None:
    items = [pytchat_item(1, "textMessage"),
             pytchat_item(2, "superChat", amountValue=800.0, amountString="￥800", currency="JPY"),
             pytchat_item(3, "superSticker", amountValue=2.0, amountString="$2.00", currency="USD"),
             pytchat_item(4, "newSponsor"),
             pytchat_item(5, "textMessage", timestamp=0)]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    reader = open_reader(path)
    assert isinstance(reader, PytchatReader)
    events = list(reader.read())
    messages = [e for e in events if isinstance(e, ChatMessage)]
    assert [m.kind for m in messages] == [MessageKind.TEXT, MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER,
                                          MessageKind.MEMBERSHIP_NEW]
    assert messages[0].is_member and messages[0].offset_seconds == 61.0
    assert (messages[1].amount, messages[1].currency, messages[1].amount_text) == (800.0, "JPY", "￥800")
    (rejected,) = [e for e in events if isinstance(e, Rejected)]
    assert rejected.location == f"{path}#item 5" and "timestamp" in rejected.reason


# ---------------------------------------------------------------- fuzz

_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
_json = st.recursive(_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=10)
_renderer_names = st.sampled_from(["liveChatTextMessageRenderer", "liveChatPaidMessageRenderer",
                                   "liveChatPaidStickerRenderer", "liveChatMembershipItemRenderer",
                                   "liveChatSponsorshipsGiftPurchaseAnnouncementRenderer", "liveChatWhatever"])
_renderer_body = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=6) | _json, "timestampUsec": st.integers(-(10**18), 10**18).map(str) | _json,
    "authorName": st.fixed_dictionaries({"simpleText": st.text(max_size=6)}) | _json,
    "message": st.fixed_dictionaries({"runs": st.lists(st.fixed_dictionaries({"text": st.text(max_size=6)}) | _json, max_size=3)}) | _json,
    "purchaseAmountText": st.fixed_dictionaries({"simpleText": st.text(max_size=8)}) | _json,
    "authorBadges": _json, "headerPrimaryText": _json, "header": _json,
})
_action = st.builds(lambda name, body, kind: {kind: {"item": {name: body}}}, _renderer_names, _renderer_body,
                    st.sampled_from(["addChatItemAction", "addLiveChatTickerItemAction", "replaceChatItemAction"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(_action | st.dictionaries(st.text(max_size=6), _json, max_size=2), max_size=5))
def test_fuzz_raw_actions(actions: list[object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.live_chat.json"
        path.write_text("".join(json.dumps({"replayChatItemAction": {"actions": [a], "videoOffsetTimeMsec": "5"}}) + "\n"
                                for a in actions), encoding="utf-8")
        events = list(YouTubeRawReader(path).read())
    assert all(isinstance(e, ChatMessage | Rejected) for e in events)
    assert len(events) <= len(actions)
