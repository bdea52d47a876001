"""IRC-style daily logs, npm youtube-chat JSON, the seed's SQLite database, format detection and
the member-signal stripper, on files written here in those real layouts."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.errors import InputError
from infra.events import ChatMessage, MessageKind
from producers.readers import (
    DirectoryReader,
    Rejected,
    detect_format,
    open_reader,
    read_chat_file,
    strip_member_signals,
)
from producers.readers.irc_log import IrcLogReader
from producers.readers.seed_sqlite import SeedSqliteReader
from producers.readers.youtube_chat_npm import YouTubeChatNpmReader


def messages_of(events: list[ChatMessage | Rejected]) -> list[ChatMessage]:
    return [e for e in events if isinstance(e, ChatMessage)]


# ---------------------------------------------------------------- IRC-style logs

IRC_LINES = [
    "[00:00:09] <cule1337> Was ist ein Gabriel Knights 2? 😀",
    "[00:00:16] <+DOOM Design> 😯",
    "[00:01:00] <%Mod Erator> bitte freundlich bleiben",
    "[00:01:01] <@Rocket Beans TV> Hallo Chat",
    "[12:30:00] <+Name <with> brackets> text with > and < signs",
    "",
    "this line is not chat",
    "[25:00:00] <x> impossible time",
    "[23:59:59] <+DOOM Design> ",
]


def write_irc(root: Path, lines: list[str], day: str = "2017/07/01") -> Path:
    path = root / "rbtv-youtube-chatlogs" / f"{day}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\n".join(lines).encode("utf-8") + b"\n")
    return path


def test_irc_log(tmp_path: Path) -> None:
    path = write_irc(tmp_path, IRC_LINES)
    reader = open_reader(path)
    assert isinstance(reader, IrcLogReader)
    events = list(reader.read())
    messages = messages_of(events)
    assert [m.author_name for m in messages] == ["cule1337", "DOOM Design", "Mod Erator", "Rocket Beans TV",
                                                 "Name <with", "DOOM Design"]
    assert [m.viewer_id for m in messages][:2] == ["name:cule1337", "name:DOOM Design"]
    assert [(m.is_member, m.is_moderator, m.is_owner) for m in messages] == [
        (False, False, False), (True, False, False), (False, True, False), (False, False, True),
        (True, False, False), (True, False, False)]
    assert messages[0].text == "Was ist ein Gabriel Knights 2? 😀" and messages[5].text == ""
    assert messages[4].text == "brackets> text with > and < signs"  # names end at the first "> "
    assert {m.stream_id for m in messages} == {"rbtv-2017-07-01"}
    assert messages[0].timestamp == datetime(2017, 7, 1, 0, 0, 9, tzinfo=UTC) and messages[0].offset_seconds == 9
    assert messages[0].message_id == "rbtv-2017-07-01:1" and messages[5].message_id == "rbtv-2017-07-01:9"
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert [(r.location, r.raw) for r in rejected] == [(f"{path}:7", "this line is not chat"),
                                                       (f"{path}:8", "[25:00:00] <x> impossible time")]
    assert "[HH:MM:SS] <Name> text" in rejected[0].reason and "not a time of day" in rejected[1].reason


def test_irc_log_bad_bytes_and_missing_day(tmp_path: Path) -> None:
    path = write_irc(tmp_path, ["[00:00:01] <a> ok"])
    path.write_bytes(path.read_bytes() + b"[00:00:02] <b> caf\xe9\n[00:00:03] <c> fine\n")
    events = list(IrcLogReader(path).read())
    assert [m.author_name for m in messages_of(events)] == ["a", "c"]
    (bad,) = [e for e in events if isinstance(e, Rejected)]
    assert bad.location == f"{path}:2" and "not UTF-8" in bad.reason and "caf" in bad.raw
    undated = tmp_path / "chat.txt"
    undated.write_text("[00:00:01] <a> ok\n", encoding="utf-8")
    with pytest.raises(InputError, match="YYYY/MM/DD"):
        list(IrcLogReader(undated).read())
    named = tmp_path / "chat-2020-02-29.log"
    named.write_text("[00:00:01] <a> ok\n", encoding="utf-8")
    (message,) = messages_of(list(read_chat_file(named)))
    assert message.timestamp.date().isoformat() == "2020-02-29"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=60)
                      | st.builds(lambda p, n, t: f"[10:11:12] <{p}{n}> {t}", st.sampled_from(["", "+", "%", "@"]),
                                  st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r>"), min_size=1, max_size=12),
                                  st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=40)),
                      max_size=8))
def test_fuzz_irc_lines(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_irc(Path(tmp), lines)
        events = list(IrcLogReader(path).read())
    assert all(isinstance(e, ChatMessage | Rejected) for e in events)
    assert len(events) == sum(1 for line in lines if line.strip())
    for event in messages_of(events):
        line = lines[int(event.message_id.rsplit(":", 1)[1]) - 1]
        assert line.replace("\x00", "").endswith(event.text)  # U+0000 is unstorable: stripped


# ---------------------------------------------------------------- npm youtube-chat

def npm_item(n: int, ts: str, member: bool = False, **extra: object) -> dict[str, object]:
    return {"id": f"fs{n:018d}", "timestamp": ts, "isVerified": False, "isMembership": member, "isOwner": False,
            "isModerator": n == 3, "author": {"channelId": f"UC{n:022d}", "name": f"fan {n}",
                                              "thumbnail": {"url": "https://yt4.ggpht.com/x", "alt": f"fan {n}"}},
            "message": [{"text": f"halo {n} "}, {"emojiText": "🤣", "isCustomEmoji": False, "url": "u", "alt": ":rofl:"},
                        {"emojiText": ":_asuGoa:", "isCustomEmoji": True, "url": "u", "alt": ":_asuGoa:"}], **extra}


def write_hundredbeans(root: Path, items: list[object]) -> Path:
    base = root / "hundredbeans-yt-livechat"
    (base / "wxc-indonesia" / "history").mkdir(parents=True)
    (base / "channels.json").write_text(json.dumps([{"id": "UCwxc", "name": "WxC Indonesia", "slug": "wxc-indonesia"}]))
    (base / "wxc-indonesia" / "liveIds.json").write_text(json.dumps([{"id": "AbCdEfGhIjK", "title": "Main bareng",
                                                                      "url": "https://www.youtube.com/watch?v=AbCdEfGhIjK"}]))
    path = base / "wxc-indonesia" / "history" / "AbCdEfGhIjK.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def test_youtube_chat_npm_sorted_with_stream_metadata(tmp_path: Path) -> None:
    items = [npm_item(2, "2022-04-26T06:56:41.859Z", member=True), npm_item(1, "2022-04-26T05:29:52.848Z"),
             npm_item(3, "2022-04-26T06:00:00.000Z", superchat={"amount": "Rp 20.000", "color": "#1DE9B6"}),
             {"id": "broken", "timestamp": "yesterday", "author": {"channelId": "UCx", "name": "x"}, "message": []},
             npm_item(4, "2022-04-26T06:10:00.000Z", message="not a list of parts")]
    path = write_hundredbeans(tmp_path, items)
    reader = open_reader(path)
    assert isinstance(reader, YouTubeChatNpmReader)
    events = list(reader.read())
    messages = messages_of(events)
    assert [m.author_name for m in messages] == ["fan 1", "fan 3", "fan 4", "fan 2"]  # time order
    assert messages[0].text == "halo 1 🤣:_asuGoa:" and messages[0].viewer_id == "UC0000000000000000000001"
    assert messages[3].is_member and messages[3].badges == ("Member",) and not messages[0].is_member
    assert (messages[1].kind, messages[1].amount, messages[1].currency, messages[1].is_moderator) == (
        MessageKind.PAID_MESSAGE, 20000.0, "IDR", True)
    assert messages[2].text == "not a list of parts"
    (rejected,) = [e for e in events if isinstance(e, Rejected)]
    assert rejected.location == f"{path}#item 4"
    assert rejected.reason == "timestamp: 'yesterday' is not an ISO 8601 time"
    info = reader.streams["AbCdEfGhIjK"]
    assert (info.channel_id, info.channel_name, info.title) == ("UCwxc", "WxC Indonesia", "Main bareng")


def test_member_signals_are_stripped_only_for_models() -> None:
    assert strip_member_signals("halo 🤣:_asuGoa: :_asuAsuttt:gg") == "halo 🤣 gg"
    assert strip_member_signals(":elbowcough: :face_with_tears_of_joy: 10:30 :_:") == (
        ":elbowcough: :face_with_tears_of_joy: 10:30 :_:")
    assert strip_member_signals("no emotes here ‏") == "no emotes here ‏"


# ---------------------------------------------------------------- seed SQLite

SEED_ROWS = [
    # id, URL, TypeofMessages, ListofTimes, ListofBadges, ListofAuthors, ListofMessages, DonationAmount, DonationCurrency
    (1, "https://www.youtube.com/watch?v=AAAAAAAAAAA", "text_message", "-1.5", "NULL", "Ann", "hi", "NULL", "NULL"),
    (2, "https://www.youtube.com/watch?v=AAAAAAAAAAA", "paid_message", "12.25", "Member (1 year)", "Bob", "take my money", "4.99", "USD"),
    (3, "https://www.youtube.com/watch?v=AAAAAAAAAAA", "paid_sticker", "13.0", "NULL", "Cy", "NULL", "200.0", "JPY"),
    (4, "https://www.youtube.com/watch?v=AAAAAAAAAAA", "membership_item", "20", "New member", "Dee", None, "NULL", "NULL"),
    (5, "https://www.youtube.com/watch?v=AAAAAAAAAAA", "membership_item", "21", "Member (2 months)", "Eve", "2 months!", "NULL", "NULL"),
    (6, "https://www.youtube.com/watch?v=AAAAAAAAAAA", "sponsorships_gift_purchase_announcement", "30", "Moderator", "Fay", "Gifted 10 Club memberships", "NULL", "NULL"),
    (7, "https://www.youtube.com/watch?v=BBBBBBBBBBB", "text_message", "5", "NULL", "Ann", "NULL", "NULL", "NULL"),
    (8, "https://www.youtube.com/watch?v=BBBBBBBBBBB", "text_message", "not a number", "NULL", "Gus", "x", "NULL", "NULL"),
]


def write_seed_db(path: Path) -> Path:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE IF NOT EXISTS DBdb (id INTEGER PRIMARY KEY, URL TEXT, TypeofMessages TEXT, "
                       "ListofTimes TEXT, ListofBadges TEXT, ListofAuthors TEXT, ListofMessages TEXT, "
                       "DonationAmount TEXT, DonationCurrency TEXT)")
    connection.executemany("INSERT INTO DBdb VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", SEED_ROWS)
    connection.commit()
    connection.close()
    return path


def write_url_list_ods(path: Path) -> Path:
    """The seed scraper's url list as pandas/odfpy write it: index, title, URL, date."""
    ns = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"')

    def row(*cells: str) -> str:
        return "<table:table-row>" + "".join(
            f'<table:table-cell office:value-type="string"><text:p>{c}</text:p></table:table-cell>' for c in cells
        ) + "</table:table-row>"

    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns}><office:body><office:spreadsheet>'
               '<table:table table:name="Sheet1">' + row("", "titles", "urls", "dates")
               + row("0", "First stream", "https://www.youtube.com/watch?v=AAAAAAAAAAA", "2024-03-01T18:00:00Z")
               + "</table:table></office:spreadsheet></office:body></office:document-content>")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", content)
    return path


