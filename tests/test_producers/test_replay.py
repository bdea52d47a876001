"""Replay into the real embedded Tansu: exactly-once delivery at max speed, timing at 10x,
concurrent streams, rejected file records to dead-letters, and the CLI end to end."""

from __future__ import annotations

import asyncio
import random
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from infra.errors import InputError
from infra.events import ChatMessage, MessageKind, parse_chat_message
from infra.repository import save_messages
from infra.settings import Settings
from infra.topics import CHAT_MESSAGES, DEAD_LETTERS, topic_name
from producers.publisher import KafkaPublisher
from producers.replay import (
    ReplaySource,
    ReplaySummary,
    parse_speed,
    replay,
    replay_command,
    sources_from_simulation,
    split_by_stream,
)
from tests.test_producers.kafka_reader import TopicReader, read_topic

T0 = datetime(2024, 3, 9, 20, 0, tzinfo=UTC)


def stream_of(stream_id: str, n: int, span_seconds: float, *, seed: int, viewers: int = 30) -> list[ChatMessage]:
    """n messages at random (seeded) times over span_seconds, a few of them paid."""
    rng = random.Random(seed)
    offsets = sorted([0.0, span_seconds] + [rng.uniform(0, span_seconds) for _ in range(n - 2)])
    messages = []
    for i, offset in enumerate(offsets):
        viewer = f"UC{rng.randrange(viewers):04d}"
        paid = i % 17 == 5
        messages.append(
            ChatMessage(
                stream_id=stream_id,
                message_id=f"{stream_id}.{i}",
                timestamp=T0 + timedelta(seconds=offset),
                offset_seconds=offset,
                author_id=viewer,
                author_name=f"viewer {viewer}",
                text=f"msg {i} 👋 مرحبا",
                kind=MessageKind.PAID_MESSAGE if paid else MessageKind.TEXT,
                amount=5.0 if paid else None,
                currency="EUR" if paid else None,
            )
        )
    return messages


def test_speed_parsing() -> None:
    assert parse_speed("max") is None and parse_speed("MAX") is None
    assert parse_speed("10") == 10.0 and parse_speed("0.5") == 0.5 and parse_speed(2) == 2.0
    for bad in ("0", "-1", "fast", "nan", "inf"):
        with pytest.raises(InputError, match="speed"):
            parse_speed(bad)


def test_split_by_stream_sorts_each_stream_by_time() -> None:
    a, b = stream_of("a", 20, 10, seed=1), stream_of("b", 10, 5, seed=2)
    mixed = list(reversed(a)) + b  # a arrives unsorted, interleaving does not matter
    sources = split_by_stream("file.json", mixed)
    assert [s.stream_id for s in sources] == ["a", "b"]
    assert [m.message_id for m in sources[0].messages] == [m.message_id for m in a]
    assert sources[1].label == "file.json [b]"


async def test_max_speed_delivers_every_message_exactly_once(topics: Settings) -> None:
    from producers.simulator import simulate

    (stream,) = simulate(1, seed=3)  # one hour, 300 viewers, donors: ~1.7k messages
    sources = sources_from_simulation([stream])
    messages = sources[0].messages
    assert len(messages) > 1000 and len({m.message_id for m in messages}) == len(messages)
    async with KafkaPublisher(topics) as publisher:
        summary = await replay(publisher, sources, speed=None)
    print(f"\nreplay at max speed: {summary.sent} msgs in {summary.wall_seconds:.2f} s = {summary.rate:,.0f} msg/s")
    assert summary.sent == len(messages) and publisher.counters.failed == 0

    records = await read_topic(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), len(messages), settle=1.0)
    received = [parse_chat_message(r.value) for r in records]
    ids = [m.message_id for m in received]
    assert len(ids) == len(messages), f"{len(ids)} delivered for {len(messages)} sent"
    assert set(ids) == {m.message_id for m in messages}
    by_id = {m.message_id: m for m in messages}
    for event in received:
        source = by_id[event.message_id]
        assert event.timestamp == source.timestamp and event.text == source.text  # event time kept
        assert event.replayed_at is not None and event.produced_at is not None
        assert event.replayed_at > source.timestamp


def _timing_errors(messages: list[ChatMessage], times: list[float], speed: float) -> list[float]:
    first_source, first_time = messages[0].timestamp, times[0]
    return [
        abs((t - first_time) - (m.timestamp - first_source).total_seconds() / speed)
        for m, t in zip(messages, times, strict=True)
    ]


