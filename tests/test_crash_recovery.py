"""A run killed at any point and run again leaves the same database as one clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import database_snapshot
from sqlalchemy import Engine, text

from ingest import writer as writer_module
from ingest.pipeline import run_ingest
from models.database import downgrade, upgrade


def _clean_snapshot(engine: Engine, url: str, archive: Path, scheduler: str) -> dict:
    """Wipe the database and ingest once, cleanly: the reference a recovered run must equal."""
    engine.dispose()
    downgrade(url, "base")
    upgrade(url)
    run_ingest([archive], url, scheduler=scheduler)
    return database_snapshot(engine)


def _files_written(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM source_file")).scalar_one()


def test_crash_between_batches_then_rerun_equals_clean_run(
    synthetic_archive: Path,
    database_url: str,
    engine: Engine,
    dask_scheduler: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_write = writer_module.StoreWriter.write
    calls = {"n": 0}

    def crash_on_third_batch(self, outcomes):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_write(self, outcomes)

    monkeypatch.setattr(writer_module.StoreWriter, "write", crash_on_third_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_ingest([synthetic_archive], database_url, scheduler=dask_scheduler)
    monkeypatch.setattr(writer_module.StoreWriter, "write", real_write)
    partial = _files_written(engine)
    with engine.connect() as connection:
        status = connection.execute(text("SELECT status, message FROM ingest_run")).one()
    assert status[0] == "error" and "simulated crash" in status[1]

    rerun = run_ingest([synthetic_archive], database_url, scheduler=dask_scheduler)
    assert 0 < partial < _files_written(engine)
    assert rerun.counts["unchanged"] == partial
    recovered = database_snapshot(engine)
    assert recovered == _clean_snapshot(engine, database_url, synthetic_archive, dask_scheduler)


def test_killed_process_then_rerun_equals_clean_run(
    synthetic_archive: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    command = [
        sys.executable, "-c", "from models.cli import main; main()",
        "ingest", str(synthetic_archive), "--db", database_url, "--workers", "1",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while _files_written(engine) == 0 and process.poll() is None:
        assert time.monotonic() < deadline, "the ingest never committed a batch"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: the CLI and its Dask workers
    process.wait()
    total = len(list(synthetic_archive.rglob("*.fits*")))
    partial = _files_written(engine)
    assert 0 < partial < total, "the kill should land mid-run"

    with engine.connect() as connection:
        killed = connection.execute(text("SELECT status FROM ingest_run")).scalar_one()
    assert killed == "running"  # a killed process cannot close its own run

    run_ingest([synthetic_archive], database_url, scheduler=dask_scheduler)
    with engine.connect() as connection:
        runs = connection.execute(text("SELECT status FROM ingest_run ORDER BY run_id")).all()
    assert [r.status for r in runs] == ["aborted", "succeeded"]  # found dead by the next run
    recovered = database_snapshot(engine)
    assert recovered == _clean_snapshot(engine, database_url, synthetic_archive, dask_scheduler)
