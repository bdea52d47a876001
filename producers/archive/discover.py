"""Find a channel's past streams: headless Chromium scrolls the streams page until it stops growing.

As in the seed notebook, the page is scrolled to the bottom until `document.documentElement.scrollHeight`
no longer grows, then the stream tiles' links are read. Unlike the seed, scrolling is bounded (rounds
and a total timeout), a round ends as soon as the page grows instead of after a fixed sleep, several
tile selectors are tried (YouTube changes its markup), links become video ids, and the browser only
ever opens YouTube/Twitch pages and is always quit.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra.errors import InputError, ServiceError
from producers.archive.urls import (
    Platform,
    StreamRef,
    channel_streams_url,
    check_navigable,
    stream_ref_from_href,
)

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM_BINARY = "/usr/bin/chromium"
CHROMEDRIVER_BINARY = "/usr/bin/chromedriver"
# We run as root in containers (hence --no-sandbox), with no GPU, and must not phone home.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
)

# Tile links, newest YouTube markup first; the seed used the third one.
TILE_SELECTORS: dict[Platform, tuple[str, ...]] = {
    "youtube": (
        "ytd-rich-grid-media a#video-title-link",
        "ytd-rich-grid-media a#thumbnail",
        "a.yt-simple-endpoint.style-scope.ytd-rich-grid-media",
        "ytd-grid-video-renderer a#video-title",
        "yt-lockup-view-model a[href*='/watch']",
    ),
    "twitch": (
        "a[data-a-target='preview-card-image-link']",
        "article a[href*='/videos/']",
    ),
}

# One round trip for all selectors: (href resolved by the browser, title) per matching anchor.
_READ_TILES_JS = """
const out = [];
for (const selector of arguments[0]) {
  for (const a of document.querySelectorAll(selector)) {
    const title = a.getAttribute('title') || a.getAttribute('aria-label') || a.textContent || '';
    out.push([a.href, title.trim()]);
  }
}
return out;
"""
_HEIGHT_JS = "return document.documentElement.scrollHeight;"
_SCROLL_JS = "window.scrollTo(0, document.documentElement.scrollHeight);"


@dataclass(frozen=True)
class ScrollPolicy:
    settle_seconds: float = 3.0  # a round with no growth for this long ends the scroll
    max_rounds: int = 500  # ~30 tiles a round: far beyond any channel's archive
    timeout_seconds: float = 600.0
    tile_wait_seconds: float = 15.0  # for the first tiles to render after load
    page_load_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class ScrollReport:
    rounds: int  # scrolls that made the page grow
    final_height: int
    stopped_because: str  # "height stable" | "max rounds" | "timeout"
    seconds: float


@dataclass(frozen=True)
class Discovery:
    page_url: str
    streams: list[StreamRef]
    scroll: ScrollReport


DriverFactory = Callable[[], AbstractContextManager["WebDriver"]]


def chromium_available(chromium: str = CHROMIUM_BINARY, chromedriver: str = CHROMEDRIVER_BINARY) -> bool:
    return Path(chromium).is_file() and Path(chromedriver).is_file()


@contextlib.contextmanager
def headless_chromium(
    chromium: str = CHROMIUM_BINARY, chromedriver: str = CHROMEDRIVER_BINARY
) -> Iterator[WebDriver]:
    """A fresh headless Chromium with a throw-away profile; always quit, profile always removed."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    if not chromium_available(chromium, chromedriver):
        raise ServiceError(
            f"headless Chromium needs {chromium} and {chromedriver}: apt-get install chromium chromium-driver"
        )
    profile = tempfile.mkdtemp(prefix="donorcast-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    try:
        # An explicit driver path: Selenium Manager (which downloads drivers) never runs.
        try:
            driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
        except WebDriverException as error:
            raise ServiceError(f"could not start headless Chromium: {error.msg or error}") from None
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def discover_streams(
    channel_url: str,
    *,
    driver_factory: DriverFactory = headless_chromium,
    policy: ScrollPolicy | None = None,
    allow_any_host: bool = False,
    platform: Platform | None = None,
) -> Discovery:
    """Open the channel's streams page, scroll it to the end and return its streams in page order.

    `allow_any_host` (tests: loopback pages) lifts the YouTube/Twitch-only rule; `platform` then says
    whose tile markup the page uses (default YouTube)."""
    policy = policy or ScrollPolicy()
    page_url = channel_streams_url(channel_url, allow_any_host=allow_any_host)
    platform = check_navigable(page_url, allow_any_host=allow_any_host) or platform or "youtube"
    with driver_factory() as driver:
        driver.set_page_load_timeout(policy.page_load_timeout_seconds)
        _open(driver, page_url)
        # A redirect (consent wall, moved channel) must not take us off the allowed hosts either.
        try:
            check_navigable(driver.current_url, allow_any_host=allow_any_host)
        except InputError as error:
            raise InputError(f"{page_url} redirected off YouTube/Twitch: {error}") from None
        selectors = TILE_SELECTORS[platform]
        wait_for_tiles(driver, selectors, policy.tile_wait_seconds)
        report = scroll_to_end(driver, policy)
        streams = read_stream_tiles(driver, selectors, platform)
    return Discovery(page_url=page_url, streams=streams, scroll=report)


def _open(driver: WebDriver, page_url: str) -> None:
    from selenium.common.exceptions import WebDriverException

    try:
        driver.get(page_url)
    except WebDriverException as error:  # net::ERR_NAME_NOT_RESOLVED, ERR_CONNECTION_REFUSED, load timeout
        reason = (error.msg or type(error).__name__).splitlines()[0]
        raise ServiceError(f"Chromium could not load {page_url} ({reason}); is the network reachable?") from None
    if driver.current_url.startswith("chrome-error://"):
        raise ServiceError(f"Chromium could not load {page_url}; is the network reachable?")


def wait_for_tiles(driver: WebDriver, selectors: Sequence[str], timeout: float) -> bool:
    """True once any tile is present; False after `timeout` (a channel with no streams)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    joined = ", ".join(selectors)
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.querySelector(arguments[0]) !== null;", joined)
        )
    except TimeoutException:
        return False
    return True


def scroll_to_end(driver: WebDriver, policy: ScrollPolicy) -> ScrollReport:
    """Scroll to the bottom until the document height stops growing, within the policy's bounds."""
    started = time.monotonic()
    deadline = started + policy.timeout_seconds
    height = int(driver.execute_script(_HEIGHT_JS))
    rounds = 0
    stopped_because = "max rounds"
    while rounds < policy.max_rounds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stopped_because = "timeout"
            break
        driver.execute_script(_SCROLL_JS)
        grown = _wait_for_growth(driver, height, min(policy.settle_seconds, remaining))
        if grown is None:
            stopped_because = "height stable" if remaining > policy.settle_seconds else "timeout"
            break
        height = grown
        rounds += 1
    return ScrollReport(
        rounds=rounds, final_height=height, stopped_because=stopped_because,
        seconds=round(time.monotonic() - started, 3),
    )


def _wait_for_growth(driver: WebDriver, height: int, timeout: float) -> int | None:
    """The new height as soon as the page is taller than `height`; None if it stays put for `timeout`."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def grown(d: WebDriver) -> int | bool:
        now = int(d.execute_script(_HEIGHT_JS))
        return now if now > height else False

    try:
        return int(WebDriverWait(driver, timeout, poll_frequency=0.1).until(grown))
    except TimeoutException:
        return None


def read_stream_tiles(driver: WebDriver, selectors: Sequence[str], platform: Platform) -> list[StreamRef]:
    """Stream refs from the tile links, deduplicated in page order (a tile has several links)."""
    found: dict[str, StreamRef] = {}
    for href, title in driver.execute_script(_READ_TILES_JS, list(selectors)):
        ref = stream_ref_from_href(href or "", platform, title or "")
        if ref is None:
            continue
        known = found.get(ref.stream_id)
        if known is None or (not known.title and ref.title):
            found[ref.stream_id] = ref if known is None else StreamRef(ref.platform, ref.stream_id, ref.title)
    return list(found.values())
