"""The analyst's pages in real headless Chromium, while two streams replay at once through a real worker.

One worker, one browser and one replay for the whole module (Kafka, PostgreSQL, the faust worker and
producers.replay are the real ones; the model is the stream-agent tests' scorer double). Stream A pays
in 4 currencies across midnight (so two ECB dates), plus bits and gifted memberships that are counts;
stream B is a plain synthetic stream. Expected money is computed here with the currencyconverter
package directly. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.events import ChatMessage, MessageKind
from infra.kafka import ensure_topics, free_port
from infra.settings import Settings, load_settings
from tests.test_dashboard.conftest import headless_chrome, wait_for
from tests.test_dashboard.test_browser import ReplayThread
from tests.test_stream_agents.harness import REPO_ROOT, WorkerProcess, start_worker, synthetic_stream
from tests.test_stream_agents.scorer_double import promote_double

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = REPO_ROOT / "test-artifacts"
MONEY, PLAIN = "analyst-money", "analyst-plain"
MONEY_START = datetime(2026, 3, 2, 23, 58, tzinfo=UTC)
PAYMENTS = [  # (viewer number, seconds into the stream, kind, amount, currency)
    (1, 30, MessageKind.PAID_MESSAGE, 160.99, "AUD"),
    (2, 60, MessageKind.PAID_STICKER, 7.00, "CAD"),
    (3, 150, MessageKind.PAID_MESSAGE, 6.99, "EUR"),  # after midnight: the next day's rate
    (4, 180, MessageKind.PAID_MESSAGE, 75000.0, "IDR"),
    (5, 90, MessageKind.BITS, 1200.0, "XXX"),  # counts, never money
    (6, 100, MessageKind.MEMBERSHIP_GIFT, 5.0, "XXX"),
]


def money_stream() -> list[ChatMessage]:
    base = synthetic_stream(MONEY, viewers=45, messages=500, donors=0, seed=3, start=MONEY_START)
    paid = [ChatMessage(stream_id=MONEY, message_id=f"{MONEY}-pay{n}", timestamp=MONEY_START + timedelta(seconds=s),
                        offset_seconds=float(s), author_id=f"UC{n:05d}", author_name=f"viewer {n}", kind=kind,
                        amount=amount, currency=currency, amount_text=f"{amount:g} {currency}")
            for n, s, kind, amount, currency in PAYMENTS]
    return sorted(base + paid, key=lambda m: m.timestamp)


def expected_total(to: str = "USD") -> float:
    from currency_converter import CurrencyConverter

    rates = CurrencyConverter(fallback_on_missing_rate=True, fallback_on_wrong_date=True)
    return sum(rates.convert(amount, currency, to, date=(MONEY_START + timedelta(seconds=s)).date())
               for _, s, _, amount, currency in PAYMENTS if currency != "XXX")


@dataclass
class Env:
    settings: Settings
    worker: WorkerProcess
    replay: ReplayThread
    chrome: Any

    def open(self, path: str) -> None:
        self.chrome.get(self.worker.url + path)

    def replay_done(self) -> None:
        wait_for(lambda: not self.replay.is_alive(), 120, "the replay to finish")
        assert self.replay.error is None, self.replay.error
        wait_for(lambda: self.api(f"/api/summary?stream={MONEY}")["paid_events"] == len(PAYMENTS), 30,
                 "every payment stored")

    def api(self, path: str) -> Any:
        return self.worker.get(path)


@pytest.fixture(scope="module")
def env(kafka_bootstrap: str, database_url_factory: Callable[[], str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("analyst")
    settings = load_settings(state_dir=root / "state", kafka_bootstrap=kafka_bootstrap,
                             database_url=database_url_factory(), topic_prefix=f"t{uuid.uuid4().hex[:8]}-",
                             topic_partitions=4)
    asyncio.run(ensure_topics(kafka_bootstrap, settings))
    promote_double(settings.registry_dir)
    worker = start_worker(settings, free_port(), root / "worker.log", model_double=True)
    replay = None
    try:
        with headless_chrome(root / "chrome") as chrome:
            worker.wait_ready(timeout=120)
            plain = synthetic_stream(PLAIN, viewers=30, messages=400, donors=4, seed=5)
            replay = ReplayThread(settings, sorted(money_stream() + plain, key=lambda m: m.timestamp), speed=20.0)
            replay.start()  # the two streams replay concurrently (producers.replay: one task per stream)
            ARTIFACTS.mkdir(exist_ok=True)
            yield Env(settings, worker, replay, chrome)
    finally:
        if replay is not None:
            replay.join(timeout=120)
        worker.stop()


# The pages re-render their tables and tiles every second or so: an element handle taken in one call can be
# gone by the next (stale). So everything is read in one script, atomically, and clicks run in the page.

def text_of(chrome: Any, selector: str) -> str:
    """textContent as written (before CSS upper-cases it), "" when absent."""
    return chrome.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
                                 selector)


def texts_of(chrome: Any, selector: str) -> list[str]:
    return chrome.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)",
                                 selector)


def attributes_of(chrome: Any, selector: str, name: str) -> list[str]:
    return chrome.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]))", selector, name)


def click(chrome: Any, selector: str) -> None:
    chrome.execute_script("document.querySelector(arguments[0]).click()", selector)


def test_overview_with_two_streams_replaying_at_once(env: Env) -> None:
    from selenium.webdriver.common.by import By

    env.open("/dashboard/overview")

    def both_replaying() -> bool:
        states = dict(env.chrome.execute_script(
            "return [...document.querySelectorAll('#streams tbody tr')]"
            ".map(r => [r.dataset.stream, r.querySelector('.pill').textContent])"))
        return states.get(MONEY) == "replaying" and states.get(PLAIN) == "replaying"

    wait_for(both_replaying, 60, "both streams shown as replaying on the overview")
    wait_for(lambda: all(text_of(env.chrome, f'tr[data-stream="{s}"] .top3 a') for s in (MONEY, PLAIN)), 30,
             "the top 3 likely donors of each stream")
    headers = texts_of(env.chrome, "#streams thead th")
    assert {"msgs/min", "payers", "revenue (USD)", "likely donors (top 3)", "precision@20"} <= set(headers)
    cells = dict(zip(headers, texts_of(env.chrome, f'tr[data-stream="{MONEY}"] td'), strict=True))
    assert float(cells["msgs/min"]) > 0
    assert re.fullmatch(r"\d+ %|—", cells["precision@20"])
    assert texts_of(env.chrome, "#channels tbody tr")  # channel totals
    env.chrome.save_screenshot(str(ARTIFACTS / "overview-two-replays.png"))

    # search by name narrows the table; sorting by a column reorders it
    search = env.chrome.find_element(By.ID, "search")
    search.send_keys(PLAIN)
    wait_for(lambda: attributes_of(env.chrome, "#streams tbody tr", "data-stream") == [PLAIN], 10, "the search")
    search.clear()
    search.send_keys(" ")  # an input event with nothing to match: everything again
    wait_for(lambda: len(texts_of(env.chrome, "#streams tbody tr")) == 2, 10, "all rows again")
    click(env.chrome, '#streams th[data-key="messages"]')
    column = headers.index("msgs") + 1
    counts = [int(t) for t in texts_of(env.chrome, f"#streams tbody tr td:nth-child({column})")]
    assert counts == sorted(counts, reverse=True)


def test_currency_total_of_four_currencies_at_the_event_dates(env: Env) -> None:

    env.replay_done()
    env.open(f"/dashboard/?stream={MONEY}&k=20")
    def revenue_tile() -> list[str] | None:
        return env.chrome.execute_script(
            "const e = document.querySelector('#tiles [data-tile=\"revenue\"] .money');"
            "return e && e.title.includes('75,000.00 IDR') ? [e.textContent, e.title] : null")

    shown_text, breakdown = wait_for(revenue_tile, 30, "the revenue tile with all four currencies")
    shown = float(re.sub(r"[^\d.]", "", shown_text))
    assert shown == pytest.approx(expected_total("USD"), abs=0.006)  # the tile's cents
    for _, _, _, amount, currency in PAYMENTS:
        if currency != "XXX":
            assert f"{amount:,.2f} {currency} → " in breakdown, breakdown
    assert "ECB rate of 2026-03-03" in breakdown and "ECB rate of 2026-03-02" in breakdown
    assert "\n" not in shown_text and shown_text.startswith("$")  # one amount, not one line per currency
    counts = text_of(env.chrome, '#tiles [data-tile="counts"] dd')
    assert "1,200 bits" in counts and "5 gifted memberships" in counts
    donors = attributes_of(env.chrome, "#top-donors tbody tr", "data-viewer")
    assert donors[0] == "UC00001"  # 160.99 AUD is the most
    env.chrome.save_screenshot(str(ARTIFACTS / "stream-money.png"))


def test_revenue_chart_has_labelled_axes_in_stream_time(env: Env) -> None:
    from selenium.webdriver.common.by import By

    env.replay_done()
    env.open(f"/dashboard/?stream={MONEY}&k=20")
    wait_for(lambda: env.chrome.execute_script(
        "const p = document.getElementById('revenue-chart').__plot; return p && p.data[0].length === 5;"), 30,
        "four payments and the stream's latest minute on the revenue chart")
    # uPlot draws the axis labels on its canvas: read them from the chart, and from the holder's label
    labels = env.chrome.execute_script(
        "return ['revenue-chart', 'activity-chart'].map(id => document.getElementById(id).__plot.axes.map(a => a.label))")
    assert labels == [["minutes since stream start", "revenue, USD"],
                      ["minutes since stream start", "messages / min", "paid events / min"]]
    aria = env.chrome.find_element(By.ID, "revenue-chart").get_attribute("aria-label")
    assert aria == "revenue, USD over minutes since stream start"
    xs, ys = env.chrome.execute_script(
        "const p = document.getElementById('revenue-chart').__plot; return [p.data[0], p.data[1]];")
    assert xs == sorted(xs) and 0 < xs[0] < xs[-1] < 5  # minutes since the first message, not wall-clock time
    assert ys[-1] == pytest.approx(expected_total("USD"), abs=0.01)
    assert env.chrome.execute_script("return document.querySelectorAll('#revenue-chart canvas').length") == 1


def test_explanation_for_a_viewer_outside_the_top_20(env: Env) -> None:
    from selenium.webdriver.common.by import By

    env.replay_done()
    board = env.api(f"/api/leaderboard?stream={MONEY}&k=100")
    outside = [row for row in board if row["rank"] > 20 and not row["top_message_ids"]]
    assert outside, "every viewer below rank 20 already had a stored explanation"
    viewer = outside[0]
    env.open(f"/dashboard/?stream={MONEY}&k=20&{urllib.parse.urlencode({'viewer': viewer['viewer_id']})}")
    wait_for(lambda: env.chrome.find_element(By.ID, "drill-explanation").get_attribute("data-source") == "on demand",
             30, "an explanation computed on demand")
    moved = env.chrome.find_elements(By.CSS_SELECTOR, "#drill-messages li.moved .tag-moved")
    assert moved, "no message marked as having moved the score"
    assert f"rank #{viewer['rank']} " in text_of(env.chrome, "#drill-meta")
    assert "computed when opened" in text_of(env.chrome, "#drill-explanation")
    env.chrome.save_screenshot(str(ARTIFACTS / "explanation-on-demand.png"))


def test_calibrated_percentage_beside_the_base_rate(env: Env) -> None:

    env.replay_done()
    summary = env.api(f"/api/summary?stream={MONEY}&k=20")
    base = summary["base_rate"]
    assert base["source"] == "observed" and base["value"] == pytest.approx(base["payers"] / base["viewers"])
    env.open(f"/dashboard/?stream={MONEY}&k=20")
    wait_for(lambda: "base" in text_of(env.chrome, "#chance-head"), 30, "the base rate in the board's header")
    assert text_of(env.chrome, "#chance-head") == f"chance to pay (base {base['value'] * 100:.1f} %)"
    assert "calibrated probability" in text_of(env.chrome, "#what-is-this")
    row = env.api(f"/api/leaderboard?stream={MONEY}&k=1")[0]
    assert text_of(env.chrome, "#leaderboard tbody tr .chance") == f"{row['probability'] * 100:.1f} %"
    assert text_of(env.chrome, "#leaderboard tbody tr .lift") == f"{row['probability'] / base['value']:.1f}×"
    click(env.chrome, "#leaderboard tbody tr")
    meta = wait_for(lambda: "chance to pay in this stream" in text_of(env.chrome, "#drill-meta")
                    and text_of(env.chrome, "#drill-meta"), 20, "the drill-down's chance and base rate")
    assert f"base rate {base['value'] * 100:.1f} % ({base['payers']} of {base['viewers']} viewers paid so far)" in meta


def test_a_420_px_viewport_has_no_horizontal_overflow(env: Env) -> None:
    env.replay_done()
    env.chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 420, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    try:
        for path, ready in ((f"/dashboard/?stream={MONEY}&k=20", "#leaderboard tbody tr"),
                            ("/dashboard/overview", "#streams tbody tr"),
                            (f"/dashboard/viewer?viewer={urllib.parse.quote('UC00001')}", "#viewer-streams tbody tr")):
            env.open(path)
            wait_for(lambda ready=ready: env.chrome.execute_script(
                "return document.querySelectorAll(arguments[0]).length", ready), 30, f"{path} to render")
            widths = env.chrome.execute_script(
                "return [window.innerWidth, document.documentElement.scrollWidth, document.body.scrollWidth]")
            wide = env.chrome.execute_script(  # what sticks out, to say so when it fails
                "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 421)"
                ".slice(0, 8).map(e => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)")
            assert widths[0] == 420 and max(widths[1:]) <= 420, (path, widths, wide)
            name = re.sub(r"[^a-z]+", "-", path.split("?")[0].strip("/")) or "stream"
            env.chrome.save_screenshot(str(ARTIFACTS / f"narrow-420-{name}.png"))
    finally:
        env.chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
