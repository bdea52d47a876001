"""The seed project's SQLite chat database (table `DBdb`) -> ChatMessage, so its researchers can
bring the data they collected.

One row per chat item, written from chat-downloader items (see shared/notes/seed-notebooks.md §1b):

    id (global counter), URL, TypeofMessages (chat-downloader message_type),
    ListofTimes (time_in_seconds as text), ListofBadges (first badge title only),
    ListofAuthors (display name only), ListofMessages, DonationAmount, DonationCurrency

The literal string 'NULL' marks a missing value (a sticker's text, a non-paid row's amount).
Authors have no channel id, so viewers are keyed by display name. Membership rows carry no
header: "New member" badge or no text -> new membership, otherwise a milestone (its chat line).

The database stores offsets, not times. A stream's start comes from the seed's URL list (the
`.ods` its scraper wrote beside the database: index, title, URL, publishedAt), found next to the
database or passed as `url_list`. Streams it does not cover get a placeholder start that keeps
the seed's stream order (day N after 2005-01-01 for the N-th stream by first row id), and the
reader warns; pass the URL list to get real dates.
"""

from __future__ import annotations

import re
import sqlite3
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from xml.etree import ElementTree

from infra.errors import InputError
from infra.events import ChatMessage, MessageKind

from .base import ChatReader, Rejected, StreamInfo, build_message
from .chat_downloader import KINDS
from .money import currency_code
from .text import is_member_badge, is_moderator_badge, is_owner_badge

TABLE = "DBdb"
COLUMNS = ("id", "URL", "TypeofMessages", "ListofTimes", "ListofBadges", "ListofAuthors", "ListofMessages",
           "DonationAmount", "DonationCurrency")
MISSING = "NULL"
PLACEHOLDER_DAY0 = datetime(2005, 1, 1, 12, tzinfo=UTC)

_ODS_NS = {
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
}


def video_id(url: str) -> str:
    """The YouTube video id of a watch/live/youtu.be URL; the URL itself when there is none."""
    try:
        query = parse_qs(urlparse(url.strip()).query).get("v")
    except ValueError:  # "http://[": an unclosed IPv6 host in a hand-edited row
        query = None
    if query:
        return query[0]
    match = re.search(r"(?:youtu\.be/|/live/|/shorts/|/embed/)([A-Za-z0-9_-]{11})", url)
    return match.group(1) if match else url.strip()


def read_url_list(path: Path) -> dict[str, datetime]:
    """video id -> publishedAt from the seed scraper's url list (.ods, or .csv with url,date columns)."""
    rows = _ods_rows(path) if path.suffix.lower() == ".ods" else _csv_rows(path)
    starts: dict[str, datetime] = {}
    for row in rows:
        url = next((cell for cell in row if "youtu" in cell), None)
        when = next((cell for cell in row if re.match(r"^\d{4}-\d{2}-\d{2}T", cell)), None)
        if url and when:
            parsed = datetime.fromisoformat(when.replace("Z", "+00:00"))
            starts[video_id(url)] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return starts


def _ods_rows(path: Path) -> list[list[str]]:
    with zipfile.ZipFile(path) as archive:
        root = ElementTree.fromstring(archive.read("content.xml"))
    rows = []
    for row in root.iter(f"{{{_ODS_NS['table']}}}table-row"):
        cells = []
        for cell in row.iter(f"{{{_ODS_NS['table']}}}table-cell"):
            text = "".join("".join(p.itertext()) for p in cell.iter(f"{{{_ODS_NS['text']}}}p"))
            repeat = int(cell.get(f"{{{_ODS_NS['table']}}}number-columns-repeated", "1"))
            cells.extend([text] * min(repeat, 16))
        rows.append(cells)
    return rows


