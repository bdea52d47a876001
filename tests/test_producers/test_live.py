"""`donorcast live` against the real embedded Tansu and PostgreSQL, with chat-downloader's iterator
replaced by injected item sequences in chat-downloader's own item format."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from infra.errors import InputError, RetriesExceeded
from infra.events import DeadLetter, MessageKind, parse_chat_message
from infra.postgres import create_pool
from infra.settings import Settings
from infra.topics import CHAT_MESSAGES, DEAD_LETTERS, topic_name
from producers.live import (
    Backoff,
    LiveProducer,
    LiveTarget,
    SeenIds,
    resolve_target,
    run_live_cli,
    stream_id_from_url,
)
from producers.publisher import KafkaPublisher
from tests.test_producers.kafka_reader import TopicReader, read_topic

VIDEO = "dQw4w9WgXcQ"
URL = f"https://www.youtube.com/watch?v={VIDEO}"
START = datetime.now(UTC) - timedelta(minutes=10)
FAST = Backoff(initial=0.05, maximum=0.2)


def text_item(i: int, viewer: int) -> dict[str, Any]:
    """A `text_message` exactly as chat-downloader 0.2.x yields it for YouTube."""
    return {
        "action_type": "add_chat_item",
        "message_id": f"ChwKGkNJ{i:06d}",
        "message_type": "text_message",
        "timestamp": int((START + timedelta(seconds=i)).timestamp() * 1_000_000),
        "time_in_seconds": float(i),
        "time_text": f"0:{i:02d}",
        "message": f"hello {i} ❤️",
        "author": {
            "id": f"UCviewer{viewer:04d}",
            "name": f"Viewer {viewer}",
            "images": [],
            "badges": [{"title": "Member (2 months)", "icons": [{"url": "x", "id": "source"}]}] if viewer % 4 == 0 else [],
        },
    }


def paid_item(i: int) -> dict[str, Any]:
    item = text_item(i, 7)
    item.update(
        message_type="paid_message",
        money={"amount": 5.0, "currency": "USD", "text": "$5.00"},
        header_secondary_text="$5.00",
    )
    return item


def chat_items(n: int) -> list[dict[str, Any]]:
    items = [paid_item(i) if i == 9 else text_item(i, i % 6) for i in range(n)]
    ticker = dict(paid_item(9), message_type="ticker_paid_message_item")  # not chat: skipped
    broken = dict(text_item(n, 1), message_id="broken-1")
    del broken["timestamp"]  # a broken item: dead-lettered, never dropped
    return [*items[:12], ticker, broken, *items[12:]]


class ScriptedChat:
    """Stands in for ChatDownloader().get_chat: each call serves the next script.

    A script is (items, then) where then is "raise", "end" or "block" (a live chat with nothing new)."""

    def __init__(self, *scripts: tuple[list[dict[str, Any]], str]) -> None:
        self.scripts = list(scripts)
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, target: LiveTarget) -> Iterator[dict[str, Any]]:
        items, then = self.scripts[min(self.calls, len(self.scripts) - 1)]
        self.calls += 1
        return self._serve(items, then)

    def _serve(self, items: list[dict[str, Any]], then: str) -> Iterator[dict[str, Any]]:
        yield from items
        if then == "raise":
            raise ConnectionError("continuation request failed: connection reset")
        if then == "ctrl-c":  # the user presses Ctrl-C while the chat has nothing new
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGINT)
        if then in ("block", "ctrl-c"):
            self.release.wait(30)


async def _until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_failure_midway_reconnects_without_duplicates(topics: Settings) -> None:
    items = chat_items(30)  # 30 messages + a ticker + a broken item
    first, second = items[:20], items[15:]  # the reconnect replays 5 items already seen
    chat = ScriptedChat((first, "raise"), (second, "block"))
    stop = asyncio.Event()
    pool = await create_pool(topics.database_url)  # type: ignore[arg-type]
    try:
        async with KafkaPublisher(topics) as publisher:
            producer = LiveProducer(
                resolve_target(URL), publisher, pool=pool, factory=chat, backoff=FAST, db_interval=0.2
            )
            running = asyncio.create_task(producer.run(stop))
            await _until(lambda: producer.stats.published == 30)
            stop.set()
            stopped_at = time.monotonic()
            stats = await asyncio.wait_for(running, timeout=10)
            stop_seconds = time.monotonic() - stopped_at
        chat.release.set()
        rows = await pool.fetch("SELECT message_id, kind, amount FROM chat_messages WHERE stream_id = $1", VIDEO)
        stream = await pool.fetchrow("SELECT url, status FROM streams WHERE stream_id = $1", VIDEO)
    finally:
        chat.release.set()
        await pool.close()

    assert chat.calls == 2 and stats.connections == 2 and stats.reconnects == 1
    assert stats.published == 30 and stats.duplicates == 5 and stats.skipped == 1 and stats.rejected == 1
    assert stats.errors == ["ConnectionError: continuation request failed: connection reset"]
    assert not stats.ended and stop_seconds < 2.0  # a clean, prompt stop while the iterator blocked

    expected_ids = {it["message_id"] for it in items if it["message_type"] == "text_message" or it["message_type"] == "paid_message"} - {"broken-1"}
    chat_topic, dead_topic = topic_name(CHAT_MESSAGES, topics), topic_name(DEAD_LETTERS, topics)
    async with TopicReader(topics.kafka_bootstrap, chat_topic, dead_topic) as reader:
        everything = await reader.read(31, settle=1.0)
    records = [r for r in everything if r.topic == chat_topic]
    letters = [r for r in everything if r.topic == dead_topic]
    events = [parse_chat_message(r.value) for r in records]
    assert len(events) == 30 and {e.message_id for e in events} == expected_ids
    paid = [e for e in events if e.kind is MessageKind.PAID_MESSAGE]
    assert len(paid) == 1 and paid[0].amount == 5.0 and paid[0].currency == "USD"
    assert all(e.stream_id == VIDEO and e.platform == "youtube" and e.produced_at for e in events)

    # The worker's sink stores the messages (one writer); the producer records only the stream itself.
    assert rows == [] and stats.stream_recorded
    assert stream["url"] == URL and stream["status"] == "live"

    assert len(letters) == 1
    letter = DeadLetter.model_validate_json(letters[0].value)
    assert letter.source == "producers.live" and "timestamp" in letter.reason and "broken-1" in letter.raw
    assert letter.location == f"{URL}#connection 1 item 14"


async def test_twitch_chat_goes_through_the_same_path(topics: Settings) -> None:
    now = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp() * 1_000_000)
    author = {"id": "4711", "name": "fan_one", "display_name": "Fan_One",
              "badges": [{"name": "subscriber", "version": 6, "title": "6-Month Subscriber"}]}
    items = [
        {"message_id": "tw-1", "message_type": "text_message", "timestamp": now, "message": "Kappa hi", "author": author},
        {"message_id": "tw-2", "message_type": "text_message", "timestamp": now + 1000, "message": "cheer100 gg",
         "bits": 100, "author": author},
        {"message_id": "tw-3", "message_type": "subscription_gift", "timestamp": now + 2000, "message": "",
         "author": author, "mass_gift_count": 5},
    ]
    chat = ScriptedChat((items, "end"))
    async with KafkaPublisher(topics) as publisher:
        producer = LiveProducer(resolve_target("https://www.twitch.tv/SomeChannel"), publisher, factory=chat,
                                backoff=FAST, end_after=2)
        stats = await asyncio.wait_for(producer.run(asyncio.Event()), timeout=10)
    # The chat ended: two more connections replayed the same 3 items, then we call it over.
    assert stats.ended and stats.connections == 3 and stats.published == 3 and stats.duplicates == 6
    records = await read_topic(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), 3, settle=0.5)
    kinds = {e.message_id: e for e in (parse_chat_message(r.value) for r in records)}
    assert len(records) == 3
    assert kinds["tw-2"].kind is MessageKind.BITS and kinds["tw-2"].amount == 100
    assert kinds["tw-3"].kind is MessageKind.GIFT_SUBSCRIPTION and kinds["tw-3"].amount == 5
    assert all(e.platform == "twitch" and e.stream_id.startswith("somechannel@") for e in kinds.values())
    assert kinds["tw-1"].is_member


async def test_permanent_error_is_not_retried(topics: Settings) -> None:
    from chat_downloader.errors import ChatDisabled

    def disabled(target: LiveTarget) -> Iterator[dict[str, Any]]:
        raise ChatDisabled("Chat is disabled for this live stream")

    async with KafkaPublisher(topics) as publisher:
        producer = LiveProducer(resolve_target(URL), publisher, factory=disabled, backoff=FAST)
        with pytest.raises(InputError, match="ChatDisabled: Chat is disabled"):
            await asyncio.wait_for(producer.run(asyncio.Event()), timeout=10)
    assert producer.stats.connections == 1 and producer.stats.reconnects == 0


async def test_gives_up_after_repeated_failures_with_capped_backoff(topics: Settings) -> None:
    chat = ScriptedChat(([], "raise"))
    backoff = Backoff(initial=0.05, maximum=0.1)
    started = time.monotonic()
    async with KafkaPublisher(topics) as publisher:
        producer = LiveProducer(resolve_target(URL), publisher, factory=chat, backoff=backoff, max_failures=4)
        with pytest.raises(RetriesExceeded, match="failed 4 times in a row; last error: ConnectionError"):
            await asyncio.wait_for(producer.run(asyncio.Event()), timeout=10)
    elapsed = time.monotonic() - started
    assert chat.calls == 4 and producer.stats.reconnects == 3
    assert 0.05 + 0.1 + 0.1 <= elapsed < 3  # waits 0.05, 0.1, 0.1 (capped), then gives up
    assert [backoff.delay(n) for n in (1, 2, 3, 9)] == [0.05, 0.1, 0.1, 0.1]


def test_seen_ids_is_a_bounded_lru() -> None:
    seen = SeenIds(capacity=3)
    assert [seen.add(x) for x in "abc"] == [True, True, True]
    assert seen.add("a") is False  # refreshes a: b is now the oldest
    assert seen.add("d") is True and len(seen) == 3
    assert seen.add("b") is True  # b was evicted
    assert seen.add("a") is False


@pytest.mark.parametrize(
    ("url", "platform", "stream_id"),
    [
        (URL, "youtube", VIDEO),
        (f"https://youtu.be/{VIDEO}?t=3", "youtube", VIDEO),
        (f"https://m.youtube.com/live/{VIDEO}", "youtube", VIDEO),
        ("https://www.youtube.com/@somechannel/live", "youtube", None),  # learnt from the chat's id
        ("https://www.twitch.tv/videos/123456789", "twitch", "v123456789"),
    ],
)
def test_accepted_urls(url: str, platform: str, stream_id: str | None) -> None:
    target = resolve_target(url)
    assert (target.platform, target.stream_id) == (platform, stream_id)
    assert stream_id_from_url(url, platform) == stream_id


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/watch?v=dQw4w9WgXcQ",
        "https://youtube.com.evil.example/watch?v=dQw4w9WgXcQ",
        "https://notyoutube.com/watch?v=dQw4w9WgXcQ",
        "http://127.0.0.1:8080/live",
        "file:///etc/passwd",
        "javascript:alert(1)",
    ],
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(InputError):
        resolve_target(url)


def test_cli_refuses_a_non_youtube_url_before_starting_anything(tmp_path) -> None:
    from infra.cli import _root
    from producers.live import live_command

    app = typer.Typer(pretty_exceptions_enable=False)  # the root callback and this command only
    app.callback()(_root)
    app.command("live")(live_command)
    result = CliRunner().invoke(
        app, ["live", "https://evil.example/watch?v=dQw4w9WgXcQ"],
        env={"DONORCAST_STATE_DIR": str(tmp_path / "state")},
    )
    assert result.exit_code == 2
    assert "refusing 'evil.example'" in result.output and "--allow-any-host" in result.output
    assert not (tmp_path / "state" / "run").exists()  # no broker or database was started
    assert resolve_target("https://evil.example/x", allow_any_host=True).platform == "other"


def test_cli_stops_cleanly_on_ctrl_c(topics: Settings) -> None:
    chat = ScriptedChat((chat_items(5)[:5], "ctrl-c"))
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = topics

    @app.command()
    def live(ctx: typer.Context, url: str) -> None:
        run_live_cli(ctx, url, factory=chat)

    try:
        result = CliRunner().invoke(app, ["live", URL])
    finally:
        chat.release.set()
    assert result.exit_code == 0, result.output
    assert ": stopped after" in result.stdout and "5 messages published, 0 duplicates" in result.stdout
    records = asyncio.run(read_topic(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), 5, settle=0.5))
    assert len(records) == 5  # flushed on the way out


@pytest.mark.parametrize(
    "url", ["https://evil.example\\@www.youtube.com/watch?v=dQw4w9WgXcQ", "https://user@www.youtube.com/live/x"]
)
def test_urls_that_parsers_disagree_on_are_refused(url: str) -> None:
    from producers.live import resolve_target

    with pytest.raises(InputError, match="backslashes and user info"):
        resolve_target(url)
