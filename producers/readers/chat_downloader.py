"""chat-downloader items -> ChatMessage: the one mapping every YouTube/Twitch path goes through.

`item_to_message` accepts exactly the dicts `ChatDownloader().get_chat(...)` yields (the live
producer and the archive collector call it item by item) and the items of the files
`chat_downloader --output` writes, in three schema generations:

- current (>= 0.1, 2021+): nested `author {id, name, badges}`, `message_id`, `money {amount,
  currency, text}`, `message_type`, `header_primary_text` / `header_secondary_text`;
- early dev (Dec 2020): flat `author_id`, `author_name` (or `author` as a string), `id`,
  `amount` as shown ("$4.99"), `author_badges` as strings, `colours`;
- legacy chat_replay_downloader (2020): no `message_type`; a row is paid when it has `amount`,
  a ticker when it has `ticker_duration`; no ids (we derive `stream/author/timestamp`).

Membership: a `membership_item` with a primary header ("Member for 23 months") is a renewal
milestone; without one ("Welcome to X!", "New member") it is a new membership.

Counts that are not money (documented choice): Twitch bits, gifted YouTube memberships and
gifted Twitch subs keep the COUNT in `amount` with currency 'XXX' (ISO 4217's "no currency")
and a readable `amount_text` ("500 bits", "5 gifted memberships"). A Twitch sub carries its tier
in `amount_text` and no amount. Converting to money needs prices that vary by channel/region.

Tickers (`ticker_*`) repeat a paid item with the same id. Item by item they are skipped
(`None`); file readers keep a ticker only when its paid item is not in the file (a replay that
starts after the Super Chat still shows it in the ticker), so no payment is lost or doubled.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from infra.events import ChatMessage, MessageKind

from .base import ChatReader, Rejected, StreamInfo, build_message, reason_of
from .money import UNKNOWN_CURRENCY, currency_code, parse_money
from .text import is_member_badge, is_moderator_badge, is_owner_badge

# ---------------------------------------------------------------- the map, as data

# chat-downloader message_type -> our kind ("membership_item" is resolved by its header).
KINDS: dict[str, MessageKind] = {
    # YouTube
    "text_message": MessageKind.TEXT,
    "paid_message": MessageKind.PAID_MESSAGE,
    "paid_sticker": MessageKind.PAID_STICKER,
    "membership_item": MessageKind.MEMBERSHIP_NEW,
    "legacy_paid_message": MessageKind.MEMBERSHIP_NEW,  # pre-2020 "new sponsor" renderer
    "sponsorships_gift_purchase_announcement": MessageKind.MEMBERSHIP_GIFT,
    "sponsorships_gift_redemption_announcement": MessageKind.MEMBERSHIP_GIFT_RECEIVED,
    "donation_announcement": MessageKind.DONATION,
    "viewer_engagement_message": MessageKind.SYSTEM,
    "mode_change_message": MessageKind.SYSTEM,
    # Twitch
    "highlighted_message": MessageKind.TEXT,
    "send_message_in_subscriber_only_mode": MessageKind.TEXT,
    "subscription": MessageKind.SUBSCRIPTION,
    "resubscription": MessageKind.SUBSCRIPTION,
    "extend_subscription": MessageKind.SUBSCRIPTION,
    "prime_paid_upgrade": MessageKind.SUBSCRIPTION,
    "gift_paid_upgrade": MessageKind.SUBSCRIPTION,
    "anonymous_gift_paid_upgrade": MessageKind.SUBSCRIPTION,
    "subscription_gift": MessageKind.GIFT_SUBSCRIPTION,
    "anonymous_subscription_gift": MessageKind.GIFT_SUBSCRIPTION,
    "mystery_subscription_gift": MessageKind.GIFT_SUBSCRIPTION,
    "anonymous_mystery_subscription_gift": MessageKind.GIFT_SUBSCRIPTION,
}
# A ticker repeats the item of this type (same id).
TICKERS: dict[str, str] = {
    "ticker_paid_message_item": "paid_message",
    "ticker_paid_sticker_item": "paid_sticker",
    "ticker_sponsor_item": "membership_item",
}
# Twitch sends a community ("mystery") gift of N subs, then N single-gift notices with its origin id:
# file readers count the N once (item by item, the caller has to fold them; see `convert`).
MYSTERY_GIFTS = frozenset({"mystery_subscription_gift", "anonymous_mystery_subscription_gift"})
SINGLE_GIFTS = frozenset({"subscription_gift", "anonymous_subscription_gift"})
# Everything else (placeholder_item, banner, deleted_message, ban_user, room_state, raid, ...)
# is not chat by a viewer: item_to_message returns None and file readers count it as skipped.

# Where each field lives, newest schema first: (path, ...) tried in order.
FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "message_id": (("message_id",), ("id",)),
    "author_id": (("author", "id"), ("author_id",)),
    "author_name": (("author", "display_name"), ("author", "name"), ("author_name",), ("author",)),
    "badges": (("author", "badges"), ("author_badges",), ("badges",)),
    "text": (("message",),),
    "timestamp": (("timestamp",),),
    "offset_seconds": (("time_in_seconds",),),
    "money": (("money",), ("amount",)),
}
# Badge names that carry a role: Twitch set ids, YouTube icon types (lower-cased by chat-downloader).
TWITCH_MEMBER_BADGES = frozenset({"subscriber", "founder"})
ROLE_MODERATOR = frozenset({"moderator"})
ROLE_OWNER = frozenset({"broadcaster", "owner"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_INT = re.compile(r"\d[\d,.]*")
_WELCOME = re.compile(r"^welcome to .+!$", re.IGNORECASE)


# ---------------------------------------------------------------- item -> message

def message_type_of(item: dict[str, Any]) -> str:
    """The item's chat-downloader type; legacy (2020) rows get theirs from their fields."""
    message_type = item.get("message_type")
    if isinstance(message_type, str):
        return message_type
    if "action_type" in item:
        return "unknown"
    if item.get("amount"):
        return "ticker_paid_message_item" if "ticker_duration" in item else "paid_message"
    badges = _badge_titles(_first(item, FIELDS["badges"]))
    if "body_color" in item and "ticker_duration" in item:  # a sponsor ticker: colour, no amount
        return "ticker_sponsor_item"
    if any(t.lower() == "new member" for t in badges) and _WELCOME.match(str(item.get("message") or "")):
        return "membership_item"
    return "text_message"


