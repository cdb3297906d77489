"""Alembic is the only way the schema changes: models and migrations must agree on both stores."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from models.database import downgrade, make_engine, upgrade
from models.tables import Base


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_autogenerate_finds_nothing_to_migrate(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == [], (
        "models/ and migrations/ disagree: run alembic revision --autogenerate"
    )


def test_upgrade_and_downgrade_round_trip(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    created = _tables(empty_database_url)
    assert created == set(Base.metadata.tables) | {"alembic_version"}
    downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) == {"alembic_version"}
    upgrade(empty_database_url)
    assert _tables(empty_database_url) == created


def test_upgrade_is_idempotent(database_url: str) -> None:
    upgrade(database_url)
    assert "exposure" in _tables(database_url)