def _csv_rows(path: Path) -> list[list[str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.reader(handle)]


def _value(cell: object) -> str | None:
    """SQL NULL and the seed's 'NULL' string are both 'missing'."""
    if cell is None:
        return None
    text = str(cell)
    return None if text == MISSING else text


class SeedSqliteReader(ChatReader):
    name = "seed-sqlite"
    description = "the seed project's SQLite database (table DBdb)"

    def __init__(self, path: Path, stream_id: str | None = None, url_list: Path | None = None) -> None:
        super().__init__(path=path, stream_id=stream_id)
        self.url_list = url_list

    def read(self) -> Iterator[ChatMessage | Rejected]:
        starts = self._stream_starts()
        connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            table = self._table(connection)
            first_ids = dict(connection.execute(
                f'SELECT "URL", min("id") FROM "{table}" GROUP BY "URL" ORDER BY min("id")'  # noqa: S608
            ).fetchall())
            placeholder = {}
            for rank, url in enumerate(first_ids):
                vid = video_id(str(url))
                if vid not in starts:
                    placeholder[vid] = PLACEHOLDER_DAY0 + timedelta(days=rank)
            if placeholder:
                self.warnings.append(
                    f"{self.path}: no start time for {len(placeholder)} stream(s) (no seed URL list beside the "
                    f"database); placeholder dates from {PLACEHOLDER_DAY0.date()} keep their order"
                )
            columns = ", ".join(f'"{c}"' for c in COLUMNS)
            cursor = connection.execute(f'SELECT {columns} FROM "{table}" ORDER BY "id"')  # noqa: S608
            for row in cursor:
                record = dict(zip(COLUMNS, row, strict=True))
                vid = video_id(str(record["URL"] or ""))
                start = starts.get(vid) or placeholder.get(vid) or PLACEHOLDER_DAY0
                location = f"{self.path}#row id={record['id']}"
                result = self.guarded(location, record, lambda r=record, v=vid, s=start: self._message(r, v, s))
                if result is None:
                    self.skipped[str(record["TypeofMessages"])] += 1
                else:
                    yield result
        except sqlite3.DatabaseError as error:
            raise InputError(f"{self.path}: not a readable seed database ({error})") from None
        finally:
            connection.close()

    def _stream_starts(self) -> dict[str, datetime]:
        candidates = [self.url_list] if self.url_list else sorted(self.path.parent.glob("*.ods"))
        starts: dict[str, datetime] = {}
        for candidate in candidates:
            try:
                starts.update(read_url_list(candidate))
            except (OSError, KeyError, ValueError, zipfile.BadZipFile, ElementTree.ParseError) as error:
                self.warnings.append(f"{candidate}: not a readable URL list ({error})")
        return starts

    def _table(self, connection: sqlite3.Connection) -> str:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        table = TABLE if TABLE in names else (names[0] if names else None)
        if table is None:
            raise InputError(f"{self.path}: the database has no tables (expected {TABLE})")
        present = {row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')}
        missing = [c for c in COLUMNS if c not in present]
        if missing:
            raise InputError(f"{self.path}: table {table} lacks seed columns {', '.join(missing)}")
        return table

    def _message(self, row: dict[str, Any], vid: str, start: datetime) -> ChatMessage | None:
        message_type = _value(row["TypeofMessages"]) or "text_message"
        if message_type not in KINDS:
            return None
        kind = KINDS[message_type]
        offset_text = _value(row["ListofTimes"])
        if offset_text is None:
            raise ValueError("ListofTimes: missing")
        try:
            offset = float(offset_text)
        except ValueError:
            raise ValueError(f"ListofTimes: {offset_text!r} is not a number of seconds") from None
        badge = _value(row["ListofBadges"])
        text = row["ListofMessages"]
        if text == MISSING and kind is MessageKind.PAID_STICKER:
            text = None  # the seed writes 'NULL' for a sticker's (absent) text
        text = "" if text is None else str(text)
        if message_type == "membership_item":
            new = (badge or "").lower() == "new member" or not text
            kind = MessageKind.MEMBERSHIP_NEW if new else MessageKind.MEMBERSHIP_MILESTONE
        self.note_stream(StreamInfo(platform="youtube", stream_id=self.stream_id or vid, url=str(row["URL"])))
        fields: dict[str, Any] = {
            "platform": "youtube",
            "stream_id": self.stream_id or vid,
            "message_id": f"{vid}/seed-{row['id']}",
            "timestamp": start + timedelta(seconds=offset),
            "offset_seconds": offset,
            "author_name": _value(row["ListofAuthors"]) or "",
            "text": text,
            "kind": kind,
            "badges": (badge,) if badge else (),
            "is_member": bool(badge and is_member_badge(badge)) or kind in (
                MessageKind.MEMBERSHIP_NEW, MessageKind.MEMBERSHIP_MILESTONE),
            "is_moderator": bool(badge and is_moderator_badge(badge)),
            "is_owner": bool(badge and is_owner_badge(badge)),
        }
        amount = _value(row["DonationAmount"])
        if amount is not None:
            code = _value(row["DonationCurrency"])
            fields.update(amount=float(amount), currency=currency_code(code), amount_text=f"{code} {amount}" if code else amount)
        elif kind is MessageKind.MEMBERSHIP_GIFT:
            match = re.search(r"\d+", text)
            count = int(match.group(0)) if match else 1
            fields.update(amount=float(count), currency="XXX", amount_text=f"{count} gifted memberships")
        return build_message(fields)
