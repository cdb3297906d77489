"""`hstmon dashboard`: serve the Streamlit dashboard on a store (read-only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import click
from sqlalchemy.engine import make_url

from models.cli import database_option
from models.database import DATABASE_URL_ENV, resolve_database_url

__all__ = ["APP_PATH", "dashboard", "dashboard_hint", "streamlit_command"]

APP_PATH = Path(__file__).resolve().parent / "app.py"


def streamlit_command(host: str, port: int) -> list[str]:
    """The `streamlit run` command line that serves the dashboard on ``host:port``, headless."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip


def dashboard_hint(url: str) -> str:
    """The line `hstmon demo` prints to offer the dashboard on the store it just filled."""
    return f"See it in the dashboard:  hstmon dashboard --db {url}"


def _check_store(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not path.is_file():
            msg = (
                f"no database at {path}: run `hstmon ingest DIR` or `hstmon demo` first "
                "(or give --db)"
            )
            raise click.ClickException(msg)


@click.command()
@database_option
@click.option(
    "--port",
    default=8501,
    show_default=True,
    envvar="HSTMON_DASHBOARD_PORT",
    show_envvar=True,
    type=click.IntRange(1, 65535),
    help="Port to serve the dashboard on.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="HSTMON_DASHBOARD_HOST",
    show_envvar=True,
    help="Address to listen on; 0.0.0.0 serves other machines too (the dashboard has no login).",
)
def dashboard(database_url: str | None, port: int, host: str) -> None:
    """Serve the dashboard: trends, the action list, a drilldown for every exposure, and SQL.

    The dashboard only reads the store (read-only connections). Open the URL it prints; an
    exposure's drilldown is at /exposure?exposure=IEPP01UV. Stop it with Ctrl+C.
    """
    url = resolve_database_url(database_url)
    _check_store(url)
    shown = make_url(url).render_as_string(hide_password=True)
    click.echo(f"hstmon dashboard on {shown}")
    click.echo(f"Open http://{host}:{port}/  (Ctrl+C stops it)")
    environment = os.environ | {DATABASE_URL_ENV: url}
    child = subprocess.Popen(streamlit_command(host, port), env=environment)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        code = child.wait()
    except KeyboardInterrupt:  # Ctrl+C reaches streamlit too; let it finish cleanly
        code = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise click.ClickException(f"streamlit exited with status {code}")