def test_seed_sqlite(tmp_path: Path) -> None:
    db = write_seed_db(tmp_path / "Db_file.dbs")
    write_url_list_ods(tmp_path / "url_list.ods")
    assert detect_format(db) == "seed-sqlite"
    reader = open_reader(db)
    assert isinstance(reader, SeedSqliteReader)
    events = list(reader.read())
    got = {m.message_id: m for m in messages_of(events)}
    a = "AAAAAAAAAAA"
    assert got[f"{a}/seed-1"].timestamp == datetime(2024, 3, 1, 17, 59, 58, 500000, tzinfo=UTC)
    assert got[f"{a}/seed-1"].viewer_id == "name:Ann" and got[f"{a}/seed-1"].badges == ()
    paid = got[f"{a}/seed-2"]
    assert (paid.kind, paid.amount, paid.currency, paid.is_member, paid.offset_seconds) == (
        MessageKind.PAID_MESSAGE, 4.99, "USD", True, 12.25)
    assert (got[f"{a}/seed-3"].kind, got[f"{a}/seed-3"].text, got[f"{a}/seed-3"].amount) == (MessageKind.PAID_STICKER, "", 200.0)
    assert got[f"{a}/seed-4"].kind is MessageKind.MEMBERSHIP_NEW
    assert got[f"{a}/seed-5"].kind is MessageKind.MEMBERSHIP_MILESTONE
    assert (got[f"{a}/seed-6"].kind, got[f"{a}/seed-6"].amount, got[f"{a}/seed-6"].is_moderator) == (
        MessageKind.MEMBERSHIP_GIFT, 10.0, True)
    assert got["BBBBBBBBBBB/seed-7"].text == "NULL"  # a viewer may type NULL; only stickers use it for "none"
    # the second stream is not in the URL list: placeholder date after 2005, order kept, and a warning
    assert got["BBBBBBBBBBB/seed-7"].timestamp.year == 2005 and "placeholder" in reader.warnings[0]
    (rejected,) = [e for e in events if isinstance(e, Rejected)]
    assert rejected.location == f"{db}#row id=8" and rejected.reason == "ListofTimes: 'not a number' is not a number of seconds"


