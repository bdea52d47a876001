"""pytchat's JSON output (`chat.json()`, JsonfileArchiver) -> ChatMessage.

One item or a list of items (or JSON lines of either): `{"type": "superChat", "id", "timestamp"
(ms), "elapsedTime" ("1:23" in replays), "message", "amountValue", "amountString", "currency",
"author": {"channelId", "name", "isChatSponsor", "isChatModerator", "isChatOwner", ...}}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.events import ChatMessage, MessageKind

from .base import ChatReader, Rejected, StreamInfo, build_message
from .chat_downloader import json_documents, stream_id_from_path
from .money import currency_code, parse_money

TYPES: dict[str, MessageKind] = {
    "textMessage": MessageKind.TEXT,
    "superChat": MessageKind.PAID_MESSAGE,
    "superSticker": MessageKind.PAID_STICKER,
    "newSponsor": MessageKind.MEMBERSHIP_NEW,
    "donation": MessageKind.DONATION,
}
ROLE_FLAGS = (("isChatOwner", "Owner"), ("isChatModerator", "Moderator"), ("isChatSponsor", "Member"),
              ("isVerified", "Verified"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _elapsed_seconds(text: object) -> float | None:
    """'1:02:03' / '-0:04' -> seconds."""
    if not isinstance(text, str) or not text.strip():
        return None
    sign = -1 if text.strip().startswith("-") else 1
    seconds = 0
    for part in text.strip().lstrip("-").split(":"):
        seconds = seconds * 60 + int(part)
    return float(sign * seconds)


def pytchat_item_to_message(item: dict[str, Any], *, stream_id: str) -> ChatMessage | None:
    kind = TYPES.get(str(item.get("type")))
    if kind is None:
        return None
    author = item.get("author") or {}
    millis = item.get("timestamp")
    if not millis:
        raise ValueError("timestamp: missing or 0")
    fields: dict[str, Any] = {
        "platform": "youtube",
        "stream_id": stream_id,
        "message_id": item.get("id"),
        "timestamp": _EPOCH + timedelta(milliseconds=int(millis)),
        "offset_seconds": _elapsed_seconds(item.get("elapsedTime")),
        "author_id": author.get("channelId") or None,
        "author_name": author.get("name") or "",
        "text": item.get("message") or "",
        "kind": kind,
        "badges": tuple(title for flag, title in ROLE_FLAGS if author.get(flag)),
        "is_member": bool(author.get("isChatSponsor")) or kind is MessageKind.MEMBERSHIP_NEW,
        "is_moderator": bool(author.get("isChatModerator")),
        "is_owner": bool(author.get("isChatOwner")),
    }
    if kind in (MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER, MessageKind.DONATION):
        shown = item.get("amountString") or ""
        amount = item.get("amountValue")
        if amount in (None, "") and not shown:
            if kind is not MessageKind.DONATION:
                raise ValueError(f"amountValue: a {item.get('type')} item has no amount")
        else:
            currency = currency_code(item.get("currency")) if item.get("currency") else None
            if not currency or currency == "XXX":
                currency = parse_money(shown).currency if shown else "XXX"
            fields.update(amount=float(amount) if amount not in (None, "") else parse_money(shown).amount,
                          currency=currency, amount_text=shown or None)
    return build_message(fields)


class PytchatReader(ChatReader):
    name = "pytchat"
    description = "pytchat JSON output (chat.json(), JsonfileArchiver)"

    def read(self) -> Iterator[ChatMessage | Rejected]:
        stream_id = self.stream_id or stream_id_from_path(self.path)
        self.note_stream(StreamInfo(platform="youtube", stream_id=stream_id))
        text = self.path.read_text(encoding="utf-8", errors="replace")
        seen: set[str] = set()
        for location, value, error, raw in json_documents(self, text):
            if error is not None:
                yield self.reject(location, error, raw)
                continue
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, dict):
                    yield self.reject(location, f"item is a {type(item).__name__}, not an object", item)
                    continue
                result = self.guarded(location, item, lambda item=item: pytchat_item_to_message(item, stream_id=stream_id))
                if result is None:
                    self.skipped[str(item.get("type"))] += 1
                elif isinstance(result, Rejected):
                    yield result
                elif result.message_id in seen:
                    self.skipped["duplicate message id"] += 1
                else:
                    seen.add(result.message_id)
                    yield result