def is_legacy(item: dict[str, Any]) -> bool:
    return "message_type" not in item and "action_type" not in item


def item_to_message(
    item: dict[str, Any], *, stream_id: str, platform: str = "youtube", keep_tickers: bool = False
) -> ChatMessage | None:
    """One chat-downloader item -> ChatMessage; None for items that are not viewer chat
    (tickers unless `keep_tickers`, placeholders, banners, deletions, room states ...).
    Raises ValueError naming the field for a broken item."""
    if not isinstance(item, dict):
        raise ValueError(f"item is a {type(item).__name__}, not an object")
    try:
        return _item_to_message(item, stream_id=stream_id, platform=platform, keep_tickers=keep_tickers)
    except (TypeError, KeyError, AttributeError, IndexError, OverflowError) as error:
        # A field of the wrong type (a list where a number belongs, an int currency): still a
        # broken item, and callers that map item by item (live, archive) only catch ValueError.
        raise ValueError(reason_of(error)) from None


def _item_to_message(
    item: dict[str, Any], *, stream_id: str, platform: str, keep_tickers: bool
) -> ChatMessage | None:
    message_type = message_type_of(item)
    if message_type in TICKERS:
        if not keep_tickers:
            return None
        message_type = TICKERS[message_type]
    if message_type not in KINDS:
        return None

    timestamp = _timestamp(item)
    author_id = _text_or_none(_first(item, FIELDS["author_id"]))
    author_name = _author_name(item)
    text = _message_text(item, platform)
    message_id = _text_or_none(_first(item, FIELDS["message_id"]))
    if message_id is None:
        if not is_legacy(item):
            raise ValueError("message_id: missing (neither 'message_id' nor 'id')")
        message_id = f"{stream_id}/{author_id or author_name}/{item['timestamp']}"

    kind = KINDS[message_type]
    if message_type == "membership_item":
        kind = MessageKind.MEMBERSHIP_MILESTONE if item.get("header_primary_text") else MessageKind.MEMBERSHIP_NEW
        if not text:
            text = str(item.get("header_secondary_text") or "")
    bits = item.get("bits")
    if kind is MessageKind.TEXT and isinstance(bits, int) and bits > 0:
        kind = MessageKind.BITS

    raw_badges = _first(item, FIELDS["badges"])
    badges = _badge_titles(raw_badges)
    member, moderator, owner = _roles(raw_badges, badges)
    fields: dict[str, Any] = {
        "platform": platform,
        "stream_id": stream_id,
        "message_id": message_id,
        "timestamp": timestamp,
        "offset_seconds": _float_or_none(item.get("time_in_seconds")),
        "author_id": author_id,
        "author_name": author_name,
        "text": text,
        "kind": kind,
        "badges": badges,
        "is_member": member,
        "is_moderator": moderator,
        "is_owner": owner,
    }
    if kind in (MessageKind.MEMBERSHIP_NEW, MessageKind.MEMBERSHIP_MILESTONE, MessageKind.MEMBERSHIP_GIFT_RECEIVED):
        fields["is_member"] = True
    fields.update(_payment(item, kind, text))
    if kind is MessageKind.DONATION and not author_name:
        fields["author_name"] = text.split(" donated ", 1)[0] if " donated " in text else ""
    return build_message(fields)


