"""Which pages the collector may open, and stream ids from the links it finds.

The browser only ever navigates to YouTube or Twitch: a channel URL comes from a user (or a
config file), and a headless Chromium pointed at an arbitrary host is an SSRF and a data-exfiltration
risk. Tests open loopback pages with `allow_any_host=True`; nothing else should.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from infra.errors import InputError

Platform = Literal["youtube", "twitch"]

# Registrable domains (a host matches the domain itself or any subdomain of it).
PLATFORM_DOMAINS: dict[str, Platform] = {
    "youtube.com": "youtube",
    "youtu.be": "youtube",
    "twitch.tv": "twitch",
}
YOUTUBE_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
TWITCH_VIDEO_ID = re.compile(r"^\d{5,14}$")
# Channel tabs that are not the streams tab: a URL ending in one of them is pointed at /streams.
YOUTUBE_TABS = frozenset({"featured", "videos", "shorts", "live", "streams", "playlists", "community", "about",
                          "podcasts", "releases", "store", "search"})


@dataclass(frozen=True)
class StreamRef:
    """A stream found on a channel page."""

    platform: Platform
    stream_id: str
    title: str = ""

    @property
    def url(self) -> str:
        return watch_url(self.platform, self.stream_id)


def platform_of_host(host: str | None) -> Platform | None:
    host = (host or "").lower().rstrip(".")
    for domain, platform in PLATFORM_DOMAINS.items():
        if host == domain or host.endswith("." + domain):
            return platform
    return None


def check_navigable(url: str, *, allow_any_host: bool = False) -> Platform | None:
    """Raise InputError unless the browser may open `url`; return its platform (None: any-host page)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as error:
        raise InputError(f"not a URL: {url!r} ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"not an http(s) URL: {url!r}; give a channel URL such as https://www.youtube.com/@name")
    platform = platform_of_host(parts.hostname)
    if platform is None and not allow_any_host:
        raise InputError(
            f"refusing to open {parts.hostname!r}: only YouTube and Twitch channel pages are collected "
            "(e.g. https://www.youtube.com/@name or https://www.twitch.tv/name)"
        )
    return platform


def channel_streams_url(url: str, *, allow_any_host: bool = False) -> str:
    """The page that lists a channel's past streams: YouTube's /streams tab, Twitch's past broadcasts."""
    platform = check_navigable(url, allow_any_host=allow_any_host)
    parts = urlsplit(url.strip())
    if platform is None:
        return urlunsplit(parts)  # a loopback or test page: opened exactly as given
    segments = [s for s in parts.path.split("/") if s]
    if platform == "youtube":
        if not segments or segments[0] in ("watch", "shorts", "embed") or parts.hostname.endswith("youtu.be"):
            raise InputError(f"{url!r} is a video, not a channel; give e.g. https://www.youtube.com/@name")
        if segments[-1] in YOUTUBE_TABS:
            segments = segments[:-1]
        return urlunsplit(("https", "www.youtube.com", "/" + "/".join([*segments, "streams"]), "", ""))
    if not segments or segments[0] == "videos":
        raise InputError(f"{url!r} is not a Twitch channel; give e.g. https://www.twitch.tv/name")
    return urlunsplit(("https", "www.twitch.tv", f"/{segments[0]}/videos", "filter=archives", ""))


def stream_ref_from_href(href: str, platform: Platform, title: str = "") -> StreamRef | None:
    """The stream a tile link points at, or None for links that are not a past stream (shorts, channels)."""
    try:
        parts = urlsplit(href)
    except ValueError:
        return None
    segments = [s for s in parts.path.split("/") if s]
    candidate: str | None = None
    if platform == "youtube":
        if segments[:1] == ["watch"]:
            candidate = parse_qs(parts.query).get("v", [None])[0]
        elif len(segments) >= 2 and segments[0] == "live":
            candidate = segments[1]
        elif len(segments) == 1 and (parts.hostname or "").endswith("youtu.be"):
            candidate = segments[0]
        if candidate and YOUTUBE_VIDEO_ID.match(candidate):
            return StreamRef("youtube", candidate, title.strip())
        return None
    if len(segments) >= 2 and segments[-2] == "videos" and TWITCH_VIDEO_ID.match(segments[-1]):
        return StreamRef("twitch", segments[-1], title.strip())
    return None


def watch_url(platform: Platform, stream_id: str) -> str:
    if platform == "twitch":
        return f"https://www.twitch.tv/videos/{stream_id}"
    return f"https://www.youtube.com/watch?v={stream_id}"


def channel_key_from_url(url: str) -> str | None:
    """`UC...` from /channel/UC..., `@handle` from /@handle, the login from a Twitch URL; else None."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    platform = platform_of_host(parts.hostname)
    if not segments or platform is None:
        return None
    if platform == "twitch":
        return segments[0].lower()
    if segments[0] == "channel" and len(segments) > 1:
        return segments[1]
    if segments[0].startswith("@"):
        return segments[0]
    return None
