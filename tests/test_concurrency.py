"""Ingests and analyses running at once on one store.

Two `hstmon ingest` processes over overlapping trees write one store at the same time: the result
equals one clean run over the union (no duplicate, no lost row). Two analyses at once write one
consistent result. (A database that goes away mid-run: tests/test_fault_matrix.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import database_snapshot
from sqlalchemy import Engine, text

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
