"""Finish what a killed schema upgrade of an older hstmon left behind on SQLite.

hstmon now upgrades a schema in one transaction, so a kill leaves it as it was. Older releases
let SQLite commit each CREATE and ALTER on its own: a process killed mid-upgrade left tables,
columns and indexes of the next revision beside an ``alembic_version`` that still named the
previous one, and the upgrade could never run again (``table analysis_run already exists``).
The repair compares the store with the schema its recorded revision should have (built by the
same migrations in an in-memory database) and removes what lies beyond it, as long as that holds
no data: the objects of an unfinished upgrade are empty by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.pool import StaticPool

from models.tables import Base

__all__ = ["SchemaRepairError", "SchemaSurplus", "remove_unfinished_upgrade"]


class SchemaRepairError(RuntimeError):
    """The store differs from its recorded revision in a way that removing cannot mend."""


@dataclass
class SchemaSurplus:
    """What a store holds beyond the schema of its recorded revision."""

    tables: list[str] = field(default_factory=list)
    columns: dict[str, list[str]] = field(default_factory=dict)  # table -> columns
    indexes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tables or self.columns or self.indexes)

    def describe(self) -> str:
        parts = [f"table {name}" for name in self.tables]
        parts += [f"column {t}.{c}" for t, cols in self.columns.items() for c in cols]
        parts += [f"index {name}" for name in self.indexes]
        return ", ".join(parts)


@dataclass(frozen=True)
class _Shape:
    columns: dict[str, set[str]]  # table -> column names
    indexes: dict[str, str]  # index name -> table


def _shape(connection: Connection, known: set[str] | None = None) -> _Shape:
    """Tables (those in ``known``, or all), their columns and named indexes.

    alembic's batch copies (``_alembic_tmp_*``) always count: a store may hold other
    applications' tables, which are never hstmon's to judge.
    """
    inspector = inspect(connection)
    columns: dict[str, set[str]] = {}
    indexes: dict[str, str] = {}
    for table in inspector.get_table_names():
        if known is not None and table not in known and not table.startswith("_alembic_tmp_"):
            continue
        columns[table] = {column["name"] for column in inspector.get_columns(table)}
        for index in inspector.get_indexes(table):
            if index["name"]:
                indexes[index["name"]] = table
    return _Shape(columns, indexes)


def _recorded_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _expected_shape(config: Config, revision: str | None) -> _Shape:
    """The schema the migrations build up to ``revision``, in a throwaway in-memory store."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        with engine.begin() as connection:
            if revision is not None:
                config.attributes["connection"] = connection
                try:
                    command.upgrade(config, revision)
                finally:
                    del config.attributes["connection"]
            return _shape(connection)
    finally:
        engine.dispose()


def _surplus(actual: _Shape, expected: _Shape) -> SchemaSurplus:
    missing = [t for t in expected.columns if t not in actual.columns]
    missing += [
        f"{t}.{c}"
        for t, cols in expected.columns.items()
        if t in actual.columns
        for c in sorted(cols - actual.columns[t])
    ]
    if missing:
        msg = f"the schema lacks {', '.join(missing)} of its recorded revision"
        raise SchemaRepairError(msg)
    surplus = SchemaSurplus()
    surplus.tables = sorted(t for t in actual.columns if t not in expected.columns)
    for table, cols in sorted(expected.columns.items()):
        extra = sorted(actual.columns[table] - cols)
        if extra:
            surplus.columns[table] = extra
    surplus.indexes = sorted(
        name
        for name, table in actual.indexes.items()
        if name not in expected.indexes and table not in surplus.tables
    )
    return surplus


def _check_empty(connection: Connection, surplus: SchemaSurplus) -> None:
    """Refuse to remove anything that holds data: that is not an unfinished upgrade."""
    holding = [
        table
        for table in surplus.tables
        if connection.execute(text(f'SELECT 1 FROM "{table}" LIMIT 1')).first() is not None
    ]
    holding += [
        f"{table}.{column}"
        for table, columns in surplus.columns.items()
        for column in columns
        if connection.execute(
            text(f'SELECT 1 FROM "{table}" WHERE "{column}" IS NOT NULL LIMIT 1')
        ).first()
        is not None
    ]
    if holding:
        msg = (
            f"the schema holds {', '.join(holding)} beyond its recorded revision, with data: "
            "not the remains of an unfinished upgrade, so nothing was removed"
        )
        raise SchemaRepairError(msg)


def _remove(connection: Connection, surplus: SchemaSurplus) -> None:
    for index in surplus.indexes:
        connection.execute(text(f'DROP INDEX "{index}"'))
    operations = Operations(MigrationContext.configure(connection))
    for table, columns in surplus.columns.items():
        # A batch (copy-and-move) drop also works for columns under a foreign key or index.
        with operations.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column)
    for table in surplus.tables:
        connection.execute(text(f'DROP TABLE "{table}"'))


def remove_unfinished_upgrade(connection: Connection, config: Config) -> SchemaSurplus:
    """Remove, inside the caller's transaction, what lies beyond the recorded revision.

    Returns what was removed (empty when the store matched its revision). Raises
    SchemaRepairError, removing nothing, when the surplus holds data or when objects of the
    recorded revision are missing.
    """
    expected = _expected_shape(config, _recorded_revision(connection))
    ours = set(expected.columns) | set(Base.metadata.tables)
    surplus = _surplus(_shape(connection, ours), expected)
    if surplus:
        _check_empty(connection, surplus)
        _remove(connection, surplus)
    return surplus