def _first(item: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> Any:
    for path in paths:
        value: Any = item
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                break
        if value is not None:
            return value
    return None


def _text_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _timestamp(item: dict[str, Any]) -> datetime:
    value = item.get("timestamp")
    if value is None or value == "":
        raise ValueError("timestamp: missing")
    try:
        micros = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"timestamp: {value!r} is not microseconds since 1970") from None
    if micros == 0:
        raise ValueError("timestamp: 0, the record carries no time (an anonymised recording?)")
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"timestamp: {micros} microseconds is out of range") from None


def _author_name(item: dict[str, Any]) -> str:
    name = _first(item, FIELDS["author_name"])
    if isinstance(name, dict):  # `author` is an object without a name
        return ""
    return "" if name is None else str(name)


def _message_text(item: dict[str, Any], platform: str) -> str:
    text = item.get("message")
    if text is None:
        return ""
    text = str(text)
    if platform == "youtube":
        text = restore_unicode_emoji(text, item.get("emotes"))
    return text


def restore_unicode_emoji(text: str, emotes: object) -> str:
    """chat-downloader writes every emoji as its shortcut (":face_with_tears_of_joy:"); put the
    character the viewer actually sent back for standard (non-custom) emoji, so the same message
    reads the same whichever way it was collected. Channel emotes stay `:name:`."""
    if not emotes or not isinstance(emotes, list) or ":" not in text:
        return text
    for emote in emotes:
        if not isinstance(emote, dict) or emote.get("is_custom_emoji"):
            continue
        emoji, name = emote.get("id"), emote.get("name")
        if isinstance(emoji, str) and isinstance(name, str) and name.startswith(":") and not emoji.isascii():
            text = text.replace(name, emoji)
    return text


def _badge_titles(raw: object) -> tuple[str, ...]:
    if not raw:
        return ()
    if isinstance(raw, str):  # legacy CSV/JSON: "Verified, Moderator"
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    titles = []
    for badge in raw if isinstance(raw, list) else [raw]:
        if isinstance(badge, dict):
            title = badge.get("title") or badge.get("name") or badge.get("icon_name")
            if title:
                titles.append(str(title))
        elif badge:
            titles.append(str(badge))
    return tuple(titles)


