"""`hstmon dashboard`: serve the Streamlit dashboard on a store (read-only)."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from types import FrameType

import click
from sqlalchemy.engine import make_url

from dashboard.environment import ANONYMOUS_ENV, GROUPS_CLAIM_ENV, READER_URL_ENV
from models.cli import database_option
from models.database import DATABASE_URL_ENV, resolve_database_url

__all__ = [
    "APP_PATH",
    "dashboard",
    "dashboard_hint",
    "login_secrets",
    "streamlit_command",
]

APP_PATH = Path(__file__).resolve().parent / "app.py"


def streamlit_command(host: str, port: int, secrets: Path | None = None) -> list[str]:
    """The `streamlit run` command line that serves the dashboard on ``host:port``, headless
    (with the secrets, login included, of ``secrets`` when given)."""
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    if secrets is not None:
        command += ["--secrets.files", str(secrets)]
    return command


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


def login_secrets(secrets: Path | None) -> Path | None:
    """The secrets file that configures a login (an ``[auth]`` section), or None.

    ``secrets`` when given, else where Streamlit looks: ~/.streamlit/secrets.toml, then
    .streamlit/secrets.toml in the current folder.
    """
    candidates = (
        [secrets]
        if secrets is not None
        else [Path.home() / ".streamlit" / "secrets.toml", Path(".streamlit") / "secrets.toml"]
    )
    for path in candidates:
        if not path.is_file():
            continue
        try:
            parsed = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise click.ClickException(f"cannot read the secrets in {path}: {exc}") from exc
        if parsed.get("auth"):
            return path
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _who_is_anonymous(host: str, login: Path | None, no_auth: bool) -> str:
    """Who a visitor without a login is: the operator ("everything") or the public."""
    if login is not None:
        if no_auth:
            msg = f"--no-auth contradicts the login configured in {login}"
            raise click.UsageError(msg)
        return "public"  # every page asks for the login first
    if _is_loopback(host):
        return "everything"  # one person at their own machine, who holds the store's URL
    if not no_auth:
        msg = (
            f"{host} serves other machines, and no login is configured: add an [auth] section "
            "to .streamlit/secrets.toml (see the README's deployment section) or give --secrets "
            "FILE, or serve without a login with --no-auth (public programs only)"
        )
        raise click.UsageError(msg)
    click.echo(
        f"warning: serving {host} without a login (--no-auth): anyone who reaches the port sees "
        "every public program; proprietary programs are hidden from everyone",
        err=True,
    )
    return "public"


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
    help="Address to listen on; any but this machine's own (127.0.0.1) needs a login "
    "configured, or --no-auth.",
)
@click.option(
    "--reader-db",
    "reader_url",
    envvar=READER_URL_ENV,
    show_envvar=True,
    metavar="URL",
    help="Database URL the SQL page runs queries with: on PostgreSQL the reader role of "
    "`hstmon db reader` (a superuser or the tables' owner is refused). Default: --db.",
)
@click.option(
    "--secrets",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="HSTMON_DASHBOARD_SECRETS",
    show_envvar=True,
    help="Streamlit secrets file with the login ([auth]). Default: .streamlit/secrets.toml "
    "here, or in your home folder.",
)
@click.option(
    "--groups-claim",
    default="groups",
    show_default=True,
    envvar=GROUPS_CLAIM_ENV,
    show_envvar=True,
    help="The login's claim that lists a person's groups (grants may name groups).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve an address other than 127.0.0.1 without a login: visitors see public programs "
    "only.",
)
def dashboard(
    database_url: str | None,
    port: int,
    host: str,
    reader_url: str | None,
    secrets: Path | None,
    groups_claim: str,
    no_auth: bool,
) -> None:
    """Serve the dashboard: trends, the action list, a drilldown for every exposure, and SQL.

    The dashboard only reads the store (read-only connections), and each viewer sees only the
    programs they may see (`hstmon access`). On 127.0.0.1 without a login it is yours alone and
    shows everything; to serve a team, configure a login (OpenID Connect, in
    .streamlit/secrets.toml) and give the reader role (`hstmon db reader`). Open the URL it
    prints; an exposure's drilldown is at /exposure?exposure=IEPP01UV. Stop it with Ctrl+C.
    """
    url = resolve_database_url(database_url)
    _check_store(url)
    login = login_secrets(secrets)
    anonymous = _who_is_anonymous(host, login, no_auth)
    shown = make_url(url).render_as_string(hide_password=True)
    click.echo(f"hstmon dashboard on {shown}")
    if login is not None:
        click.echo(f"Login required (configured in {login})")
    click.echo(f"Open http://{host}:{port}/  (Ctrl+C stops it)")
    environment = os.environ | {
        DATABASE_URL_ENV: url,
        ANONYMOUS_ENV: anonymous,
        GROUPS_CLAIM_ENV: groups_claim,
    }
    if reader_url:
        environment[READER_URL_ENV] = resolve_database_url(reader_url)
    child = subprocess.Popen(streamlit_command(host, port, secrets), env=environment)

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
