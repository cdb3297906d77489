"""The dashboard in a real browser: `hstmon dashboard` serves it, headless Chromium renders it.

Streamlit draws a page in the browser from a websocket, after the HTML has loaded; Chromium's
``--dump-dom``/``--screenshot`` with ``--virtual-time-budget`` snapshot the page before those
messages arrive (virtual time does not wait for websockets). So the same headless Chromium, with
the same flags, is driven through its DevTools protocol: load a URL, wait until the script has
run and its charts are drawn, read the DOM, take a screenshot (kept in test-artifacts/dashboard).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dashboard_queries import build_store, write_science_images
from websockets.sync.client import ClientConnection, connect

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-port=0",
)  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium "
        "(apt-get install -y chromium); CI installs it",
    ),
]


class HeadlessChromium:
    """One headless Chromium tab, driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self._stack = contextlib.ExitStack()
        self._process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._stack.callback(self._stop)
        active = profile / "DevToolsActivePort"  # Chromium writes its port here
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            if time.monotonic() > deadline or self._process.poll() is not None:
                self._stack.close()
                pytest.fail("headless Chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            page = next(t for t in json.load(reply) if t["type"] == "page")
        self._socket: ClientConnection = self._stack.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, proxy=None, ping_interval=None)
        )
        self._calls = 0

    def _stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def close(self) -> None:
        self._stack.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._calls += 1
        self._socket.send(json.dumps({"id": self._calls, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == self._calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=1400, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        self.evaluate("window.hstmonPreviousPage = true")
        self.call("Page.navigate", url=url)
        self.wait_until("the new page", "window.hstmonPreviousPage === undefined")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_until(self, what: str, expression: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; the page says:\n{self.text()[:2000]}")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


_SCRIPT_DONE = (
    "(() => { const app = document.querySelector('[data-testid=stApp]');"
    " return !!app && app.getAttribute('data-test-script-state') === 'notRunning'"
    " && app.getAttribute('data-test-connection-state') === 'CONNECTED'"
    " && document.querySelectorAll('h1').length > 0; })()"
)
_CHARTS_DRAWN = (
    "document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length >= {n}"
)
_EXCEPTIONS = "document.querySelectorAll('[data-testid=stException]').length"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def dashboard_url(
    tmp_path_factory: pytest.TempPathFactory, synthetic_archive: Path, dask_scheduler: str
) -> Iterator[str]:
    """`hstmon dashboard` serving a populated SQLite store on a free port of 127.0.0.1."""
    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'store.sqlite'}"
    images = write_science_images(synthetic_archive, folder / "science")
    build_store(url, [synthetic_archive, images], dask_scheduler)
    port = _free_port()
    log = folder / "dashboard.log"
    command = [sys.executable, "-c", "from dashboard.cli import dashboard; dashboard()",
               "--db", url, "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True, env=os.environ.copy())  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as reply,
            ):
                if reply.status == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the command and the streamlit it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadlessChromium]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chromium = HeadlessChromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def _visit(
    browser: HeadlessChromium, url: str, name: str, charts: int = 0, height: int = 2400
) -> str:
    browser.open(url, height)
    browser.wait_until("the page script to finish", _SCRIPT_DONE)
    if charts:
        browser.wait_until(f"{charts} chart(s)", _CHARTS_DRAWN.replace("{n}", str(charts)))
    time.sleep(0.5)  # let the last frames paint
    browser.screenshot(ARTIFACTS / f"{name}.png")
    assert browser.evaluate(_EXCEPTIONS) == 0, browser.text()[:3000]
    return browser.text()


PAGES = [
    ("overview", "/", 1, ("hstmon — overview", "Last runs", "Ingest #1", "Action list",
                          "HOPR verdicts", "Flags by rule")),
    ("trends", "/trends", 4, ("Trends", "Jitter", "Flag rates per month, by rule",
                              "PSF FWHM per filter")),
    ("programs", "/programs?program=16748&visit=iepp01010", 0,
     ("Programs", "Program 16748: 1 visit(s)", "Visit iepp01010: 7 exposure(s)")),
    ("visit", "/exposure?visit=iepp01010", 0,
     ("Visit iepp01010", "Visit verdict: HOPR", "exposures 4-7 lost their guide star")),
    ("sql", "/sql", 0, ("SQL", "Ready queries", "Row limit", "Time limit")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "charts", "expected"), PAGES, ids=[p[0] for p in PAGES])
def test_each_page_renders_in_chromium(
    browser: HeadlessChromium,
    dashboard_url: str,
    name: str,
    path: str,
    charts: int,
    expected: tuple[str, ...],
) -> None:
    shown = _visit(browser, dashboard_url + path, name, charts)
    missing = [text for text in expected if text not in shown]
    assert not missing, f"{name}: {missing} not on the page:\n{shown[:3000]}"


def test_a_drilldown_opens_from_its_url(browser: HeadlessChromium, dashboard_url: str) -> None:
    shown = _visit(browser, f"{dashboard_url}/exposure?exposure=iepp01uy", "drilldown_iepp01uy",
                   charts=2, height=5200)  # fmt: skip
    expected = ("Exposure iepp01uy (iepp01uyq)", "Exposure verdict: HOPR", "HOPR deadline",
                "JIF problem flags and warnings", "Jitter time series (JIT)",
                "Images (SCI, ERR, DQ) and PSF", "gs_acq_failure", "Full FITS headers")  # fmt: skip
    assert not [text for text in expected if text not in shown], shown[:3000]
    previews = browser.evaluate("document.querySelectorAll('[data-testid=stImage] img').length")
    assert previews == 6, "SCI, ERR and DQ previews of both chips"
    assert browser.evaluate("!!document.querySelector('a[href*=\"visit=iepp01010\"]')")


def test_the_sql_page_runs_a_ready_query(browser: HeadlessChromium, dashboard_url: str) -> None:
    _visit(browser, f"{dashboard_url}/sql", "sql_before")
    browser.evaluate(
        "[...document.querySelectorAll('button')].find(b => b.innerText.trim().endsWith('Run'))"
        ".click()"
    )
    browser.wait_until("the query's results", "document.body.innerText.includes('row(s)')")
    shown = _visit_current(browser, "sql_results")
    assert "Download CSV" in shown and "row(s)" in shown


def _visit_current(browser: HeadlessChromium, name: str) -> str:
    browser.wait_until("the page script to finish", _SCRIPT_DONE)
    time.sleep(0.5)
    browser.screenshot(ARTIFACTS / f"{name}.png")
    assert browser.evaluate(_EXCEPTIONS) == 0, browser.text()[:3000]
    return browser.text()
