"""Stream metadata from the YouTube Data API v3: `videos.list`, 50 ids a call.

The seed called the API once per video with a client built per call and only asked for `snippet`.
Here one client is built once, ids go 50 to a call (1 quota unit each), `liveStreamingDetails` gives the
actual start/end, quota and rate-limit errors are retried with capped back-off, and the API key never
reaches an error message or a log line (googleapiclient puts it in every request URI).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from infra.errors import InputError, RetriesExceeded, ServiceError
from producers.archive.backoff import Backoff

log = logging.getLogger(__name__)

VIDEOS_PER_CALL = 50  # the API's limit for `id`
PARTS = "snippet,liveStreamingDetails"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# 403s that clear with time; other 403s (forbidden, accessNotConfigured, keyInvalid...) never do.
RETRYABLE_REASONS = frozenset({
    "quotaExceeded", "dailyLimitExceeded", "rateLimitExceeded", "userRateLimitExceeded", "backendError",
})
_KEY_IN_URI = re.compile(r"(key=)[^&\s\"'>]+")


@dataclass(frozen=True)
class VideoMetadata:
    video_id: str
    title: str
    channel_id: str | None
    channel_title: str
    published_at: datetime | None
    live_broadcast_content: str  # none | live | upcoming (API values)
    actual_start: datetime | None
    actual_end: datetime | None
    scheduled_start: datetime | None

    @property
    def status(self) -> str:
        """Our streams.status: upcoming | live | completed."""
        if self.live_broadcast_content == "upcoming":
            return "upcoming"
        if self.live_broadcast_content == "live":
            return "live"
        return "completed"

    @property
    def was_streamed(self) -> bool:
        """False for plain uploads (no liveStreamingDetails at all)."""
        return self.actual_start is not None or self.scheduled_start is not None


@dataclass(frozen=True)
class MetadataResult:
    videos: list[VideoMetadata]
    missing: list[str]  # requested ids the API did not return: private, deleted, or never existed
    calls: int


def redact(text: str, secret: SecretStr | None) -> str:
    """Remove the key from text: its literal value, and any `key=` query parameter."""
    if secret is not None and secret.get_secret_value():
        text = text.replace(secret.get_secret_value(), "***")
    return _KEY_IN_URI.sub(r"\1***", text)


class _RedactKeyFilter(logging.Filter):
    """googleapiclient logs full request URIs (key included) at DEBUG; scrub them before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "key=" in message:
            record.msg, record.args = _KEY_IN_URI.sub(r"\1***", message), None
        return True


def _install_log_redaction() -> None:
    for name in ("googleapiclient.discovery", "googleapiclient.http", "googleapiclient.model"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactKeyFilter) for f in logger.filters):
            logger.addFilter(_RedactKeyFilter())


def build_youtube_client(api_key: SecretStr | None, *, http: Any = None, request_builder: Any = None) -> Any:
    """The `youtube` v3 resource, from the discovery document shipped with the library (no network).

    `http` / `request_builder` take googleapiclient's HttpMock, HttpMockSequence or RequestMockBuilder."""
    from googleapiclient.discovery import build

    if api_key is None or not api_key.get_secret_value().strip():
        raise InputError(
            "the YouTube Data API needs a key: set DONORCAST_YOUTUBE_API_KEY "
            "(Google Cloud console -> APIs & Services -> Credentials, with 'YouTube Data API v3' enabled)"
        )
    _install_log_redaction()
    kwargs: dict[str, Any] = {"developerKey": api_key.get_secret_value(), "static_discovery": True,
                              "cache_discovery": False}
    if http is not None:
        kwargs["http"] = http
    if request_builder is not None:
        kwargs["requestBuilder"] = request_builder
    return build("youtube", "v3", **kwargs)


@dataclass(frozen=True)
class _Failure:
    status: int | None
    reason: str
    message: str
    retryable: bool
    retry_after: float | None = None

    def __str__(self) -> str:
        status = f"HTTP {self.status} " if self.status is not None else ""
        return f"{status}{self.reason}: {self.message}".strip()