def _roles(raw: object, titles: tuple[str, ...]) -> tuple[bool, bool, bool]:
    """(member, moderator, owner) from badge titles and, where present, badge structure."""
    member = any(is_member_badge(t) for t in titles)
    moderator = any(is_moderator_badge(t) for t in titles)
    owner = any(is_owner_badge(t) for t in titles)
    for badge in raw if isinstance(raw, list) else []:
        if not isinstance(badge, dict):
            continue
        name = badge.get("name") or badge.get("icon_name")
        member = member or name in TWITCH_MEMBER_BADGES
        moderator = moderator or name in ROLE_MODERATOR
        owner = owner or name in ROLE_OWNER
        # YouTube role badges are icons (OWNER, MODERATOR, VERIFIED); a member badge is the
        # channel's own image, whatever language its tooltip is in.
        if badge.get("icons") and not badge.get("icon_name") and "version" not in badge:
            member = True
    return member, moderator, owner


def _payment(item: dict[str, Any], kind: MessageKind, text: str) -> dict[str, Any]:
    """amount / currency / amount_text for the kinds that carry them."""
    if kind in (MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER, MessageKind.DONATION):
        money = _first(item, FIELDS["money"])
        if money is None and kind is MessageKind.DONATION and " donated " in text:
            money = text.rsplit(" donated ", 1)[1]
        if money is None:
            if kind is MessageKind.DONATION:
                return {}
            raise ValueError(f"money: a {kind.value} item has no 'money' or 'amount'")
        return _money_fields(money)
    if kind is MessageKind.BITS:
        bits = int(item["bits"])
        return {"amount": float(bits), "currency": UNKNOWN_CURRENCY, "amount_text": f"{bits} bits"}
    if kind is MessageKind.MEMBERSHIP_GIFT:
        count = _count_in(text)
        return {"amount": float(count), "currency": UNKNOWN_CURRENCY, "amount_text": f"{count} gifted memberships"}
    if kind is MessageKind.GIFT_SUBSCRIPTION:
        count = item.get("mass_gift_count") or 1
        return {"amount": float(count), "currency": UNKNOWN_CURRENCY, "amount_text": f"{count} gifted subs"}
    if kind is MessageKind.SUBSCRIPTION:
        tier = item.get("subscription_type") or item.get("subscription_plan_name")
        return {"amount_text": str(tier)} if tier else {}
    return {}


def _money_fields(money: object) -> dict[str, Any]:
    if isinstance(money, dict):
        shown = money.get("text")
        amount = money.get("amount")
        code = money.get("currency")
        if amount is None and shown:
            parsed = parse_money(str(shown))
            return {"amount": parsed.amount, "currency": parsed.currency, "amount_text": parsed.text}
        if amount is None:
            raise ValueError("money.amount: missing")
        currency = currency_code(code) if code else UNKNOWN_CURRENCY
        if currency == UNKNOWN_CURRENCY and shown:
            currency = parse_money(str(shown)).currency
        return {"amount": float(amount), "currency": currency, "amount_text": str(shown) if shown else None}
    if isinstance(money, int | float):
        return {"amount": float(money), "currency": UNKNOWN_CURRENCY, "amount_text": str(money)}
    parsed = parse_money(str(money))
    return {"amount": parsed.amount, "currency": parsed.currency, "amount_text": parsed.text}


def _count_in(text: str) -> int:
    """'Gifted 5 Yaminions memberships' -> 5; 'sent a gift membership' -> 1."""
    match = _FIRST_INT.search(text)
    if not match:
        return 1
    return int(re.sub(r"[,.]", "", match.group(0)))


# ---------------------------------------------------------------- files

def stream_id_from_path(path: Path) -> str:
    """The stream a file is about, from its name: yt-dlp's "Title [VIDEOID].live_chat.json",
    "VIDEOID.json", "VIDEOID_0-100s_x.json"; otherwise the file name without its last suffix."""
    name = path.name
    bracketed = re.search(r"\[([A-Za-z0-9_-]{11})\]", name)
    if bracketed:
        return bracketed.group(1)
    head = name.split(".", 1)[0]
    if re.fullmatch(r"[A-Za-z0-9_-]{11}", head):
        return head
    prefixed = re.match(r"^([A-Za-z0-9_-]{11})_", name)
    if prefixed and re.search(r"[A-Z0-9]", prefixed.group(1)) and re.search(r"[a-z]", prefixed.group(1)):
        return prefixed.group(1)
    return path.stem or name


