"""`donorcast watch STREAM`: the same leaderboard in the terminal, from PostgreSQL or the JSON API."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from typer.testing import CliRunner

from dashboard.watch import RankChanges, render, sparkline
from infra.cli import build_app
from tests.test_dashboard.conftest import serve
from tests.test_dashboard.test_api import FORMULA_NAME, HTML_NAME, STREAM

RICH_MARKUP_NAME = "[bold red]boss[/bold red]"


def run_watch(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(build_app(), ["watch", *args], env={"COLUMNS": "200", **env})


async def test_watch_once_from_postgres(tmp_path: Any, database_url: str, stream_data: asyncpg.Pool) -> None:
    await stream_data.execute("UPDATE viewer_scores_latest SET viewer_name = $1 WHERE viewer_id = 'name:Eve'",
                              RICH_MARKUP_NAME)
    env = {"DONORCAST_DATABASE_URL": database_url, "DONORCAST_STATE_DIR": str(tmp_path)}
    result = await asyncio.to_thread(run_watch, [STREAM, "--once", "--top", "5"], env)
    assert result.exit_code == 0, result.output
    out = result.output
    lines = [line for line in out.splitlines() if "%" in line and "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == ["1", "2", "3", "4"]  # ranks in order
    assert FORMULA_NAME in lines[0] and "80.0%" in lines[0] and "$5.00" in lines[0] and "HIT was #1" in lines[0]
    assert HTML_NAME in lines[1] and "40.0%" in lines[1]
    assert "¥500" in lines[2] and "HIT was #3" in lines[2]  # within the top 5
    assert RICH_MARKUP_NAME in lines[3]  # printed as text, not taken as markup
    assert "recent paid events" in out and "MISS no score yet" in out  # UCd paid before chatting
    assert "precision@5" in out and "3 payers" in out


async def test_watch_once_through_the_api(tmp_path: Any, dashboard_settings: Any, database_url: str,
                                          stream_data: asyncpg.Pool) -> None:
    token = "watch-token-0123456789"
    async with serve(dashboard_settings(dashboard_token=token), database_url) as client:
        url = str(client.make_url("/"))
        env = {"DONORCAST_STATE_DIR": str(tmp_path), "DONORCAST_DASHBOARD_TOKEN": token}
        result = await asyncio.to_thread(run_watch, [STREAM, "--once", "--url", url], env)
        assert result.exit_code == 0, result.output
        assert "80.0%" in result.output and "HIT was #1" in result.output
        denied = await asyncio.to_thread(run_watch, [STREAM, "--once", "--url", url],
                                         {**env, "DONORCAST_DASHBOARD_TOKEN": "wrong"})
    assert denied.exit_code == 1 and "HTTP 401" in denied.output


async def test_watch_reports_an_unreachable_database(tmp_path: Any) -> None:
    env = {"DONORCAST_DATABASE_URL": "postgresql://x@127.0.0.1:9/x", "DONORCAST_STATE_DIR": str(tmp_path)}
    result = await asyncio.to_thread(run_watch, [STREAM, "--once"], env)
    assert result.exit_code == 1 and "DEGRADED" in result.output and "cannot connect to PostgreSQL" in result.output


async def test_watch_names_an_unknown_stream_and_lists_the_known_ones(tmp_path: Any, database_url: str,
                                                                    dashboard_settings: Any,
                                                                    stream_data: asyncpg.Pool) -> None:
    """Without --once: it used to wait forever for a stream that does not exist."""
    env = {"DONORCAST_DATABASE_URL": database_url, "DONORCAST_STATE_DIR": str(tmp_path)}
    result = await asyncio.wait_for(asyncio.to_thread(run_watch, ["no-such-stream"], env), timeout=60)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "unknown stream 'no-such-stream'; known streams (newest activity first):"
    assert lines[1].split() == [STREAM, "Test", "<b>stream</b>", "(replaying)"]
    assert lines[2].split() == ["s-old", "(ended)"]
    assert "Traceback" not in result.output and "waiting for scores" not in result.output

    async with serve(dashboard_settings(), database_url) as client:
        url = str(client.make_url("/"))
        through_api = await asyncio.wait_for(
            asyncio.to_thread(run_watch, ["no-such-stream", "--url", url], {"DONORCAST_STATE_DIR": str(tmp_path)}),
            timeout=60)
    assert through_api.exit_code == 1, through_api.output
    assert through_api.output.splitlines()[:3] == lines[:3]


async def test_watch_on_an_empty_database_says_there_are_no_streams(tmp_path: Any, database_url: str) -> None:
    env = {"DONORCAST_DATABASE_URL": database_url, "DONORCAST_STATE_DIR": str(tmp_path)}
    result = await asyncio.wait_for(asyncio.to_thread(run_watch, ["s1"], env), timeout=60)
    assert result.exit_code == 1, result.output
    assert "unknown stream 's1': no streams are stored yet" in result.output


def test_rank_changes_and_sparkline() -> None:
    changes = RankChanges()
    board = [{"viewer_id": "a", "rank": 1}, {"viewer_id": "b", "rank": 2}]
    assert {v: m.plain for v, m in changes.update(board, now=0.0).items()} == {"a": "·", "b": "·"}
    moved = [{"viewer_id": "b", "rank": 1}, {"viewer_id": "c", "rank": 2}]
    assert {v: m.plain for v, m in changes.update(moved, now=1.0).items()} == {"b": "▲1", "c": "new"}
    assert {v: m.plain for v, m in changes.update(moved, now=30.0).items()} == {"b": "·", "c": "·"}
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█" and sparkline([]) == ""


def test_render_keeps_last_data_when_degraded() -> None:
    from rich.console import Console

    good = {"status": "ok", "k": 3, "summary": {"title": "t"}, "paid": [],
            "leaderboard": [{"rank": 1, "viewer_id": "a", "viewer_name": "Alice", "probability": 0.5,
                             "n_messages": 2, "trend": [0.4, 0.5]}]}
    console = Console(width=160, record=True)
    console.print(render({"status": "degraded", "problems": ["PostgreSQL down"]}, good, RankChanges()))
    text = console.export_text()
    assert "DEGRADED: PostgreSQL down" in text and "Alice" in text and "50.0%" in text
