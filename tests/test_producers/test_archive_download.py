"""Chat download on recorded chat-downloader item sequences, into the real PostgreSQL."""

from __future__ import annotations

import asyncpg
import chat_downloader
import pytest
from chat_downloader.errors import NoChatReplay, RetriesExceeded

from infra.events import MessageKind
from infra.repository import stream_messages, upsert_stream
from producers.archive.backoff import Backoff
from producers.archive.download import (
    MESSAGE_GROUPS,
    StreamTarget,
    chat_downloader_source,
    download_chat,
)
from tests.test_producers.test_archive_recordings import CHAT_STREAM, RecordedChat, recorded_items

TARGET = StreamTarget("youtube", CHAT_STREAM, f"https://www.youtube.com/watch?v={CHAT_STREAM}")
N_ITEMS = 21
N_BROKEN = 1  # item 11: a paid_message without its money
ONE_TRY = Backoff(attempts=1, initial_seconds=0, max_seconds=0)


async def stream_row(pool: asyncpg.Pool, stream_id: str = CHAT_STREAM) -> asyncpg.Record:
    return await pool.fetchrow("SELECT chat_status, chat_error, chat_fetched_at FROM streams WHERE stream_id = $1",
                               stream_id)


async def test_whole_chat_is_saved_with_paid_events_and_marked_complete(pool: asyncpg.Pool) -> None:
    await upsert_stream(pool, platform="youtube", stream_id=CHAT_STREAM, channel_id="UCfixtureChannel00000001")
    source = RecordedChat(recorded_items())
    seen: list[int] = []

    result = await download_chat(pool, TARGET, source, backoff=ONE_TRY, batch_size=4, on_items=seen.append)

    assert (result.chat_status, result.items, result.saved, result.rejected) == ("complete", N_ITEMS, 20, N_BROKEN)
    assert result.rejections == ["item 11: money: a paid_message item has no 'money' or 'amount'"]
    assert sum(seen) == N_ITEMS and max(seen) == 4  # saved in batches of 4
    assert source.calls == [(TARGET.url, None)]
    row = await stream_row(pool)
    assert row["chat_status"] == "complete" and row["chat_error"] is None and row["chat_fetched_at"] is not None

    messages = await stream_messages(pool, CHAT_STREAM)
    assert len(messages) == 20
    by_kind = {}
    for m in messages:
        by_kind.setdefault(m.kind, []).append(m)
    assert [(m.amount, m.currency) for m in by_kind[MessageKind.PAID_MESSAGE]] == [(5.0, "USD")]
    assert [(m.amount, m.currency, m.amount_text) for m in by_kind[MessageKind.PAID_STICKER]] == [(200.0, "JPY", "\u00a5200")]
    assert len(by_kind[MessageKind.MEMBERSHIP_NEW]) == 1 and len(by_kind[MessageKind.MEMBERSHIP_MILESTONE]) == 1
    assert [m.amount for m in by_kind[MessageKind.MEMBERSHIP_GIFT]] == [5.0]
    rtl = next(m for m in messages if m.author_name == "@\u0645\u0631\u064a\u0645")
    assert rtl.text == "\u0645\u0631\u062d\u0628\u0627 from Cairo \u200b\u200d\U0001f44b"  # kept exactly
    assert all(m.is_member for m in messages if m.author_name == "@mika_fan")
    assert messages[0].offset_seconds == pytest.approx(-12.371)  # pre-stream chat kept, in time order

    again = await download_chat(pool, TARGET, RecordedChat(recorded_items()), backoff=ONE_TRY)
    assert (again.chat_status, again.saved) == ("complete", 0)  # idempotent
    assert len(await stream_messages(pool, CHAT_STREAM)) == 20


