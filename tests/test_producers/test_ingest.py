"""`ingest` / `donorcast ingest` against the real embedded PostgreSQL: bulk, idempotent, nothing lost."""

from __future__ import annotations

import asyncio
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
    assert summary.failed_files == [
        f"{tmp_path / 'missing.json'}: no such file or directory",
        f"{unknown}:1: text, but no chat format we know: the first line 'hello' is neither JSON, an IRC log line "
        "'[HH:MM:SS] <name> text' nor a CSV header with author_id,timestamp,message; if it is one of "
        "chat-downloader, chat-replay-csv, youtube-raw, youtube-api, pytchat, seed-sqlite, irc, youtube-chat, "
        "pass --format NAME",
    ]


async def test_a_broken_first_record_does_not_hide_the_format(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = chat_downloader_file(tmp_path / "chat.jsonl")
    path.write_text('{"message_id": "cd-x", "message_type": "text_message",, }\n' + path.read_text(encoding="utf-8"),
                    encoding="utf-8")
    summary = await ingest([path], pool, progress=False)
    assert summary.formats == {"chat-downloader": 1} and summary.messages == 7 and not summary.failed_files
    assert summary.first_rejections[0] == f"{path}:1: invalid JSON: Expecting property name enclosed in double " \
                                          "quotes (column 55)"


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
    assert "nothing could be read (see the reasons above)" in nothing.output
    assert f"{unknown}:1: text, but no chat format we know" in nothing.output
    assert "ingest summary" not in nothing.output  # no table of zeros

    bad_format = run_cli(["ingest", str(unknown), "--format", "vtt"], database_url, state, monkeypatch)
    assert bad_format.exit_code == 2 and "unknown chat format" in bad_format.output


def test_ingest_names_the_cause_of_each_unreadable_file(database_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Broken JSON, an empty file, a binary file and /dev/null each get their own cause, with file and
    line or offset; the good file named beside them is still stored."""
    good = chat_downloader_file(tmp_path / "good.jsonl")
    broken = tmp_path / "broken.json"
    broken.write_text('{"message_id": "a", "author" {"id": "x"}}\n{"message_id": "b"}\n', encoding="utf-8")
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    binary = tmp_path / "picture.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Jos\u00e9: ol\u00e1\n".encode("latin-1"))
    named = [good, broken, empty, binary, latin1, Path("/dev/null")]
    result = run_cli(["ingest", *map(str, named)], database_url, tmp_path / "state", monkeypatch)
    out = result.output
    assert result.exit_code == 1, out
    assert f"not read {broken}:1:30: invalid JSON: Expecting ':' delimiter (offset 29)" in out
    assert f"not read {empty}: empty file (0 bytes)" in out
    assert f"not read {binary}: binary data, not a text chat file (NUL byte at offset 8)" in out
    assert f"not read {latin1}: not UTF-8 text (byte 0xe9 at offset 3)" in out
    assert "not read /dev/null: not a regular file (a character device)" in out
    assert "5 file(s) not read (above); everything else was read and stored" in out
    assert "messages read" in out and "Traceback" not in out and "cannot tell" not in out

    async def stored() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM chat_messages"))
        finally:
            await conn.close()

    assert asyncio.run(stored()) == 7  # the good file's 7 valid messages


def test_ingest_with_nothing_readable_says_why(database_url: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    given = run_cli(["ingest", str(empty), "--format", "chat-downloader"], database_url, tmp_path / "s", monkeypatch)
    assert given.exit_code == 1
    assert f"not read {empty}: empty file (0 bytes) (read as chat-downloader)" in given.output
    assert "nothing could be read (see the reasons above)" in given.output and "ingest summary" not in given.output

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"message_id": "a",, "x": 1}\n', encoding="utf-8")
    rejected = run_cli(["ingest", str(broken), "-f", "chat-downloader"], database_url, tmp_path / "s", monkeypatch)
    assert rejected.exit_code == 1
    assert f"rejected {broken}:1: invalid JSON: Expecting property name enclosed in double quotes (column 20)" \
        in rejected.output
    assert "nothing could be read (see the reasons above)" in rejected.output
    assert "ingest summary" not in rejected.output

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("# notes\n", encoding="utf-8")
    folder = run_cli(["ingest", str(docs)], database_url, tmp_path / "s", monkeypatch)
    assert folder.exit_code == 1
    assert "nothing could be read: no chat file among the given paths" in folder.output
    assert "see the reasons above" not in folder.output and "ingest summary" not in folder.output


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
