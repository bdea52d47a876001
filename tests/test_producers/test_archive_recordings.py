"""Recorded inputs for the archive tests (helpers only, no tests): chat-downloader item sequences.

`RecordedChat` stands where `ChatDownloader().get_chat(...)` would: it yields the recorded items
(dicts exactly as chat-downloader yields them), honours `start_time` the way chat-downloader does
for replays (items before it are not returned), and can fail midway with a real chat-downloader error.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "archive"
CHAT_STREAM = "v1x01abcdef"  # the recorded chat belongs to this fixture stream


def recorded_items(stream_id: str = CHAT_STREAM) -> list[dict[str, Any]]:
    """The recorded chat, re-labelled for `stream_id` (ids made unique per stream, as on YouTube)."""
    items = json.loads((FIXTURES / "chat_v1x01abcdef.json").read_text())
    if stream_id != CHAT_STREAM:
        for item in items:
            item["message_id"] = f"{stream_id}.{item['message_id']}"
    return items


class RecordedChat:
    """A chat source over recorded items. `failures[n]` = (after how many items, error) for call n."""

    def __init__(self, items: list[dict[str, Any]], failures: dict[int, tuple[int, Exception]] | None = None):
        self.items = items
        self.failures = failures or {}
        self.calls: list[tuple[str, float | None]] = []

    def __call__(self, url: str, *, start_time: float | None) -> Iterator[dict[str, Any]]:
        self.calls.append((url, start_time))
        return self._iterate(len(self.calls), start_time)

    def _iterate(self, call: int, start_time: float | None) -> Iterator[dict[str, Any]]:
        fail_after, error = self.failures.get(call, (None, None))
        given = 0
        for item in self.items:
            if start_time is not None and item.get("time_in_seconds", 0) < start_time:
                continue
            if fail_after is not None and given == fail_after:
                raise error  # type: ignore[misc]
            yield copy.deepcopy(item)
            given += 1


class ChatBySource:
    """Different recordings per stream URL (for the collector): url -> RecordedChat."""

    def __init__(self, by_stream: dict[str, RecordedChat]):
        self.by_stream = by_stream
        self.calls: list[tuple[str, float | None]] = []

    def __call__(self, url: str, *, start_time: float | None) -> Iterator[dict[str, Any]]:
        self.calls.append((url, start_time))
        stream_id = url.rsplit("=", 1)[-1].rsplit("/", 1)[-1]
        return self.by_stream[stream_id](url, start_time=start_time)


def videos_response(videos: list[tuple[str, str, str]]) -> str:
    """A recorded-format videos.list response: one item per (id, liveBroadcastContent, publishedAt),
    copied from the recorded item of that kind (so each has the fields YouTube sends for it)."""
    template = json.loads((FIXTURES / "videos_list.json").read_text())
    by_state = {item["snippet"]["liveBroadcastContent"]: item for item in reversed(template["items"])}
    items = []
    for video_id, state, published_at in videos:
        item = copy.deepcopy(by_state[state])
        item["id"] = video_id
        item["snippet"]["publishedAt"] = published_at
        item["snippet"]["title"] = item["snippet"]["localized"]["title"] = f"Stream {video_id}"
        items.append(item)
    page = {"totalResults": len(items), "resultsPerPage": len(items)}
    return json.dumps({**template, "items": items, "pageInfo": page})