async def test_failure_midway_keeps_saved_messages_marks_partial_and_resumes_without_duplicates(
    pool: asyncpg.Pool,
) -> None:
    dropped = RetriesExceeded("Maximum number of retries has been reached (3).")
    failing = RecordedChat(recorded_items(), failures={1: (13, dropped)})

    partial = await download_chat(pool, TARGET, failing, backoff=ONE_TRY, batch_size=5)

    assert partial.chat_status == "partial"
    assert partial.items == 13 and partial.saved == 12  # every item read before the failure is kept
    assert partial.error == "RetriesExceeded: Maximum number of retries has been reached (3)."
    row = await stream_row(pool)
    assert (row["chat_status"], row["chat_error"]) == ("partial", partial.error)
    assert len(await stream_messages(pool, CHAT_STREAM)) == 12

    resumed_source = RecordedChat(recorded_items())
    resumed = await download_chat(pool, TARGET, resumed_source, backoff=ONE_TRY, batch_size=5)

    # The 13th item was at 600.0 s: resume 10 s before it; the overlap is deduplicated by id.
    assert resumed_source.calls == [(TARGET.url, 590.0)]
    assert resumed.chat_status == "complete"
    assert resumed.saved == 20 - 12
    messages = await stream_messages(pool, CHAT_STREAM)
    assert len(messages) == 20 and len({m.message_id for m in messages}) == 20
    row = await stream_row(pool)
    assert (row["chat_status"], row["chat_error"]) == ("complete", None)


async def test_transient_failures_are_retried_with_capped_backoff_in_the_same_run(pool: asyncpg.Pool) -> None:
    dropped = chat_downloader.errors.ChatGeneratorError("connection reset")
    source = RecordedChat(recorded_items(), failures={1: (14, dropped), 2: (2, dropped), 3: (0, dropped)})
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    result = await download_chat(
        pool, TARGET, source, backoff=Backoff(attempts=4, initial_seconds=3, max_seconds=5), sleep=record_sleep
    )

    assert result.chat_status == "complete" and result.attempts == 4
    assert sleeps == [3, 5, 5]
    # Each retry starts 10 s before the last message saved so far (items at 1050.137 s, then 1500.274 s).
    assert [start for _, start in source.calls] == [None, pytest.approx(1040.137), pytest.approx(1490.274),
                                                    pytest.approx(1490.274)]
    assert len(await stream_messages(pool, CHAT_STREAM)) == 20


async def test_a_stream_without_chat_replay_fails_at_once(pool: asyncpg.Pool) -> None:
    source = RecordedChat(recorded_items(), failures={1: (0, NoChatReplay("Video does not have a chat replay."))})
    result = await download_chat(pool, TARGET, source, backoff=Backoff(attempts=5, initial_seconds=0, max_seconds=0))
    assert (result.chat_status, result.attempts, len(source.calls)) == ("failed", 1, 1)
    row = await stream_row(pool)
    assert (row["chat_status"], row["chat_error"]) == ("failed", "NoChatReplay: Video does not have a chat replay.")


async def test_the_real_chat_downloader_path_classifies_its_own_errors(pool: asyncpg.Pool) -> None:
    # chat-downloader itself, on a URL of a site it does not support: fails before any network I/O.
    target = StreamTarget("youtube", "notasite000", "https://example.com/watch?v=notasite000")
    result = await download_chat(pool, target, chat_downloader_source(), backoff=Backoff(attempts=3, initial_seconds=0,
                                                                                          max_seconds=0))
    assert (result.chat_status, result.attempts) == ("failed", 1)
    assert result.error == "SiteNotSupported: Site not supported: example.com"


def test_the_real_source_asks_for_super_chats_not_just_text(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, object] = {}

    def get_chat(self, url, **kwargs):  # type: ignore[no-untyped-def]
        asked.update(kwargs, url=url)
        return iter(recorded_items()[:2])

    monkeypatch.setattr(chat_downloader.ChatDownloader, "get_chat", get_chat)
    items = list(chat_downloader_source(max_attempts=2)(TARGET.url, start_time=30.0))
    assert len(items) == 2
    assert asked["message_groups"] == ["messages", "superchat"] == list(MESSAGE_GROUPS)
    assert (asked["url"], asked["start_time"], asked["max_attempts"]) == (TARGET.url, 30.0, 2)
    assert asked["interruptible_retry"] is False
