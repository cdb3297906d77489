"""The `hstmon` command line: a thin click group; each room of the project brings its commands.

Subcommands are imported only when called (a lazy group), so `hstmon db upgrade` never loads
Dask or astropy, and this module imports nothing from the rooms downstream of the store.
"""

from __future__ import annotations

import importlib

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from models.database import (
    DATABASE_URL_ENV,
    SchemaRepairError,
    downgrade,
    resolve_database_url,
    upgrade,
)

__all__ = ["cluster_options", "database_option", "main"]

# name -> "module:attribute" of the click command, and its one-line help for `hstmon --help`.
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "dashboard.demo:demo",
        "Generate a sample archive, ingest it into SQLite, summarise it.",
    ),
    "synth": ("ingest.cli:synth", "Write a synthetic WFC3 jitter-file archive with truth labels."),
    "ingest": ("ingest.cli:ingest", "Ingest JIF/JIT/ASN files from directories into the store."),
    "db": ("models.cli:db", "Create, upgrade or inspect the database schema."),
    "analyze": ("analysis.cli:analyze", "Flag anomalous exposures and give HOPR verdicts."),
    "assess": ("analysis.cli:assess", "The exception-report checklist for one visit, as a report."),
    "nightly": (
        "analysis.cli:nightly",
        "The nightly job: MAST download, ingest, analyze, digest of what needs attention.",
    ),
    "dashboard": (
        "dashboard.cli:dashboard",
        "Open the dashboard: trends, drilldowns, SQL (Streamlit).",
    ),
}


def database_option(function):  # type: ignore[no-untyped-def]
    """The --db option every command takes."""
    return click.option(
        "--db",
        "database_url",
        envvar=DATABASE_URL_ENV,
        show_envvar=True,
        metavar="URL",
        help=(
            "Database URL, e.g. sqlite:///hstmon.sqlite or "
            "postgresql://user@host/dbname. Default: an SQLite file in your data directory."
        ),
    )(function)


def cluster_options(function):  # type: ignore[no-untyped-def]
    """The --scheduler and --workers options of every command that runs work on Dask."""
    function = click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="Worker processes for the local cluster. Default: one per CPU core.",
    )(function)
    return click.option(
        "--scheduler",
        metavar="ADDRESS",
        envvar="HSTMON_SCHEDULER",
        show_envvar=True,
        help="Address of a running Dask scheduler to do the parallel work on (e.g. "
        "tcp://10.0.0.5:8786; see docs/cluster.md). Default: start a local cluster here.",
    )(function)


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module_name, attribute = _COMMANDS[cmd_name][0].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the table above, so `hstmon --help` stays fast.
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="hstmon")
def main() -> None:
    """hstmon: a monitoring database for HST exposures (WFC3 first).

    It reads the observing logs of every exposure (the JIF/JIT jitter files that the
    exception-report notebook asks you to inspect by hand) into one SQL database, so guiding
    problems and jitter trends can be queried across whole programs.

    \b
    Start with:   hstmon demo            (sample archive -> SQLite -> summary)
    Your data:    hstmon ingest DIR...   (then query the database with SQL)
    Then:         hstmon analyze         (flags and HOPR verdicts)
    One report:   hstmon assess IEPP01010
    Browse:       hstmon dashboard
    Every night:  hstmon nightly         (MAST -> archive -> database -> digest)
    """


@click.group()
def db() -> None:
    """Create, upgrade or inspect the database schema (alembic migrations)."""


def _describe(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database}"
    return parsed.render_as_string(hide_password=True)


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Create the database schema, or upgrade it to the latest version."""
    url = resolve_database_url(database_url)
    try:
        removed = upgrade(url, revision)
    except (SQLAlchemyError, SchemaRepairError) as exc:
        raise click.ClickException(f"cannot upgrade {_describe(url)}: {exc}") from exc
    if removed:
        click.echo(f"Removed the remains of an unfinished upgrade: {removed.describe()}")
    click.echo(f"Database at revision {revision}: {_describe(url)}")


@db.command("downgrade")
@database_option
@click.option("--revision", default="base", show_default=True, help="Target revision.")
@click.confirmation_option(prompt="This drops tables and their data. Continue?")
def db_downgrade(database_url: str | None, revision: str) -> None:
    """Downgrade the schema (default: remove every hstmon table)."""
    url = resolve_database_url(database_url)
    downgrade(url, revision)
    click.echo(f"Database at revision {revision}: {_describe(url)}")


@db.command("schema")
def db_schema() -> None:
    """Print every table and column with its type, units and meaning (Markdown)."""
    from models.describe import schema_markdown

    click.echo(schema_markdown())


@db.command("url")
@database_option
def db_url(database_url: str | None) -> None:
    """Print the database this command line would use."""
    click.echo(_describe(resolve_database_url(database_url)))
