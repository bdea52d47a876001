"""YouTube Data API v3 `liveChatMessages.list` responses -> ChatMessage.

A file holds one response (`youtube#liveChatMessageListResponse`), a JSON array of responses,
JSON lines of responses (one per poll), or bare `youtube#liveChatMessage` items. The API names
money in micros with an ISO currency, so no symbol guessing is needed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from infra.events import ChatMessage, MessageKind

from .base import ChatReader, Rejected, StreamInfo, build_message
from .chat_downloader import json_documents, stream_id_from_path

# snippet.type -> (kind, snippet key holding the details, detail key holding the viewer's text)
EVENT_TYPES: dict[str, tuple[MessageKind, str | None, str | None]] = {
    "textMessageEvent": (MessageKind.TEXT, "textMessageDetails", "messageText"),
    "superChatEvent": (MessageKind.PAID_MESSAGE, "superChatDetails", "userComment"),
    "superStickerEvent": (MessageKind.PAID_STICKER, "superStickerDetails", None),
    "newSponsorEvent": (MessageKind.MEMBERSHIP_NEW, "newSponsorDetails", None),
    "memberMilestoneChatEvent": (MessageKind.MEMBERSHIP_MILESTONE, "memberMilestoneChatDetails", "userComment"),
    "membershipGiftingEvent": (MessageKind.MEMBERSHIP_GIFT, "membershipGiftingDetails", None),
    "giftMembershipReceivedEvent": (MessageKind.MEMBERSHIP_GIFT_RECEIVED, "giftMembershipReceivedDetails", None),
}
# Everything else (chatEndedEvent, messageDeletedEvent, userBannedEvent, pollEvent, tombstone,
# sponsorOnlyModeStartedEvent, ...) is not a viewer's chat: counted as skipped.

ROLE_FLAGS = (("isChatOwner", "Owner"), ("isChatModerator", "Moderator"), ("isChatSponsor", "Member"),
              ("isVerified", "Verified"))


def api_item_to_message(item: dict[str, Any], *, stream_id: str) -> ChatMessage | None:
    """One `youtube#liveChatMessage` -> ChatMessage; None for event types that are not chat."""
    snippet = item.get("snippet")
    if not isinstance(snippet, dict):
        raise ValueError("snippet: missing")
    event = snippet.get("type")
    if event not in EVENT_TYPES:
        return None
    kind, details_key, text_key = EVENT_TYPES[event]
    details = snippet.get(details_key) or {} if details_key else {}
    author = item.get("authorDetails") or {}
    published = snippet.get("publishedAt")
    if not published:
        raise ValueError("snippet.publishedAt: missing")
    text = details.get(text_key) if text_key else None
    if text is None:
        text = snippet.get("displayMessage") or ""
    fields: dict[str, Any] = {
        "platform": "youtube",
        "stream_id": stream_id,
        "message_id": item.get("id"),
        "timestamp": datetime.fromisoformat(str(published).replace("Z", "+00:00")),
        "author_id": author.get("channelId") or snippet.get("authorChannelId"),
        "author_name": author.get("displayName") or "",
        "text": text,
        "kind": kind,
        "badges": tuple(title for flag, title in ROLE_FLAGS if author.get(flag)),
        "is_member": bool(author.get("isChatSponsor")) or kind in (
            MessageKind.MEMBERSHIP_NEW, MessageKind.MEMBERSHIP_MILESTONE, MessageKind.MEMBERSHIP_GIFT_RECEIVED),
        "is_moderator": bool(author.get("isChatModerator")),
        "is_owner": bool(author.get("isChatOwner")),
    }
    if "amountMicros" in details:
        fields["amount"] = int(details["amountMicros"]) / 1_000_000
        fields["currency"] = details.get("currency")
        fields["amount_text"] = details.get("amountDisplayString")
    if kind is MessageKind.MEMBERSHIP_GIFT:
        count = int(details.get("giftMembershipsCount") or 1)
        fields.update(amount=float(count), currency="XXX", amount_text=f"{count} gifted memberships")
    return build_message(fields)


class YouTubeApiReader(ChatReader):
    """Saved `liveChatMessages.list` responses (google-api-python-client `.execute()` results)."""

    name = "youtube-api"
    description = "YouTube Data API v3 liveChatMessages.list JSON"

    def read(self) -> Iterator[ChatMessage | Rejected]:
        stream_id = self.stream_id or stream_id_from_path(self.path)
        self.note_stream(StreamInfo(platform="youtube", stream_id=stream_id))
        text = self.path.read_text(encoding="utf-8", errors="replace")
        seen: set[str] = set()
        # one response per array item or line (polls saved one after another), or the whole file
        for where, document, error, raw in json_documents(self, text):
            if error is not None:
                yield self.reject(where, error, raw)
                continue
            items = document.get("items") if isinstance(document, dict) and "items" in document else [document]
            for index, item in enumerate(items if isinstance(items, list) else [], start=1):
                location = f"{where}#message {index}"
                result = self.guarded(location, item, lambda item=item: api_item_to_message(item, stream_id=stream_id))
                if result is None:
                    self.skipped[str((item.get("snippet") or {}).get("type"))] += 1
                elif isinstance(result, Rejected):
                    yield result
                elif result.message_id in seen:  # consecutive polls overlap
                    self.skipped["duplicate message id"] += 1
                else:
                    seen.add(result.message_id)
                    yield result