class YouTubeMetadata:
    """`fetch(ids)` -> metadata of those videos, in batches of 50, with capped back-off."""

    def __init__(
        self,
        youtube: Any,
        api_key: SecretStr | None,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._youtube = youtube
        self._api_key = api_key  # kept only to scrub it from messages
        self._backoff = backoff or Backoff()
        self._sleep = sleep

    @classmethod
    def from_key(cls, api_key: SecretStr | None, *, http: Any = None, request_builder: Any = None,
                 backoff: Backoff | None = None, sleep: Callable[[float], None] = time.sleep) -> YouTubeMetadata:
        youtube = build_youtube_client(api_key, http=http, request_builder=request_builder)
        return cls(youtube, api_key, backoff=backoff, sleep=sleep)

    def fetch(self, video_ids: Iterable[str]) -> MetadataResult:
        ids = list(dict.fromkeys(video_ids))
        videos: list[VideoMetadata] = []
        calls = 0
        for start in range(0, len(ids), VIDEOS_PER_CALL):
            response = self._list(ids[start:start + VIDEOS_PER_CALL])
            calls += 1
            videos.extend(v for v in map(parse_video, response.get("items", [])) if v is not None)
        returned = {v.video_id for v in videos}
        return MetadataResult(videos=videos, missing=[i for i in ids if i not in returned], calls=calls)

    def _list(self, batch: Sequence[str]) -> dict[str, Any]:
        failure: _Failure | None = None
        for attempt in range(1, self._backoff.attempts + 1):
            request = self._youtube.videos().list(part=PARTS, id=",".join(batch))
            outcome = self._attempt(request)
            if isinstance(outcome, dict):
                return outcome
            failure = outcome
            if not failure.retryable:
                break
            if attempt < self._backoff.attempts:
                delay = self._backoff.delay(attempt, failure.retry_after)
                log.warning("YouTube videos.list: %s; retry %d/%d in %.1f s",
                            failure, attempt + 1, self._backoff.attempts, delay)
                self._sleep(delay)
        # Raised here, outside any `except`, so no HttpError (whose URI holds the key) rides along
        # as __context__.
        assert isinstance(failure, _Failure)
        if not failure.retryable:
            if failure.status in (400, 401, 403):
                raise InputError(
                    f"YouTube Data API refused videos.list ({failure}); check DONORCAST_YOUTUBE_API_KEY "
                    "and that the YouTube Data API v3 is enabled for it"
                )
            raise ServiceError(f"YouTube Data API videos.list failed: {failure}")
        raise RetriesExceeded(
            f"YouTube Data API videos.list still failing after {self._backoff.attempts} attempts: {failure}. "
            + ("The daily quota resets at midnight Pacific time; run `donorcast update` then to continue."
               if failure.reason in ("quotaExceeded", "dailyLimitExceeded") else "Try again later.")
        )

    def _attempt(self, request: Any) -> dict[str, Any] | _Failure:
        """The response, or what went wrong (key scrubbed)."""
        from googleapiclient.errors import HttpError
        from httplib2 import HttpLib2Error

        try:
            # num_retries defaults to 0: we retry ourselves, so we decide what is worth retrying.
            return request.execute()
        except HttpError as error:
            return self._http_failure(error)
        except (OSError, HttpLib2Error) as error:
            return _Failure(None, type(error).__name__, redact(str(error), self._api_key), retryable=True)

    def _http_failure(self, error: Any) -> _Failure:
        status = int(error.resp.status)
        reason, message = _error_reason(error.content)
        retry_after = _retry_after(error.resp)
        retryable = status in RETRYABLE_STATUS or (status == 403 and reason in RETRYABLE_REASONS)
        return _Failure(status, reason, redact(message, self._api_key), retryable, retry_after)


def _error_reason(content: bytes | str | None) -> tuple[str, str]:
    """(reason, message) from Google's JSON error body: {"error": {"message", "errors": [{"reason"}]}}."""
    try:
        body = json.loads(content or b"{}")
        error = body.get("error", {}) if isinstance(body, dict) else {}
        details = error.get("errors") or [{}]
        reason = details[0].get("reason") or error.get("status") or "error"
        message = re.sub(r"<[^>]+>", "", str(error.get("message", "")))  # the quota message holds a link
        return str(reason), message
    except (ValueError, AttributeError, TypeError):
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        return "error", text[:200]


def _retry_after(resp: Any) -> float | None:
    value = resp.get("retry-after") if hasattr(resp, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_video(item: dict[str, Any]) -> VideoMetadata | None:
    """One `youtube#video` resource; None when it has no id (never seen, but not worth a crash)."""
    video_id = item.get("id")
    if not isinstance(video_id, str) or not video_id:
        return None
    snippet = item.get("snippet") or {}
    details = item.get("liveStreamingDetails") or {}
    return VideoMetadata(
        video_id=video_id,
        title=str(snippet.get("title", "")),
        channel_id=snippet.get("channelId"),
        channel_title=str(snippet.get("channelTitle", "")),
        published_at=_time(snippet.get("publishedAt")),
        live_broadcast_content=str(snippet.get("liveBroadcastContent", "none")),
        actual_start=_time(details.get("actualStartTime")),
        actual_end=_time(details.get("actualEndTime")),
        scheduled_start=_time(details.get("scheduledStartTime")),
    )
