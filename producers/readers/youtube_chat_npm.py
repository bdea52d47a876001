"""JSON saved from the npm `youtube-chat` library (as in the HundredBeans live-chat dataset) -> ChatMessage.

One JSON array per stream, file name = video id, items in storage order (NOT time order: we
sort by timestamp):

    {"id", "timestamp": "2022-04-26T06:56:41.859Z",
     "author": {"channelId", "name", "thumbnail"}, "message": [{"text"} | {"emojiText", "isCustomEmoji", ...}],
     "isMembership", "isOwner", "isModerator", "isVerified", "superchat"?: {"amount": "￥1,000", "sticker"?}}

Emoji parts become their text (`emojiText`: the character for Unicode emoji, `:_name:` for
channel emotes), so the message reads as typed. Where the file sits in the dataset layout
`<channel>/history/<videoId>.json` with `<channel>/liveIds.json` and `channels.json` above it,
the stream's channel id and title are taken from there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from infra.events import ChatMessage, MessageKind

from .base import ChatReader, Rejected, StreamInfo, build_message
from .chat_downloader import iter_json_records, stream_id_from_path
from .money import parse_money

ROLE_FLAGS = (("isOwner", "Owner"), ("isModerator", "Moderator"), ("isMembership", "Member"),
              ("isVerified", "Verified"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def message_text(parts: object) -> str:
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise ValueError(f"message: expected a list of parts, got {type(parts).__name__}")
    out = []
    for part in parts:
        if not isinstance(part, dict):
            raise ValueError(f"message: part {part!r} is not an object")
        if "text" in part:
            out.append(str(part["text"]))
        elif "emojiText" in part:
            out.append(str(part["emojiText"]))
        elif "alt" in part:
            out.append(str(part["alt"]))
    return "".join(out)


def _timestamp(value: object) -> datetime:
    if isinstance(value, int | float):  # some library versions store epoch milliseconds
        return _EPOCH + timedelta(milliseconds=value)
    if not isinstance(value, str) or not value:
        raise ValueError("timestamp: missing")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp: {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def npm_item_to_message(item: dict[str, Any], *, stream_id: str) -> ChatMessage:
    author = item.get("author")
    if not isinstance(author, dict):
        raise ValueError("author: missing")
    fields: dict[str, Any] = {
        "platform": "youtube",
        "stream_id": stream_id,
        "message_id": item.get("id"),
        "timestamp": _timestamp(item.get("timestamp")),
        "author_id": author.get("channelId") or None,
        "author_name": author.get("name") or "",
        "text": message_text(item.get("message", [])),
        "kind": MessageKind.TEXT,
        "badges": tuple(title for flag, title in ROLE_FLAGS if item.get(flag)),
        "is_member": bool(item.get("isMembership")),
        "is_moderator": bool(item.get("isModerator")),
        "is_owner": bool(item.get("isOwner")),
    }
    superchat = item.get("superchat")
    if isinstance(superchat, dict) and superchat.get("amount"):
        money = parse_money(str(superchat["amount"]))
        fields.update(kind=MessageKind.PAID_STICKER if superchat.get("sticker") else MessageKind.PAID_MESSAGE,
                      amount=money.amount, currency=money.currency, amount_text=money.text)
    return build_message(fields)


class YouTubeChatNpmReader(ChatReader):
    name = "youtube-chat"
    description = "npm youtube-chat JSON arrays (HundredBeans layout: <channel>/history/<videoId>.json)"

    def read(self) -> Iterator[ChatMessage | Rejected]:
        stream_id = self.stream_id or stream_id_from_path(self.path)
        self.note_stream(self._stream_info(stream_id))
        text = self.path.read_text(encoding="utf-8", errors="replace")
        messages: list[ChatMessage] = []
        seen: set[str] = set()
        for number, item, error, raw in iter_json_records(text):
            location = self.at_item(number)
            if error is not None:
                yield self.reject(location, error, raw)
                continue
            if not isinstance(item, dict):
                yield self.reject(location, f"item is a {type(item).__name__}, not an object", item)
                continue
            result = self.guarded(location, item, lambda item=item: npm_item_to_message(item, stream_id=stream_id))
            if isinstance(result, Rejected):
                yield result
            elif result.message_id in seen:
                self.skipped["duplicate message id"] += 1
            else:
                seen.add(result.message_id)
                messages.append(result)
        messages.sort(key=lambda m: m.timestamp)  # storage order is not time order
        yield from messages

    def _stream_info(self, stream_id: str) -> StreamInfo:
        info = StreamInfo(platform="youtube", stream_id=stream_id)
        history = self.path.parent
        if history.name != "history":
            return info
        channel_dir = history.parent
        for entry in _load_list(channel_dir / "liveIds.json"):
            if entry.get("id") == stream_id:
                info.title = entry.get("title")
                info.url = entry.get("url")
        for channel in _load_list(channel_dir.parent / "channels.json"):
            if channel.get("slug") == channel_dir.name:
                info.channel_id = channel.get("id")
                info.channel_name = channel.get("name") or ""
        return info


def _load_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []
