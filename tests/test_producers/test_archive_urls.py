"""Which pages the collector opens, stream ids from tile links, and the back-off schedule."""

from __future__ import annotations

import pytest

from infra.errors import InputError
from producers.archive.backoff import Backoff
from producers.archive.urls import (
    StreamRef,
    channel_key_from_url,
    channel_streams_url,
    check_navigable,
    stream_ref_from_href,
)


@pytest.mark.parametrize(
    ("given", "page"),
    [
        ("https://www.youtube.com/@Name", "https://www.youtube.com/@Name/streams"),
        ("https://youtube.com/@Name/videos", "https://www.youtube.com/@Name/streams"),
        ("http://m.youtube.com/@Name/streams?view=0", "https://www.youtube.com/@Name/streams"),
        ("https://www.youtube.com/channel/UCabc/featured", "https://www.youtube.com/channel/UCabc/streams"),
        ("https://www.youtube.com/c/OldName/", "https://www.youtube.com/c/OldName/streams"),
        ("https://www.twitch.tv/somestreamer", "https://www.twitch.tv/somestreamer/videos?filter=archives"),
        ("https://twitch.tv/somestreamer/videos?filter=all", "https://www.twitch.tv/somestreamer/videos?filter=archives"),
    ],
)
def test_channel_urls_lead_to_the_streams_page(given: str, page: str) -> None:
    assert channel_streams_url(given) == page


@pytest.mark.parametrize(
    "url",
    ["https://www.youtube.com/watch?v=dQw4w9WgXcQ", "https://youtu.be/dQw4w9WgXcQ", "https://www.youtube.com/",
     "https://www.twitch.tv/videos/123456789"],
)
def test_a_video_or_bare_site_is_not_a_channel(url: str) -> None:
    with pytest.raises(InputError, match="not a (Twitch )?channel|is a video"):
        channel_streams_url(url)


def test_loopback_pages_only_with_the_explicit_flag() -> None:
    with pytest.raises(InputError, match="refusing to open '127.0.0.1'"):
        check_navigable("http://127.0.0.1:8000/page.html")
    assert check_navigable("http://127.0.0.1:8000/page.html", allow_any_host=True) is None
    assert channel_streams_url("http://127.0.0.1:8000/page.html", allow_any_host=True) == "http://127.0.0.1:8000/page.html"
    assert check_navigable("https://consent.youtube.com/m?continue=x") == "youtube"


@pytest.mark.parametrize(
    ("href", "platform", "expected"),
    [
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=3605s", "youtube", "dQw4w9WgXcQ"),
        ("http://127.0.0.1:5/watch?list=PL1&v=dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/live/dQw4w9WgXcQ?si=abc", "youtube", "dQw4w9WgXcQ"),
        ("https://youtu.be/dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/shorts/dQw4w9WgXcQ", "youtube", None),
        ("https://www.youtube.com/@someone", "youtube", None),
        ("https://www.youtube.com/watch?v=short", "youtube", None),
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ'><script>", "youtube", None),
        ("", "youtube", None),
        ("https://www.twitch.tv/videos/2087654321", "twitch", "2087654321"),
        ("/somestreamer/videos/2087654321", "twitch", "2087654321"),
        ("https://www.twitch.tv/somestreamer/clip/Abc", "twitch", None),
    ],
)
def test_tile_links_become_stream_ids(href: str, platform: str, expected: str | None) -> None:
    ref = stream_ref_from_href(href, platform, "  title  ")  # type: ignore[arg-type]
    assert (ref.stream_id if ref else None) == expected
    if ref is not None:
        assert ref == StreamRef(platform, expected, "title")  # type: ignore[arg-type]


def test_channel_keys_from_urls() -> None:
    assert channel_key_from_url("https://www.youtube.com/channel/UCabc/streams") == "UCabc"
    assert channel_key_from_url("https://www.youtube.com/@Name/streams") == "@Name"
    assert channel_key_from_url("https://www.twitch.tv/SomeStreamer/videos?filter=archives") == "somestreamer"
    assert channel_key_from_url("https://www.youtube.com/c/OldName/streams") is None
    assert channel_key_from_url("http://127.0.0.1/page.html") is None


def test_backoff_is_exponential_capped_and_honours_longer_server_hints() -> None:
    backoff = Backoff(attempts=6, initial_seconds=2, max_seconds=20)
    assert list(backoff.delays()) == [2, 4, 8, 16, 20]
    assert backoff.delay(1, hint=7) == 7
    assert backoff.delay(3, hint=3) == 8
    assert backoff.delay(1, hint=3600) == 20
    with pytest.raises(ValueError):
        Backoff(attempts=0)
