"""Raw YouTube InnerTube chat -> ChatMessage: yt-dlp `*.live_chat.json` and `get_live_chat` /
`get_live_chat_replay` responses (or any JSON holding their actions).

yt-dlp writes one `{"replayChatItemAction": {"actions": [...], "videoOffsetTimeMsec": ...}}` per
line; a `get_live_chat[_replay]` response holds the same actions under
`continuationContents.liveChatContinuation.actions` (the initial page under
`contents.liveChatRenderer.actions`). We find every chat action wherever it sits, turn each
renderer into a chat-downloader item with chat-downloader's own renderer parser, and then go
through the one `item_to_message` mapping, so a Super Chat reads the same whichever tool saved it.

Renderers: liveChatTextMessageRenderer, liveChatPaidMessageRenderer, liveChatPaidStickerRenderer,
liveChatMembershipItemRenderer, liveChatLegacyPaidMessageRenderer (old new-sponsor),
liveChatSponsorshipsGiftPurchaseAnnouncementRenderer / ...GiftRedemptionAnnouncementRenderer,
liveChatDonationAnnouncementRenderer, ticker renderers (folded into their paid item),
videoOffsetTimeMsec -> offset_seconds, timestampUsec -> timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from chat_downloader.sites.youtube import YouTubeChatDownloader
from chat_downloader.utils.core import camel_case_split, remove_prefixes, remove_suffixes

from infra.events import ChatMessage

from .base import Rejected
from .chat_downloader import JSON_ERRORS, ChatDownloaderReader, is_json_lines, iter_json_records, json_reason

# Action -> key of the renderer it carries. Other actions (deletions, bans, banners, polls,
# tooltips) change what a viewer sees, not who said what: they are counted as skipped.
ITEM_ACTIONS: dict[str, str] = {
    "addChatItemAction": "item",
    "addLiveChatTickerItemAction": "item",
    "replaceChatItemAction": "replacementItem",  # a placeholder's real content arriving late
}
REPLAY_ACTION = "replayChatItemAction"
OTHER_ACTIONS = frozenset({
    "markChatItemAsDeletedAction", "markChatItemsByAuthorAsDeletedAction", "removeChatItemAction",
    "removeChatItemByAuthorAction", "addBannerToLiveChatCommand", "removeBannerForLiveChatCommand",
    "showLiveChatTooltipCommand", "showLiveChatActionPanelAction", "updateLiveChatPollAction",
    "closeLiveChatActionPanelAction", "liveChatReportModerationStateCommand", "addToastAction",
    "updateLiveChatTickerItemAction",
})


def renderer_to_item(renderer: dict[str, Any], offset_seconds: float | None = None) -> dict[str, Any]:
    """`{"liveChatPaidMessageRenderer": {...}}` -> the item chat-downloader would yield for it."""
    if not isinstance(renderer, dict) or not renderer:
        raise ValueError("action holds no renderer")
    name = next(iter(renderer))
    info: dict[str, Any] = {}
    if offset_seconds is not None:
        info["time_in_seconds"] = offset_seconds
    item = YouTubeChatDownloader._parse_item(renderer, info)  # the library's own renderer parser
    item["message_type"] = camel_case_split(remove_suffixes(remove_prefixes(name, "liveChat"), "Renderer"))
    body = renderer[name] if isinstance(renderer[name], dict) else {}
    if name == "liveChatDonationAnnouncementRenderer":
        # the parser writes both `text` and `subtext` into `message`; the first says who gave what
        item["message"] = _runs_text(body.get("text"))
        item["sub_message"] = _runs_text(body.get("subtext"))
    return item


def _runs_text(value: object) -> str:
    if not isinstance(value, dict):
        return ""
    if "simpleText" in value:
        return str(value["simpleText"])
    return "".join(str(run.get("text", "")) for run in value.get("runs") or [] if isinstance(run, dict))


def find_actions(document: object, offset: float | None = None) -> Iterator[tuple[str, dict[str, Any], float | None]]:
    """(action type, action body, replay offset in s) for every chat action in a JSON document."""
    if isinstance(document, list):
        for value in document:
            yield from find_actions(value, offset)
        return
    if not isinstance(document, dict):
        return
    for key, value in document.items():
        if key == REPLAY_ACTION and isinstance(value, dict):
            yield from find_actions(value.get("actions") or [], _offset_seconds(value.get("videoOffsetTimeMsec"), offset))
        elif key in ITEM_ACTIONS or key in OTHER_ACTIONS:
            yield key, value if isinstance(value, dict) else {}, offset
        elif isinstance(value, dict | list):
            yield from find_actions(value, offset)


def _offset_seconds(msec: object, default: float | None) -> float | None:
    """videoOffsetTimeMsec in seconds; a broken value leaves the offset unknown (the timestamp stays)."""
    if msec in (None, ""):
        return default
    try:
        return float(msec) / 1000  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


class YouTubeRawReader(ChatDownloaderReader):
    """yt-dlp live_chat.json (JSON lines) or saved get_live_chat / get_live_chat_replay responses."""

    name = "youtube-raw"
    description = "yt-dlp live_chat.json and raw YouTube get_live_chat[_replay] responses"

    def read(self) -> Iterator[ChatMessage | Rejected]:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        records: list[tuple[str, object]] = []
        for where, document, error, raw in self._documents(text):
            if error is not None:
                yield self.reject(where, error, raw)
                continue
            actions = list(find_actions(document))
            if not actions:  # e.g. a line whose `actions` is not a list: counted, never silently gone
                self.skipped["record without chat actions"] += 1
            for index, (action, body, offset) in enumerate(actions, start=1):
                # a line or array item holds one action; a whole response holds many
                location = f"{where}#action {index}" if where == str(self.path) else where
                if action not in ITEM_ACTIONS:
                    self.skipped[action] += 1
                    continue
                result = self.guarded(
                    location, body, lambda b=body, a=action, o=offset: renderer_to_item(b.get(ITEM_ACTIONS[a]), o)
                )
                if isinstance(result, Rejected):
                    yield result
                else:
                    records.append((location, result))
        yield from self.convert(records)

    def _documents(self, text: str) -> Iterator[tuple[str, object | None, str | None, str]]:
        """(location, document, error, raw): one per line (yt-dlp), per array item, or the file."""
        stripped = text.lstrip()
        if not stripped:
            return
        if stripped.startswith("[") or is_json_lines(text):
            array = stripped.startswith("[")
            for number, value, error, raw in iter_json_records(text):
                yield (self.at_item(number) if array else self.at_line(number)), value, error, raw
            return
        try:
            document = json.loads(text)
        except JSON_ERRORS as error:
            yield str(self.path), None, json_reason(error, "line"), text
            return
        yield str(self.path), document, None, ""
