"""Which reader reads a file: by format name, or detected from the extension and first bytes.

Detection looks at the first record, not just the extension: `.json` alone is five formats here.
A directory expands to the chat files under it (recursively, sorted); files inside it that are no
chat format we know (READMEs, index files) are listed as skipped, never silently dropped.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from infra.errors import InputError
from infra.events import ChatMessage

from .base import ChatReader, Rejected
from .chat_downloader import JSON_ERRORS, ChatDownloaderReader, ChatReplayCsvReader, iter_json_records
from .irc_log import LINE as IRC_LINE
from .irc_log import IrcLogReader
from .pytchat import PytchatReader
from .seed_sqlite import SeedSqliteReader
from .youtube_api import YouTubeApiReader
from .youtube_chat_npm import YouTubeChatNpmReader
from .youtube_raw import ITEM_ACTIONS, REPLAY_ACTION, YouTubeRawReader

READERS: dict[str, type[ChatReader]] = {
    reader.name: reader
    for reader in (ChatDownloaderReader, ChatReplayCsvReader, YouTubeRawReader, YouTubeApiReader, PytchatReader,
                   SeedSqliteReader, IrcLogReader, YouTubeChatNpmReader)
}
ALIASES: dict[str, str] = {
    "chat_downloader": "chat-downloader", "chatdownloader": "chat-downloader",
    "yt-dlp": "youtube-raw", "live_chat": "youtube-raw", "innertube": "youtube-raw",
    "data-api": "youtube-api", "youtube-data-api": "youtube-api",
    "sqlite": "seed-sqlite", "seed": "seed-sqlite",
    "znc": "irc", "rbtv": "irc",
    "youtube-chat-npm": "youtube-chat", "npm": "youtube-chat", "hundredbeans": "youtube-chat",
    "csv": "chat-replay-csv",
}
SNIFF_BYTES = 256 * 1024
RECORDS_TRIED = 50  # records looked at for a format when the first one is broken
_SQLITE_MAGIC = b"SQLite format 3\x00"
_RAW_MARKERS = ('"replayChatItemAction"', '"addChatItemAction"', '"addLiveChatTickerItemAction"',
                '"liveChatContinuation"', '"liveChatTextMessageRenderer"')


def supported_formats() -> str:
    return ", ".join(f"{name} ({reader.description})" for name, reader in READERS.items())


def format_name(name: str) -> str:
    """Canonical format name for a name or alias; InputError naming the choices otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key == "auto" or key in READERS:
        return key
    raise InputError(f"unknown chat format {name!r}; supported: auto, {', '.join(READERS)}")


def detect_format(path: Path) -> str | None:
    """The format of one file, or None when it is none we read."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(_SQLITE_MAGIC):
        return SeedSqliteReader.name
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    stripped = text.lstrip()
    if not stripped:
        return None
    first_line = stripped.split("\n", 1)[0].rstrip("\r")
    if IRC_LINE.match(first_line):  # before JSON: "[00:00:09] <name> hi" also starts with "["
        return IrcLogReader.name
    if stripped[0] in "[{":
        return _json_format(path, text, complete=len(head) < SNIFF_BYTES)
    header = first_line.lower().split(",")
    if path.suffix.lower() in (".csv", "") and {"author_id", "timestamp"} <= set(header) and "message" in header:
        return ChatReplayCsvReader.name
    return None


def _json_format(path: Path, head: str, complete: bool) -> str | None:
    record = _first_record(path, head, complete)
    kind = _classify(record)
    if kind:
        return kind
    if "youtube#liveChatMessage" in head:
        return YouTubeApiReader.name
    if any(marker in head for marker in _RAW_MARKERS):
        return YouTubeRawReader.name
    return None


def _first_record(path: Path, head: str, complete: bool) -> object:
    stripped = head.lstrip()
    decoder = json.JSONDecoder()
    if stripped.startswith("["):
        body = stripped[1:].lstrip()
        if body.startswith("]"):
            return []
        try:
            return decoder.raw_decode(body)[0]
        except JSON_ERRORS:
            pass
    else:
        first_line = stripped.split("\n", 1)[0]
        try:
            return json.loads(first_line)
        except JSON_ERRORS:
            pass
    if complete:
        source = head
    else:
        source = path.read_text(encoding="utf-8", errors="replace")
    try:
        document = json.loads(source)
    except JSON_ERRORS:
        # A broken first record must not hide the file's format (its reader rejects just that record):
        # the first record that parses among the next few, in a JSON array or JSON lines.
        for _, value, error, _ in islice(iter_json_records(source), RECORDS_TRIED):
            if error is None:
                return value
        return None
    return document[0] if isinstance(document, list) and document else document


def _classify(record: object) -> str | None:
    if isinstance(record, list):
        return _classify(record[0]) if record else None
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if "message_type" in keys or "action_type" in keys:
        return ChatDownloaderReader.name
    if str(record.get("kind", "")).startswith("youtube#liveChatMessage") or {"snippet", "authorDetails"} <= keys:
        return YouTubeApiReader.name
    if keys & (set(ITEM_ACTIONS) | {REPLAY_ACTION, "continuationContents", "clickTrackingParams"}):
        return YouTubeRawReader.name
    author = record.get("author")
    if "isMembership" in keys or (isinstance(author, dict) and "channelId" in author and isinstance(record.get("message"), list)):
        return YouTubeChatNpmReader.name
    if "amountValue" in keys or {"elapsedTime", "datetime"} <= keys:
        return PytchatReader.name
    if "timestamp" in keys and ("author_id" in keys or "time_in_seconds" in keys):
        return ChatDownloaderReader.name  # legacy chat_replay_downloader (2020)
    return None


def expand(path: Path) -> list[Path]:
    """A file is itself; a directory is every file under it, sorted (hidden files excluded)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    return [path]


