"""Faults at many moments of a run: each ends clearly, commits nothing by halves, and the same
command again leaves the database one clean run would.

- SIGKILL of a first `hstmon ingest` (schema creation, run row, while workers read, mid-batch,
  before each commit) and of `hstmon analyze`, on SQLite and PostgreSQL;
- a PostgreSQL server stopped mid-ingest and mid-analysis, then started again (a server of the
  test's own, so no other user of a shared server is disturbed);
- a disk that fills under the SQLite file (a file-size limit on the process).
The moments are chosen by the work (the Nth SQL statement or commit), not by a clock.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import database_snapshot, scratch_database
from fault_injection import counts, run_with_fault
from postgres_server import PostgresServer, server_programs_missing
from sqlalchemy import Engine, select, text

from analysis.run import run_analysis
from ingest.pipeline import run_ingest
from ingest.synth import write_archive
from models.database import make_engine
from models.tables import Base

pytestmark = pytest.mark.slow
STORES = ["sqlite", "postgres"]
_ANALYSIS_TABLES = ("flag", "verdict")
_ANALYSIS_VOLATILE = {"flag_id", "verdict_id", "analysis_run_id"}
MID_RUN_COMMIT = {"ingest": 4, "analyze": 3}  # after the schema, the run row and some work


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic exposures with labelled failures plus the genuine jitter files: ~50 files."""
    folder = tmp_path_factory.mktemp("fault-archive")
    write_archive(folder, n_exposures=60, seed=3)
    return folder


