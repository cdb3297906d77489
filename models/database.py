"""Where the store lives and how to reach it: URL resolution, engines, and schema upgrades."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import platformdirs
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

__all__ = [
    "DATABASE_URL_ENV",
    "SchemaOutdatedError",
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


# Key of the PostgreSQL advisory lock held while one process creates the schema ("hsts").
_SCHEMA_LOCK_KEY = 0x68737473


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one at an older revision, politely.

    On PostgreSQL the check and the creation happen under an advisory lock, so two runs started
    at once on an empty database do not both try to create it.
    """
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            connection.commit()
        try:
            _create_or_check(engine, connection)
        finally:
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                )
                connection.commit()


def _create_or_check(engine: Engine, connection: Connection) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    url = engine.url.render_as_string(hide_password=False)
    current = MigrationContext.configure(connection).get_current_revision()
    connection.rollback()
    if current is None:
        upgrade(url)
        return
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        msg = (
            f"the database {where} has schema revision {current}, this hstmon needs {head}: "
            "run `hstmon db upgrade` (with the same --db) first"
        )
        raise SchemaOutdatedError(msg)


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Create or upgrade the schema of the database at ``url`` to ``revision``."""
    resolved = make_url(resolve_database_url(url))
    if resolved.get_backend_name() == "sqlite" and resolved.database:
        Path(resolved.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Downgrade the schema of the database at ``url`` to ``revision`` (default: empty)."""
    command.downgrade(alembic_config(url), revision)


def lost_database_message(exc: DBAPIError) -> str:
    """What to tell a person when the database failed under a command (down, restarted...)."""
    lines = str(exc.orig or exc).strip().splitlines()
    detail = lines[0] if lines else type(exc).__name__
    if isinstance(exc, OperationalError | InterfaceError):
        return (
            f"the database is unreachable or went away ({detail}). Work committed before "
            "that is kept; run the same command again when the database is back to finish."
        )
    return f"the database refused the work: {detail}"