async def test_speed_10_follows_source_gaps(topics: Settings) -> None:
    messages = stream_of("sim-10x", 40, 20.0, seed=11)  # 20 s of chat -> 2 s of replay
    async with TopicReader(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), fetch_max_wait_ms=5) as reader:
        reading = asyncio.create_task(reader.read(len(messages), timeout=20))  # receive while replaying
        async with KafkaPublisher(topics) as publisher:
            summary = await replay(publisher, [ReplaySource("sim", "sim-10x", messages)], speed=10)
        records = await reading
    assert 1.9 < summary.wall_seconds < 2.5
    received = {parse_chat_message(r.value).message_id: (parse_chat_message(r.value), r) for r in records}
    assert len(records) == len(received) == len(messages)
    produced = [received[m.message_id][0].produced_at for m in messages]
    arrived = [received[m.message_id][1].received_at for m in messages]
    produce_errors = _timing_errors(messages, produced, 10)
    arrival_errors = _timing_errors(messages, arrived, 10)
    print(
        f"\n10x timing error vs source gaps: produced_at max {max(produce_errors) * 1000:.1f} ms "
        f"(median {statistics.median(produce_errors) * 1000:.1f}); consumer receive time max "
        f"{max(arrival_errors) * 1000:.1f} ms (median {statistics.median(arrival_errors) * 1000:.1f})"
    )
    assert max(produce_errors) < 0.050
    assert max(arrival_errors) < 0.050


async def test_two_streams_replay_concurrently(topics: Settings) -> None:
    a, b = stream_of("conc-a", 30, 12.0, seed=3), stream_of("conc-b", 30, 12.0, seed=4)
    sources = [ReplaySource("a", "conc-a", a), ReplaySource("b", "conc-b", b)]
    async with KafkaPublisher(topics) as publisher:
        summary = await replay(publisher, sources, speed=10)
    # Sequential would take 2.4 s; concurrent takes one stream's 1.2 s.
    assert summary.wall_seconds < 1.8, summary.describe()
    assert [s.sent for s in summary.streams] == [30, 30]

    records = await read_topic(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), 60)
    events = [parse_chat_message(r.value) for r in records]
    assert sorted(e.message_id for e in events) == sorted(m.message_id for m in a + b)
    produced = {sid: sorted(e.produced_at for e in events if e.stream_id == sid) for sid in ("conc-a", "conc-b")}
    # Both ran at the same time: each one's span of produce times covers most of the other's.
    overlap = min(produced["conc-a"][-1], produced["conc-b"][-1]) - max(produced["conc-a"][0], produced["conc-b"][0])
    assert overlap > 1.0


async def test_interrupted_replay_keeps_partial_counts(topics: Settings) -> None:
    messages = stream_of("cut", 20, 100.0, seed=5)  # 10 s at 10x: we cancel after ~0.5 s
    summary = ReplaySummary(speed=10)
    async with KafkaPublisher(topics) as publisher:
        task = asyncio.create_task(replay(publisher, [ReplaySource("cut", "cut", messages)], speed=10, summary=summary))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    sent = summary.streams[0].sent
    assert 1 <= sent < len(messages)
    records = await read_topic(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), sent, settle=0.5)
    assert len(records) == sent  # what was counted was flushed on the way out, nothing more


def cli_app() -> typer.Typer:
    """`donorcast` with only this command: the same root callback (settings from DONORCAST_*), so
    unfinished commands elsewhere in the tree cannot break these tests. The full app is checked
    by the CLI layout tests."""
    from infra.cli import _root

    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(_root)
    app.command("replay")(replay_command)
    return app


def _cli_env(settings: Settings) -> dict[str, str]:
    return {
        "DONORCAST_STATE_DIR": str(settings.state_dir),
        "DONORCAST_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "DONORCAST_DATABASE_URL": settings.database_url or "",
        "DONORCAST_TOPIC_PREFIX": settings.topic_prefix,
        "DONORCAST_TOPIC_PARTITIONS": str(settings.topic_partitions),
    }


def test_cli_replays_a_stream_from_postgresql(topics: Settings) -> None:
    from infra.postgres import create_pool

    messages = stream_of("db-stream", 50, 30.0, seed=9)

    async def store() -> None:
        pool = await create_pool(topics.database_url)  # type: ignore[arg-type]
        try:
            assert await save_messages(pool, messages, source="test") == 50
        finally:
            await pool.close()

    asyncio.run(store())
    result = CliRunner().invoke(
        cli_app(), ["replay", "--stream", "db-stream", "--speed", "max"], env=_cli_env(topics)
    )
    assert result.exit_code == 0, result.output
    assert "replayed 50 messages of 1 stream(s) at max" in result.stdout
    records = asyncio.run(read_topic(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), 50, settle=0.5))
    assert sorted(parse_chat_message(r.value).message_id for r in records) == sorted(m.message_id for m in messages)


