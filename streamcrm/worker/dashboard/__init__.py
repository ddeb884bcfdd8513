"""The live web dashboard: static pages the worker's Faust web server hands to a browser.

The pages are plain HTML and JavaScript (no build step) drawing with a vendored copy of
Chart.js (``static/vendor``, MIT): the browser polls the worker's JSON API and redraws in
place, so the server side is only routes to files.

=====================================  ==================================================
route                                  serves
=====================================  ==================================================
``/dashboard``                         throughput and lag over time, churn-risk
                                       distribution, segment map and shares, model quality,
                                       latest alerts, a box to open a customer (polls
                                       ``GET /api/overview`` every few seconds); campaigns'
                                       A/B tests and the uplift of acting on alerts
                                       (``GET /api/marketing``)
``/dashboard/customer?id=ID``          one customer: state, scores, churn drivers, score
``/dashboard/customers/{customer_id}`` history (``GET /customers/{id}``)
``/dashboard/static/...``              the pages' scripts, stylesheet and Chart.js
=====================================  ==================================================

The JSON API itself lives in :mod:`streamcrm.worker.web`; these pages only read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

DASHBOARD_PATH = "/dashboard"
"""Where the dashboard's index page is served."""
STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The pages, their scripts and stylesheet, and the vendored Chart.js."""
STATIC_PREFIX = f"{DASHBOARD_PATH}/static"

# Pages change only with a new release, but a browser that cached an old page would keep
# asking an upgraded worker for scripts that are gone: make it revalidate every time.
_PAGE_HEADERS = {"Cache-Control": "no-cache"}


def dashboard_url(port: int, host: str = "127.0.0.1") -> str:
    """The address of the dashboard on a worker whose web server listens on ``port``.

    >>> dashboard_url(6066)
    'http://127.0.0.1:6066/dashboard'
    """
    return f"http://{host}:{port}{DASHBOARD_PATH}"


def register_dashboard(app: faust.App) -> None:
    """Add the dashboard's routes (pages and static files) to ``app``'s web server.

    Harmless when the web server is off (``settings.web_port`` unset): the routes are then
    registered and never served.

    Parameters
    ----------
    app
        The worker's Faust app, before it starts.
    """
    index = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    customer = (STATIC_DIR / "customer.html").read_text(encoding="utf-8")

    class _Page(View):
        body = ""

        async def get(self, request: Request, **params: Any) -> Response:
            return self.html(self.body, headers=dict(_PAGE_HEADERS))

    def page(path: str, name: str, body: str) -> None:
        view = type(name, (_Page,), {"body": body, "__module__": __name__})
        app.page(path, name=name)(view)

    page(DASHBOARD_PATH, "dashboard", index)
    page(f"{DASHBOARD_PATH}/", "dashboard_slash", index)
    page(f"{DASHBOARD_PATH}/customer", "dashboard_customer", customer)
    page(f"{DASHBOARD_PATH}/customers/{{customer_id}}", "dashboard_customer_by_path", customer)
    app.web.add_static(STATIC_PREFIX, STATIC_DIR)


__all__ = ["DASHBOARD_PATH", "STATIC_DIR", "dashboard_url", "register_dashboard"]
