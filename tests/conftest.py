"""Shared fixtures: genuine HST files, real SQLite and PostgreSQL databases, a Dask cluster."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dask.distributed import LocalCluster
from postgres_server import PostgresServer, server_programs_missing
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from models.database import make_engine, resolve_database_url, upgrade
from models.tables import Base

REAL_DATA = Path(__file__).resolve().parent / "data" / "real"
POSTGRES_URL_ENV = "HSTMON_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of genuine HST files kept with the tests (read-only: copy before editing)."""
    return REAL_DATA


_throwaway_server: list[PostgresServer] = []  # started at most once, on first need


def _postgres_admin_url() -> str:
    """The server the PostgreSQL tests use: the one named, else a throwaway one of our own."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        return url
    if not _throwaway_server:
        reason = server_programs_missing()
        if reason:
            pytest.skip(
                f"no PostgreSQL for this test: {POSTGRES_URL_ENV} is unset and {reason} "
                "(.ci/run sets the variable)"
            )
        server = PostgresServer()
        server.start()
        _throwaway_server.append(server)
    return _throwaway_server[0].url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for server in _throwaway_server:
        server.remove()


@contextmanager
def scratch_postgres_database(prefix: str = "hstmon_test") -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped when the block ends."""
    admin_url = make_url(_postgres_admin_url()).set(drivername="postgresql+psycopg")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def scratch_database(kind: str, folder: Path, prefix: str = "hstmon_test") -> Iterator[str]:
    """An empty database of ``kind`` ("sqlite" in ``folder``, or "postgres") for a module."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'store.sqlite'}"
        return
    with scratch_postgres_database(prefix) as url:
        yield url


@contextmanager
def reader_role(url: str) -> Iterator[str]:
    """A reader role made by `hstmon db reader` on the PostgreSQL store at ``url`` (uniquely
    named: the server is shared), as a URL; the role is dropped when the block ends."""
    from models.reader import ensure_reader_role, reader_url

    role = f"hstmon_reader_{uuid.uuid4().hex[:12]}"
    engine = make_engine(url)
    try:
        ensure_reader_role(engine, role)
        yield resolve_database_url(reader_url(url, role))
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP OWNED BY "{role}"'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        engine.dispose()


@contextmanager
def sql_page_url(url: str) -> Iterator[str]:
    """The URL the SQL page runs queries with on the store at ``url``: the file itself on
    SQLite, a reader role on PostgreSQL (the page refuses the suite's superuser)."""
    if make_url(url).get_backend_name() == "sqlite":
        yield url
        return
    with reader_role(url) as reader:
        yield reader


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with scratch_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hstmon.sqlite'}"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each kind the suite runs against."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A database of each kind, with the schema at head."""
    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """A real local Dask cluster (two worker processes) shared by the suite."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


_VOLATILE_COLUMNS = {
    "ingest_run_id", "ingested_at", "mtime_ns", "updated_at", "first_ingested_at",
}  # fmt: skip
_FILE_ID_COLUMNS = {"file_id", "jif_file_id", "jit_file_id", "sci_file_id"}
SNAPSHOT_TABLES = (
    "association", "exposure", "jitter_sample", "fits_header", "source_file",
    "image_metric", "psf_measurement", "image_preview", "file_warning",
)  # fmt: skip


def database_snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of the data tables, file ids replaced by paths, run bookkeeping left out.

    Two databases with equal snapshots hold the same data, however their runs went.
    """
    snapshot: dict[str, list[tuple]] = {}
    with engine.connect() as connection:
        paths = dict(connection.execute(text("SELECT file_id, path FROM source_file")).all())
        for table in SNAPSHOT_TABLES:
            result = connection.execute(select(Base.metadata.tables[table]))
            columns = list(result.keys())
            rows = []
            for row in result:
                values = []
                for column, value in zip(columns, row, strict=True):
                    if column in _VOLATILE_COLUMNS:
                        continue
                    values.append(paths.get(value) if column in _FILE_ID_COLUMNS else value)
                rows.append(tuple(values))
            snapshot[table] = sorted(rows, key=repr)
    return snapshot


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded synthetic WFC3 archive (jitter files + truth.csv), shared read-only by tests."""
    from ingest.synth import write_archive

    directory = tmp_path_factory.mktemp("synthetic-archive")
    write_archive(directory, n_exposures=600, seed=7)
    return directory