def guess_platform(items: Iterable[object]) -> str:
    """Twitch items from chat-downloader carry `display_name` and versioned badges."""
    for item in items:
        if not isinstance(item, dict):
            continue
        author = item.get("author")
        if isinstance(author, dict):
            badges = author.get("badges")
            if "display_name" in author or (
                isinstance(badges, list) and any(isinstance(b, dict) and "version" in b for b in badges)
            ):
                return "twitch"
        message_type = item.get("message_type")
        if isinstance(message_type, str) and KINDS.get(message_type) in (
            MessageKind.SUBSCRIPTION, MessageKind.GIFT_SUBSCRIPTION
        ):
            return "twitch"
    return "youtube"


# json raises RecursionError, not JSONDecodeError, for nesting deeper than the interpreter's stack
# (a hostile line of "[[[[..."): it is one more kind of invalid record, never a crash.
JSON_ERRORS = (json.JSONDecodeError, RecursionError)


def json_reason(error: Exception, position: str = "column") -> str:
    """'invalid JSON: <why> (column N)' for a JSON_ERRORS exception."""
    if isinstance(error, json.JSONDecodeError):
        where = error.colno if position == "column" else error.lineno
        return f"invalid JSON: {error.msg} ({position} {where})"
    return "invalid JSON: nested too deeply"


def is_json_lines(text: str) -> bool:
    """True when the first non-blank line is a whole JSON value and more lines follow."""
    lines = (line for line in text.split("\n") if line.strip())
    first = next(lines, None)
    if first is None or next(lines, None) is None:
        return False
    try:
        json.loads(first)
    except JSON_ERRORS:
        return False
    return True


def iter_json_records(text: str) -> Iterator[tuple[int, object | None, str | None, str]]:
    """(record number, value, error, raw) for a JSON array or JSON lines document.

    A JSON array that is cut or corrupted midway still yields every record before the damage
    and resynchronises at the next record that starts at the same indentation."""
    stripped = text.lstrip()
    if not stripped:
        return
    if stripped.startswith("["):
        yield from _iter_array(text)
        return
    # split on "\n" only: str.splitlines would also cut at U+2028 and friends inside a message
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None, line
        except JSON_ERRORS as error:
            yield number, None, json_reason(error), line


def json_documents(reader: ChatReader, text: str) -> Iterator[tuple[str, object | None, str | None, str]]:
    """(location, value, error, raw) of a file that is a JSON array, JSON lines, or one JSON value:
    the shapes in which tools save a sequence of items or of API responses."""
    array = text.lstrip().startswith("[")
    lines = not array and is_json_lines(text)
    for number, value, error, raw in iter_json_records(text if array or lines else f"[{text}]"):
        yield (reader.at_item(number) if array else reader.at_line(number) if lines else str(reader.path)), value, error, raw


def _iter_array(text: str) -> Iterator[tuple[int, object | None, str | None, str]]:
    decoder = json.JSONDecoder()
    try:
        whole = json.loads(text)
    except JSON_ERRORS:
        whole = None
    if isinstance(whole, list):
        for index, value in enumerate(whole, start=1):
            yield index, value, None, ""
        return
    position = text.index("[") + 1
    index = 0
    length = len(text)
    while True:
        while position < length and text[position] in " \t\r\n,":
            position += 1
        if position >= length or text[position] == "]":
            return
        index += 1
        try:
            value, end = decoder.raw_decode(text, position)
            yield index, value, None, text[position:end]
            position = end
        except JSON_ERRORS as error:
            resume = _next_record_start(text, position)
            raw = text[position:resume if resume > 0 else length]
            yield index, None, json_reason(error).split(" (")[0], raw
            if resume < 0:
                return
            position = resume


def _next_record_start(text: str, start: int) -> int:
    line_start = text.rfind("\n", 0, start) + 1
    indent = text[line_start:start]
    if indent.strip() == "":
        found = text.find("\n" + indent + "{", start + 1)
        return found + 1 + len(indent) if found >= 0 else -1
    found = text.find(", {", start + 1)
    return found + 2 if found >= 0 else -1


