"""Browser tests: Debian's chromium driven by Playwright against a real server on a
loopback port. Every test here is marked `browser` (`pytest -m browser` runs
them alone). Screenshots go to build/test-artifacts/ (BROWSER_ARTIFACTS)."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest
from helpers.api_server import ROOT, start_server, stop_server
from helpers.web import new_student

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# what a headless chromium needs as root on a machine with a closed network
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions",
]  # fmt: skip
ARTIFACTS = os.environ.get("BROWSER_ARTIFACTS", os.path.join(ROOT, "build", "test-artifacts"))


def pytest_collection_modifyitems(items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    proc, server = start_server(str(tmp_path_factory.mktemp("web-data")))
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def chromium():
    """Module-scoped: Playwright's sync API keeps its event loop marked as running on
    the main thread while it is open, and later tests call asyncio.run()."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def artifacts() -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    return ARTIFACTS


class Student:
    """A signed-in browser context on the page, and its key."""

    def __init__(self, chromium, server) -> None:
        self.access_key, link = new_student(server)
        self.context = chromium.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(link)
        self.page.click("#signin-button")
        self.page.wait_for_url(server.endpoint + "/")
        self.wait_ready()

    def wait_ready(self, timeout: float = 60_000) -> None:
        self.page.wait_for_selector('body[data-state="ready"]', timeout=timeout)

    def set_code(self, code: str) -> None:
        self.page.evaluate(
            'code => document.querySelector("#editor .CodeMirror").CodeMirror.setValue(code)',
            code,
        )

    def run(self, code: str) -> None:
        self.set_code(code)
        self.page.click("#run")

    def output(self) -> str:
        return self.page.inner_text("#output")

    def close(self) -> None:
        """Destroy the page's kernel (as Sign out does), then close the browser."""
        with contextlib.suppress(Exception):  # the test may have ended it already
            self.page.click("#signout", timeout=5000)
            self.page.wait_for_url("**/signin", timeout=10_000)
        self.context.close()


@pytest.fixture
def student(chromium, web_server):
    made = Student(chromium, web_server)
    yield made
    made.close()


@pytest.fixture
def make_student(chromium, web_server):
    made: list[Student] = []

    def make() -> Student:
        made.append(Student(chromium, web_server))
        return made[-1]

    yield make
    for one in made:
        one.close()
