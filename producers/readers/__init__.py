"""Chat readers: one class per source format, each yielding `ChatMessage | Rejected`.

    from producers.readers import read_chat_file, open_reader
    for event in read_chat_file("stream.json"):          # format detected
        ...

Readers never touch Kafka or PostgreSQL; `producers.ingest` and the publishers do.
"""

from .base import ChatReader, Rejected, StreamInfo
from .chat_downloader import item_to_message
from .detect import (
    READERS,
    DirectoryReader,
    detect_format,
    expand,
    open_reader,
    read_chat_file,
    reader_for,
    supported_formats,
)
from .text import strip_member_signals

__all__ = [
    "READERS", "ChatReader", "DirectoryReader", "Rejected", "StreamInfo", "detect_format", "expand",
    "item_to_message", "open_reader", "read_chat_file", "reader_for", "strip_member_signals", "supported_formats",
]
