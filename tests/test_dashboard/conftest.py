"""Fixtures for the dashboard tests: the dashboard routes on a real aiohttp server over loopback,
reading a real (per-test, migrated) PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.settings import Settings, load_settings
from tests.test_dashboard.sample_stream import write_sample


def dashboard_app(settings: Settings, database_url: str | None) -> Any:
    """A faust app that is never started, with the dashboard registered on its aiohttp application
    (exactly what `create_app` does on a worker)."""
    import faust

    from dashboard import register_dashboard
    from dashboard.access import url_host

    app = faust.App(f"dash-test-{id(settings)}", broker="kafka://127.0.0.1:9", autodiscover=False,
                    web_host=url_host(settings.web_host), web_bind=settings.web_host, web_port=settings.web_port)
    app.dashboard = register_dashboard(app, settings, database_url)
    return app


@asynccontextmanager
async def serve(settings: Settings, database_url: str | None, extra_routes: dict[str, Any] | None = None
                ) -> AsyncIterator[TestClient]:
    app = dashboard_app(settings, database_url)
    for path, handler in (extra_routes or {}).items():
        app.web.web_app.router.add_get(path, handler)
    client = TestClient(TestServer(app.web.web_app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await app.dashboard.close()  # as the worker's shutdown does: ends open event streams
        await client.close()


@pytest.fixture
def dashboard_settings(tmp_path: Any) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return load_settings(state_dir=tmp_path / "state", **overrides)

    return make


@pytest.fixture
async def stream_data(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The sample stream (and an old, ended one) in this test's database."""
    await write_sample(pool)
    return pool


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextmanager
def headless_chrome(directory: Path, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """Debian's chromium, headless, downloading into `directory`/downloads (skips when not installed)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian chromium + chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = directory / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", f"--user-data-dir={directory / 'profile'}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[Any]:
    with headless_chrome(tmp_path) as driver:
        yield driver


def wait_for(condition: Any, timeout: float, what: str, poll: float = 0.3) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
