"""Download one stream's chat with chat-downloader into PostgreSQL, in idempotent batches.

The seed asked chat-downloader for the `messages` and `superchat` groups (text, Super Chats, Super
Stickers, memberships, gift purchases) and abandoned a stream at the first odd item. Here a broken
item is counted and skipped, messages are saved every `batch_size` items (so a crash loses at most one
batch), an iterator failure is retried with capped back-off from just before the last saved message,
and the stream's `chat_status` ends as complete, partial (some chat saved, then it failed) or failed.

The chat iterator is injected (`ChatItemSource`): chat-downloader in production, recorded item
sequences in tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from infra.events import ChatMessage
from infra.repository import save_messages, upsert_stream
from producers.archive.backoff import Backoff
from producers.archive.state import last_saved_offset, saved_message_count
from producers.readers.chat_downloader import item_to_message

log = logging.getLogger(__name__)

# chat-downloader's groups: messages = text_message; superchat = paid_message, paid_sticker,
# membership_item, sponsorships_gift_purchase_announcement. The default would be text only.
MESSAGE_GROUPS = ("messages", "superchat")
SOURCE = "archive"
RESUME_OVERLAP_SECONDS = 10.0  # re-read a little before the last saved message; saves are idempotent
MAX_REJECTIONS_KEPT = 20
MAX_ERROR_CHARS = 500
# chat-downloader errors that no retry will fix.
PERMANENT_ERRORS = (
    "VideoNotFound", "VideoUnavailable", "VideoUnplayable", "LoginRequired", "NoChatReplay", "ChatDisabled",
    "InvalidURL", "URLNotProvided", "SiteNotSupported", "InvalidParameter", "UserNotFound",
)


class ChatItemSource(Protocol):
    """url, start offset in seconds (None: from the start) -> chat-downloader item dicts."""

    def __call__(self, url: str, *, start_time: float | None) -> Iterable[dict[str, Any]]: ...


def chat_downloader_source(*, max_attempts: int = 3, inactivity_timeout: float | None = 300.0) -> ChatItemSource:
    """The real source: chat-downloader's replay iterator over the stream's whole chat."""

    def items(url: str, *, start_time: float | None) -> Iterator[dict[str, Any]]:
        from chat_downloader import ChatDownloader

        downloader = ChatDownloader()
        try:
            yield from downloader.get_chat(
                url,
                start_time=start_time,
                message_groups=list(MESSAGE_GROUPS),
                max_attempts=max_attempts,
                interruptible_retry=False,  # True would wait for Enter on stdin between retries
                inactivity_timeout=inactivity_timeout,
            )
        finally:
            downloader.close()

    return items


@dataclass(frozen=True)
class StreamTarget:
    platform: str
    stream_id: str
    url: str


@dataclass
class DownloadResult:
    stream_id: str
    chat_status: str = "pending"  # complete | partial | failed once done
    items: int = 0  # items read from the iterator, all attempts
    saved: int = 0  # new rows (repeats after a resume are not counted)
    ignored: int = 0  # items that are not viewer chat (banners, tickers, ...)
    rejected: int = 0
    rejections: list[str] = field(default_factory=list)  # "item N: reason", the first few
    attempts: int = 0
    resumed_from: list[float | None] = field(default_factory=list)  # start_time of each attempt
    error: str | None = None


def is_permanent(error: BaseException) -> bool:
    return type(error).__name__ in PERMANENT_ERRORS


def describe_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return text[:MAX_ERROR_CHARS]


async def download_chat(
    pool: asyncpg.Pool,
    target: StreamTarget,
    source: ChatItemSource,
    *,
    backoff: Backoff | None = None,
    batch_size: int = 500,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_items: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Download, save and mark one stream's chat. Never raises for a chat failure: the outcome is
    recorded on the stream row (chat_status / chat_error) and returned."""
    backoff = backoff or Backoff(attempts=3, initial_seconds=10.0, max_seconds=120.0)
    result = DownloadResult(stream_id=target.stream_id)
    failure: BaseException | None = None
    for attempt in range(1, backoff.attempts + 1):
        result.attempts = attempt
        start_time = await _resume_point(pool, target)
        result.resumed_from.append(start_time)
        failure = await _download_once(pool, target, source, start_time, batch_size, result, on_items)
        if failure is None:
            result.chat_status, result.error = "complete", None
            await upsert_stream(pool, platform=target.platform, stream_id=target.stream_id,
                                chat_status="complete", chat_error=None, source=SOURCE)
            return result
        result.error = describe_error(failure)
        if is_permanent(failure) or attempt == backoff.attempts:
            break
        delay = backoff.delay(attempt)
        log.warning("chat of %s failed (%s); retry %d/%d in %.0f s", target.stream_id, result.error,
                    attempt + 1, backoff.attempts, delay)
        await sleep(delay)
    saved = await saved_message_count(pool, target.platform, target.stream_id)
    result.chat_status = "partial" if saved > 0 else "failed"
    await upsert_stream(pool, platform=target.platform, stream_id=target.stream_id,
                        chat_status=result.chat_status, chat_error=result.error, source=SOURCE)
    return result


