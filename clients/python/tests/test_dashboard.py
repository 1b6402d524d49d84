"""The dashboard in headless Chromium against real agent processes: it loads cleanly under its
CSP, the explorer writes a version and shows it in history, the time slider shows older
values, and charts of system series draw points (checked on the canvas pixels)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Iterator, List

import pytest
from playwright.sync_api import sync_playwright

import kdelta
from agent import Agent
from browser import INKED_PIXELS, Recorder, chromium_path

pytestmark = pytest.mark.browser

# What a user who opens an as-of point before a key existed gets: a 404 the page shows as text.
EXPECTED_404 = "the server responded with a status of 404"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def system_agent() -> Iterator[Agent]:
    """An agent running the real `system` source, sampling every second."""
    a = Agent(config='[[sources]]\nkind = "system"\ninterval = "1s"\n')
    yield a
    a.stop()


def new_page(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    rec = Recorder()
    rec.attach(page)
    page.recorder = rec
    page.goto(url)
    return page


def problems(page: Any, allow: Callable[[str], bool] = lambda _: False) -> List[str]:
    return [p for p in page.recorder.all(page) if not allow(p)]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def points(page: Any, selector: str) -> int:
    """Points the page's chart code placed on a canvas (its data-points attribute)."""
    return int(page.get_attribute(selector, "data-points") or 0)


def inked_columns(page: Any, selector: str) -> int:
    """Pixel columns of a canvas holding any ink: how wide the drawn chart is."""
    return int(page.eval_on_selector(selector, """(canvas) => {
      const g = canvas.getContext("2d");
      const d = g.getImageData(0, 0, canvas.width, canvas.height).data;
      const cols = new Set();
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) cols.add(((i - 3) / 4) % canvas.width);
      return cols.size;
    }"""))


def test_page_loads_with_no_console_errors_or_csp_violations(browser: Any, system_agent: Agent) -> None:
    with kdelta.Client(system_agent.url) as c:
        c.docs.put("greenhouse/setpoint", {"temp": 22})
        c.twins.create(f"device/t{uuid.uuid4().hex[:6]}", {"desired": {"interval": 10}})
    page = new_page(browser, system_agent.url + "/")
    try:
        page.wait_for_selector("#status dd")
        page.wait_for_selector("#live.on")
        page.wait_for_selector('canvas[data-series="system.uptime"]')
        # Every view, with data in it.
        page.click('a[data-view="explorer"]')
        page.click("text=greenhouse/setpoint")
        page.wait_for_selector("#ex-history tbody tr")
        page.select_option("#ex-kind", "twins")
        page.wait_for_selector("#ex-keys button")
        page.click('a[data-view="series"]')
        wait_until("the series chart", lambda: points(page, "#se-chart") > 0)
        page.select_option("#se-series", "system.load1")
        page.check('input[name="se-mode"][value="raw"]')
        wait_until("the series chart", lambda: points(page, "#se-chart") > 0)
        page.click('a[data-view="overview"]')
        page.wait_for_timeout(500)
        assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
        assert problems(page) == []
    finally:
        page.close()


def test_the_status_line_shows_the_clock_verdict(browser: Any) -> None:
    """The clock's verdict as `/v1/status` gives it: an agent told never to trust its clock
    says so first in the status line, with the state and the reason."""
    a = Agent(config='sources = []\n[clock]\ntrust = "never"\n')
    page = new_page(browser, a.url + "/")
    try:
        with kdelta.Client(a.url) as c:
            clock = c.status().raw["clock"]
        assert (clock["trusted"], clock["state"]) == (False, "forced_untrusted"), clock
        page.wait_for_selector('#status div[data-item="clock"]')
        assert page.inner_text('#status div[data-item="clock"] dt') == "clock"
        shown = page.inner_text('#status div[data-item="clock"] dd')
        assert shown == f"NOT trusted (forced_untrusted): {clock['reason']}", shown
        # An untrusted clock comes first, where it is seen.
        assert page.get_attribute("#status div:first-child", "data-item") == "clock"
        assert problems(page) == []
    finally:
        page.close()
        a.stop()