class ChatDownloaderReader(ChatReader):
    """`chat_downloader --output x.json|x.jsonl` files, any schema generation, YouTube or Twitch."""

    name = "chat-downloader"
    description = "chat-downloader JSON / JSON lines (current, 2020 dev and 2020 legacy schemas)"

    def __init__(self, path: Path, stream_id: str | None = None, platform: str | None = None) -> None:
        super().__init__(path=path, stream_id=stream_id)
        self.platform = platform

    def read(self) -> Iterator[ChatMessage | Rejected]:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        array = text.lstrip().startswith("[")
        records = []
        for number, value, error, raw in iter_json_records(text):
            location = self.at_item(number) if array else self.at_line(number)
            if error is not None:
                yield self.reject(location, error, raw)
            else:
                records.append((location, value))
        yield from self.convert(records)

    def convert(self, records: list[tuple[str, object]]) -> Iterator[ChatMessage | Rejected]:
        """Items -> messages with tickers folded in, duplicates dropped, sorted by time."""
        stream_id = self.stream_id or stream_id_from_path(self.path)
        platform = self.platform or guess_platform(value for _, value in records[:200])
        self.note_stream(_stream_info(platform, stream_id))
        kept: dict[str, ChatMessage] = {}
        ticker_only: dict[str, ChatMessage] = {}
        mystery_gifts: set[object] = set()  # Twitch: a community gift, then one notice per recipient
        for location, item in records:
            kind = message_type_of(item) if isinstance(item, dict) else "not an object"
            origin = item.get("origin_id") if isinstance(item, dict) else None
            origin = origin if isinstance(origin, str | int) else None  # a broken item's list is no id
            if kind in MYSTERY_GIFTS and origin:
                mystery_gifts.add(origin)
            elif kind in SINGLE_GIFTS and origin is not None and origin in mystery_gifts:
                self.skipped[f"{kind} (part of a mystery gift)"] += 1
                continue
            result = self.guarded(
                location, item,
                lambda item=item: item_to_message(item, stream_id=stream_id, platform=platform, keep_tickers=True),
            )
            if isinstance(result, Rejected):
                yield result
            elif result is None:
                self.skipped[kind] += 1
            elif kind in TICKERS:
                if result.message_id in kept or result.message_id in ticker_only:
                    self.skipped[f"{kind} (duplicate)"] += 1
                else:
                    ticker_only[result.message_id] = result
            elif result.message_id in kept:
                self.skipped["duplicate message id"] += 1
            else:
                kept[result.message_id] = result
                if ticker_only.pop(result.message_id, None) is not None:
                    self.skipped["ticker (duplicate)"] += 1
        yield from sorted([*kept.values(), *ticker_only.values()], key=lambda m: m.timestamp)


class ChatReplayCsvReader(ChatDownloaderReader):
    """The CSV that chat_replay_downloader.py (2020) wrote: one row per item, same fields as its JSON."""

    name = "chat-replay-csv"
    description = "chat_replay_downloader (2020) CSV"

    def read(self) -> Iterator[ChatMessage | Rejected]:
        text = self.path.read_text(encoding="utf-8-sig", errors="replace")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        records: list[tuple[str, object]] = []
        for row in reader:
            location = self.at_line(reader.line_num)
            if None in row:  # more cells than the header names
                yield self.reject(location, f"row has {len(row) - 1 + len(row[None])} cells, header has {len(reader.fieldnames or [])}", row)
                continue
            records.append((location, {k: v for k, v in row.items() if v not in ("", None)}))
        yield from self.convert(records)


def _stream_info(platform: str, stream_id: str) -> StreamInfo:
    url = f"https://www.youtube.com/watch?v={stream_id}" if platform == "youtube" and re.fullmatch(
        r"[A-Za-z0-9_-]{11}", stream_id) else None
    return StreamInfo(platform=platform, stream_id=stream_id, url=url)
