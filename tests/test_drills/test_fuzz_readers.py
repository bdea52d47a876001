"""Fuzz drill: every chat reader, FUZZ_EXAMPLES (3k) derandomised cases each, on records built from each format's
real shapes (the reader tests' own builders) and then mutated: wrong types, missing and extra fields,
gigantic strings, NaN/negative/huge amounts, unknown currencies, out-of-order and far-future times,
NUL, lone surrogates, invalid UTF-8.

The drill's rule, per case: the reader never raises; it yields only ChatMessage or Rejected (with a
location and a reason); and every input record is accounted for exactly once, as a message, a
rejection, or a `skipped` count (tickers, duplicates, non-chat items). Files are read through their
reader's real `read()` from memory (hostile.MemoryPath), except SQLite, which needs a file.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from infra.events import ChatMessage
from producers.readers import READERS, Rejected, detect_format
from producers.readers.base import MAX_RAW_BYTES, ChatReader
from producers.readers.chat_downloader import ChatDownloaderReader, ChatReplayCsvReader, item_to_message
from producers.readers.irc_log import IrcLogReader
from producers.readers.pytchat import PytchatReader
from producers.readers.seed_sqlite import COLUMNS, SeedSqliteReader
from producers.readers.youtube_api import YouTubeApiReader
from producers.readers.youtube_chat_npm import YouTubeChatNpmReader
from producers.readers.youtube_raw import YouTubeRawReader
from tests.test_drills.hostile import (
    FUZZ_EXAMPLES,
    HOSTILE,
    MemoryPath,
    mutate,
    program_from,
    random_value,
    seeds,
)
from tests.test_producers.test_readers_chat_downloader import LEGACY_ROWS, T0, stream_items
from tests.test_producers.test_readers_logs import IRC_LINES, SEED_ROWS, npm_item
from tests.test_producers.test_readers_youtube import RENDERERS, api_message, pytchat_item, ticker_of

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def twitch(n: int, message_type: str, **extra: object) -> dict[str, object]:
    return {"message_id": f"tw-{n}", "message_type": message_type, "timestamp": T0 + n, "message": f"m{n}",
            "author": {"id": f"{n}00", "name": f"user{n}", "display_name": f"User{n}",
                       "badges": [{"name": "subscriber", "version": 12, "title": "1-Year Subscriber"}]}, **extra}


CHAT_DOWNLOADER_ITEMS: list[Any] = [
    *stream_items(), *LEGACY_ROWS,
    twitch(1, "text_message", bits=500, message="cheer500 gg"),
    twitch(2, "resubscription", subscription_type="Tier 1", cumulative_months=7),
    twitch(3, "mystery_subscription_gift", mass_gift_count=5, origin_id="o-1"),
    twitch(31, "subscription_gift", origin_id="o-1"),
    {"action_type": "add_chat_item", "id": "d1", "message": "Anonymous donated €50.00",
     "message_type": "donation_announcement", "timestamp": T0 + 2},
]
RAW_ACTIONS: list[dict[str, Any]] = [
    *({"addChatItemAction": {"item": renderer, "clientId": "x"}} for renderer in RENDERERS),
    ticker_of(RENDERERS[2]),
    {"replaceChatItemAction": {"targetItemId": "x", "replacementItem": RENDERERS[0]}},
]
API_ITEMS: list[dict[str, Any]] = [
    api_message(1, "textMessageEvent", "textMessageDetails", {"messageText": "hi 👋"}, sponsor=True),
    api_message(2, "superChatEvent", "superChatDetails", {"amountMicros": "2000000", "currency": "USD",
                                                           "amountDisplayString": "$2.00", "userComment": "gg"}),
    api_message(3, "superStickerEvent", "superStickerDetails", {"amountMicros": "500000000", "currency": "JPY",
                                                                 "amountDisplayString": "¥500"}),
    api_message(4, "newSponsorEvent", "newSponsorDetails", {"memberLevelName": "Club"}),
    api_message(5, "memberMilestoneChatEvent", "memberMilestoneChatDetails", {"userComment": "1 year"}),
    api_message(6, "membershipGiftingEvent", "membershipGiftingDetails", {"giftMembershipsCount": 3}),
    api_message(7, "messageDeletedEvent", "messageDeletedDetails", {"deletedMessageId": "LCC.1"}),
]
PYTCHAT_ITEMS: list[dict[str, Any]] = [
    pytchat_item(1, "textMessage"),
    pytchat_item(2, "superChat", amountValue=800.0, amountString="￥800", currency="JPY"),
    pytchat_item(3, "superSticker", amountValue=2.0, amountString="$2.00", currency="USD"),
    pytchat_item(4, "newSponsor"),
    pytchat_item(5, "donation", amountString="€3.00"),
]
NPM_ITEMS: list[dict[str, Any]] = [
    npm_item(1, "2022-04-26T06:56:41.859Z", member=True),
    npm_item(2, "2022-04-26T06:55:00.000Z", superchat={"amount": "￥1,000", "color": "#fff"}),
    npm_item(3, "2022-04-26T06:57:00Z", superchat={"amount": "$2.00", "sticker": {"url": "u"}}),
    npm_item(4, 1650956220000),
]
CSV_FIELDS = ["amount", "author", "author_id", "badges", "body_color", "message", "ticker_duration",
              "time_in_seconds", "time_text", "timestamp"]
SEED_RECORDS = [dict(zip(COLUMNS, row, strict=True)) for row in SEED_ROWS]


# ---------------------------------------------------------------- building cases

def mutated_records(seed: int, bases: list[Any], most: int = 4) -> list[Any]:
    """1..most mutated copies of base records; sometimes a duplicate, always in shuffled order."""
    rng = random.Random(seed)
    records = [mutate(rng.choice(bases), program_from(rng.randrange(2**62))) for _ in range(rng.randint(1, most))]
    if rng.random() < 0.2:
        records.append(records[0])  # the same item twice (overlapping polls, reconnects)
    rng.shuffle(records)  # out of time order
    return records


def json_text(records: list[Any], rng: random.Random, array: bool) -> str:
    ascii_only = rng.random() < 0.5  # \\ud800 escapes survive as lone surrogates; raw ones become U+FFFD
    if array:
        return json.dumps(records, ensure_ascii=ascii_only, allow_nan=True, default=str, indent=rng.choice([None, 2]))
    return "".join(json.dumps(r, ensure_ascii=ascii_only, allow_nan=True, default=str) + "\n" for r in records)


def outcome(reader: ChatReader, events: list[Any]) -> tuple[list[ChatMessage], list[Rejected]]:
    """Split the events; check each is a message or a located, reasoned rejection."""
    messages, rejected = [], []
    for event in events:
        if isinstance(event, ChatMessage):
            messages.append(event)
        else:
            assert isinstance(event, Rejected), f"{type(event).__name__} from {reader.name}"
            assert event.reason.strip() and event.location.startswith(str(reader.path))
            # ingest writes rejections to a UTF-8 file, replay publishes them as dead letters
            assert len(event.raw.encode("utf-8")) <= MAX_RAW_BYTES and event.to_json().encode("utf-8")
            rejected.append(event)
    assert len({m.message_id for m in messages}) == len(messages), "a message id twice in one file"
    return messages, rejected


def assert_accounted(reader: ChatReader, events: list[Any], records: int) -> list[ChatMessage]:
    messages, rejected = outcome(reader, events)
    skipped = sum(reader.skipped.values())
    assert len(messages) + len(rejected) + skipped == records, (
        f"{records} records -> {len(messages)} messages + {len(rejected)} rejected + {skipped} skipped "
        f"({dict(reader.skipped)})")
    return messages


def in_time_order(messages: list[ChatMessage]) -> bool:
    return all(a.timestamp <= b.timestamp for a, b in zip(messages, messages[1:], strict=False))


# ---------------------------------------------------------------- one test per reader

@FUZZ
@given(seed=seeds)
def test_chat_downloader_json(seed: int) -> None:
    rng = random.Random(seed)
    records = mutated_records(seed, CHAT_DOWNLOADER_ITEMS)
    path = MemoryPath.holding("dQw4w9WgXcQ.json", json_text(records, rng, array=rng.random() < 0.5))
    reader = ChatDownloaderReader(path)
    messages = assert_accounted(reader, list(reader.read()), len(records))
    assert in_time_order(messages)


@FUZZ
@given(seed=seeds)
def test_chat_replay_csv(seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for _ in range(rng.randint(1, 4)):
        base = rng.choice(LEGACY_ROWS)
        row = [base.get(f) for f in CSV_FIELDS]
        for _ in range(rng.randint(0, 3)):
            row[rng.randrange(len(row))] = random_value(rng)
        if rng.random() < 0.1:
            row.append("an extra cell")
        rows.append(["" if cell is None else str(cell) for cell in row])
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    writer.writerows(rows)
    reader = ChatReplayCsvReader(MemoryPath.holding("wXspodtIxYU_all.csv", out.getvalue()))
    assert_accounted(reader, list(reader.read()), len(rows))


@FUZZ
@given(seed=seeds)
def test_youtube_raw_ytdlp_lines(seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for action in mutated_records(seed, RAW_ACTIONS, most=3):
        line = {"replayChatItemAction": {"actions": [action], "videoOffsetTimeMsec": str(rng.randint(-10**4, 10**8))}}
        if rng.random() < 0.15:  # the line's structure itself, not just the renderer
            line = mutate(line, program_from(rng.randrange(2**62), max_steps=2))
        lines.append(line)
    reader = YouTubeRawReader(MemoryPath.holding("x [dQw4w9WgXcQ].live_chat.json", json_text(lines, rng, array=False)))
    assert_accounted(reader, list(reader.read()), len(lines))


@FUZZ
@given(seed=seeds)
def test_youtube_data_api_responses(seed: int) -> None:
    rng = random.Random(seed)
    items = mutated_records(seed, API_ITEMS)
    response = {"kind": "youtube#liveChatMessageListResponse", "pollingIntervalMillis": 4000, "items": items}
    reader = YouTubeApiReader(MemoryPath.holding("dQw4w9WgXcQ.api.json", json_text([response], rng, array=False)))
    assert_accounted(reader, list(reader.read()), len(items))


@FUZZ
@given(seed=seeds)
def test_pytchat_json(seed: int) -> None:
    rng = random.Random(seed)
    items = mutated_records(seed, PYTCHAT_ITEMS)
    reader = PytchatReader(MemoryPath.holding("chat.json", json_text(items, rng, array=True)))
    assert_accounted(reader, list(reader.read()), len(items))


@FUZZ
@given(seed=seeds)
def test_youtube_chat_npm(seed: int) -> None:
    rng = random.Random(seed)
    items = mutated_records(seed, NPM_ITEMS)
    reader = YouTubeChatNpmReader(MemoryPath.holding("AbCdEfGhIjK.json", json_text(items, rng, array=True)))
    messages = assert_accounted(reader, list(reader.read()), len(items))
    assert in_time_order(messages)


NASTY_BYTES = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"<", b">", b"[", b"]", b" ", "é".encode(),
               "😀".encode(), b"\xe2\x80\xae")


def irc_expected(line: bytes) -> int:
    """The reader's one output per line: nothing for a blank line, else a message or a rejection."""
    try:
        return 1 if line.decode("utf-8").removesuffix("\r").strip() else 0
    except UnicodeDecodeError:
        return 1