def open_reader(path: Path | str, format: str = "auto", **options: object) -> ChatReader:
    """The reader for one file; InputError when its format is unknown (naming the supported ones)."""
    path = Path(path)
    if path.is_dir():
        return DirectoryReader(path, format=format)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    name = format_name(format)
    if not path.is_file():  # /dev/null, a pipe: detection would consume what the reader needs
        raise InputError(f"{path}: not a regular file ({file_kind(path)}); name chat files or folders")
    if name == "auto":
        detected = detect_format(path)
        if detected is None:
            raise InputError(f"{path}{why_undetected(path)}")
        name = detected
    return READERS[name](path, **options)  # type: ignore[arg-type]


def file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file"


def why_undetected(path: Path) -> str:
    """Why `detect_format` found no format, as ": <cause>" (or ":L:C: <cause>" for broken JSON):
    what the most likely reader would have stumbled on, so the user can act on it."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head:
        return ": empty file (0 bytes)"
    if not head.strip():
        return f": only whitespace ({len(head):,} bytes), no chat in it"
    nul = head.find(b"\0")
    if nul >= 0:
        return f": binary data, not a text chat file (NUL byte at offset {nul:,})"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4 or len(head) < SNIFF_BYTES:  # not just a character cut at the sniff end
            return (f": not UTF-8 text (byte 0x{head[error.start]:02x} at offset {error.start:,}): binary data "
                    "or another encoding; chat files are UTF-8 JSON, CSV or text logs")
        text = head.decode("utf-8", errors="ignore")
    text = text.lstrip("\ufeff")
    stripped = text.lstrip()
    if stripped[0] in "[{":
        return _why_not_json_chat(path, text)
    first_line = stripped.split("\n", 1)[0].rstrip("\r")
    return (f":1: text, but no chat format we know: the first line {first_line[:60]!r} is neither JSON, "
            "an IRC log line '[HH:MM:SS] <name> text' nor a CSV header with author_id,timestamp,message"
            + _format_hint())


def _why_not_json_chat(path: Path, head: str) -> str:
    stripped = head.lstrip()
    first_line = stripped.split("\n", 1)[0]
    try:
        first = json.loads(first_line)  # a one-line document, or JSON lines whose first record parses
        document: object = first if stripped.startswith("[") else [first]
    except JSON_ERRORS:
        source = head if len(head) < SNIFF_BYTES else path.read_text(encoding="utf-8", errors="replace")
        try:
            document = json.loads(source)
        except json.JSONDecodeError as error:
            return f":{error.lineno}:{error.colno}: invalid JSON: {error.msg} (offset {error.pos:,})"
        except RecursionError:
            return ": invalid JSON: nested too deeply"
    record = document[0] if isinstance(document, list) and document else document
    if isinstance(document, list) and not document:
        return ": an empty JSON array, no chat records in it"
    if isinstance(record, dict):
        keys = ", ".join(sorted(map(str, record))[:8]) or "none"
        return f": JSON, but its first record (keys: {keys}) is no chat format we know" + _format_hint()
    return f": JSON, but its records are {type(record).__name__}s, not chat objects"


def _format_hint() -> str:
    return f"; if it is one of {', '.join(READERS)}, pass --format NAME"


# Files inside a data folder that are never chat (documentation, spreadsheets, images, archives).
NOT_CHAT_SUFFIXES = frozenset({".md", ".rst", ".html", ".htm", ".py", ".ipynb", ".ods", ".xlsx", ".png", ".jpg",
                               ".jpeg", ".gif", ".svg", ".pdf", ".zip", ".gz", ".tar"})


def reader_for(path: Path, format: str = "auto", *, in_folder: bool = False) -> ChatReader | None:
    """The reader for one file. A file named on the command line must be readable (InputError
    otherwise); a file found inside a folder gives None when it is no chat file, or (with an
    explicit format) when it is detected as a different one."""
    if not in_folder:
        return open_reader(path, format)
    name = format_name(format)
    if path.suffix.lower() in NOT_CHAT_SUFFIXES or path.name.upper().startswith(("LICENSE", "README")):
        return None
    detected = detect_format(path)
    if name == "auto":
        return READERS[detected](path) if detected else None  # type: ignore[call-arg]
    return READERS[name](path) if detected in (None, name) else None  # type: ignore[call-arg]


def read_chat_file(path: Path | str, format: str = "auto") -> Iterator[ChatMessage | Rejected]:
    """Every message (or Rejected record) in a file or directory."""
    yield from open_reader(path, format).read()


class DirectoryReader(ChatReader):
    """All chat files under a directory, each with its own (detected or given) reader."""

    name = "directory"
    description = "every chat file under a directory"

    def __init__(self, path: Path, format: str = "auto") -> None:
        super().__init__(path=path)
        self.format = format_name(format)

    def files(self) -> Iterator[tuple[Path, ChatReader | None]]:
        """(file, its reader or None when it is no chat file: listed in skipped and warnings)."""
        for file in expand(self.path):
            reader = reader_for(file, self.format, in_folder=True)
            if reader is None:
                self.skipped["file of no chat format"] += 1
                self.warnings.append(f"{file}: skipped, no chat format we read")
            yield file, reader

    def read(self) -> Iterator[ChatMessage | Rejected]:
        for _, reader in self.files():
            if reader is None:
                continue
            try:
                yield from reader.read()
            except InputError as error:
                self.warnings.append(str(error))
            finally:
                self.streams.update(reader.streams)
                self.skipped.update(reader.skipped)
                self.warnings.extend(reader.warnings)