def test_seed_sqlite_wrong_schema(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (a TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(InputError, match="lacks seed columns"):
        list(open_reader(path).read())


# ---------------------------------------------------------------- detection

def test_unknown_format_names_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        open_reader(path)
    assert "chat-downloader" in str(error.value) and "irc" in str(error.value) and "--format" in str(error.value)
    with pytest.raises(InputError, match="unknown chat format 'vtt'"):
        open_reader(path, format="vtt")
    with pytest.raises(InputError, match="no such file"):
        open_reader(tmp_path / "missing.json")


def test_directory_expands_and_lists_what_it_skips(tmp_path: Path) -> None:
    write_irc(tmp_path, IRC_LINES[:2], day="2017/07/01")
    write_irc(tmp_path, IRC_LINES[2:4], day="2017/07/02")
    (tmp_path / "rbtv-youtube-chatlogs" / "README.md").write_text("# logs\n", encoding="utf-8")
    reader = open_reader(tmp_path / "rbtv-youtube-chatlogs")
    assert isinstance(reader, DirectoryReader)
    messages = messages_of(list(reader.read()))
    assert [m.stream_id for m in messages] == ["rbtv-2017-07-01"] * 2 + ["rbtv-2017-07-02"] * 2
    assert reader.skipped["file of no chat format"] == 1 and "README.md" in reader.warnings[0]
    assert set(reader.streams) == {"rbtv-2017-07-01", "rbtv-2017-07-02"}
    (tmp_path / "rbtv-youtube-chatlogs" / "index.json").write_text('[{"message_type": "text_message"}]')
    explicit = open_reader(tmp_path / "rbtv-youtube-chatlogs", format="znc")  # an alias of irc
    assert len(messages_of(list(explicit.read()))) == 4
    assert explicit.skipped["file of no chat format"] == 2  # README and a chat-downloader file


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=6) | st.integers(), "timestamp": st.text(max_size=26) | st.integers(0, 2**41),
    "author": st.fixed_dictionaries({"channelId": st.text(max_size=6), "name": st.text(max_size=6)}) | st.text(max_size=4),
    "message": st.lists(st.fixed_dictionaries({}, optional={"text": st.text(max_size=10), "emojiText": st.text(max_size=4)}),
                        max_size=3) | st.text(max_size=5) | st.none(),
    "isMembership": st.booleans() | st.none(), "superchat": st.fixed_dictionaries({"amount": st.text(max_size=8)}),
}), max_size=6))
def test_fuzz_youtube_chat_npm(items: list[dict[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "AbCdEfGhIjK.json"
        path.write_text(json.dumps(items), encoding="utf-8")
        events = list(YouTubeChatNpmReader(path).read())
    assert all(isinstance(e, ChatMessage | Rejected) for e in events)
    assert len(events) <= len(items)
