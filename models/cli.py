"""The `hstmon` command line: a thin click group; each room of the project brings its commands.

Subcommands are imported only when called (a lazy group), so `hstmon db upgrade` never loads
Dask or astropy, and this module imports nothing from the rooms downstream of the store.
"""

from __future__ import annotations

import getpass
import importlib
from datetime import UTC, datetime

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from models.database import (
    DATABASE_URL_ENV,
    SchemaRepairError,
    downgrade,
    make_engine,
    resolve_database_url,
    upgrade,
)

__all__ = ["access", "cluster_options", "database_option", "db", "main"]

# name -> "module:attribute" of the click command, and its one-line help for `hstmon --help`.
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "dashboard.demo:demo",
        "Generate a sample archive, ingest it into SQLite, summarise it.",
    ),
    "synth": ("ingest.cli:synth", "Write a synthetic WFC3 jitter-file archive with truth labels."),
    "ingest": ("ingest.cli:ingest", "Ingest JIF/JIT/ASN files from directories into the store."),
    "db": ("models.cli:db", "Create, upgrade or inspect the database schema."),
    "access": (
        "models.cli:access",
        "Who may see proprietary programs: grant, revoke, list, mark.",
    ),
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


@db.command("reader")
@click.argument("role")
@database_option
@click.option(
    "--password",
    envvar="HSTMON_READER_PASSWORD",
    show_envvar=True,
    help="Password to set for the role (default: leave it; trust or ~/.pgpass).",
)
@click.option("--check", "check_only", is_flag=True, help="Only check the role; change nothing.")
def db_reader(database_url: str | None, role: str, password: str | None, check_only: bool) -> None:
    """Create or check ROLE, a PostgreSQL login that can only SELECT hstmon's tables.

    It is the role the dashboard's SQL page runs queries as (`hstmon dashboard --reader-db`):
    row-level security keeps each viewer to the programs they may see, and the role cannot
    write, create, read the server's files, signal other sessions or change its viewer. Run it
    as a superuser on the store's database, again after each `hstmon db upgrade`. It takes from
    PUBLIC, in this database only, EXECUTE on set_config, pg_terminate_backend,
    pg_cancel_backend, the lo_ writers and dblink's functions, and TEMPORARY, giving them back to
    the owner of hstmon's tables.
    """
    from models.reader import ReaderRoleError, check_reader_role, ensure_reader_role, reader_url

    url = resolve_database_url(database_url)
    engine = make_engine(url)
    try:
        if check_only:
            check = check_reader_role(engine, role)
        else:
            for line in ensure_reader_role(engine, role, password):
                click.echo(line)
            check = check_reader_role(engine, role)
    except ReaderRoleError as exc:
        raise click.ClickException(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(f"{_describe(url)}: {exc}") from exc
    finally:
        engine.dispose()
    for table in check.unreadable:
        click.echo(f"warning: {role} cannot read {table}: run `hstmon db reader {role}` again")
    if not check.safe:
        problems = "\n  ".join(check.problems)
        raise click.ClickException(f"{role} is not a safe reader:\n  {problems}")
    click.echo(f"{role} can only read hstmon's tables. Serve the SQL page with:")
    click.echo(f"  hstmon dashboard --reader-db {reader_url(url, role)}")


# --- Program access -------------------------------------------------------------------------------


@click.group()
def access() -> None:
    """Who may see proprietary programs in the dashboard (administrators).

    A program is proprietary when the nightly job saw MAST's exclusive-access rights for it, or
    when marked by hand; the dashboard (every page, the SQL page) and the nightly digest hide it
    from everyone without a grant. Grants name a user (the e-mail their login gives) or a group
    (a name in the login's groups claim).
    """


def _grantee_options(function):  # type: ignore[no-untyped-def]
    function = click.option(
        "--group", "is_group", is_flag=True, help="WHO is a group, not a user."
    )(function)
    function = click.argument("who")(function)
    return click.argument("program", type=click.IntRange(min=1))(function)


def _by_option(function):  # type: ignore[no-untyped-def]
    return click.option(
        "--by",
        "by",
        default=getpass.getuser,
        show_default="your login name",
        help="Who grants or marks, for the record.",
    )(function)


@access.command("grant")
@_grantee_options
@_by_option
@database_option
def access_grant(database_url: str | None, program: int, who: str, is_group: bool, by: str) -> None:
    """Let WHO (a user's e-mail, or a group with --group) see PROGRAM."""
    from models.access import AccessError, grant_access, normalise_user

    kind = "group" if is_group else "user"
    who = who.strip() if is_group else normalise_user(who)
    engine = _store(database_url)
    try:
        added = grant_access(engine, program, who, kind, by)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    click.echo(f"{kind} {who} {'may now see' if added else 'could already see'} program {program}")


@access.command("revoke")
@_grantee_options
@database_option
def access_revoke(database_url: str | None, program: int, who: str, is_group: bool) -> None:
    """Take back WHO's grant to see PROGRAM."""
    from models.access import AccessError, normalise_user, revoke_access

    kind = "group" if is_group else "user"
    who = who.strip() if is_group else normalise_user(who)
    engine = _store(database_url)
    try:
        removed = revoke_access(engine, program, who, kind)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    if not removed:
        raise click.ClickException(f"{kind} {who} had no grant for program {program}")
    click.echo(f"{kind} {who} may no longer see program {program}")


@access.command("mark")
@click.argument("program", type=click.IntRange(min=1))
@click.option(
    "--proprietary/--public",
    required=True,
    help="Hide the program from viewers without a grant, or show it to everyone.",
)
@click.option(
    "--until",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="UTC date its exclusive access ends (proprietary only; default: until marked public).",
)
@_by_option
@database_option
def access_mark(
    database_url: str | None, program: int, proprietary: bool, until: datetime | None, by: str
) -> None:
    """Mark PROGRAM proprietary or public by hand; the nightly job then leaves it alone."""
    from models.access import AccessError, mark_program

    engine = _store(database_url)
    try:
        moment = until.replace(tzinfo=UTC) if until else None
        mark_program(engine, program, proprietary=proprietary, until=moment, marked_by=by)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    state = "proprietary" if proprietary else "public"
    click.echo(
        f"program {program} is {state}" + (f" until {moment:%Y-%m-%d %H:%M} UTC" if moment else "")
    )


@access.command("list")
@click.argument("programs", nargs=-1, type=click.IntRange(min=1))
@database_option
def access_list(database_url: str | None, programs: tuple[int, ...]) -> None:
    """List programs marked proprietary or public, and who may see them (or only PROGRAMS)."""
    from models.access import access_report

    engine = _store(database_url)
    try:
        report = access_report(engine, programs)
    finally:
        engine.dispose()
    if not report:
        click.echo("No program is marked or granted: every program is public.")
    for status in report:
        click.echo(_status_line(status))
        for grant in status.grants:
            click.echo(
                f"    {grant.kind} {grant.grantee} (granted by {grant.granted_by}, "
                f"{grant.granted_at:%Y-%m-%d})"
            )


def _status_line(status) -> str:  # type: ignore[no-untyped-def]
    if status.proprietary:
        state = "proprietary"
        state += f" until {status.exclusive_until:%Y-%m-%d}" if status.exclusive_until else ""
    else:
        state = "public"
    if status.source == "hand":
        origin = f"marked by {status.marked_by}"
    elif status.source == "mast":
        origin = f"MAST: {status.data_rights}"
    else:
        origin = "not marked"
    return f"program {status.proposid}: {state} ({origin}), {len(status.grants)} grant(s)"


def _store(database_url: str | None):  # type: ignore[no-untyped-def]
    """An engine on a store whose schema is current (access writes need program tables)."""
    from models.database import SchemaOutdatedError, ensure_schema

    engine = make_engine(resolve_database_url(database_url))
    try:
        ensure_schema(engine)
    except SchemaOutdatedError as exc:
        engine.dispose()
        raise click.ClickException(str(exc)) from exc
    return engine
