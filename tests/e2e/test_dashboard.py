"""The live dashboard in headless Chromium against a real worker (Tansu + redis-server).

A worker scores a simulated history; while a second stream of simulated events keeps flowing,
the dashboard must show a non-zero throughput and draw its charts, and a customer's page must
show the churn probability and segment ``GET /customers/{id}`` gives for that customer.
Screenshots go to ``$STREAMCRM_TEST_ARTIFACTS`` (else ``test-artifacts/`` at the repository
root) and their paths are printed.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from streamcrm.core.events import Event
from streamcrm.services.embedded import free_port
from streamcrm.services.kafka import make_producer, produce_events
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from tests.integration.worker_harness import TopicReader, running_worker, scores, send

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
LIVE_EVENTS_PER_S = 40.0
TIMEOUT_MS = 30_000


def artifacts_dir() -> Path:
    """Where screenshots are kept: ``$STREAMCRM_TEST_ARTIFACTS`` or ``test-artifacts/``."""
    directory = Path(os.environ.get("STREAMCRM_TEST_ARTIFACTS") or REPO / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def get_json(url: str) -> tuple[int, Any]:
    """Status and JSON body of a GET (an HTTP error's body too)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_until(what: str, check: Any, timeout_s: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except (OSError, ValueError):  # the web server is not up yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.5)


def renamed(event: Event, prefix: str) -> Event:
    """The same event for another customer (and with its own event id)."""
    return event.model_copy(
        update={
            "customer_id": f"{prefix}{event.customer_id}",
            "event_id": f"{prefix}{event.event_id}",
        }
    )


@contextmanager
def steady_traffic(settings: Settings, events: list[Event]) -> Iterator[None]:
    """Send ``events`` at about LIVE_EVENTS_PER_S in a background thread until the block ends."""
    assert settings.kafka_bootstrap is not None
    stop = threading.Event()
    producer = make_producer(settings.kafka_bootstrap)

    def run() -> None:
        sent = 0
        started = time.monotonic()
        while not stop.is_set() and sent < len(events):
            batch = events[sent : sent + 4]
            produce_events(producer, settings, batch)
            producer.flush()
            sent += len(batch)
            stop.wait(max(0.0, started + sent / LIVE_EVENTS_PER_S - time.monotonic()))

    thread = threading.Thread(target=run, name="steady-traffic", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        producer.close()


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium through Playwright; missing is a failure (``./dev`` installs it)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (./dev setup does)")
    # Chromium refuses to run as root inside its own sandbox.
    arguments = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=arguments
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path:
    path = artifacts_dir() / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_dashboard_shows_live_throughput_and_a_customers_scores(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = settings.model_copy(update={"web_port": port})
    base = f"http://127.0.0.1:{port}"
    assert settings.kafka_bootstrap is not None
    history = simulate(customers=30, days=120, seed=5)
    live = [renamed(e, "live-") for e in simulate(customers=200, days=60, seed=6).events]
    # The customer to open: the one with the most events, whose last event ends the history.
    counts: dict[str, int] = {}
    for event in history.events:
        counts[event.customer_id] = counts.get(event.customer_id, 0) + 1
    customer_id = max(counts, key=lambda c: counts[c])
    last_event_id = [e.event_id for e in history.events if e.customer_id == customer_id][-1]

    with running_worker(settings, tmp_path / "worker.log"):
        reader = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
        try:
            send(settings, history.events)
            reader.wait_for(
                lambda records: any(s.event_id == last_event_id for s in scores(records)),
                timeout_s=60,
            )
        finally:
            reader.close()

        with steady_traffic(settings, live), chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            wait_until(
                "a non-zero throughput point in /api/overview",
                lambda: [
                    p
                    for p in get_json(f"{base}/api/overview")[1]["throughput"][-3:]
                    if p["events_per_s"] > 0
                ],
            )

            page.goto(f"{base}/dashboard")
            expect(page.get_by_role("heading", name="Throughput")).to_be_visible()
            rate = page.get_by_test_id("throughput-rate")
            page.wait_for_function(
                "() => Number(document.querySelector('[data-testid=throughput-rate]')"
                ".dataset.value) > 0",
                timeout=TIMEOUT_MS,
            )
            assert float(rate.text_content() or "0") > 0
            assert float(rate.get_attribute("data-value") or "0") > 0
            canvases = page.locator("canvas")
            assert canvases.count() == 5
            drawn = page.evaluate(
                "() => [...document.querySelectorAll('canvas')].map((canvas) => {"
                "  const chart = Chart.getChart(canvas);"
                "  return [canvas.id, chart !== undefined && canvas.width > 0"
                "    && chart.data.datasets.some((d) => d.data.length > 0)]; })"
            )
            assert all(ok for _, ok in drawn), drawn
            screenshot(page, "overview")

        # The traffic has stopped; the customer's score changes only with their own events.
        status, document = get_json(f"{base}/customers/{customer_id}")
        assert status == 200, document
        score = document["score"]
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/dashboard/customer?id={customer_id}")
            page.wait_for_function(
                "() => document.body.dataset.loaded === 'customer'", timeout=TIMEOUT_MS
            )
            expect(page.get_by_test_id("customer-id")).to_have_text(customer_id)
            churn = page.get_by_test_id("churn-probability")
            assert float(churn.get_attribute("data-value") or "nan") == score["churn_probability"]
            shown_percent = float((churn.text_content() or "").rstrip("%"))
            assert shown_percent == pytest.approx(100 * score["churn_probability"], abs=0.051)
            expect(page.get_by_test_id("segment-name")).to_have_text(
                score["segment_name"].replace("_", " ")
            )
            assert chart_drawn(page, "history-chart")
            screenshot(page, "customer")

            page.goto(f"{base}/dashboard/customer?id=nobody-{customer_id}")
            expect(page.get_by_test_id("message")).to_contain_text("No customer with id")
            screenshot(page, "unknown-customer")


def chart_drawn(page: Page, canvas_id: str) -> bool:
    """Whether Chart.js made a chart on the canvas ``canvas_id``."""
    return bool(
        page.evaluate(f"() => Chart.getChart(document.getElementById('{canvas_id}')) !== undefined")
    )
