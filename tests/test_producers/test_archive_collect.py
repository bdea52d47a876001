"""collect / update end to end on the real PostgreSQL, with recorded API responses and chat.

Discovery is either real headless Chromium on the loopback streams page (browser test) or a recorded
`Discovery` (what the scroller returned), so update's choice of streams is tested without a browser.
"""

from __future__ import annotations

import asyncio
import functools
import io
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from chat_downloader.errors import NoChatReplay
from chat_downloader.errors import RetriesExceeded as ChatRetriesExceeded
from googleapiclient.http import HttpMockSequence
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from infra.errors import InputError, RetriesExceeded
from infra.repository import count_rows, upsert_channel
from producers.archive.backoff import Backoff
from producers.archive.collect import collect_channel, update_channel
from producers.archive.discover import Discovery, ScrollReport, chromium_available, discover_streams
from producers.archive.metadata import YouTubeMetadata
from producers.archive.urls import StreamRef
from tests.test_producers.test_archive_recordings import (
    FIXTURES,
    ChatBySource,
    RecordedChat,
    recorded_items,
    videos_response,
)

CHANNEL = "UCfixtureChannel00000001"
PAGE = "https://www.youtube.com/@fixturechannel/streams"
KEY = SecretStr("AIzaSyFAKE-collect-key_0123456789")
OK = {"status": "200"}
NO_WAIT = Backoff(attempts=1, initial_seconds=0, max_seconds=0)
PER_STREAM = 20  # messages in a recorded chat (21 items, one broken)


