"""Headless Debian Chromium driven by Playwright, with every request the page makes recorded.

Chromium talks to its own services (update checks, sign-in, connectivity probes) whatever page it
shows, and which hosts it contacts changes from build to build. A check of what crosses the network
therefore counts the wrong thing; Playwright's routing sees exactly the requests the page and its
frames and workers make, and nothing of the browser's own. Every routed request is recorded, and
those the test does not allow are aborted, so a page that asks for anything outside gets no answer
(it stays offline) and the test sees the request.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

CHROMIUM = os.environ.get("CHANGEDETECT_CHROMIUM", "/usr/bin/chromium")
#: What the environment's probe runs Chromium with; the background-networking flags only make the
#: browser quieter; the checks do not rely on them.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
]


def require_chromium() -> str:
    """The Chromium executable, or skip the test (with how to install it)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} not found (Debian: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    return CHROMIUM


@dataclass
class PageRequests:
    """Every URL the page requested, and which of them were refused (not allowed)."""

    allowed: Callable[[str], bool]
    seen: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Script errors: uncaught exceptions and console errors, but not the browser's notes on a
    request answered 4xx (the page handles those: a 401 asks for the login, a 404 chip shows a
    placeholder)."""

    def console(self, message) -> None:  # noqa: ANN001 - playwright.sync_api.ConsoleMessage
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def page_error(self, error) -> None:  # noqa: ANN001 - playwright's Error
        self.errors.append(f"uncaught: {error}")

    def route(self, route) -> None:  # noqa: ANN001 - playwright.sync_api.Route
        url = route.request.url
        self.seen.append(url)
        if self.allowed(url):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort("blockedbyclient")


@contextmanager
def browser_page(
    allowed: Callable[[str], bool],
    *,
    width: int = 1280,
    height: int = 900,
    javascript: bool = True,
) -> Iterator[tuple[object, PageRequests]]:
    """A fresh-profile Chromium page whose requests go through `allowed`; yields (page, requests).
    `javascript=False` shows the page as a reader with scripts off (or a mail client) sees it."""
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    requests = PageRequests(allowed)
    with sync_playwright() as pw:
        # launch() gives every run a new temporary profile: nothing carries over between tests
        browser = pw.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            # a service worker's own fetches would bypass the routing; the pages need none
            context = browser.new_context(
                viewport={"width": width, "height": height},
                service_workers="block",
                java_script_enabled=javascript,
            )
            context.route("**/*", requests.route)
            page = context.new_page()
            page.on("console", requests.console)
            page.on("pageerror", requests.page_error)
            page.set_default_timeout(15_000)
            yield page, requests
        finally:
            browser.close()