async def _resume_point(pool: asyncpg.Pool, target: StreamTarget) -> float | None:
    last = await last_saved_offset(pool, target.platform, target.stream_id)
    if last is None or last <= RESUME_OVERLAP_SECONDS:
        return None
    return last - RESUME_OVERLAP_SECONDS


async def _download_once(
    pool: asyncpg.Pool,
    target: StreamTarget,
    source: ChatItemSource,
    start_time: float | None,
    batch_size: int,
    result: DownloadResult,
    on_items: Callable[[int], None] | None,
) -> BaseException | None:
    """One pass over the iterator; the error that ended it early, or None when it ran out."""
    try:
        # In a thread: making the iterator may already do network I/O.
        iterator = await asyncio.to_thread(lambda: iter(source(target.url, start_time=start_time)))
    except Exception as error:  # noqa: BLE001 - any failure of the source is the stream's outcome
        return error
    cancelled = False
    try:
        while True:
            chunk, failure = await asyncio.to_thread(_take, iterator, batch_size)
            messages = _to_messages(chunk, target, result)
            if messages:
                result.saved += await save_messages(pool, messages, source=SOURCE)
            result.items += len(chunk)
            if on_items is not None and chunk:
                on_items(len(chunk))
            if failure is not None:
                return failure
            if len(chunk) < batch_size:
                return None
    except asyncio.CancelledError:
        cancelled = True  # Ctrl-C: the worker thread may still be inside the iterator; leave it be
        raise
    finally:
        close = getattr(iterator, "close", None)
        if callable(close) and not cancelled:
            await asyncio.to_thread(close)


def _take(iterator: Iterator[dict[str, Any]], n: int) -> tuple[list[dict[str, Any]], Exception | None]:
    """Up to n items; stops early at the end or at an error, keeping what came before it."""
    chunk: list[dict[str, Any]] = []
    try:
        for _ in range(n):
            chunk.append(next(iterator))
    except StopIteration:
        pass
    except Exception as error:  # noqa: BLE001 - network, parsing: whatever chat-downloader raises
        return chunk, error
    return chunk, None


def _to_messages(chunk: list[dict[str, Any]], target: StreamTarget, result: DownloadResult) -> list[ChatMessage]:
    messages = []
    for position, item in enumerate(chunk, start=result.items + 1):
        try:
            message = item_to_message(item, stream_id=target.stream_id, platform=target.platform)
        except (ValueError, TypeError, KeyError) as error:  # pydantic's ValidationError is a ValueError
            result.rejected += 1
            if len(result.rejections) < MAX_REJECTIONS_KEPT:
                reason = " ".join(str(error).split())[:200]
                result.rejections.append(f"item {position}: {reason}")
            continue
        if message is None:
            result.ignored += 1
        else:
            messages.append(message)
    return messages
