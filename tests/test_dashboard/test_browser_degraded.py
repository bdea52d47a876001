"""The page in headless Chromium when PostgreSQL cannot be reached: a banner, not a broken page."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.test_dashboard.conftest import serve, wait_for
from tests.test_stream_agents.harness import REPO_ROOT

pytestmark = pytest.mark.browser


async def test_page_shows_a_degraded_banner(chrome: Any, dashboard_settings: Any) -> None:
    from selenium.webdriver.common.by import By

    async with serve(dashboard_settings(), "postgresql://donorcast@127.0.0.1:9/donorcast") as client:
        url = str(client.make_url("/dashboard/?stream=s1"))

        def look() -> tuple[str, str, bool, str]:
            chrome.get(url)
            banner = wait_for(lambda: (b := chrome.find_element(By.ID, "banner")).is_displayed()
                              and b.text.startswith("Degraded") and b, 20, "the live feed's degraded banner")
            (REPO_ROOT / "test-artifacts").mkdir(exist_ok=True)
            chrome.save_screenshot(str(REPO_ROOT / "test-artifacts" / "dashboard-degraded.png"))
            return (banner.text, chrome.find_element(By.ID, "connection").text,
                    chrome.find_element(By.ID, "board-empty").is_displayed(),
                    chrome.find_element(By.ID, "stream-title").text)

        banner, connection, empty, title = await asyncio.to_thread(look)
    assert banner.startswith("Degraded: cannot connect to PostgreSQL") and "retrying" in banner
    assert connection == "degraded" and empty and title == "s1"
