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
from oidc_provider_mock import User, run_server_in_thread
from test_dashboard_queries import build_store, write_science_images
from websockets.sync.client import ClientConnection, connect

from models.access import grant_access, mark_program
from models.database import make_engine

CHROMIUM = Path("/usr/bin/chromium")
PROPRIETARY = 16748  # IEPP01010's program
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-port=0",
)  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    # The test OpenID Connect provider runs in this process, on Authlib's older server API.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib"),
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
def browser_store(
    tmp_path_factory: pytest.TempPathFactory, synthetic_archive: Path, dask_scheduler: str
) -> str:
    """A populated SQLite store; IEPP01010's program is proprietary, granted to a group."""
    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'store.sqlite'}"
    images = write_science_images(synthetic_archive, folder / "science")
    build_store(url, [synthetic_archive, images], dask_scheduler)
    engine = make_engine(url)
    mark_program(engine, PROPRIETARY, proprietary=True, until=None, marked_by="lead")
    grant_access(engine, PROPRIETARY, "wfc3-team", "group", "lead")
    engine.dispose()
    return url


@contextlib.contextmanager
def serving(arguments: list[str], log: Path, port: int | None = None) -> Iterator[str]:
    """`hstmon dashboard ARGUMENTS` on ``port`` (default: a free one) of 127.0.0.1, until the
    block ends."""
    port = port or _free_port()
    command = [sys.executable, "-c", "from dashboard.cli import dashboard; dashboard()",
               *arguments, "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
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
def dashboard_url(browser_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`hstmon dashboard` serving the store on 127.0.0.1 without a login (its operator's)."""
    log = tmp_path_factory.mktemp("open") / "dashboard.log"
    with serving(["--db", browser_store], log) as base:
        yield base


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


# --- Logging in through OpenID Connect ----------------------------------------------------------

PEOPLE = [
    User(sub="alice", claims={"email": "Alice@Example.org", "groups": ["wfc3-team"]}),
    User(sub="bob", claims={"email": "bob@example.org", "groups": ["other-team"]}),
]


@pytest.fixture(scope="module")
def login_dashboard_url(
    browser_store: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same store behind a login: a real OpenID Connect provider (oidc-provider-mock) runs
    here, and Streamlit's own login (Authlib) talks to it."""
    folder = tmp_path_factory.mktemp("login")
    with run_server_in_thread(user_claims=PEOPLE) as provider:
        port = _free_port()  # the dashboard's: its redirect URI must name it
        secrets = folder / "secrets.toml"
        secrets.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            f'cookie_secret = "{os.urandom(24).hex()}"\n'
            'client_id = "hstmon-dashboard"\n'
            'client_secret = "not-a-secret-in-tests"\n'
            f'server_metadata_url = "http://localhost:{provider.server_port}'
            '/.well-known/openid-configuration"\n'
        )
        arguments = ["--db", browser_store, "--secrets", str(secrets)]
        with serving(arguments, folder / "dashboard.log", port) as base:
            yield base


def _log_in_as(browser: HeadlessChromium, base: str, sub: str, name: str) -> str:
    shown = _visit(browser, f"{base}/programs?program={PROPRIETARY}", f"login_{name}")
    assert "Log in to see the store" in shown and "Program" not in shown, shown[:2000]
    browser.evaluate(
        "[...document.querySelectorAll('button')].find(b => b.innerText.includes('Log in')).click()"
    )
    browser.wait_until("the provider's form", "!!document.querySelector('button[value=alice]')")
    browser.screenshot(ARTIFACTS / f"login_{name}_provider.png")
    browser.evaluate(f"document.querySelector('button[value={sub}]').click()")
    browser.wait_until("the dashboard again", "location.host.startsWith('127.0.0.1')")
    return _visit_current(browser, f"login_{name}_in")


def test_a_person_logs_in_and_sees_what_their_groups_may_see(
    browser: HeadlessChromium, login_dashboard_url: str
) -> None:
    shown = _log_in_as(browser, login_dashboard_url, "bob", "bob")
    assert "Signed in as bob@example.org" in shown and "hstmon — overview" in shown
    shown = _visit(browser, f"{login_dashboard_url}/programs?program={PROPRIETARY}", "bob_program")
    assert f"Program {PROPRIETARY}: 0 visit(s)" in shown and "iepp01" not in shown.lower()
    shown = _visit(browser, f"{login_dashboard_url}/exposure?visit=iepp01010", "bob_visit")
    assert "No visit “iepp01010” is in the store." in shown
    browser.evaluate(
        "[...document.querySelectorAll('button')].find(b => b.innerText.includes('Log out'))"
        ".click()"
    )
    # Streamlit ends the session at the provider too, which asks to confirm.
    browser.wait_until("the provider's end of session", "location.host.startsWith('localhost')")
    browser.screenshot(ARTIFACTS / "logout_provider.png")
    browser.evaluate("document.querySelector('form button[type=submit], form button').click()")
    browser.wait_until("the dashboard again", "location.host.startsWith('127.0.0.1')")
    shown = _log_in_as(browser, login_dashboard_url, "alice", "alice")
    assert "Signed in as alice@example.org (groups: wfc3-team)" in shown
    shown = _visit(browser, f"{login_dashboard_url}/exposure?visit=iepp01010", "alice_visit",
                   height=3200)  # fmt: skip
    assert "Visit iepp01010" in shown and "Visit verdict: HOPR" in shown
