"""Ingests running at once, and a database that goes away mid-run.

Two `hstmon ingest` processes over overlapping trees write one store at the same time: the result
equals one clean run over the union (no duplicate, no lost row). PostgreSQL stopped mid-run: the
run fails with a message saying what happened and what to do; running it again completes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import database_snapshot
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from ingest.pipeline import run_ingest
from models.database import downgrade, upgrade


def _hstmon(*arguments: str) -> list[str]:
    return [sys.executable, "-c", "from models.cli import main; main()", *arguments]


def _overlapping_trees(archive: Path) -> tuple[list[Path], list[Path]]:
    """The first two thirds of the program folders, and the last two thirds."""
    programs = sorted(p for p in archive.iterdir() if p.is_dir())
    third = len(programs) // 3
    assert third >= 1, "the archive needs at least three programs"
    return programs[: 2 * third], programs[third:]


def _clean_snapshot(engine: Engine, url: str, paths: list[Path], scheduler: str) -> dict:
    engine.dispose()
    downgrade(url, "base")
    upgrade(url)
    run_ingest(paths, url, scheduler=scheduler, progress=False)
    return database_snapshot(engine)


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar_one()


def test_two_ingests_of_overlapping_trees_at_once_lose_and_duplicate_nothing(
    synthetic_archive: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    upgrade(database_url)
    tree_a, tree_b = _overlapping_trees(synthetic_archive)
    commands = [
        _hstmon("ingest", *map(str, tree), "--db", database_url, "--scheduler", dask_scheduler,
                "--no-progress")
        for tree in (tree_a, tree_b)
    ]  # fmt: skip
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, out + err

    with engine.connect() as connection:
        runs = connection.execute(
            text("SELECT started_at, finished_at, status FROM ingest_run ORDER BY run_id")
        ).all()
    assert [run.status for run in runs] == ["succeeded", "succeeded"]
    (start_a, end_a, _), (start_b, end_b, _) = runs
    assert start_a < end_b and start_b < end_a, "the two runs did not overlap in time"

    together = database_snapshot(engine)
    samples = _count(engine, "SELECT count(*) FROM jitter_sample")
    union = sorted(set(tree_a) | set(tree_b))
    clean = _clean_snapshot(engine, database_url, union, dask_scheduler)
    assert samples == _count(engine, "SELECT count(*) FROM jitter_sample") > 0
    assert together == clean


def _postgres_cluster() -> list[str]:
    """`pg_ctlcluster VERSION main` for the local server, or skip when this machine has none."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        pytest.skip("no local PostgreSQL cluster to restart (pg_ctlcluster)")
    versions = sorted(os.listdir("/etc/postgresql"))
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _postgres_ready(url: str, timeout: float = 60) -> None:
    host = make_url(url).host or "127.0.0.1"
    deadline = time.monotonic() + timeout
    while subprocess.run(["pg_isready", "-h", host], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.2)


def test_postgres_stopped_mid_run_fails_clearly_and_a_rerun_completes(
    synthetic_archive: Path, postgres_url: str, dask_scheduler: str
) -> None:
    from models.database import make_engine

    cluster = _postgres_cluster()
    host = make_url(postgres_url).host
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip(f"PostgreSQL at {host} is not this machine's to restart")
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    process = subprocess.Popen(
        _hstmon("ingest", str(synthetic_archive), "--db", postgres_url,
                "--scheduler", dask_scheduler, "--no-progress"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _count(engine, "SELECT count(*) FROM source_file") == 0:
            assert process.poll() is None, "the ingest ended before it could be interrupted"
            assert time.monotonic() < deadline, "the ingest never committed a batch"
            time.sleep(0.02)
        engine.dispose()
        subprocess.run([*cluster, "stop", "-m", "fast"], check=True, capture_output=True)
        out, err = process.communicate(timeout=180)
    finally:
        subprocess.run([*cluster, "start"], capture_output=True)
        _postgres_ready(postgres_url)
        if process.poll() is None:
            process.kill()

    assert process.returncode == 1, out + err
    # The run ends with click's one readable line, not an exception of hstmon's. (Dask's client
    # may log its own tracebacks as it closes with results still on their way.)
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: the database is unreachable or went away"), err
    assert "run the same command again" in last, err
    assert not any(f"/{room}/" in err for room in ("ingest", "models", "analysis")), err
    partial = _count(engine, "SELECT count(*) FROM source_file")
    files = sum(1 for p in synthetic_archive.rglob("*.fits.gz"))
    assert 0 < partial < files, "the stop did not land mid-run"

    rerun = run_ingest([synthetic_archive], postgres_url, scheduler=dask_scheduler)
    assert rerun.counts["unchanged"] == partial
    assert rerun.failed == 0
    recovered = database_snapshot(engine)
    clean = _clean_snapshot(engine, postgres_url, [synthetic_archive], dask_scheduler)
    assert recovered == clean
    engine.dispose()


def test_two_analyses_at_once_write_one_consistent_result(
    synthetic_archive: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from analysis.run import run_analysis

    run_ingest([synthetic_archive], database_url, scheduler=dask_scheduler, progress=False)
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: run_analysis(database_url, full=True), range(2)))

    assert [run.exposures_analyzed for run in runs] == [600, 600]
    flags = _count(engine, "SELECT count(*) FROM flag")
    assert flags == sum(runs[0].flags.values()) > 0
    assert _count(engine, "SELECT count(DISTINCT exposure_id) FROM verdict") == 600
    assert _count(engine, "SELECT count(*) FROM analysis_state") == 600