def test_cli_rejects_bad_arguments(topics: Settings) -> None:
    app = cli_app()
    no_source = CliRunner().invoke(app, ["replay", "--speed", "max"], env=_cli_env(topics))
    assert no_source.exit_code == 2 and "--stream ID or --file PATH" in no_source.output
    bad_speed = CliRunner().invoke(app, ["replay", "--stream", "x", "--speed", "0"], env=_cli_env(topics))
    assert bad_speed.exit_code == 2 and "speed must be a positive number" in bad_speed.output
    unknown = CliRunner().invoke(app, ["replay", "--stream", "nope", "--speed", "max"], env=_cli_env(topics))
    assert isinstance(unknown.exception, InputError)  # main() prints it as `error: ...`, exit 1
    assert "'nope' has no messages" in str(unknown.exception)


def _chat_downloader_item(i: int, start: datetime) -> dict:
    return {
        "message_id": f"file-msg-{i}",
        "message_type": "text_message",
        "timestamp": int((start + timedelta(seconds=i * 0.5)).timestamp() * 1_000_000),
        "time_in_seconds": i * 0.5,
        "message": f"line {i}",
        "author": {"id": f"UCfile{i % 3}", "name": f"File viewer {i % 3}"},
    }


def test_cli_replays_a_file_and_dead_letters_its_broken_record(topics: Settings, tmp_path: Path) -> None:
    import json

    from infra.events import DeadLetter
    from producers.simulator import simulate, write_chat_downloader_json

    items = [_chat_downloader_item(i, T0) for i in range(12)]
    broken = dict(_chat_downloader_item(12, T0), message_id="file-broken")
    broken["timestamp"] = "yesterday"  # not microseconds: the reader rejects it
    path = tmp_path / "abcdefghijk.json"  # chat_downloader --output names files by video id
    path.write_text(json.dumps([*items[:5], broken, *items[5:]], indent=4, ensure_ascii=False))

    (simulated,) = simulate(1, seed=8, viewers=20, minutes=5)  # a second file, as chat_downloader writes it
    simulated_path = write_chat_downloader_json(simulated, tmp_path / f"{simulated.stream_id}.json")
    expected = [i["message_id"] for i in items] + [m.message_id for m in simulated.messages]

    result = CliRunner().invoke(
        cli_app(),
        ["replay", "--file", str(path), "--file", str(simulated_path), "--speed", "max"],
        env=_cli_env(topics),
    )
    assert result.exit_code == 0, result.output
    assert f"replayed {len(expected)} messages of 2 stream(s) at max" in result.stdout
    assert "1 rejected record(s) sent to dead-letters" in result.stdout

    chat_topic, dead_topic = topic_name(CHAT_MESSAGES, topics), topic_name(DEAD_LETTERS, topics)

    async def read_both() -> list:
        async with TopicReader(topics.kafka_bootstrap, chat_topic, dead_topic) as reader:
            return await reader.read(len(expected) + 1, settle=0.5)

    everything = asyncio.run(read_both())
    records = [r for r in everything if r.topic == chat_topic]
    letters = [r for r in everything if r.topic == dead_topic]
    assert sorted(parse_chat_message(r.value).message_id for r in records) == sorted(expected)
    assert len(letters) == 1
    letter = DeadLetter.model_validate_json(letters[0].value)
    assert letter.location == f"{path}#item 6"
    assert "timestamp" in letter.reason and "yesterday" in letter.reason
    assert "file-broken" in letter.raw


def test_publish_simulated_sends_every_stream(topics: Settings) -> None:
    from producers.replay import publish_simulated
    from producers.simulator import simulate

    streams = simulate(2, seed=5, viewers=60, minutes=20)
    total = sum(len(s.messages) for s in streams)
    summary = publish_simulated(streams, topics, speed="max", progress=False)
    assert summary.sent == total and [r.stream_id for r in summary.streams] == [s.stream_id for s in streams]
    records = asyncio.run(read_topic(topics.kafka_bootstrap, topic_name(CHAT_MESSAGES, topics), total, settle=0.5))
    assert sorted(parse_chat_message(r.value).message_id for r in records) == sorted(
        m.message_id for s in streams for m in s.messages
    )
