"""Security drill: hostile data stays data, credentials stay secret, fetchers stay on YouTube/Twitch.

- SQL: hostile names and text go through ingest and every repository function as parameters; they
  come back byte for byte and no table is touched; a static check keeps SQL free of interpolated values.
- Dashboard: the page script has no HTML sinks (so chat text cannot become markup), CSV exports
  neutralise formula cells in every text column, and the worker process refuses a public bind
  without a token. (A real-Chromium XSS run lives in tests/test_dashboard/test_browser.py.)
- API key: DONORCAST_YOUTUBE_API_KEY never shows in `donorcast collect` output, errors, tracebacks,
  logs (DEBUG included) or the database, whatever the YouTube Data API answers.
- URLs: chat-downloader and the archive downloader only ever fetch YouTube/Twitch hosts unless the
  explicit flag is given, including for URLs that come from the database rather than the user.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from infra.events import ChatMessage, DonorScore, MessageKind
from infra.repository import (
    count_rows,
    latest_scores,
    list_streams,
    record_model_version,
    save_messages,
    save_scores,
    stream_messages,
    upsert_channel,
    upsert_stream,
    viewer_histories,
)
from tests.test_drills.hostile import FORMULA, SCRIPT, SQL

REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTILE_TEXT = (SQL, "Robert'); DROP TABLE streams;--", '" OR "1"="1', "$1 $2", "$$; DROP TABLE channels; $$",
                "\\", "\\N", "\t\r\n", "%s %(x)s {0}", "E'\\x41'", "/* */ --", "';", SCRIPT, FORMULA,
                "\u202e\u2066evil\u2069", "😀 中文 عربى", "NULL", " ", "")
TABLES = {"channels", "streams", "chat_messages", "viewer_scores", "viewer_scores_latest", "model_versions",
          "schema_migrations"}
T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)


# ---------------------------------------------------------------- SQL

def hostile_messages(stream_id: str) -> list[ChatMessage]:
    out = []
    for i, text in enumerate(HOSTILE_TEXT):
        out.append(ChatMessage(
            stream_id=stream_id, message_id=f"{text}#{i}", timestamp=T0 + timedelta(seconds=i),
            author_id=f"UC{text}" if i % 2 else None, author_name=text, text=text, badges=(text, "Member") if text else ("Member",),
            kind=MessageKind.PAID_MESSAGE if i % 3 == 0 else MessageKind.TEXT,
            amount=1.0 if i % 3 == 0 else None, currency="USD" if i % 3 == 0 else None,
            amount_text=(text[:100] or None) if i % 3 == 0 else None))
    return out


def as_chat_downloader_item(message: ChatMessage) -> dict[str, Any]:
    """The item chat-downloader would write for this message (what `donorcast ingest` reads)."""
    item: dict[str, Any] = {
        "message_id": message.message_id, "message": message.text,
        "message_type": "text_message" if message.kind is MessageKind.TEXT else message.kind.value,
        "timestamp": int(message.timestamp.timestamp() * 1_000_000),
        "author": {"id": message.author_id, "name": message.author_name, "badges": [{"title": t} for t in message.badges]},
    }
    if message.amount is not None:
        item["money"] = {"amount": message.amount, "currency": message.currency, "text": message.amount_text}
    return item


async def tables_and_counts(pool: asyncpg.Pool) -> dict[str, int]:
    names = {r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert names == TABLES, f"tables changed: {names ^ TABLES}"
    return {t: await count_rows(pool, t) for t in sorted(TABLES - {"schema_migrations"})}


async def test_hostile_text_round_trips_verbatim_through_ingest_and_the_repository(pool: asyncpg.Pool,
                                                                                    tmp_path: Path) -> None:
    from producers.ingest import ingest

    stream = "s'; DELETE FROM streams; --"  # also the file name: ingest takes the stream id from it
    messages = hostile_messages(stream)
    path = tmp_path / f"{stream}.jsonl"
    path.write_text("".join(json.dumps(as_chat_downloader_item(m), ensure_ascii=False) + "\n" for m in messages),
                    encoding="utf-8")
    summary = await ingest([path], pool, progress=False)
    assert (summary.messages, summary.rejected, summary.new_rows) == (len(messages), 0, len(messages))
    assert await save_messages(pool, messages, source=SQL) == 0  # the same ids again: idempotent

    stored = await stream_messages(pool, stream)
    fields = ("message_id", "author_id", "author_name", "text", "badges", "amount_text", "kind")
    assert sorted(tuple(getattr(m, f) for f in fields) for m in stored) == sorted(
        tuple(getattr(m, f) for f in fields) for m in messages)

    for i, text in enumerate(HOSTILE_TEXT):
        await upsert_channel(pool, "youtube", f"UC{text}", name=text, url=text)
        await upsert_stream(pool, platform="youtube", stream_id=stream, channel_id=f"UC{text}", title=text,
                            url=text, status="completed", chat_status="failed", chat_error=text, source=text)
        assert (await pool.fetchrow("SELECT title, url, chat_error, source FROM streams WHERE stream_id = $1",
                                    stream))["title"] == text
        scores = [DonorScore(stream_id=stream, viewer_id=f"v{text}", viewer_name=text, probability=0.5, n_messages=i,
                             model_version=text or "v", top_message_ids=(text,), event_time=T0, scored_at=T0)]
        assert await save_scores(pool, scores) == 1
        await record_model_version(pool, f"{text}#{i}", text, {text: text, "n": i}, note=text)
    assert {s.viewer_name for s in await latest_scores(pool, stream, limit=100)} == set(HOSTILE_TEXT)
    for text in HOSTILE_TEXT:
        assert [s.stream_id for s in await list_streams(pool, channel_id=f"UC{text}")] in ([stream], [])
        assert await latest_scores(pool, text) == [] or text == stream
    histories = await viewer_histories(pool, [m.viewer_id for m in messages], before=T0 + timedelta(days=1),
                                       exclude_stream=SQL)
    assert sum(h.past_messages + h.past_paid_events for h in histories.values()) == len(messages)
    with pytest.raises(ValueError, match="unknown table"):
        await count_rows(pool, "chat_messages; DROP TABLE streams")

    counts = await tables_and_counts(pool)
    assert counts["chat_messages"] == len(messages)
    assert counts["channels"] == len(HOSTILE_TEXT) and counts["model_versions"] == len(HOSTILE_TEXT)


def test_no_sql_is_built_from_values() -> None:
    """ruff's S608 (SQL built with f-strings, %, + or .format) over all product code; the few
    reviewed exceptions interpolate fixed column lists and carry `# noqa: S608` with the reason."""
    result = subprocess.run(  # noqa: S603 - our own linter on our own code
        [sys.executable, "-m", "ruff", "check", "--select", "S608", "--no-cache", "--output-format", "concise",
         "infra", "producers", "stream_agents", "training", "models", "bench", "cli", "dashboard"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_hostile_seed_database_cannot_inject_into_its_own_query(tmp_path: Path) -> None:
    """The seed reader names the database's table in its SQL: a table name with quotes must fail
    clearly (read-only connection, InputError), never run as SQL."""
    import sqlite3

    from infra.errors import InputError
    from producers.readers.seed_sqlite import COLUMNS, SeedSqliteReader

    path = tmp_path / "seed.sqlite"
    connection = sqlite3.connect(path)
    table = 'x" ; DROP TABLE victim; --'
    quoted = table.replace('"', '""')
    connection.execute(f'CREATE TABLE "{quoted}" ({", ".join(COLUMNS)})')
    connection.execute("CREATE TABLE victim (a)")
    connection.execute(f'INSERT INTO "{quoted}" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',  # noqa: S608 - the hostile name is the test
                       (1, "https://youtu.be/AAAAAAAAAAA", "text_message", "1", "NULL", "a", "hi", "NULL", "NULL"))
    connection.commit()
    connection.close()
    try:
        events = list(SeedSqliteReader(path).read())
    except InputError as error:
        assert "not a readable seed database" in str(error) or "lacks seed columns" in str(error)
    else:
        assert [e.text for e in events if isinstance(e, ChatMessage)] == ["hi"]
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT name FROM sqlite_master WHERE name = 'victim'").fetchone()
    connection.close()


# ---------------------------------------------------------------- dashboard

HTML_SINKS = re.compile(r"\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|\beval\s*\(|"
                        r"new\s+Function\s*\(|set(Timeout|Interval)\s*\(\s*['\"`]|\.setAttribute\(\s*['\"]on|"
                        r"createContextualFragment|DOMParser|\.srcdoc\b")


def test_the_page_script_has_no_html_sinks() -> None:
    """Chat text reaches the DOM only as text: no API in the page that parses a string as HTML or code,
    and no inline script or handler (which the CSP would also block)."""
    static = REPO_ROOT / "dashboard" / "static"  # our pages and scripts; vendor/ (uPlot) draws on a canvas
    scripts, pages = sorted(static.glob("*.js")), sorted(static.glob("*.html"))
    assert {"app.js", "overview.js", "viewer.js"} <= {p.name for p in scripts}
    for path in scripts:
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(encoding="utf-8"), flags=re.S)  # comments name the sinks
        assert not HTML_SINKS.search(code), (path.name, HTML_SINKS.search(code))
    assert "textContent" in (static / "app.js").read_text(encoding="utf-8")
    for path in pages:
        page = path.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), f"inline <script> in {path.name}"
        assert not re.search(r"\son[a-z]+\s*=", page, re.I), f"inline event handler in {path.name}"
        assert not re.search(r"javascript:", page, re.I), path.name


async def test_every_text_cell_of_the_exports_is_neutralised(pool: asyncpg.Pool, database_url: str,
                                                             tmp_path: Path) -> None:
    import csv
    import io

    from infra.settings import load_settings
    from tests.test_dashboard.conftest import serve

    starts = ("=", "+", "-", "@", "\t", "\r")
    stream = "=cmd|' /C calc'!A0"
    cells = [f"{s}HYPERLINK(\"http://evil.example\")" for s in starts] + ["@nova_fan"]  # a handle stays as is
    await upsert_stream(pool, platform="youtube", stream_id=stream, title="@SUM(1+1)*cmd", url="-2+3")
    messages = [ChatMessage(stream_id=stream, message_id=f"m{i}", timestamp=T0 + timedelta(seconds=i),
                            author_id=cell, author_name=cell, text=cell) for i, cell in enumerate(cells)]
    await save_messages(pool, messages)
    await save_scores(pool, [DonorScore(stream_id=stream, viewer_id=cell, viewer_name=cell, probability=0.1 + i / 10,
                                        n_messages=1, model_version=f"+v{i}", top_message_ids=(f"m{i}",),
                                        event_time=T0 + timedelta(seconds=i), scored_at=datetime.now(UTC))
                             for i, cell in enumerate(cells)])
    settings = load_settings(state_dir=tmp_path / "state")
    async with serve(settings, database_url) as client:
        for export in ("leaderboard", "summary"):
            response = await client.get(f"/api/export/{export}.csv", params={"stream": stream, "k": "100"})
            body = await response.text()
            assert response.status == 200, body
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            rows = list(csv.reader(io.StringIO(body)))
            assert len(rows) > 1
            for row in rows[1:]:
                for cell in row:
                    assert not cell.startswith(starts) or _is_number(cell) or cell == "@nova_fan", \
                        f"{export}: live formula {cell!r}"
            assert any(cell.startswith("'=") for row in rows[1:] for cell in row), "nothing was neutralised?"
            if export == "leaderboard":
                assert "@nova_fan" in {row[1] for row in rows[1:]} & {row[2] for row in rows[1:]}  # id and name
            response = await client.get(f"/api/export/{export}.json", params={"stream": stream, "k": "100"})
            assert response.content_type == "application/json"  # data, never a page


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


BIND_CASES = {  # name -> (DONORCAST_* settings, extra worker arguments, what the one-line error says)
    "env 0.0.0.0": ({"WEB_HOST": "0.0.0.0"}, [], "not a loopback address"),  # noqa: S104 - the point
    "env 0.0.0.0, empty token": ({"WEB_HOST": "0.0.0.0", "DASHBOARD_TOKEN": ""}, [], "not a loopback address"),
    "env ::": ({"WEB_HOST": "::"}, [], "(not a loopback address: all interfaces)"),
    "env empty host": ({"WEB_HOST": ""}, [], "(not a loopback address: all interfaces)"),
    "--web-bind 0.0.0.0": ({"WEB_HOST": "127.0.0.1"}, ["--web-bind", "0.0.0.0"], "not a loopback address"),
    "token 'a'": ({"WEB_HOST": "0.0.0.0", "DASHBOARD_TOKEN": "a"}, [], "too short (1 characters"),
    "token of three spaces": ({"WEB_HOST": "0.0.0.0", "DASHBOARD_TOKEN": "   "}, [], "whitespace"),
}


@pytest.mark.parametrize("case", list(BIND_CASES))
def test_the_worker_process_refuses_a_public_bind_without_a_good_token(case: str, kafka_bootstrap: str,
                                                                        tmp_path: Path) -> None:
    """The real worker entry point, not just the check: whatever sets the address (environment or faust's
    --web-bind, which changes it after the app is built), it exits with one line naming the cause, no
    traceback, and never listens."""
    import socket

    from infra.kafka import free_port

    settings, arguments, expected = BIND_CASES[case]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONORCAST_")}
    env.update({"DONORCAST_KAFKA_BOOTSTRAP": kafka_bootstrap, "DONORCAST_STATE_DIR": str(tmp_path),
                "DONORCAST_WEB_PORT": str(port), "DONORCAST_TOPIC_PREFIX": "bind-", "PYTHONPATH": str(REPO_ROOT),
                **{f"DONORCAST_{name}": value for name, value in settings.items()}})
    process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed argv
        [sys.executable, "-m", "stream_agents", "worker", "--loglevel", "warn", *arguments],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    listened = False
    try:
        while process.poll() is None:  # until it exits: it must never accept a connection meanwhile
            with socket.socket() as probe:
                probe.settimeout(0.2)
                listened = listened or probe.connect_ex(("127.0.0.1", port)) == 0
            if listened:
                break
            time.sleep(0.1)
        output = process.communicate(timeout=120)
        text = output[0] + output[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert not listened, f"{case}: the worker listened on port {port}"
    assert process.returncode == 1, text[-2000:]
    assert expected in text and "DONORCAST_DASHBOARD_TOKEN" in text, text[-2000:]
    assert "Traceback" not in text and "ValueError" not in text, text[-3000:]


def test_the_worker_command_refuses_a_public_bind_before_starting_any_service(tmp_path: Path) -> None:
    """`donorcast worker` (the supervisor) says no before it starts embedded Kafka or PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONORCAST_")}
    env.update({"DONORCAST_STATE_DIR": str(tmp_path / "state"), "DONORCAST_WEB_HOST": "::",
                "PYTHONPATH": str(REPO_ROOT)})
    result = subprocess.run(  # noqa: S603 - our interpreter, fixed argv
        [sys.executable, "-m", "infra.cli", "worker"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "not a loopback address" in " ".join(output.split()) and "Traceback" not in output, output[-2000:]
    assert not (tmp_path / "state" / "run").exists()  # no service was started


def http(port: int, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], str]:
    """One raw request (http.client sends our Host and Origin headers as given)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in {**headers, **({"Content-Length": str(len(body))} if body is not None else {})}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def poison_amount(message: ChatMessage, amount: float) -> bytes:
    """The message as its producer would send it, with an amount no event contract would build."""
    record = json.loads(message.model_dump_json())
    record.update(amount=amount, message_id=f"{message.message_id}-huge")
    return json.dumps(record).encode()


async def test_the_running_worker_answers_only_its_own_names_origins_and_bounded_values(
        topics: Any, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """The real worker process (scorer double, real Tansu + PostgreSQL): DNS rebinding, CSRF on the
    model-running POST /score, faust's own views, a NUL in a parameter, and two paid messages of
    1.7e308 (which once overflowed PostgreSQL's sum and broke the stream's summary for good)."""
    from infra.kafka import free_port
    from infra.topics import DEAD_LETTERS
    from tests.test_stream_agents.harness import publish, read_topic, start_worker, synthetic_stream
    from tests.test_stream_agents.scorer_double import promote_double

    promote_double(topics.registry_dir)
    worker = start_worker(topics, free_port(), tmp_path / "worker.log", model_double=True)
    try:
        worker.wait_ready()
        port, here = worker.port, f"127.0.0.1:{worker.port}"
        messages = synthetic_stream("huge", viewers=6, messages=30, donors=2)
        paid = [m for m in messages if m.is_paid]
        assert paid, "the synthetic stream has payments to poison"
        poison = [poison_amount(paid[0], 1.7e308), poison_amount(paid[-1], 1.7e308)]
        await publish(topics, messages, raw=poison)
        worker.wait_until(lambda s: s["records_in"] >= len(messages) + len(poison), 60, "every record")
        rows = await wait_for_rows(pool, "huge", len(messages))
        assert rows == len(messages)  # every valid message stored, no poisoned one

        letters = [json.loads(r.value) for r in await read_topic(topics, DEAD_LETTERS, expect=2)]
        assert len(letters) == 2, letters
        assert all(letter["reason"].startswith("amount: 1.7e+308 ") and "per-event maximum" in letter["reason"]
                   for letter in letters), [letter["reason"] for letter in letters]

        for path in ("/api/summary?stream=huge", "/api/snapshot?stream=huge", "/api/export/summary.csv?stream=huge"):
            status, _, body = http(port, "GET", path, Host=here)
            assert status == 200, (path, body[:500])
        status, _, body = http(port, "GET", "/api/summary?stream=huge", Host=here)
        expected = {c: round(sum(m.amount or 0 for m in paid if m.currency == c), 2)
                    for c in {m.currency for m in paid if m.currency and m.currency != "XXX"}}
        assert json.loads(body)["paid_totals"] == pytest.approx(expected)

        # DNS rebinding: the browser sends the attacker's name as Host
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", ""):
            status, _, body = http(port, "GET", "/api/streams", Host=host)
            assert status == 421, (host, status, body[:300])
        for host in (here, f"localhost:{port}", f"[::1]:{port}"):
            assert http(port, "GET", "/api/streams", Host=host)[0] == 200, host
        assert http(port, "GET", "/healthz", Host="prometheus.internal:9090")[0] == 200  # counters: any name

        # CSRF: a cross-origin form or fetch must not run the model
        score = json.dumps({"messages": [{"text": "hello chat", "timestamp": "2026-03-01T18:00:00Z"}]}).encode()
        for content_type in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
            status, _, body = http(port, "POST", "/score", score, Host=here, Origin="http://evil.example",
                                   **{"Content-Type": content_type})
            assert status == 403, (content_type, status, body[:300])
        assert http(port, "POST", "/score", score, Host=here, Origin="null",
                    **{"Content-Type": "application/json"})[0] == 403
        assert http(port, "POST", "/score", score, Host=here, **{"Content-Type": "text/plain"})[0] == 415
        assert http(port, "GET", "/streams/huge/viewer?viewer_id=x&explain=1", Host=here,
                    **{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})[0] == 403  # <img src=...>
        status, _, body = http(port, "POST", "/score", score, Host=here, Origin=f"http://{here}",
                               **{"Content-Type": "application/json"})
        assert status == 200 and 0 < json.loads(body)["probability"] < 1, body[:300]

        # faust's own views are off; "/" is the dashboard
        for path in ("/table/", "/table/viewer_to_sequence/", "/router/", "/graph/", "/stats/"):
            assert http(port, "GET", path, Host=here)[0] == 404, path
        status, headers, _ = http(port, "GET", "/", Host=here)
        assert status == 302 and headers["Location"] == "/dashboard/"

        # a NUL (or any control character) in a parameter is the request's fault: 400, on every route
        for path in ("/api/summary?stream=%00", "/api/leaderboard?stream=a%00b", "/api/events?stream=%00",
                     "/api/snapshot?stream=%00", "/api/viewer?stream=huge&viewer=%00", "/api/export/summary.json?stream=%00"):
            status, _, body = http(port, "GET", path, Host=here)
            assert status == 400 and "control characters" in body, (path, status, body[:300])
        time.sleep(2.5)  # what a live feed would have logged meanwhile
        assert "Traceback" not in worker.log_path.read_text(errors="replace"), worker.log_tail(80)
    finally:
        worker.stop()


async def wait_for_rows(pool: asyncpg.Pool, stream_id: str, expected: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetchval("SELECT count(*) FROM chat_messages WHERE stream_id = $1", stream_id)
        if rows >= expected or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.3)


# ---------------------------------------------------------------- API key

SECRET = "AIzaSyDRILL-secret-key_9f8e7d6c5b4a3210"


def recorded_api(monkeypatch: pytest.MonkeyPatch, responses: list[Any]) -> list[str]:
    """googleapiclient's own HttpMockSequence as the transport of every client built from here on
    (what `donorcast collect` builds from the key); returns the URIs requested."""
    import googleapiclient.discovery
    from googleapiclient.http import HttpMockSequence

    uris: list[str] = []

    class Recording(HttpMockSequence):
        def request(self, uri, *args, **kwargs):  # type: ignore[no-untyped-def]
            uris.append(uri)
            if self._iterable and isinstance(self._iterable[0], Exception):
                raise self._iterable.pop(0)
            return super().request(uri, *args, **kwargs)

        def close(self) -> None:  # build() closes the client it used for discovery
            pass

    remaining = list(responses)  # shared by every client built: the API's answers, in order
    monkeypatch.setattr(googleapiclient.discovery, "build_http", lambda: Recording(remaining))
    return uris


def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    from producers.archive import metadata
    from producers.archive.backoff import Backoff

    monkeypatch.setattr(metadata, "Backoff", lambda: Backoff(attempts=2, initial_seconds=0.0, max_seconds=0.0))


def fake_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """No browser: the streams page 'shows' two videos; their chat source yields nothing."""
    from producers.archive import collect
    from producers.archive.discover import Discovery, ScrollReport
    from producers.archive.urls import StreamRef

    report = ScrollReport(rounds=1, final_height=100, stopped_because="height stable", seconds=0.0)

    def discover(page_url: str) -> Discovery:
        return Discovery(page_url, [StreamRef("youtube", "v1x01abcdef"), StreamRef("youtube", "v1x02abcdef")], report)

    monkeypatch.setattr(collect, "_browser_discover", lambda timeout: discover)
    monkeypatch.setattr(collect, "_chat_source", lambda: (lambda url, *, start_time: iter(())))


FIXTURES = REPO_ROOT / "tests" / "fixtures" / "archive"
OK = {"status": "200", "content-type": "application/json; charset=UTF-8"}


def api_error(status: int, reason: str, message: str) -> tuple[dict[str, str], str]:
    return ({"status": str(status)}, json.dumps({"error": {"code": status, "message": message,
                                                           "errors": [{"reason": reason, "message": message}]}}))


@pytest.mark.parametrize("scenario", ["rejected key echoed back", "transport error quoting the URI",
                                      "quota exhausted", "success"])
def test_the_api_key_never_shows_in_collect_output_errors_logs_or_rows(
    scenario: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path,
    database_url: str,
) -> None:
    import httplib2
    from typer.testing import CliRunner

    from infra.cli import build_app

    caplog.set_level(logging.DEBUG)  # googleapiclient logs every request URI (key included) at DEBUG
    uri = f"https://youtube.googleapis.com/youtube/v3/videos?part=snippet&key={SECRET}&alt=json"
    responses = {
        "rejected key echoed back": [api_error(400, "keyInvalid", f"API key not valid: {SECRET}. Please pass a valid key.")],
        "transport error quoting the URI": [httplib2.HttpLib2Error(f"Unable to reach {uri}")] * 2,
        "quota exhausted": [api_error(403, "quotaExceeded", f"quota for key={SECRET} exceeded")] * 2,
        "success": [(OK, (FIXTURES / "videos_list.json").read_text())],
    }[scenario]
    requested = recorded_api(monkeypatch, responses)
    fast_backoff(monkeypatch)
    fake_discovery(monkeypatch)
    env = {"DONORCAST_DATABASE_URL": database_url, "DONORCAST_STATE_DIR": str(tmp_path),
           "DONORCAST_YOUTUBE_API_KEY": SECRET}
    result = CliRunner().invoke(build_app(), ["collect", "https://www.youtube.com/@fixturechannel"], env=env)

    assert requested and SECRET in requested[0], (result.output[-3000:], result.exception)  # the key went out
    shown = [result.output]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        shown.append("".join(traceback.format_exception(result.exception)))
        shown.append(repr(result.exception))
    shown += [record.getMessage() for record in caplog.records]
    shown += [str(record.args) for record in caplog.records]

    async def rows() -> list[str]:
        connection = await asyncpg.connect(database_url)
        try:
            return [json.dumps(dict(r), default=str) for table in ("streams", "channels")
                    for r in await connection.fetch(f"SELECT * FROM {table}")]  # noqa: S608 - fixed names
        finally:
            await connection.close()

    shown += asyncio.run(rows())
    leaks = [text for text in shown if SECRET in text]
    assert not leaks, f"the API key leaked ({scenario}): {leaks[0][:500]}"
    if scenario == "success":
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0 and result.exception is not None


# ---------------------------------------------------------------- URLs

ALLOWED = ("youtube.com", "youtu.be", "twitch.tv", "youtube-nocookie.com")


def allowed_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    return any(host == d or host.endswith("." + d) for d in ALLOWED)


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL requests (chat-downloader's HTTP client) is asked to fetch; nothing leaves the machine."""
    import requests

    urls: list[str] = []

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        urls.append(request.url)
        raise requests.exceptions.ConnectionError("drill: no network")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return urls


TRICKY_BUT_YOUTUBE = [
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&next=https://evil.example/x",
    "https://m.youtube.com/watch?v=dQw4w9WgXcQ#https://evil.example",
    "https://evil.example\\@www.youtube.com/watch?v=dQw4w9WgXcQ",  # a browser would go to evil.example
    "https://www.twitch.tv/videos/123456789?redirect=https://evil.example",
]
REFUSED = [
    "https://evil.example/watch?v=dQw4w9WgXcQ", "https://youtube.com.evil.example/watch?v=dQw4w9WgXcQ",
    "https://www.youtube.com@evil.example/watch?v=dQw4w9WgXcQ", "https://evilyoutube.com/watch?v=dQw4w9WgXcQ",
    "https://www.reddit.com/r/livestream/comments/abc/", "https://zoom.us/rec/play/abc", "file:///etc/passwd",
    "javascript:alert(1)", "ftp://www.youtube.com/x", "//evil.example/x", "https://127.0.0.1:8080/watch?v=dQw4w9WgXcQ",
]


def test_live_chat_only_fetches_youtube_and_twitch(fetched: list[str]) -> None:
    from infra.errors import InputError
    from producers.live import chat_downloader_iterator, resolve_target

    for url in REFUSED:
        with pytest.raises(InputError, match="refusing|not an http"):
            resolve_target(url)
    assert resolve_target(REFUSED[0], allow_any_host=True).platform == "other"  # only with the explicit flag
    for url in TRICKY_BUT_YOUTUBE:
        try:
            target = resolve_target(url)
        except InputError:
            continue  # refusing is always safe
        try:
            for _ in chat_downloader_iterator(target):
                break
        except Exception:  # noqa: BLE001, S110 - the drill's network is down; only what was fetched matters
            pass
    assert fetched, "chat-downloader fetched nothing: the drill saw no request"
    assert all(allowed_host(url) for url in fetched), [u for u in fetched if not allowed_host(u)]


async def test_archive_update_never_fetches_a_foreign_url_stored_in_the_database(
    pool: asyncpg.Pool, tmp_path: Path, fetched: list[str]
) -> None:
    """A dataset's metadata (here HundredBeans-style liveIds.json, read by `donorcast ingest`) puts a
    stream URL into PostgreSQL; `donorcast update` later downloads that stream's chat with the real
    chat-downloader source. It must ask for the YouTube watch page, never the stored foreign URL."""
    from producers.archive.backoff import Backoff
    from producers.archive.collect import update_channel
    from producers.archive.download import chat_downloader_source
    from producers.ingest import ingest
    from tests.test_producers.test_readers_logs import npm_item

    base = tmp_path / "hundredbeans-yt-livechat"
    (base / "evil-channel" / "history").mkdir(parents=True)
    (base / "channels.json").write_text(json.dumps([{"id": "UCevil", "name": "Evil", "slug": "evil-channel"}]))
    foreign = "https://zoom.us/rec/play/AbCdEfGhIjK"  # a site chat-downloader would fetch
    (base / "evil-channel" / "liveIds.json").write_text(json.dumps([{"id": "AbCdEfGhIjK", "title": "t", "url": foreign}]))
    (base / "evil-channel" / "history" / "AbCdEfGhIjK.json").write_text(
        json.dumps([npm_item(1, "2022-04-26T06:56:41Z")]))
    summary = await ingest([base], pool, progress=False)
    assert summary.new_rows == 1
    assert await pool.fetchval("SELECT url FROM streams WHERE stream_id = 'AbCdEfGhIjK'") == foreign

    report = await update_channel(pool, "UCevil", discover=None, metadata=None,
                                  chat=chat_downloader_source(max_attempts=1, inactivity_timeout=5),
                                  chat_backoff=Backoff(attempts=1, initial_seconds=0.0, max_seconds=0.0))
    assert report.retried == 1  # the ingested stream was taken up
    assert fetched, "nothing was fetched: the drill saw no request"
    assert all(allowed_host(url) for url in fetched), f"fetched {[u for u in fetched if not allowed_host(u)]}"