@FUZZ
@given(seed=seeds)
def test_irc_log_lines(seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(rng.randint(1, 5)):
        line = rng.choice(IRC_LINES).encode()
        for _ in range(rng.randint(0, 3)):
            at = rng.randint(0, len(line))
            cut = rng.randint(at, min(len(line), at + 3)) if rng.random() < 0.3 else at
            line = line[:at] + rng.choice(NASTY_BYTES) * rng.randint(1, 3) + line[cut:]
        if rng.random() < 0.02:
            line = line + b"x" * 200_000  # one gigantic line
        lines.append(line.replace(b"\n", b" "))
    path = MemoryPath.holding("rbtv-youtube-chatlogs/2017/07/01.txt", b"\n".join(lines))
    reader = IrcLogReader(path)
    events = list(reader.read())
    messages, _ = outcome(reader, events)
    assert len(events) == sum(irc_expected(line) for line in lines)
    assert all(len(m.text) <= 4000 for m in messages)


def sqlite_cell(value: object) -> object:
    """What SQLite's dynamic typing can hold in a cell: None, int (64-bit), float, text or blob."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if value is None or isinstance(value, float | bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass") if any("\ud800" <= c <= "\udfff" for c in value) else value
    return json.dumps(value, default=str)


@pytest.fixture(scope="module")
def seed_db() -> Iterator[Path]:
    """One seed database, refilled for every case (creating a file per case would dominate the drill)."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None  # RAM when the machine has it
    with tempfile.TemporaryDirectory(prefix="dc-fuzz-", dir=base) as tmp:
        path = Path(tmp) / "seed.sqlite"
        connection = sqlite3.connect(path)
        connection.execute(f"CREATE TABLE DBdb ({', '.join(COLUMNS)})")  # untyped columns, as SQLite allows
        connection.close()
        yield path


@settings(FUZZ, max_examples=max(FUZZ_EXAMPLES // 2, 1))  # a database per case is dear: half the cases, of 2-5 rows
@given(seed=seeds)
def test_seed_sqlite_rows(seed_db: Path, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for row_id in range(1, rng.randint(2, 5) + 1):
        record = dict(rng.choice(SEED_RECORDS))
        for _ in range(rng.randint(0, 3)):
            column = rng.choice(COLUMNS[1:])
            record[column] = random_value(rng) if rng.random() < 0.8 else rng.choice(["http://[", "NULL", "nan", "1e309"])
        rows.append([row_id, *(sqlite_cell(record[c]) for c in COLUMNS[1:])])
    connection = sqlite3.connect(seed_db)
    try:
        connection.execute("DELETE FROM DBdb")
        connection.executemany(f"INSERT INTO DBdb VALUES ({', '.join('?' * len(COLUMNS))})", rows)  # noqa: S608 - placeholders only
        connection.commit()
    finally:
        connection.close()
    reader = SeedSqliteReader(seed_db)
    assert_accounted(reader, list(reader.read()), len(rows))


# ---------------------------------------------------------------- the item mapping live and archive use

@FUZZ
@given(seed=seeds)
def test_item_to_message_raises_only_value_errors(seed: int) -> None:
    """`donorcast live` and the archive downloader call item_to_message item by item and catch
    ValueError (its documented contract): any other exception would stop the whole stream."""
    rng = random.Random(seed)
    item = mutate(rng.choice(CHAT_DOWNLOADER_ITEMS), program_from(rng.randrange(2**62)))
    try:
        result = item_to_message(item, stream_id="s1", platform=rng.choice(["youtube", "twitch"]),
                                 keep_tickers=rng.random() < 0.5)
    except ValueError as error:
        assert str(error).strip()
        return
    assert result is None or isinstance(result, ChatMessage)


def test_hostile_constants_reach_every_reader_field() -> None:
    """The mutation engine really puts each hostile value into records (a fuzz that never sets a
    field is no fuzz)."""
    seen = set()
    for seed in range(3000):
        for _, _, value in program_from(seed):
            seen.add(repr(value)[:40])
    assert sum(1 for value in HOSTILE if repr(value)[:40] in seen) >= len(HOSTILE) * 0.9


# ---------------------------------------------------------------- damaged files

def indented_array(texts: list[str]) -> tuple[str, list[int]]:
    """json.dumps(items, indent=4) built by hand, with where each item (and its separator) ends."""
    out, ends = "[\n", []
    for i, text in enumerate(texts):
        out += "\n".join("    " + line for line in text.split("\n")) + (",\n" if i < len(texts) - 1 else "\n")
        ends.append(len(out.encode()))
    return out + "]", ends


def json_lines(texts: list[str]) -> tuple[str, list[int]]:
    out, ends = "", []
    for text in texts:
        out += text + "\n"
        ends.append(len(out.encode()))
    return out, ends


def ytdlp(n: int) -> dict[str, Any]:
    renderer = json.loads(json.dumps(RENDERERS[0]))
    body = renderer["liveChatTextMessageRenderer"]
    body["id"], body["timestampUsec"] = f"raw-{n}", str(T0 + n * 1_000_000)
    return {"replayChatItemAction": {"actions": [{"addChatItemAction": {"item": renderer}}],
                                     "videoOffsetTimeMsec": str(n * 1000)}}


def api_line(n: int) -> dict[str, Any]:
    item = api_message(n % 50 + 1, "textMessageEvent", "textMessageDetails", {"messageText": f"m{n}"})
    item["id"] = f"api-{n}"
    return {"kind": "youtube#liveChatMessageListResponse", "items": [item]}


# format -> (reader, file name, record n -> (record, its message id), layout)
DAMAGE_FORMATS: dict[str, tuple[type[ChatReader], str, Any, Any]] = {
    "chat-downloader-jsonl": (ChatDownloaderReader, "dQw4w9WgXcQ.jsonl",
                              lambda n: {**CHAT_DOWNLOADER_ITEMS[0], "message_id": f"cd-{n}", "timestamp": T0 + n},
                              json_lines),
    "chat-downloader-array": (ChatDownloaderReader, "dQw4w9WgXcQ.json",
                              lambda n: {**CHAT_DOWNLOADER_ITEMS[0], "message_id": f"cd-{n}", "timestamp": T0 + n},
                              indented_array),
    "youtube-raw": (YouTubeRawReader, "x [dQw4w9WgXcQ].live_chat.json", ytdlp, json_lines),
    "youtube-api": (YouTubeApiReader, "dQw4w9WgXcQ.api.jsonl", api_line, json_lines),
    "pytchat": (PytchatReader, "chat.json", lambda n: {**PYTCHAT_ITEMS[0], "id": f"py-{n}"}, indented_array),
    "youtube-chat": (YouTubeChatNpmReader, "AbCdEfGhIjK.json",
                     lambda n: npm_item(n, f"2022-04-26T06:{n % 60:02d}:00Z", id=f"npm-{n}"), indented_array),
}
ID_OF = {"youtube-raw": lambda r: r["replayChatItemAction"]["actions"][0]["addChatItemAction"]["item"][
    "liveChatTextMessageRenderer"]["id"], "youtube-api": lambda r: r["items"][0]["id"]}
DAMAGE = (b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\n", b"]", b"}", b",", b'"', b"\\", b"[" * 5000,
          b'{"a":' * 3000, "\u2028".encode(), b"\r\n\r\n")


def damaged(seed: int, fmt: str) -> tuple[bytes, int, list[str]]:
    """(file bytes, first damaged byte, ids of the records wholly before it)."""
    rng = random.Random(seed)
    _, _, build, layout = DAMAGE_FORMATS[fmt]
    records = [build(n) for n in range(1, rng.randint(1, 8) + 1)]
    ids = [ID_OF.get(fmt, lambda r: r.get("message_id") or r.get("id"))(r) for r in records]
    text, ends = layout([json.dumps(r, ensure_ascii=rng.random() < 0.5, indent=4 if layout is indented_array else None)
                         for r in records])
    data = text.encode()
    at = rng.randint(0, len(data))
    how = rng.randrange(4)
    if how == 0:
        data = data[:at]  # a download or copy cut short
    elif how == 1:
        data = data[:at] + rng.choice(DAMAGE) + data[at:]
    elif how == 2:
        data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
    else:
        data = data[:at] + rng.choice(DAMAGE) + data[at + rng.randint(0, 40):]
    return data, at, [i for i, end in zip(ids, ends, strict=True) if end <= at]


@pytest.mark.parametrize("fmt", sorted(DAMAGE_FORMATS))
def test_damaged_files_keep_every_record_before_the_damage(fmt: str) -> None:
    """Truncated files, invalid UTF-8, stray brackets and pathologically nested JSON: the reader (and
    format detection) never crash, and every record wholly before the damage is still read."""
    reader_class, name, _, _ = DAMAGE_FORMATS[fmt]

    @settings(FUZZ, max_examples=max(FUZZ_EXAMPLES // 5, 1))
    @given(seed=seeds)
    def case(seed: int) -> None:
        data, at, intact = damaged(seed, fmt)
        path = MemoryPath.holding(name, data)
        reader = reader_class(path)
        messages, _ = outcome(reader, list(reader.read()))
        missing = set(intact) - {m.message_id for m in messages}
        assert not missing, f"records before byte {at} lost: {sorted(missing)}"
        # Detection reads the head of the same bytes: "no format" (open_reader's clear InputError) is
        # fine, a crash is not; whichever reader it picks must hold to the same rules.
        detected = detect_format(path)
        if detected is not None:
            reader = READERS[detected](path)  # type: ignore[call-arg]
            outcome(reader, list(reader.read()))

    case()
