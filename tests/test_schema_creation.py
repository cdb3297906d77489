"""Creating or upgrading the schema is all or nothing; older half-made schemas are mended."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import scratch_database
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import StaticPool

from models.database import (
    SchemaOutdatedError,
    SchemaRepairError,
    alembic_config,
    ensure_schema,
    make_engine,
    upgrade,
)
from models.tables import Base

ROOT = Path(__file__).resolve().parents[1]

# Runs `upgrade(URL)` and SIGKILLs itself just before the Nth SQL statement it sends (0: never),
# then prints how many statements it sent.
_KILL_AT_STATEMENT = """
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
limit, seen = int(sys.argv[1]), [0]

@event.listens_for(Engine, "before_cursor_execute")
def _count(*_args):
    seen[0] += 1
    if seen[0] == limit:
        os.kill(os.getpid(), signal.SIGKILL)

from models.database import upgrade
upgrade(sys.argv[2])
print(seen[0])
"""


def _upgrade_killed_at(statement: int, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _KILL_AT_STATEMENT, str(statement), url],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _differences(url: str) -> list:
    """What autogenerate finds between the store and the models (nothing for a clean schema)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_schema_creation_killed_at_any_statement_leaves_an_empty_database(
    kind: str, tmp_path: Path
) -> None:
    """SIGKILL before one statement of the creation at a time: never half a schema."""
    with scratch_database(kind, tmp_path / "clean") as url:
        clean = _upgrade_killed_at(0, url)
        assert clean.returncode == 0, clean.stderr
        total = int(clean.stdout.split()[-1])
    assert total > 50  # the migrations' DDL, the version stamp, the lock
    moments = sorted({*range(1, total, max(1, total // 10)), total - 1, total})
    for statement in moments:
        folder = tmp_path / f"kill{statement}"
        folder.mkdir()
        with scratch_database(kind, folder) as url:
            killed = _upgrade_killed_at(statement, url)
            assert killed.returncode == -signal.SIGKILL, (statement, killed.stderr)
            assert _tables(url) == set(), f"killed before statement {statement}"
            ensure_schema_engine = make_engine(url)
            ensure_schema(ensure_schema_engine)  # what the next `hstmon ingest` does first
            ensure_schema_engine.dispose()
            assert _differences(url) == []


def _schema_sql_at(revision: str) -> dict[str, str]:
    """CREATE statements of the tables and indexes at ``revision``, from an in-memory SQLite."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    with engine.begin() as connection:
        config = alembic_config("sqlite://")
        config.attributes["connection"] = connection
        from alembic import command

        command.upgrade(config, revision)
        rows = connection.execute(
            text("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
        ).all()
    engine.dispose()
    return dict(rows)


def _half_upgraded(url: str) -> None:
    """What an older hstmon killed in its 0001 -> 0002 upgrade left: 0001, plus part of 0002."""
    upgrade(url, "0001")
    at_0002 = _schema_sql_at("0002")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(at_0002["analysis_run"]))
        connection.execute(text("ALTER TABLE exposure ADD COLUMN drift_trend_v2_mas FLOAT"))
        connection.execute(text("ALTER TABLE exposure ADD COLUMN updated_at DATETIME"))
        connection.execute(text(at_0002["ix_exposure_updated_at"]))
    engine.dispose()


def test_db_upgrade_mends_the_half_made_schema_an_older_hstmon_left(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'half.sqlite'}"
    _half_upgraded(url)
    with pytest.raises(SchemaOutdatedError, match="revision 0001"):
        ensure_schema(make_engine(url))
    removed = upgrade(url)
    assert removed.tables == ["analysis_run"]
    assert removed.columns == {"exposure": ["drift_trend_v2_mas", "updated_at"]}
    assert removed.indexes == ["ix_exposure_updated_at"]
    assert _differences(url) == []
    assert not upgrade(url)  # nothing left to mend


def test_remains_that_hold_data_are_never_removed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'half.sqlite'}"
    _half_upgraded(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO analysis_run (started_at, status, rules) "
                "VALUES ('2026-01-01', 'running', '{}')"
            )
        )
    before = _tables(url)
    with pytest.raises(SchemaRepairError, match="analysis_run"):
        upgrade(url)
    assert _tables(url) == before
    engine.dispose()


def test_other_applications_tables_in_the_store_are_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE someone_elses (x INTEGER)"))
    ensure_schema(engine)
    engine.dispose()
    assert "someone_elses" in _tables(url)
    assert "exposure" in _tables(url)
