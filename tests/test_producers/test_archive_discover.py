"""Stream discovery in real headless Chromium against pages served on loopback."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.errors import InputError, ServiceError
from producers.archive.discover import (
    TILE_SELECTORS,
    ScrollPolicy,
    chromium_available,
    discover_streams,
    headless_chromium,
    read_stream_tiles,
    scroll_to_end,
    wait_for_tiles,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "archive"
# settle_seconds: generous, the page answers in 250 ms but the CI machine may be loaded.
FAST = ScrollPolicy(settle_seconds=2.0, max_rounds=20, timeout_seconds=30, tile_wait_seconds=10)
# The fixture page: 3 batches x 6 tiles; tile 3.6 links to a Short, which is not a stream.
EXPECTED_IDS = [f"v{b}x{i:02d}abcdef" for b in (1, 2, 3) for i in range(1, 7) if (b, i) != (3, 6)]

needs_browser = pytest.mark.skipif(
    not chromium_available(), reason="Debian chromium + chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver) absent"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="module")
def loopback() -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(FIXTURES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not chromium_available():
        pytest.skip("Debian chromium + chromium-driver absent")
    with headless_chromium() as driver:
        yield driver


@pytest.mark.browser
@needs_browser
def test_scrolls_until_height_stops_growing_and_finds_every_stream(browser, loopback: str) -> None:
    def shared_driver() -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext(browser)

    found = discover_streams(
        f"{loopback}/streams_page.html", driver_factory=shared_driver, policy=FAST, allow_any_host=True
    )

    assert [s.stream_id for s in found.streams] == EXPECTED_IDS
    assert browser.execute_script("return window.__loads;") == 3
    # Two scrolls grew the page (batches 2 and 3), the third did not: stop there.
    assert found.scroll.rounds == 2
    assert found.scroll.stopped_because == "height stable"
    assert found.scroll.final_height == browser.execute_script("return document.documentElement.scrollHeight;")
    titles = {s.stream_id: s.title for s in found.streams}
    assert titles["v1x01abcdef"] == "Stream 1.1 \u2014 \u6f22\u5b57 \U0001f389"
    assert "guideXXXXXX" not in titles  # a link outside the tiles
    assert all(s.url == f"https://www.youtube.com/watch?v={s.stream_id}" for s in found.streams)


@pytest.mark.browser
@needs_browser
def test_scrolling_is_bounded_by_rounds_and_by_time(browser, loopback: str) -> None:
    selectors = TILE_SELECTORS["youtube"]
    browser.get(f"{loopback}/endless_page.html")
    assert wait_for_tiles(browser, selectors, 5)
    by_rounds = scroll_to_end(browser, ScrollPolicy(settle_seconds=2, max_rounds=4, timeout_seconds=30))
    assert (by_rounds.rounds, by_rounds.stopped_because) == (4, "max rounds")

    by_time = scroll_to_end(browser, ScrollPolicy(settle_seconds=2, max_rounds=10_000, timeout_seconds=1.0))
    assert by_time.stopped_because == "timeout"
    assert by_time.seconds < 6  # 1 s budget; the rest is slack for a loaded machine
    tiles = read_stream_tiles(browser, selectors, "youtube")
    assert len(tiles) == browser.execute_script("return document.querySelectorAll('ytd-rich-grid-media').length;")
    assert len(tiles) >= 2 + by_rounds.rounds + by_time.rounds


@pytest.mark.browser
@needs_browser
def test_a_fresh_browser_is_always_quit(loopback: str) -> None:
    drivers = []

    @contextlib.contextmanager
    def recording_factory() -> Iterator[object]:
        with headless_chromium() as driver:
            drivers.append(driver)
            yield driver

    found = discover_streams(
        f"{loopback}/streams_page.html", driver_factory=recording_factory, policy=FAST, allow_any_host=True
    )
    assert len(found.streams) == len(EXPECTED_IDS)
    process = drivers[0].service.process
    assert process is None or process.poll() is not None  # chromedriver (and its Chromium) is gone


@pytest.mark.browser
@needs_browser
def test_an_unreachable_page_is_a_clear_service_error(browser) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceError, match=f"could not load http://127.0.0.1:{port}/"):
        discover_streams(f"http://127.0.0.1:{port}/", driver_factory=lambda: contextlib.nullcontext(browser),
                         policy=FAST, allow_any_host=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/streams_page.html",
        "https://evil.example/@name",
        "https://youtube.com.evil.example/@name",
        "https://www.youtube.com@evil.example/@name",
        "https://notyoutube.com/@name",
        "file:///etc/passwd",
        "javascript:alert(1)",
    ],
)
def test_hosts_other_than_youtube_and_twitch_are_refused_before_any_browser_starts(url: str) -> None:
    started = []

    def factory() -> contextlib.AbstractContextManager[object]:
        started.append(True)
        raise AssertionError("no browser may start for a refused URL")

    with pytest.raises(InputError) as refused:
        discover_streams(url, driver_factory=factory, policy=FAST)
    assert started == []
    assert "refusing" in str(refused.value) or "not an http(s) URL" in str(refused.value)


def test_non_http_schemes_are_refused_even_with_allow_any_host() -> None:
    with pytest.raises(InputError, match="http"):
        discover_streams("file:///etc/passwd", driver_factory=headless_chromium, allow_any_host=True)