def test_a_document_written_in_the_explorer_appears_in_history(browser: Any, agent: Agent, prefix: str) -> None:
    key = prefix + "notes/pump"
    page = new_page(browser, agent.url + "/#explorer")
    try:
        page.fill("#ex-new-key", key)
        page.click("#ex-open button")
        page.wait_for_selector("#ex-meta:has-text('does not exist yet')")
        page.fill("#ex-editor", '{"pump": "on", "by": "browser"}')
        page.click("#ex-save")
        page.wait_for_selector("#ex-edit-note:has-text('wrote')")
        row = page.wait_for_selector("#ex-history tbody tr td.change:has-text('browser')")
        assert '"pump":"on"' in row.inner_text()
        assert json.loads(page.inner_text("#ex-value")) == {"pump": "on", "by": "browser"}
        # The agent has it, and the page's row is the agent's version.
        with kdelta.Client(agent.url) as c:
            (v,) = c.docs.history(key)
            assert v.value == {"pump": "on", "by": "browser"}
        assert page.get_attribute("#ex-history tbody tr", "data-hlc") == v.hlc
        # A second write shows as a new row on top, and the key is listed under its prefix.
        page.fill("#ex-editor", '{"pump": "off"}')
        page.click("#ex-save")
        wait_until("two versions", lambda: page.locator("#ex-history tbody tr").count() == 2)
        assert '"off"' in page.inner_text("#ex-history tbody tr:first-child td.change")
        page.fill("#ex-prefix", prefix)
        page.wait_for_selector(f"#ex-keys button:has-text('{key}')")
        assert problems(page, allow=lambda p: EXPECTED_404 in p or "HTTP 404" in p) == []
    finally:
        page.close()


def test_the_slider_shows_the_older_value(browser: Any, agent: Agent, prefix: str) -> None:
    key = prefix + "setpoint"
    with kdelta.Client(agent.url) as c:
        v1 = c.docs.put(key, {"temp": 19})
        # The next version must be at a later millisecond for a wall-time slider to part them.
        wait_until("the clock to move on", lambda: time.time() * 1000 > v1.time.timestamp() * 1000 + 5)
        c.docs.put(key, {"temp": 21})
    page = new_page(browser, agent.url + "/#explorer/docs/" + key)
    try:
        page.wait_for_selector("#ex-asof-value:has-text('21')")
        # Writing through the page: a third version, the slider moves to "now".
        page.fill("#ex-editor", '{"temp": 23}')
        page.click("#ex-save")
        wait_until("three versions", lambda: page.locator("#ex-history tbody tr").count() == 3)
        page.wait_for_selector("#ex-asof-value:has-text('23')")
        # Home = one ms before the first version; one step right = the first version's time.
        slider = page.locator("#ex-slider")
        slider.focus()
        page.keyboard.press("Home")
        page.wait_for_selector("#ex-asof-value:has-text('did not exist')")
        page.keyboard.press("ArrowRight")
        page.wait_for_selector("#ex-asof-value:has-text('19')")
        assert "version 1 of 3" in page.inner_text("#ex-asof-note")
        assert page.locator("#ex-history tr.asof").get_attribute("data-hlc") == v1.hlc
        # Clicking a version's time shows the value as of that version.
        page.click("#ex-history tbody tr:nth-child(2) button.link")
        page.wait_for_selector("#ex-asof-value:has-text('21')")
        # The diff between the first (A) and the newest (B) version.
        page.check("#ex-history tbody tr:nth-child(3) input[name='ex-pick-a']")
        page.check("#ex-history tbody tr:nth-child(1) input[name='ex-pick-b']")
        page.click("#ex-diff-btn")
        page.wait_for_selector("#ex-diff-table tbody tr")
        assert page.inner_text("#ex-diff-table tbody").split() == ["/temp", "changed", "19", "23"]
        assert problems(page, allow=lambda p: EXPECTED_404 in p or "HTTP 404" in p) == []
    finally:
        page.close()


