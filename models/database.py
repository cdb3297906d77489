"""Where the store lives and how to reach it: URL resolution, engines, and schema upgrades."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import platformdirs
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from models.schema_repair import SchemaRepairError, SchemaSurplus, remove_unfinished_upgrade

__all__ = [
    "DATABASE_URL_ENV",
    "SchemaOutdatedError",
    "SchemaRepairError",
    "alembic_config",
    "default_database_url",
    "downgrade",
    "ensure_schema",
    "lost_database_message",
    "make_engine",
    "resolve_database_url",
    "upgrade",
]

DATABASE_URL_ENV = "HSTMON_DATABASE_URL"


def default_database_url() -> str:
    """The embedded default: an SQLite file in the user's data directory."""
    data_dir = Path(platformdirs.user_data_dir("hstmon", appauthor=False))
    return f"sqlite:///{data_dir / 'hstmon.sqlite'}"


def resolve_database_url(url: str | None = None) -> str:
    """The URL to use: the one given, else $HSTMON_DATABASE_URL, else the default SQLite file.

    ``postgresql://`` URLs are pointed at the psycopg 3 driver, the one hstmon ships with.
    """
    chosen = url or os.environ.get(DATABASE_URL_ENV) or default_database_url()
    parsed = make_url(chosen)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the dashboard read while an ingest writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str | None = None) -> Engine:
    """An engine for the store; creates the SQLite file's folder when needed."""
    resolved = make_url(resolve_database_url(url))
    if resolved.get_backend_name() == "sqlite":
        if resolved.database and resolved.database != ":memory:":
            Path(resolved.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(resolved, poolclass=NullPool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(resolved, pool_pre_ping=True)


def alembic_config(url: str | None = None) -> Config:
    """An alembic Config for the migrations shipped inside the package."""
    script_location = files("migrations")
    config = Config(str(script_location / "alembic.ini"))
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", resolve_database_url(url).replace("%", "%%"))
    return config


class SchemaOutdatedError(RuntimeError):
    """The database's schema is older than this hstmon: `hstmon db upgrade` brings it up."""


# Key of the PostgreSQL advisory lock held while one process creates or upgrades the schema.
_SCHEMA_LOCK_KEY = 0x68737473  # "hsts"


def _schema_engine(url: str) -> Engine:
    """An engine whose transactions can hold DDL and keep other schema writers out.

    Python's sqlite3 driver opens a transaction only before INSERT/UPDATE/DELETE, so SQLite DDL
    would commit statement by statement and a process killed mid-upgrade would leave half a
    schema. With the driver's own transaction handling off, BEGIN IMMEDIATE is issued instead:
    the whole upgrade is one transaction, and its write lock is taken before the current
    revision is read, so two processes creating the schema at once run one after the other.
    Foreign keys stay off (SQLite's default) so batch migrations may copy and move tables.
    """
    resolved = make_url(resolve_database_url(url))
    if resolved.get_backend_name() != "sqlite":
        return create_engine(resolved, poolclass=NullPool)
    if resolved.database and resolved.database != ":memory:":
        Path(resolved.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(resolved, poolclass=NullPool, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _driver_autocommit(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def _schema_transaction(url: str) -> Iterator[Connection]:
    """One transaction that only one schema writer at a time may hold, on either store."""
    engine = _schema_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                )
            yield connection
    finally:
        engine.dispose()


def _current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def _upgrade_in(connection: Connection, url: str, revision: str) -> SchemaSurplus:
    """Run the migrations up to ``revision`` inside the caller's transaction.

    On SQLite, what an older hstmon's killed upgrade left beyond the recorded revision (empty
    tables, columns and indexes) is removed first and returned.
    """
    removed = SchemaSurplus()
    if connection.dialect.name == "sqlite":
        removed = remove_unfinished_upgrade(connection, alembic_config("sqlite://"))
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    return removed


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one at an older revision, politely.

    The check and the creation are one transaction under the schema lock, so two runs started
    at once on an empty database create it once, and a run killed while creating it leaves the
    database empty. A database without a recorded revision gets the whole schema (after the
    empty remains of an older hstmon's killed creation are removed).
    """
    url = engine.url.render_as_string(hide_password=False)
    with _schema_transaction(url) as connection:
        current = _current_revision(connection)
        if current is None:
            try:
                _upgrade_in(connection, url, "head")
            except SchemaRepairError as exc:
                where = engine.url.render_as_string(hide_password=True)
                raise SchemaOutdatedError(f"cannot create the schema in {where}: {exc}") from exc
            return
    head = _head_revision(url)
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        msg = (
            f"the database {where} has schema revision {current or 'none'}, this hstmon needs "
            f"{head}: run `hstmon db upgrade` (with the same --db) first"
        )
        raise SchemaOutdatedError(msg)


def upgrade(url: str | None = None, revision: str = "head") -> SchemaSurplus:
    """Create or upgrade the schema of the database at ``url`` to ``revision``.

    One transaction under the schema lock: killed at any moment, the schema stays as it was.
    Returns what was removed of an older hstmon's unfinished upgrade (SQLite); raises
    SchemaRepairError, changing nothing, when those remains hold data.
    """
    resolved = resolve_database_url(url)
    with _schema_transaction(resolved) as connection:
        return _upgrade_in(connection, resolved, revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Downgrade the schema of the database at ``url`` to ``revision`` (default: empty).

    One transaction under the schema lock, like :func:`upgrade`.
    """
    resolved = resolve_database_url(url)
    with _schema_transaction(resolved) as connection:
        config = alembic_config(resolved)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def lost_database_message(exc: DBAPIError) -> str:
    """What to tell a person when the database failed under a command (down, restarted...)."""
    lines = str(exc.orig or exc).strip().splitlines()
    detail = lines[0] if lines else type(exc).__name__
    if any(sign in detail for sign in ("disk is full", "No space left", "disk I/O error")):
        return (
            f"the disk holding the database refused a write ({detail}: full, over a file-size "
            "limit, or failing). Work committed before that is kept; free some space and run "
            "the same command again to finish."
        )
    if isinstance(exc, OperationalError | InterfaceError):
        return (
            f"the database is unreachable or went away ({detail}). Work committed before "
            "that is kept; run the same command again when the database is back to finish."
        )
    return f"the database refused the work: {detail}"
