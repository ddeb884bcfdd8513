"""The dashboard's routes: its pages and their files come from the worker, nothing from a CDN.

The pages' behaviour in a browser against a running worker is tested in tests/e2e.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import cast

import faust
import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.web.drivers.aiohttp import Web

from streamcrm.worker.dashboard import STATIC_DIR, register_dashboard

PAGES = ("index.html", "customer.html")


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = faust.App("dashboard-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    register_dashboard(app)
    async with TestClient(TestServer(cast(Web, app.web).web_app)) as test_client:
        yield test_client


def referenced_files(page: str) -> list[str]:
    """The ``src`` of every script and ``href`` of every stylesheet of a page."""
    html = (STATIC_DIR / page).read_text()
    return re.findall(r'<script[^>]*\ssrc="([^"]+)"', html) + re.findall(
        r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', html
    )


@pytest.mark.parametrize(
    ("path", "heading"),
    [
        ("/dashboard", "live dashboard"),
        ("/dashboard/", "live dashboard"),
        ("/dashboard/customer?id=cust-00001", "Customer"),
        ("/dashboard/customers/cust-00001", "Customer"),
    ],
)
async def test_pages_are_served_as_html(client: TestClient, path: str, heading: str) -> None:
    response = await client.get(path)

    assert response.status == 200
    assert response.content_type == "text/html"
    assert heading in await response.text()


@pytest.mark.parametrize("page", PAGES)
def test_pages_load_scripts_and_styles_only_from_the_worker(page: str) -> None:
    files = referenced_files(page)

    assert any("chart" in name for name in files)
    assert all(name.startswith("/dashboard/static/") for name in files), files


@pytest.mark.parametrize("page", PAGES)
async def test_every_file_a_page_references_is_served(client: TestClient, page: str) -> None:
    for name in referenced_files(page):
        response = await client.get(name)
        assert response.status == 200, name
        assert len(await response.read()) > 0, name


def test_chart_js_is_vendored_with_its_licence() -> None:
    vendor = STATIC_DIR / "vendor"
    (script,) = vendor.glob("chart-*.umd.min.js")

    assert script.read_text()[:200].count("Chart.js v4.") == 1
    assert "MIT License" in (vendor / "chart.js-LICENSE.md").read_text()
