"""IRC/ZNC-style daily chat logs (as in the RBTV YouTube chat logs) -> ChatMessage.

    [HH:MM:SS] <PREFIXName With Spaces> message text

One file is one UTC day, `.../<source>/YYYY/MM/DD.txt` (or a name containing YYYY-MM-DD); the day
is one stream, id `<source>-YYYY-MM-DD` where <source> is the first dash-separated word of the
folder above the year ("rbtv-youtube-chatlogs" -> "rbtv"). PREFIX is the author's highest role:
`@` owner, `%` moderator, `+` sponsor (paid channel member). Authors are display names only, so
viewers are keyed by name. Offsets are seconds since 00:00 UTC of that day.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from infra.errors import InputError
from infra.events import ChatMessage, MessageKind

from .base import ChatReader, Rejected, StreamInfo

LINE = re.compile(r"^\[(\d{2}):(\d{2}):(\d{2})\] <(.*?)> ?(.*)$", re.DOTALL)
# prefix -> (badge, is_member, is_moderator, is_owner)
PREFIXES: dict[str, tuple[str, bool, bool, bool]] = {
    "@": ("Owner", False, False, True),
    "%": ("Moderator", False, True, False),
    "+": ("Member", True, False, False),
}
_PATH_DATE = re.compile(r"(\d{4})[/\\](\d{2})[/\\](\d{2})\.\w+$")
_NAME_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def day_of(path: Path) -> date:
    """The UTC day a log file covers, from its path."""
    text = path.as_posix()
    match = _PATH_DATE.search(text) or _NAME_DATE.search(path.name)
    if not match:
        raise InputError(f"{path}: an IRC-style log needs its day in the path (YYYY/MM/DD.txt or YYYY-MM-DD)")
    year, month, day = (int(g) for g in match.groups())
    return date(year, month, day)


def source_of(path: Path) -> str:
    """'rbtv' for .../rbtv-youtube-chatlogs/2017/07/01.txt; the file's folder otherwise."""
    if _PATH_DATE.search(path.as_posix()) and len(path.parents) >= 4:
        folder = path.parents[2].name
    else:
        folder = path.parent.name
    return (folder.split("-")[0] or "irc").lower()


class IrcLogReader(ChatReader):
    name = "irc"
    description = "IRC/ZNC-style daily logs: [HH:MM:SS] <@%+Name> text"

    def __init__(self, path: Path, stream_id: str | None = None, source: str | None = None) -> None:
        super().__init__(path=path, stream_id=stream_id)
        self.source = source

    def read(self) -> Iterator[ChatMessage | Rejected]:
        day = day_of(self.path)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        stream_id = self.stream_id or f"{self.source or source_of(self.path)}-{day.isoformat()}"
        self.note_stream(StreamInfo(platform="youtube", stream_id=stream_id, title=f"chat log {day.isoformat()}"))
        with self.path.open("rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                result = self._line(raw, line_no, stream_id, midnight)
                if result is not None:
                    yield result

    def _line(self, raw: bytes, line_no: int, stream_id: str, midnight: datetime) -> ChatMessage | Rejected | None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return self.reject(self.at_line(line_no), f"not UTF-8: {error.reason} at byte {error.start}", raw)
        line = line.removesuffix("\n").removesuffix("\r")
        if not line.strip():
            return None
        match = LINE.match(line)
        if not match:
            return self.reject(self.at_line(line_no), "not a chat line: expected '[HH:MM:SS] <Name> text'", line)
        hours, minutes, seconds, author, text = match.groups()
        if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
            return self.reject(self.at_line(line_no), f"time {hours}:{minutes}:{seconds} is not a time of day", line)
        offset = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
        role = PREFIXES.get(author[:1])
        badge, member, moderator, owner = role if role else ("", False, False, False)
        return self.guarded(self.at_line(line_no), line, lambda: ChatMessage(
            platform="youtube", stream_id=stream_id, message_id=f"{stream_id}:{line_no}",
            timestamp=midnight + timedelta(seconds=offset), offset_seconds=float(offset),
            author_name=author[1:] if role else author, text=text, kind=MessageKind.TEXT,
            badges=(badge,) if badge else (), is_member=member, is_moderator=moderator, is_owner=owner,
        ))