def test_a_system_series_chart_draws(browser: Any, system_agent: Agent) -> None:
    page = new_page(browser, system_agent.url + "/")
    try:
        card = 'canvas[data-series="system.uptime"]'
        page.wait_for_selector(card)
        # Two samples at least, drawn: points placed and pixels inked across the card.
        wait_until("a drawn system.uptime chart", lambda: int(page.get_attribute(card, "data-points") or 0) >= 2)
        assert page.eval_on_selector(card, INKED_PIXELS) > 50
        width = page.eval_on_selector(card, "(c) => c.width")
        assert inked_columns(page, card) > width // 3
        # The series explorer draws it too, raw and aggregated.
        page.goto(system_agent.url + "/#series/system.uptime")
        for mode in ("aggregate", "raw"):
            page.check(f'input[name="se-mode"][value="{mode}"]')
            wait_until(f"the {mode} chart", lambda: points(page, "#se-chart") >= 2)
            assert page.eval_on_selector("#se-chart", INKED_PIXELS) > 200
        assert problems(page) == []
    finally:
        page.close()


def test_a_young_series_fills_its_card_in_the_24h_window(browser: Any, agent: Agent, prefix: str) -> None:
    """Regression: 20 minutes after `kdelta start`, a 10 s series showed its value and no
    chart in the wider windows: drawn over 24 h it was a sliver of a few pixels at the edge."""
    series = prefix.replace("/", ".") + "load1"
    now = int(time.time() * 1000)
    with kdelta.Client(agent.url) as c:
        c.readings.ingest([{"series": series, "ts": now - 22 * 60_000 + i * 10_000, "value": 1.0 + (i % 7)}
                           for i in range(22 * 6)])
    page = new_page(browser, agent.url + "/")
    try:
        page.fill("#filter", series)
        card = f'canvas[data-series="{series}"]'
        page.wait_for_selector(card)
        for window in ("1h", "6h", "24h"):
            page.select_option("#window", window)
            wait_until(f"the {window} chart", lambda: page.get_attribute(card, "data-window") == window
                       and points(page, card) >= 10)
            width = page.eval_on_selector(card, "(c) => c.width")
            assert inked_columns(page, card) > width // 2, window
        assert problems(page) == []
    finally:
        page.close()


def test_a_twin_patched_in_the_explorer_shows_its_paths_in_history(browser: Any, agent: Agent, prefix: str) -> None:
    key = "device/" + prefix.strip("/")
    with kdelta.Client(agent.url) as c:
        c.twins.create(key, {"reported": {"temp": 20.5}})
    page = new_page(browser, agent.url + "/#explorer/twins/" + key)
    try:
        page.wait_for_selector("#ex-history tbody tr")
        assert "Merge patch" in page.inner_text("#ex-edit-title")
        page.fill("#ex-editor", '{"desired": {"setpoint_c": 21}}')
        page.click("#ex-save")
        wait_until("the patch in history", lambda: page.locator("#ex-history tbody tr").count() == 2)
        assert page.inner_text("#ex-history tbody tr:first-child td.change").startswith("/desired")
        assert json.loads(page.inner_text("#ex-value")) == {"reported": {"temp": 20.5}, "desired": {"setpoint_c": 21}}
        with kdelta.Client(agent.url) as c:
            assert c.twins.get(key).value["desired"] == {"setpoint_c": 21}
        # As of the first change, the twin had no `desired`.
        page.click("#ex-history tbody tr:nth-child(2) button.link")
        wait_until("the older twin", lambda: "desired" not in page.inner_text("#ex-asof-value")
                   and "20.5" in page.inner_text("#ex-asof-value"))
        assert problems(page) == []
    finally:
        page.close()
