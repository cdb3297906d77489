"""Ingest on a real Dask cluster: losing a worker changes nothing; losing the cluster fails fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import database_snapshot, scratch_postgres_database
from dask.distributed import Client, LocalCluster
from sqlalchemy import Engine, text

from ingest.pipeline import ClusterError, run_ingest
from ingest.synth import write_archive
from models.database import make_engine, upgrade

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # the venv's bin/: the `dask` and `hstmon` scripts
# ~800 files. Workers parse faster than the writer commits, up to ~500 files ahead of it (the
# pipeline's tasks in flight): only an archive larger than that plus a batch still has files
# being read when the first batch is committed.
N_EXPOSURES = 1000
# How long a run, or a failure, may take before the test calls it a hang (seconds).
PATIENCE = 60


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("scale-out-archive")
    write_archive(directory, N_EXPOSURES, seed=11, gzip=True)
    return directory


@pytest.fixture(scope="module")
def clean_runs() -> dict[str, tuple[dict, dict]]:
    """Per store kind, the snapshot and counts of one clean run of `archive` (made on demand)."""
    return {}


def _clean_run(
    cache: dict[str, tuple[dict, dict]], kind: str, archive: Path, scheduler: str, tmp: Path
) -> tuple[dict, dict]:
    """What one uninterrupted run of ``archive`` writes into a fresh store of this kind."""
    if kind not in cache:
        with _fresh_database(kind, tmp) as url:
            upgrade(url)
            summary = run_ingest([archive], url, scheduler=scheduler, progress=False)
            engine = make_engine(url)
            cache[kind] = (database_snapshot(engine), summary.as_json())
            engine.dispose()
    return cache[kind]


@contextmanager
def _fresh_database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'clean.sqlite'}"
    else:
        with scratch_postgres_database("hstmon_clean") as url:
            yield url


def _fits_files(archive: Path) -> int:
    return sum(1 for p in archive.rglob("*") if p.name.endswith((".fits", ".fits.gz")))


def _files_committed(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM source_file")).scalar_one()


def _last_run(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT status, counts, message FROM ingest_run ORDER BY run_id DESC")
        ).first()
    assert row is not None, "no ingest_run row"
    counts = json.loads(row.counts) if isinstance(row.counts, str) else row.counts
    return {"status": row.status, "counts": counts, "message": row.message}


def _wait_until(ready: Callable[[], bool], running: Callable[[], bool], what: str) -> None:
    """Poll until ``ready()``; fail loudly if the run ends first (the kill would come too late)."""
    deadline = time.monotonic() + PATIENCE
    while not ready():
        assert running(), f"the run ended before {what}: make the archive larger"
        assert time.monotonic() < deadline, f"no {what} within {PATIENCE} s"
        time.sleep(0.01)


def _busy(client: Client, worker: str) -> Callable[[], bool]:
    """Whether ``worker`` holds tasks right now."""
    return lambda: bool(client.processing([worker])[worker])


def _committed_while_busy(engine: Engine, client: Client, worker: str) -> Callable[[], bool]:
    """Some files are committed and ``worker`` holds tasks: a kill now lands mid-run."""
    return lambda: _files_committed(engine) > 0 and _busy(client, worker)()


def _assert_mid_run(engine: Engine, archive: Path) -> None:
    """Right after a kill: some but not all files are committed."""
    committed, total = _files_committed(engine), _fits_files(archive)
    assert 0 < committed < total, f"{committed} of {total} files committed: the kill missed"


def _tasks_lost_with(client: Client, worker: str) -> list[str]:
    """The tasks ``worker`` held when it died, which the scheduler then gave to others."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        for _, event in client.get_events(worker):
            if isinstance(event, dict) and event.get("action") == "remove-worker":
                return list(event["processing-tasks"])
        time.sleep(0.1)
    pytest.fail(f"the scheduler never removed the killed worker {worker}")