class RecordingSequence(HttpMockSequence):
    def __init__(self, iterable: list[tuple[dict[str, str], str]]) -> None:
        super().__init__(iterable)
        self.ids: list[list[str]] = []

    def request(self, uri, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.ids.append(parse_qs(urlsplit(uri).query)["id"][0].split(","))
        return super().request(uri, *args, **kwargs)


def api(*responses: str) -> tuple[YouTubeMetadata, RecordingSequence]:
    http = RecordingSequence([(OK, r) for r in responses])
    return YouTubeMetadata.from_key(KEY, http=http, backoff=NO_WAIT), http


def page_with(*ids: str) -> functools.partial[Discovery]:
    """A recorded discovery: the streams page listing `ids`, newest first."""
    refs = [StreamRef("youtube", i, f"Stream {i}") for i in ids]
    report = ScrollReport(rounds=1, final_height=4000, stopped_because="height stable", seconds=0.1)

    def discover(page_url: str) -> Discovery:
        return Discovery(page_url=page_url, streams=refs, scroll=report)

    return functools.partial(discover)


def day(n: int) -> str:
    return f"2024-04-{n:02d}T18:00:00Z"


async def chat_status(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch("SELECT stream_id, chat_status FROM streams ORDER BY stream_id")
    return {r["stream_id"]: r["chat_status"] for r in rows}


async def messages_per_stream(pool: asyncpg.Pool) -> dict[str, tuple[int, int]]:
    rows = await pool.fetch("SELECT stream_id, count(*) AS n, count(DISTINCT message_id) AS ids "
                            "FROM chat_messages GROUP BY stream_id")
    return {r["stream_id"]: (r["n"], r["ids"]) for r in rows}


S1, S2, S3, S4, S5, S6, S7 = (f"s{n}xxxxxxxxx" for n in range(1, 8))


async def test_update_takes_new_streams_and_every_incomplete_one_not_just_those_after_the_newest(
    pool: asyncpg.Pool,
) -> None:
    # First run: s1 fine, s2 breaks midway, s3 has no replay yet, s4 is beyond --max-streams.
    metadata, http = api(videos_response([(S4, "none", day(4)), (S3, "none", day(3)), (S2, "none", day(2)),
                                          (S1, "none", day(1))]))
    first_chat = ChatBySource({
        S1: RecordedChat(recorded_items(S1)),
        S2: RecordedChat(recorded_items(S2), failures={1: (8, ChatRetriesExceeded("Maximum number of retries"))}),
        S3: RecordedChat(recorded_items(S3), failures={1: (0, NoChatReplay("no chat replay"))}),
    })
    first = await collect_channel(pool, PAGE, discover=page_with(S4, S3, S2, S1), metadata=metadata,
                                  chat=first_chat, max_streams=3, chat_backoff=NO_WAIT)

    assert http.ids == [[S4, S3, S2, S1]]
    assert (first.channel_id, first.discovered, first.new) == (CHANNEL, 4, 4)
    assert [r.stream_id for r in first.results] == [S1, S2, S3]  # oldest first
    assert first.left_pending == [S4]
    assert await chat_status(pool) == {S1: "complete", S2: "partial", S3: "failed", S4: "pending"}
    assert (await messages_per_stream(pool))[S2] == (8, 8)  # the 8 items read before it broke are kept
    times = await pool.fetchrow("SELECT actual_start, actual_end FROM streams WHERE stream_id = $1", S1)
    assert (times["actual_start"].isoformat(), times["actual_end"].isoformat()) == (  # liveStreamingDetails
        "2024-03-02T18:00:07+00:00", "2024-03-02T21:14:52+00:00")

    # Second run: s5 is new, s6 upcoming, s7 live; s2/s3/s4 are older than the newest known stream (s4).
    metadata, http = api(videos_response([(S7, "live", day(7)), (S6, "upcoming", day(6)), (S5, "none", day(5))]))
    sources = {s: RecordedChat(recorded_items(s)) for s in (S1, S2, S3, S4, S5, S6, S7)}
    second = await update_channel(pool, "@fixturechannel", discover=page_with(S7, S6, S5, S4, S3, S2, S1),
                                  metadata=metadata, chat=ChatBySource(sources), chat_backoff=NO_WAIT)

    assert http.ids == [[S7, S6, S5]]  # metadata only for streams not in the database
    assert (second.new, second.retried) == (3, 3)
    assert (second.skipped_live, second.skipped_upcoming) == ([S7], [S6])
    assert sorted(r.stream_id for r in second.results) == [S2, S3, S4, S5]
    assert sources[S1].calls == [] and sources[S6].calls == [] and sources[S7].calls == []
    assert sources[S2].calls[0][1] is not None  # resumed near where the failure left it
    assert await chat_status(pool) == dict.fromkeys((S1, S2, S3, S4, S5), "complete")
    assert await messages_per_stream(pool) == dict.fromkeys((S1, S2, S3, S4, S5), (PER_STREAM, PER_STREAM))

    # Nothing left: a run without the browser or the API does no work.
    third = await update_channel(pool, CHANNEL, discover=None, metadata=None, chat=ChatBySource({}))
    assert third.results == [] and third.retried == 0


async def test_an_interrupted_run_is_resumed_from_the_streams_table(pool: asyncpg.Pool) -> None:
    metadata, _ = api(videos_response([(S2, "none", day(2)), (S1, "none", day(1))]))

    class Interrupted(BaseException):
        """Stands for Ctrl-C / a killed process in the middle of a stream."""

    chat = ChatBySource({S1: RecordedChat(recorded_items(S1), failures={1: (12, Interrupted())})})
    with pytest.raises(Interrupted):
        await collect_channel(pool, PAGE, discover=page_with(S2, S1), metadata=metadata, chat=chat,
                              chat_backoff=NO_WAIT, chat_batch_size=5)
    assert await chat_status(pool) == {S1: "pending", S2: "pending"}
    assert await messages_per_stream(pool) == {S1: (10, 10)}  # two whole batches; the third died with the run

    shown = io.StringIO()
    with Progress(console=Console(file=shown, width=200)) as progress:
        resumed = await update_channel(pool, PAGE, discover=None, metadata=None, chat_backoff=NO_WAIT,
                                       chat=ChatBySource({s: RecordedChat(recorded_items(s)) for s in (S1, S2)}),
                                       progress=progress)
    assert [r.stream_id for r in resumed.results] == [S1, S2]
    # s1 resumed 10 s before the last saved message (item 10): items 10..21 read again, 10 of them new.
    assert f"complete {S1}: 10 new messages, 1 rejected" in shown.getvalue()
    assert f"complete {S2}: 20 new messages, 1 rejected" in shown.getvalue()
    assert await chat_status(pool) == {S1: "complete", S2: "complete"}
    assert await messages_per_stream(pool) == {S1: (PER_STREAM, PER_STREAM), S2: (PER_STREAM, PER_STREAM)}


async def test_quota_exhaustion_stops_the_run_before_anything_is_stored(pool: asyncpg.Pool) -> None:
    quota = (FIXTURES / "error_quota_exceeded.json").read_text()
    metadata = YouTubeMetadata.from_key(
        KEY, http=HttpMockSequence([({"status": "403"}, quota)] * 2),
        backoff=Backoff(attempts=2, initial_seconds=0, max_seconds=0),
    )
    with pytest.raises(RetriesExceeded, match="quotaExceeded.*donorcast update"):
        await collect_channel(pool, PAGE, discover=page_with(S1), metadata=metadata, chat=ChatBySource({}))
    assert await count_rows(pool, "streams") == 0 and await count_rows(pool, "channels") == 0


async def test_unknown_channel_names_the_collected_ones(pool: asyncpg.Pool) -> None:
    await upsert_channel(pool, "youtube", CHANNEL, name="Fixture Channel", url=PAGE)
    with pytest.raises(InputError, match=r"no collected channel matches 'Someone Else'.*Fixture Channel"):
        await update_channel(pool, "Someone Else", discover=None, metadata=None, chat=ChatBySource({}))
    for name in (CHANNEL, "fixture channel", "@fixturechannel", "https://youtube.com/@fixturechannel/videos"):
        report = await update_channel(pool, name, discover=None, metadata=None, chat=ChatBySource({}))
        assert report.channel_id == CHANNEL


# ---------------------------------------------------------------- real browser, loopback page


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Debian chromium + chromium-driver absent")
async def test_collect_from_a_scrolled_streams_page_in_headless_chromium(pool: asyncpg.Pool) -> None:
    import http.server
    import threading

    from producers.archive.discover import ScrollPolicy

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(FIXTURES)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = f"http://127.0.0.1:{server.server_address[1]}/streams_page.html"
        on_page = [f"v{b}x{i:02d}abcdef" for b in (1, 2, 3) for i in range(1, 7) if (b, i) != (3, 6)]
        states = {"v1x02abcdef": "upcoming", "v1x03abcdef": "live"}
        deleted = "v2x05abcdef"
        listed = [(v, states.get(v, "none"), day(30 - n)) for n, v in enumerate(on_page) if v != deleted]
        metadata, http = api(videos_response(listed))
        chat = ChatBySource({v: RecordedChat(recorded_items(v)) for v in on_page})
        discover = functools.partial(
            discover_streams, policy=ScrollPolicy(settle_seconds=2.0, timeout_seconds=30, tile_wait_seconds=10),
            allow_any_host=True,
        )

        report = await collect_channel(pool, page, discover=discover, metadata=metadata, chat=chat,
                                       allow_any_host=True, chat_backoff=NO_WAIT)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    assert http.ids == [on_page]
    assert report.discovered == 17 and report.unavailable == [deleted]
    assert (report.skipped_upcoming, report.skipped_live) == (["v1x02abcdef"], ["v1x03abcdef"])
    downloaded = [v for v in on_page if v not in ("v1x02abcdef", "v1x03abcdef", deleted)]
    assert sorted(r.stream_id for r in report.results) == sorted(downloaded)
    assert report.count("complete") == len(downloaded) == 14
    assert await chat_status(pool) == dict.fromkeys(sorted(downloaded), "complete")
    assert await count_rows(pool, "chat_messages") == 14 * PER_STREAM
    channel = await pool.fetchrow("SELECT channel_id, name, url FROM channels")
    assert tuple(channel) == (CHANNEL, "Fixture Channel", page)


# ---------------------------------------------------------------- command line


def test_cli_refuses_other_hosts_and_needs_the_api_key(tmp_path, database_url: str) -> None:
    from infra.cli import build_app

    env = {"DONORCAST_DATABASE_URL": database_url, "DONORCAST_STATE_DIR": str(tmp_path),
           "DONORCAST_YOUTUBE_API_KEY": None}
    runner = CliRunner()
    refused = runner.invoke(build_app(), ["collect", "https://evil.example/@name"], env=env)
    assert refused.exit_code == 1 and isinstance(refused.exception, InputError)
    assert "refusing to open 'evil.example'" in str(refused.exception)

    keyless = runner.invoke(build_app(), ["collect", "https://www.youtube.com/@name"], env=env)
    assert isinstance(keyless.exception, InputError) and "DONORCAST_YOUTUBE_API_KEY" in str(keyless.exception)

    async def seed() -> None:
        from infra.postgres import create_pool

        pool = await create_pool(database_url)
        try:
            await upsert_channel(pool, "youtube", CHANNEL, name="Fixture Channel", url=PAGE)
        finally:
            await pool.close()

    asyncio.run(seed())
    nothing_to_do = runner.invoke(build_app(), ["update", "@fixturechannel", "--no-discover"], env=env)
    assert nothing_to_do.exit_code == 0, nothing_to_do.output
    assert "Fixture Channel" in nothing_to_do.stdout and CHANNEL in nothing_to_do.stdout
    assert "0 / 0 / 0" in nothing_to_do.stdout


async def test_update_adopts_a_stream_first_ingested_from_a_file(pool: asyncpg.Pool) -> None:
    from infra.repository import save_messages
    from producers.readers.chat_downloader import item_to_message

    await upsert_channel(pool, "youtube", CHANNEL, name="Fixture Channel", url=PAGE)
    ingested = [item_to_message(i, stream_id=S3, platform="youtube") for i in recorded_items(S3)[:6]]
    await save_messages(pool, [m for m in ingested if m is not None], source="file")  # row: no channel, pending
    metadata, http = api(videos_response([(S3, "none", day(3))]))
    sources = {S3: RecordedChat(recorded_items(S3))}

    report = await update_channel(pool, CHANNEL, discover=page_with(S3), metadata=metadata,
                                  chat=ChatBySource(sources), chat_backoff=NO_WAIT)

    assert http.ids == [[S3]] and report.new == 0
    assert [(r.stream_id, r.saved) for r in report.results] == [(S3, PER_STREAM - 6)]
    row = await pool.fetchrow("SELECT channel_id, title, chat_status FROM streams WHERE stream_id = $1", S3)
    assert tuple(row) == (CHANNEL, f"Stream {S3}", "complete")