@contextmanager
def _store(url: str) -> Iterator[Engine]:
    """An engine on ``url``, disposed however the block ends (a failed assertion included)."""
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _spread(total: int, points: int) -> list[int]:
    """About ``points`` moments from 1 to ``total``, evenly spaced, the last one included."""
    step = max(1, total // points)
    return sorted({*range(1, total + 1, step), total})


def _analysis_snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every flag and verdict, without ids and run numbers."""
    snapshot = {}
    with engine.connect() as connection:
        for name in _ANALYSIS_TABLES:
            table = Base.metadata.tables[name]
            columns = [c for c in table.columns if c.name not in _ANALYSIS_VOLATILE]
            rows = connection.execute(select(*columns)).all()
            snapshot[name] = sorted((tuple(row) for row in rows), key=repr)
    return snapshot


def _ingest_arguments(archive: Path, url: str) -> list[str]:
    return ["ingest", str(archive), "--db", url, "--workers", "1", "--no-progress"]


@pytest.fixture(scope="module", params=STORES)
def clean_ingest(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    small_archive: Path,
) -> Iterator[tuple[str, dict, dict[str, int]]]:
    """A clean first ingest of each store: its snapshot and how many statements/commits it sent."""
    folder = tmp_path_factory.mktemp("clean")
    with scratch_database(request.param, folder, "hstmon_fault") as url:
        run = run_with_fault("none", _ingest_arguments(small_archive, url))
        assert run.returncode == 0, run.stderr
        # A run that ends well says nothing on stderr: no Dask shutdown chatter after its summary.
        said = [line for line in run.stderr.splitlines() if not line.startswith("statements=")]
        assert said == [], run.stderr
        with _store(url) as engine:
            snapshot = database_snapshot(engine)
        yield request.param, snapshot, counts(run.stderr)


def test_first_ingest_killed_at_any_moment_then_rerun_equals_a_clean_run(
    clean_ingest: tuple[str, dict, dict[str, int]],
    small_archive: Path,
    tmp_path: Path,
    dask_scheduler: str,
) -> None:
    kind, clean, sent = clean_ingest
    faults = [f"statement:{n}" for n in _spread(sent["statements"], 6)]
    faults += [f"commit:{n}" for n in range(1, sent["commits"] + 1)]
    for fault in faults:
        folder = tmp_path / fault.replace(":", "-")
        folder.mkdir()
        with scratch_database(kind, folder, "hstmon_fault") as url:
            killed = run_with_fault(fault, _ingest_arguments(small_archive, url))
            assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr)
            run_ingest([small_archive], url, scheduler=dask_scheduler, progress=False)
            with _store(url) as engine:
                assert database_snapshot(engine) == clean, f"{kind}: killed at {fault}"


def test_analysis_killed_at_any_moment_then_rerun_equals_a_clean_analysis(
    clean_ingest: tuple[str, dict, dict[str, int]],
    small_archive: Path,
    tmp_path: Path,
    dask_scheduler: str,
) -> None:
    kind, _, _ = clean_ingest
    with scratch_database(kind, tmp_path / "reference", "hstmon_fault") as url:
        run_ingest([small_archive], url, scheduler=dask_scheduler, progress=False)
        analysed = run_with_fault("none", ["analyze", "--db", url])
        assert analysed.returncode == 0, analysed.stderr
        sent = counts(analysed.stderr)
        with _store(url) as engine:
            clean = _analysis_snapshot(engine)
    assert clean["flag"] and clean["verdict"]
    faults = [f"statement:{n}" for n in _spread(sent["statements"], 4)]
    faults += [f"commit:{n}" for n in range(1, sent["commits"] + 1)]
    for fault in faults:
        folder = tmp_path / fault.replace(":", "-")
        folder.mkdir()
        with scratch_database(kind, folder, "hstmon_fault") as url:
            run_ingest([small_archive], url, scheduler=dask_scheduler, progress=False)
            killed = run_with_fault(fault, ["analyze", "--db", url])
            assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr)
            run_analysis(url)  # what `hstmon analyze` runs, in this process
            with _store(url) as engine, engine.connect() as connection:
                assert _analysis_snapshot(engine) == clean, f"{kind}: killed at {fault}"
                statuses = connection.execute(
                    text("SELECT status FROM analysis_run ORDER BY run_id")
                ).scalars()
                assert list(statuses)[-1] == "succeeded"


# --- a PostgreSQL server that goes away mid-run ---------------------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server this test may stop and start."""
    reason = server_programs_missing()
    if reason:
        pytest.skip(f"cannot start a PostgreSQL server of the test's own: {reason}")
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


def _database_on(server: PostgresServer, name: str) -> str:
    with (
        _store(server.url) as engine,
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection,
    ):
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def _last_line_is_one_readable_error(stderr: str) -> str:
    last = stderr.strip().splitlines()[-2]  # the line before fault_injection's counts
    assert last.startswith("Error: "), stderr
    assert not any(f"/{room}/" in stderr for room in ("ingest", "models", "analysis")), stderr
    return last


@pytest.mark.parametrize("stage", ["ingest", "analyze"])
def test_postgres_stopped_mid_run_fails_clearly_and_the_same_command_completes(
    own_postgres: PostgresServer,
    small_archive: Path,
    tmp_path: Path,
    dask_scheduler: str,
    stage: str,
) -> None:
    """The server stops (fast shutdown) at a commit of the run; it comes back; rerun."""
    url = _database_on(own_postgres, "interrupted")
    if stage == "analyze":
        run_ingest([small_archive], url, scheduler=dask_scheduler, progress=False)
        arguments = ["analyze", "--db", url]
    else:
        arguments = _ingest_arguments(small_archive, url)
    # The server stops just before a commit in the middle of the run (after the run row and,
    # for the ingest, its first batches).
    stop = " ".join(own_postgres.stop_command("fast"))
    stopped = run_with_fault(f"call:{MID_RUN_COMMIT[stage]}:{stop}", arguments)
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    last = _last_line_is_one_readable_error(stopped.stderr)
    assert "the database is unreachable or went away" in last and "run the same command" in last

    own_postgres.start()
    again = run_with_fault("none", arguments)
    assert again.returncode == 0, again.stderr
    clean_url = _database_on(own_postgres, "clean")
    run_ingest([small_archive], clean_url, scheduler=dask_scheduler, progress=False)
    if stage == "analyze":
        run_analysis(clean_url)
    with _store(clean_url) as clean_engine, _store(url) as engine:
        assert database_snapshot(engine) == database_snapshot(clean_engine)
        assert _analysis_snapshot(engine) == _analysis_snapshot(clean_engine)


# --- a disk that fills ------------------------------------------------------------------------


def _limit_file_size(limit_bytes: int) -> None:
    """In the child: files may not grow past the limit; a write beyond it fails (EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def test_disk_full_under_sqlite_fails_clearly_and_the_same_command_completes(
    small_archive: Path, tmp_path: Path, dask_scheduler: str
) -> None:
    url = f"sqlite:///{tmp_path / 'full.sqlite'}"
    command = [sys.executable, "-c", "from models.cli import main; main()",
               *_ingest_arguments(small_archive, url)]  # fmt: skip
    full = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False,
        preexec_fn=lambda: _limit_file_size(1_500_000),
    )  # fmt: skip
    assert full.returncode == 1, full.stdout + full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the disk holding the database refused a write"), full.stderr
    assert "Traceback" not in full.stderr, full.stderr
    with _store(url) as engine, engine.connect() as connection:
        written = connection.execute(text("SELECT count(*) FROM source_file")).scalar_one()
    files = sum(1 for _ in small_archive.rglob("*.fits*"))
    assert written < files, "the limit should stop the run before its end"

    run_ingest([small_archive], url, scheduler=dask_scheduler, progress=False)
    reference = tmp_path / "reference"
    reference.mkdir()
    with scratch_database("sqlite", reference) as clean_url:
        run_ingest([small_archive], clean_url, scheduler=dask_scheduler, progress=False)
        with _store(clean_url) as clean_engine, _store(url) as engine:
            assert database_snapshot(engine) == database_snapshot(clean_engine)
