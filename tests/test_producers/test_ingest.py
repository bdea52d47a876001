"""`ingest` / `donorcast ingest` against the real embedded PostgreSQL: bulk, idempotent, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from infra.cli import build_app
from infra.repository import count_rows, list_streams
from producers.ingest import ingest

T0 = 1_700_000_000_000_000


def chat_downloader_file(path: Path) -> Path:
    items = [
        {"message_id": f"cd{i}", "message_type": "text_message", "timestamp": T0 + i * 1_000_000,
         "time_in_seconds": float(i), "author": {"id": f"UC{i % 3}", "name": f"v{i % 3}",
                                                   **({"badges": [{"title": "Member (1 month)"}]} if i % 3 == 0 else {})},
         "message": f"hello {i}"}
        for i in range(6)
    ]
    items.append({"message_id": "cd-paid", "message_type": "paid_message", "timestamp": T0 + 10_000_000,
                  "author": {"id": "UC9", "name": "donor"}, "message": "gg",
                  "money": {"amount": 5.0, "currency": "USD", "text": "$5.00"}})
    items.append({"message_id": "cd-bad", "message_type": "text_message", "timestamp": "later",
                  "author": {"id": "UC1", "name": "v1"}, "message": "lost?"})
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n", encoding="utf-8")
    return path


def data_folder(root: Path) -> Path:
    base = root / "data"
    logs = base / "rbtv-youtube-chatlogs" / "2017" / "07"
    logs.mkdir(parents=True)
    (logs / "01.txt").write_text("[00:00:01] <a> hi\n[00:00:02] <+b> moin\nnot chat\n[00:00:03] <a> 👋\n", encoding="utf-8")
    (base / "rbtv-youtube-chatlogs" / "README.md").write_text("# logs\n", encoding="utf-8")
    chat_downloader_file(base / "dQw4w9WgXcQ.jsonl")
    history = base / "hb" / "club" / "history"
    history.mkdir(parents=True)
    (base / "hb" / "channels.json").write_text(json.dumps([{"id": "UCclub", "name": "Club", "slug": "club"}]))
    (history.parent / "liveIds.json").write_text(json.dumps([{"id": "ZZZZZZZZZZZ", "title": "Main", "url": "u"}]))
    (history / "ZZZZZZZZZZZ.json").write_text(json.dumps([
        {"id": "fs1", "timestamp": "2022-04-26T06:56:41.859Z", "isMembership": True, "isOwner": False,
         "isModerator": False, "isVerified": False, "author": {"channelId": "UCm", "name": "m"},
         "message": [{"text": "halo "}, {"emojiText": ":_clubHi:", "isCustomEmoji": True}]},
    ]))
    return base


async def test_ingest_is_idempotent_and_keeps_rejected_records(pool: asyncpg.Pool, tmp_path: Path) -> None:
    folder = data_folder(tmp_path)
    rejected_path = tmp_path / "state" / "rejected" / "run.jsonl"
    first = await ingest([folder], pool, batch_size=2, progress=False, rejected_path=rejected_path)
    assert (first.files, first.messages, first.new_rows, first.duplicates) == (3, 11, 11, 0)
    assert (first.viewers, first.members, first.paid_events, first.streams) == (7, 3, 1, 3)
    assert first.formats == {"irc": 1, "chat-downloader": 1, "youtube-chat": 1}
    assert first.skipped["file of no chat format"] == 3  # README, channels.json, liveIds.json
    assert first.rejected == 2 and first.rejected_path == rejected_path
    assert first.first_rejections == [
        f"{folder / 'dQw4w9WgXcQ.jsonl'}:8: timestamp: 'later' is not microseconds since 1970",
        f"{folder / 'rbtv-youtube-chatlogs/2017/07/01.txt'}:3: not a chat line: expected '[HH:MM:SS] <Name> text'",
    ]
    kept = [json.loads(line) for line in rejected_path.read_text(encoding="utf-8").splitlines()]
    assert json.loads(kept[0]["raw"])["message_id"] == "cd-bad" and kept[0]["source"] == "chat-downloader"
    assert kept[1]["raw"] == "not chat" and kept[1]["location"].endswith("01.txt:3")
    assert await count_rows(pool, "chat_messages") == 11

    again = await ingest([folder], pool, batch_size=5000, progress=False)
    assert (again.messages, again.new_rows, again.duplicates) == (11, 0, 11)
    assert await count_rows(pool, "chat_messages") == 11

    streams = {s.stream_id: s for s in await list_streams(pool)}
    assert set(streams) == {"rbtv-2017-07-01", "dQw4w9WgXcQ", "ZZZZZZZZZZZ"}
    assert (streams["ZZZZZZZZZZZ"].channel_id, streams["ZZZZZZZZZZZ"].title) == ("UCclub", "Main")
    assert streams["dQw4w9WgXcQ"].n_paid == 1 and streams["rbtv-2017-07-01"].n_messages == 3
    text = await pool.fetchval("SELECT text FROM chat_messages WHERE message_id = 'fs1'")
    assert text == "halo :_clubHi:"  # stored as sent; training strips member emotes itself


async def test_ingest_reports_unreadable_paths(pool: asyncpg.Pool, tmp_path: Path) -> None:
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello\n", encoding="utf-8")
    summary = await ingest([unknown, tmp_path / "missing.json"], pool, progress=False)
    assert summary.messages == 0 and len(summary.failed_files) == 2
    assert "cannot tell which chat format" in summary.failed_files[1] or "cannot tell" in summary.failed_files[0]
    assert any("no such file" in f for f in summary.failed_files)


def run_cli(args: list[str], database_url: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DONORCAST_DATABASE_URL", database_url)
    monkeypatch.setenv("DONORCAST_STATE_DIR", str(state_dir))
    return CliRunner().invoke(build_app(), args)


def test_ingest_command(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = data_folder(tmp_path)
    state = tmp_path / "state"
    result = run_cli(["ingest", str(folder)], database_url, state, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "messages read" in result.output and "11" in result.output and "rejected" in result.output
    (rejected,) = list((state / "rejected").glob("*.jsonl"))
    assert len(rejected.read_text(encoding="utf-8").splitlines()) == 2

    again = run_cli(["ingest", str(folder / "dQw4w9WgXcQ.jsonl"), "--format", "chat-downloader"], database_url,
                    state, monkeypatch)
    assert again.exit_code == 0, again.output
    assert "already stored" in again.output

    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello\n", encoding="utf-8")
    nothing = run_cli(["ingest", str(unknown)], database_url, state, monkeypatch)
    assert nothing.exit_code == 1
    assert "nothing could be read" in nothing.output and "supported" in nothing.output

    bad_format = run_cli(["ingest", str(unknown), "--format", "vtt"], database_url, state, monkeypatch)
    assert bad_format.exit_code == 2 and "unknown chat format" in bad_format.output


@pytest.mark.slow
async def test_ingest_the_whole_raw_data(pool: asyncpg.Pool, shared_data: Path, tmp_path: Path) -> None:
    """Both real chat sources end to end: counts as their READMEs give them, nothing valid rejected."""
    raw = shared_data / "raw"
    summary = await ingest([raw / "rbtv-youtube-chatlogs", raw / "hundredbeans-yt-livechat"], pool,
                           batch_size=10_000, progress=False, rejected_path=tmp_path / "rejected.jsonl")
    print(f"\nwhole raw ingest: {summary.messages:,} msgs in {summary.seconds:.1f} s = {summary.rate:,.0f} msgs/s")
    assert summary.rejected == 0 and not summary.failed_files
    assert summary.messages == summary.new_rows == 961_605 + 126_330
    assert summary.viewers == 27_906 + 14_331
    assert summary.members == 934 + 736
    assert summary.paid_events == 0  # neither source logs donations
    assert summary.streams == 85 + 52
    assert await count_rows(pool, "chat_messages") == 1_087_935
    member_messages = await pool.fetchval("SELECT count(*) FROM chat_messages WHERE is_member")
    assert member_messages == 222_405 + 17_775
    streams = await list_streams(pool)
    by_channel: dict[str | None, int] = {}
    for stream in streams:
        by_channel[stream.channel_id] = by_channel.get(stream.channel_id, 0) + 1
    assert by_channel == {None: 85, "UCaMKaSneK--9QLtkDlj2dag": 37, "UCRBgZ9ondGvlcR-E_snJY2Q": 15}
