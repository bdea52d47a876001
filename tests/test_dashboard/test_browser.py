"""The dashboard in real headless Chromium (selenium), during a real replay through a real worker.

Kafka (Tansu), PostgreSQL, the faust worker process and the replay (producers.replay) are the real
ones; the model is the stream-agent tests' scorer double, so no training is needed (the model is not
what this test is about; the demo test runs the trained demo model). The stream carries hostile chat:
an HTML/JS payload must show as text and never run, and a formula-like name must be neutralised in
the CSV the browser downloads. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import csv
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.events import ChatMessage, MessageKind
from infra.kafka import free_port
from infra.settings import Settings
from tests.test_dashboard.conftest import wait_for
from tests.test_stream_agents.harness import REPO_ROOT, WorkerProcess, start_worker, synthetic_stream
from tests.test_stream_agents.scorer_double import promote_double

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = REPO_ROOT / "test-artifacts"
XSS_TEXT = "love this <img src=x onerror=alert(1)>"
XSS_SCRIPT = "thanks <script>document.title='pwned'</script>"
XSS_NAME = "<b>bold</b><img src=x onerror=alert(2)>"
FORMULA_NAME = '=HYPERLINK("http://evil.example","free money")'
STREAM = "browser-replay"


def hostile_stream() -> list[ChatMessage]:
    """A synthetic stream (donors chat warmly and pay midway) plus two hostile viewers who chat like
    donors, so both reach the top of the board."""
    base = synthetic_stream(STREAM, viewers=40, messages=700, donors=6, seed=11)
    start = base[0].timestamp
    extra = []
    for i in range(12):
        t = start + timedelta(seconds=5 + i * 25)
        for author, name, texts in (("UCxss", XSS_NAME, (XSS_TEXT, XSS_SCRIPT)),
                                    ("UCformula", FORMULA_NAME, ("I support you", "amazing play"))):
            extra.append(ChatMessage(stream_id=STREAM, message_id=f"{author}-{i}", timestamp=t,
                                     offset_seconds=(t - start).total_seconds(), author_id=author,
                                     author_name=name, text=texts[i % 2]))
    t = start + timedelta(seconds=200)
    extra.append(ChatMessage(stream_id=STREAM, message_id="UCxss-paid", timestamp=t, author_id="UCxss",
                             author_name=XSS_NAME, kind=MessageKind.PAID_MESSAGE, amount=1000.0, currency="JPY",
                             amount_text="¥1,000", text="<script>alert(3)</script>"))
    return sorted(base + extra, key=lambda m: m.timestamp)


class ReplayThread(threading.Thread):
    """producers.replay.replay in its own event loop, at `speed`x, while the test drives the browser."""

    def __init__(self, settings: Settings, messages: list[ChatMessage], speed: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.messages, self.speed = settings, messages, speed
        self.error: BaseException | None = None
        self.summary: Any = None

    def run(self) -> None:
        from producers.publisher import KafkaPublisher
        from producers.replay import replay, split_by_stream

        async def main() -> Any:
            async with KafkaPublisher(self.settings) as publisher:
                return await replay(publisher, split_by_stream("test", self.messages), speed=self.speed)

        try:
            self.summary = asyncio.run(main())
        except BaseException as error:  # noqa: BLE001 - re-raised by the test
            self.error = error


@pytest.fixture
def worker(topics: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    promote_double(topics.registry_dir)
    process = start_worker(topics, free_port(), tmp_path / "worker.log", model_double=True)
    try:
        process.wait_ready(timeout=120)
        yield process
    finally:
        process.stop()


def board_rows(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")


def tile(driver: Any, label: str) -> str:
    return driver.execute_script(
        "for (const t of document.querySelectorAll('#tiles .tile')) {"
        "  if (t.querySelector('dt').textContent === arguments[0]) return t.querySelector('dd').textContent; }"
        "return null;", label)


def assert_no_script_ran(driver: Any, title: str) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when no alert() ran
    assert driver.title == title  # the <script> payload would have set it to 'pwned'
    assert driver.find_elements(By.CSS_SELECTOR, "img") == []  # no payload became an element
    assert driver.find_elements(By.CSS_SELECTOR, "main b, aside b, main script, aside script") == []


def test_dashboard_live_in_chromium(chrome: Any, worker: WorkerProcess, topics: Settings) -> None:
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(exist_ok=True)
    messages = hostile_stream()
    replay = ReplayThread(topics, messages, speed=10.0)  # 350 s of chat in about 35 s
    replay.start()
    try:
        chrome.get(f"{worker.url}/dashboard/?stream={STREAM}&k=20")
        title = chrome.title
        chrome.execute_script("window.__sameDocument = 'yes'")

        # the leaderboard fills, then updates, all in the same document (no reload)
        wait_for(lambda: len(board_rows(chrome)) >= 10, 60, "ten leaderboard rows")
        # the tiles come from another request than the board: wait for a number, not a placeholder
        wait_for(lambda: (tile(chrome, "messages") or "").isdigit(), 60, "the message count tile")
        first_count = int(tile(chrome, "messages"))
        wait_for(lambda: int(tile(chrome, "messages") or 0) > first_count + 50, 60, "the message count to grow")
        assert chrome.execute_script("return window.__sameDocument") == "yes"
        assert chrome.find_element(By.ID, "connection").text == "live"
        assert chrome.find_element(By.ID, "banner").is_displayed() is False

        # hostile text in the board is shown literally
        # read in one script: the board is re-rendered every second, so an element handle can go stale
        shown_name = wait_for(lambda: chrome.execute_script(
            "const e = document.querySelector('tr[data-viewer=\"UCxss\"] .viewer-name'); return e && e.textContent"),
            60, "the hostile viewer on the board")
        assert shown_name == XSS_NAME
        assert_no_script_ran(chrome, title)

        # paid events appear with their amounts, and payers are marked on the board (hit or miss)
        wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR, "#paid-events li"), 90, "paid events")
        paid_text = chrome.find_element(By.ID, "paid-events").text
        assert "$5.00" in paid_text and ("HIT" in paid_text or "MISS" in paid_text)
        wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR, "#leaderboard tr.donor .tag"), 60,
                 "a payer marked on the board")

        # drill-down: the hostile viewer's messages, with timestamps and the ones that moved the score
        chrome.execute_script("document.querySelector('tr[data-viewer=\"UCxss\"]').click()")
        # the drill-down re-renders every few seconds: its messages are read in one script
        items = wait_for(lambda: chrome.execute_script(
            "return [...document.querySelectorAll('#drill-messages li')].map(li => "
            "[li.querySelector('.message-text').textContent, li.querySelector('.message-time').textContent])"),
            20, "the drill-down")
        assert chrome.find_element(By.ID, "drilldown").is_displayed()
        assert chrome.find_element(By.ID, "drill-name").text == XSS_NAME
        texts = [text for text, _ in items]
        assert XSS_TEXT in texts and XSS_SCRIPT in texts  # literally, tags and all
        times = [time_ for _, time_ in items]
        assert all(len(t) == 8 and t[2] == ":" and t[5] == ":" for t in times), times
        assert chrome.find_elements(By.CSS_SELECTOR, "#drill-messages li.moved .tag-moved")
        assert_no_script_ran(chrome, title)
        chrome.save_screenshot(str(ARTIFACTS / "dashboard-drilldown.png"))
        chrome.find_element(By.ID, "drill-close").click()

        # CSV download of the current board: its rows, with the formula-like name neutralised
        link = chrome.find_element(By.ID, "export-leaderboard-csv")
        assert link.get_attribute("href").endswith(f"/api/export/leaderboard.csv?stream={STREAM}&k=20")
        link.click()
        path = wait_for(lambda: next((p for p in chrome.downloads.glob("*.csv")), None), 30, "the CSV download")
        wait_for(lambda: not list(chrome.downloads.glob("*.crdownload")), 10, "the download to finish")
        assert path.name == f"donorcast-{STREAM}-leaderboard.csv"
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        assert 10 <= len(rows) <= 20
        assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
        probabilities = [float(r["probability"]) for r in rows]
        assert probabilities == sorted(probabilities, reverse=True) and all(0 <= p <= 1 for p in probabilities)
        senders = {m.viewer_id for m in messages}
        assert {r["viewer_id"] for r in rows} <= senders
        names = {r["viewer_id"]: r["viewer_name"] for r in rows}
        assert names["UCformula"] == "'" + FORMULA_NAME and names["UCxss"] == XSS_NAME
        assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values())

        wait_for(lambda: replay.summary is not None or replay.error is not None or not replay.is_alive(), 120,
                 "the replay to finish")
        time.sleep(2.5)  # one more snapshot after the last message
        chrome.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert chrome.execute_script("return window.__sameDocument") == "yes"
        assert_no_script_ran(chrome, title)
    finally:
        replay.join(timeout=120)
    assert replay.error is None, replay.error
    assert replay.summary.sent == len(messages)
    shutil.copy(worker.log_path, ARTIFACTS / "dashboard-worker.log")