def test_local_cluster_worker_killed_mid_run_leaves_the_clean_runs_data(
    archive: Path, database_url: str, engine: Engine, clean_runs: dict, tmp_path: Path
) -> None:
    # The pool closes last: were the run to hang, closing the cluster first would end it.
    with (
        ThreadPoolExecutor(1) as pool,
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        victim, victim_pid = sorted(client.run(os.getpid).items())[0]
        run = pool.submit(
            run_ingest, [archive], database_url, scheduler=cluster.scheduler_address, progress=False
        )
        ready = _committed_while_busy(engine, client, victim)
        _wait_until(ready, lambda: not run.done(), "a commit while the worker was busy")
        os.kill(victim_pid, signal.SIGKILL)  # its nanny starts a new worker process
        _assert_mid_run(engine, archive)
        summary = run.result(timeout=PATIENCE)
        assert _tasks_lost_with(client, victim), "the worker died holding no task"
        snapshot, counts = _clean_run(
            clean_runs, engine.dialect.name, archive, cluster.scheduler_address, tmp_path
        )

    assert summary.as_json() == counts
    assert summary.counts == {"ingested": _fits_files(archive)}
    assert _last_run(engine) == {"status": "succeeded", "counts": counts, "message": None}
    assert database_snapshot(engine) == snapshot


def test_a_task_whose_workers_keep_dying_fails_the_run_naming_the_scheduler(
    archive: Path, database_url: str, engine: Engine
) -> None:
    with (
        ThreadPoolExecutor(1) as pool,
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        # Give up on a task the first time its worker dies (distributed's default is 3 deaths).
        cluster.scheduler.allowed_failures = 0
        victim, victim_pid = sorted(client.run(os.getpid).items())[0]
        run = pool.submit(
            run_ingest, [archive], database_url, scheduler=cluster.scheduler_address, progress=False
        )
        _wait_until(_busy(client, victim), lambda: not run.done(), "a task on the worker")
        os.kill(victim_pid, signal.SIGKILL)
        with pytest.raises(ClusterError) as raised:
            run.result(timeout=PATIENCE)

    address = cluster.scheduler_address
    assert f"the Dask cluster at {address} could not read the files: Attempted to run" in str(
        raised.value
    )
    run_row = _last_run(engine)
    assert run_row["status"] == "error" and address in run_row["message"]
    assert _files_committed(engine) < _fits_files(archive)


@contextmanager
def _process(
    command: list[str | Path], tmp: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """A process in a group of its own, killed with its children when the block ends.

    Its stdout and stderr go to ``tmp/name.out`` and ``tmp/name.err``.
    """
    with (tmp / f"{name}.out").open("w") as out, (tmp / f"{name}.err").open("w") as err:
        process = subprocess.Popen(
            [str(part) for part in command],
            stdout=out,
            stderr=err,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class _Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]  # each a `dask worker`: a nanny and its worker process


@contextmanager
def _dask_cluster(tmp: Path, **scheduler_env: str) -> Iterator[_Cluster]:
    """`dask scheduler` on 127.0.0.1 and two one-thread `dask worker`s, as an admin starts them."""
    scheduler_file = tmp / "scheduler.json"
    with ExitStack() as stack:
        command = [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0"]
        command += ["--scheduler-file", scheduler_file, "--no-dashboard"]
        scheduler = stack.enter_context(_process(command, tmp, "scheduler", scheduler_env))
        address = _scheduler_address(scheduler_file, scheduler)
        command = [BIN / "dask", "worker", "--scheduler-file", scheduler_file]
        command += ["--nthreads", "1", "--no-dashboard"]
        workers = [stack.enter_context(_process(command, tmp, f"worker{i}")) for i in range(2)]
        with Client(address) as client:
            client.wait_for_workers(2, timeout=PATIENCE)
        yield _Cluster(address, scheduler, workers)


def _scheduler_address(scheduler_file: Path, scheduler: subprocess.Popen) -> str:
    deadline = time.monotonic() + PATIENCE
    while True:
        assert scheduler.poll() is None, "dask scheduler exited (see scheduler.err)"
        assert time.monotonic() < deadline, f"dask scheduler wrote no {scheduler_file}"
        with suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.05)


def _hstmon_ingest(
    archive: Path, url: str, scheduler: str, tmp: Path, env: dict[str, str] | None = None
) -> AbstractContextManager[subprocess.Popen]:
    """The real `hstmon ingest` command line, as a `_process` named "ingest"."""
    command = [BIN / "hstmon", "ingest", archive, "--db", url, "--scheduler", scheduler]
    return _process([*command, "--no-progress"], tmp, "ingest", env)


def _last_error_line(tmp: Path) -> str:
    """The error `hstmon ingest` ended with: click's one readable line, not an exception's.

    (Dask's client may log its own reconnection tracebacks before it.)"""
    written = (tmp / "ingest.err").read_text()
    lines = written.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), written
    return lines[-1]


def _wait_for_tasks(address: str, running: Callable[[], bool]) -> None:
    """Return once the scheduler at ``address`` has a task running on a worker."""
    with Client(address) as client:
        _wait_until(lambda: any(client.processing().values()), running, "a task ran")


def test_dask_cli_cluster_losing_a_worker_mid_run_leaves_the_clean_runs_data(
    archive: Path, database_url: str, engine: Engine, clean_runs: dict, tmp_path: Path
) -> None:
    with _dask_cluster(tmp_path) as cluster, Client(cluster.address) as client:
        lost = cluster.workers[0]
        victim = next(a for a, ppid in client.run(os.getppid).items() if ppid == lost.pid)
        with _hstmon_ingest(archive, database_url, cluster.address, tmp_path) as ingest:
            ready = _committed_while_busy(engine, client, victim)
            _wait_until(ready, lambda: ingest.poll() is None, "a commit while the worker was busy")
            os.killpg(lost.pid, signal.SIGKILL)  # one whole `dask worker`: nanny and worker
            _assert_mid_run(engine, archive)
            returncode = ingest.wait(timeout=PATIENCE)
        assert _tasks_lost_with(client, victim), "the worker died holding no task"
        snapshot, counts = _clean_run(
            clean_runs, engine.dialect.name, archive, cluster.address, tmp_path
        )

    assert returncode == 0, (tmp_path / "ingest.err").read_text()
    assert counts["files_ingested"] == _fits_files(archive)
    assert _last_run(engine) == {"status": "succeeded", "counts": counts, "message": None}
    assert database_snapshot(engine) == snapshot


def test_unreachable_scheduler_fails_within_the_connect_timeout_naming_it(
    archive: Path, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    # Dask's connect timeout (default 30 s) bounds the wait; 1 s keeps the suite quick.
    timeout = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    started = time.monotonic()
    with _hstmon_ingest(archive, database_url, "tcp://127.0.0.1:1", tmp_path, timeout) as ingest:
        returncode = ingest.wait(timeout=PATIENCE)

    assert returncode != 0
    assert time.monotonic() - started < PATIENCE
    error = _last_error_line(tmp_path)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in error
    assert "after 1 s" in error
    run = _last_run(engine)
    assert run["status"] == "error" and "tcp://127.0.0.1:1" in run["message"]


def test_cluster_lost_mid_run_fails_the_run_naming_the_scheduler(
    archive: Path, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    with (
        _dask_cluster(tmp_path) as cluster,
        _hstmon_ingest(archive, database_url, cluster.address, tmp_path) as ingest,
    ):
        _wait_for_tasks(cluster.address, lambda: ingest.poll() is None)
        for process in [cluster.scheduler, *cluster.workers]:
            os.killpg(process.pid, signal.SIGKILL)
        returncode = ingest.wait(timeout=PATIENCE)

    assert returncode != 0
    assert f"lost the Dask scheduler at {cluster.address}" in _last_error_line(tmp_path)
    run = _last_run(engine)
    assert run["status"] == "error" and cluster.address in run["message"]
    assert _files_committed(engine) < _fits_files(archive)


def test_every_worker_lost_fails_after_the_schedulers_no_workers_timeout(
    archive: Path, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    no_workers_timeout = {"DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": "1s"}
    with (
        _dask_cluster(tmp_path, **no_workers_timeout) as cluster,
        _hstmon_ingest(archive, database_url, cluster.address, tmp_path) as ingest,
    ):
        _wait_for_tasks(cluster.address, lambda: ingest.poll() is None)
        for process in cluster.workers:
            os.killpg(process.pid, signal.SIGKILL)
        returncode = ingest.wait(timeout=PATIENCE)

    assert returncode != 0
    error = _last_error_line(tmp_path)
    assert f"the Dask cluster at {cluster.address} could not read the files" in error
    assert "without any running workers" in error
    assert _last_run(engine)["status"] == "error"
    assert _files_committed(engine) < _fits_files(archive)
