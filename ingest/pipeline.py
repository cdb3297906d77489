"""`hstmon ingest`: discover files, parse them on a Dask cluster, stream records to the writer."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from dask.distributed import Client, LocalCluster, as_completed
from distributed.scheduler import KilledWorker, NoWorkerError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from tqdm import tqdm

from ingest.reader import StoredFile, read_file, unchanged_on_disk
from ingest.records import FileOutcome
from ingest.writer import StoreWriter, load_stored_files, with_copy_rows
from models.database import ensure_schema, make_engine
from models.runs import abort_dead_local_runs, close_run, open_run, this_process
from models.tables import IngestRun

__all__ = ["ClusterError", "IngestSummary", "dask_client", "discover", "run_ingest"]

_FITS_SUFFIXES = (".fits", ".fits.gz")
# Tasks are chunks of files: each Dask task costs ~1 ms of scheduling, a small jitter file ~5 ms.
_MAX_FILES_PER_TASK = 16
# Enough queued work that workers keep parsing while the writer commits a batch, few enough that
# results waiting for the writer stay small (~16 files x ~200 kB a task).
_TASKS_IN_FLIGHT_PER_WORKER = 16
# ...but never more than this in all: results wait for the one writer, whose pace does not grow
# with the cluster (64 tasks ~ 1,000 files ~ 200 MB waiting, however many workers).
_MAX_TASKS_IN_FLIGHT = 64
# How long a stopped run waits for results already on their way before closing the client.
_ABANDON_WAIT_S = 5.0
# A batch is one transaction: large enough to amortise commits, small enough to keep memory flat.
_BATCH_SAMPLES = 40_000
_BATCH_FILES = 200


class ClusterError(RuntimeError):
    """The Dask cluster cannot read the files: scheduler unreachable or lost, tasks given up."""


@dataclass
class IngestSummary:
    """What a run did; ``failed`` decides the exit status."""

    run_id: int
    database_url: str
    files_seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    exposures: int = 0
    samples: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # keyword values that could not be read

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "files_seen": self.files_seen,
            **{f"files_{status}": n for status, n in sorted(self.counts.items())},
            "exposures_written": self.exposures,
            "samples_written": self.samples,
            "keyword_warnings": len(self.warnings),
        }


def discover(paths: Sequence[str | Path]) -> list[str]:
    """Every FITS file under ``paths`` (files or directory trees), as sorted absolute paths."""
    found: set[str] = set()
    for given in paths:
        path = Path(given).expanduser().resolve()
        if path.is_file():
            found.add(str(path))
        elif path.is_dir():
            found.update(
                str(p) for p in path.rglob("*") if p.name.endswith(_FITS_SUFFIXES) and p.is_file()
            )
        else:
            msg = f"{given}: no such file or directory"
            raise FileNotFoundError(msg)
    return sorted(found)


def read_files(
    paths: list[str], stored: dict[str, StoredFile], retry_failed: bool, encode_copy: bool
) -> list[FileOutcome]:
    """The Dask task: read a chunk of files (paths in, records out; no database on workers).

    With ``encode_copy`` the samples also come encoded for PostgreSQL's COPY, which spreads that
    work over the workers rather than the single writer.
    """
    outcomes = [read_file(p, stored.get(p), retry_failed=retry_failed) for p in paths]
    if encode_copy:
        for outcome in outcomes:
            if outcome.record:
                outcome.record.samples = [with_copy_rows(b) for b in outcome.record.samples]
    return outcomes


@contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Client]:
    """A client of the given scheduler, or of a local cluster of ``workers`` processes."""
    if scheduler:
        # The connect timeout is Dask's `distributed.comm.timeouts.connect` (default 30 s).
        try:
            client = Client(scheduler)
        except OSError as exc:
            msg = f"cannot reach the Dask scheduler at {scheduler}: {exc}"
            raise ClusterError(msg) from exc
        with client:
            yield client
        return
    n_workers = workers or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        # Any free port: the default 8787 is taken when another cluster runs on this machine.
        dashboard_address=":0",
        # Workers and scheduler of a local cluster log to this terminal. What they would say
        # (lost heartbeats as the cluster shuts down, an unresponsive event loop) is nothing a
        # user can act on; what goes wrong with the work reaches the run as task errors.
        silence_logs=logging.CRITICAL,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        with _dask_logs_muted():
            client.close()
            cluster.close()


@contextmanager
def _dask_logs_muted() -> Iterator[None]:
    """Silence Dask's own logging in this process while a finished local cluster shuts down.

    Workers and scheduler closing one after the other may log the comms they lose on the way
    ("CommClosedError: Stream is closed"): nothing a user can act on, printed after the run's
    own last line. Errors during the run itself are not affected.
    """
    loggers = [logging.getLogger(name) for name in ("distributed", "tornado")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def _client_for(
    client: Client | None, scheduler: str | None, workers: int | None
) -> Iterator[Client]:
    """The caller's client when given (left open), else one made for this run."""
    if client is not None:
        yield client
        return
    with dask_client(scheduler, workers) as made:
        yield made


def _needing_work(files: list[str], stored: dict[str, StoredFile]) -> list[str]:
    """Files whose size or mtime differ from an ingested copy's, or that were never ingested."""
    needing = []
    for path in files:
        stat = os.stat(path)
        if not unchanged_on_disk(stored.get(path), stat.st_size, stat.st_mtime_ns):
            needing.append(path)
    return needing


def _chunks(paths: list[str], n_workers: int) -> list[list[str]]:
    size = max(1, min(_MAX_FILES_PER_TASK, len(paths) // (n_workers * 8) or 1))
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def _close(engine: Engine, summary: IngestSummary, status: str, message: str | None) -> None:
    close_run(engine, IngestRun, summary.run_id, status, summary.as_json(), message)


def _close_after_error(engine: Engine, summary: IngestSummary, exc: BaseException) -> None:
    """Record why the run stopped, if the store can still be told (it may be what failed)."""
    try:
        _close(engine, summary, "error", f"{type(exc).__name__}: {exc}")
    except DBAPIError:
        # The store is gone: the row stays 'running' without finished_at, which says "killed";
        # the caller reports the original error.
        engine.dispose()


class _Batcher:
    """Collects outcomes and hands the writer one transaction's worth at a time."""

    def __init__(self, writer: StoreWriter, summary: IngestSummary) -> None:
        self.writer, self.summary = writer, summary
        self.pending: list[FileOutcome] = []
        self.pending_samples = 0

    def add(self, outcomes: list[FileOutcome]) -> None:
        self.pending += outcomes
        self.pending_samples += sum(o.record.n_samples for o in outcomes if o.record)
        if self.pending_samples >= _BATCH_SAMPLES or len(self.pending) >= _BATCH_FILES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.writer.write(self.pending)
        for outcome in self.pending:
            counts = self.summary.counts
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.record:
                self.summary.exposures += len(outcome.record.exposures)
                self.summary.samples += outcome.record.n_samples
                self.summary.warnings += [w["message"] for w in outcome.record.warnings]
            if outcome.status == "failed":
                self.summary.failures.append((outcome.path, outcome.error or ""))
        self.pending, self.pending_samples = [], 0


def run_ingest(
    paths: Sequence[str | Path],
    database_url: str | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    progress: bool | None = None,
    client: Client | None = None,
    parent: dict[str, Any] | None = None,
) -> IngestSummary:
    """Ingest every jitter file under ``paths`` into the store; returns what happened.

    Files are parsed in parallel on Dask (``client``, else one of ``scheduler``, else a local
    cluster); one writer on this process commits batches. Files already ingested with the same
    content are not parsed again. ``parent`` is recorded in the run's parameters (e.g. the
    nightly run that started it).
    """
    files = discover(paths)
    engine = make_engine(database_url)
    ensure_schema(engine)
    parameters = {
        "paths": [str(p) for p in paths],
        "scheduler": scheduler,
        "workers": workers,
        "retry_failed": retry_failed,
        **this_process(),
        **(parent or {}),
    }
    abort_dead_local_runs(engine, IngestRun)
    run_id = open_run(engine, IngestRun, parameters=parameters)
    summary = IngestSummary(run_id, engine.url.render_as_string())
    summary.files_seen = len(files)
    try:
        with engine.connect() as connection:
            stored = load_stored_files(connection)
        batcher = _Batcher(StoreWriter(engine, summary.run_id), summary)
        to_read = _needing_work(files, stored)
        if len(to_read) < len(files):
            summary.counts["unchanged"] = len(files) - len(to_read)
        if to_read:
            encode_copy = engine.dialect.name == "postgresql"
            task = partial(read_files, retry_failed=retry_failed, encode_copy=encode_copy)
            with _client_for(client, scheduler, workers) as chosen:
                _stream(chosen, to_read, stored, task, batcher, progress)
        batcher.flush()
    except BaseException as exc:
        _close_after_error(engine, summary, exc)
        engine.dispose()
        raise
    _close(engine, summary, "failed" if summary.failed else "succeeded", None)
    engine.dispose()
    return summary


def _stream(
    client: Client,
    files: list[str],
    stored: dict[str, StoredFile],
    task: Callable[..., list[FileOutcome]],
    batcher: _Batcher,
    progress: bool | None,
) -> None:
    """Keep a bounded number of chunks in flight and write results as they arrive."""
    n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})) or 1)
    chunks = iter(_chunks(files, n_workers))
    in_flight = as_completed(with_results=True)

    def submit_next() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            subset = {p: stored[p] for p in chunk if p in stored}
            in_flight.add(client.submit(task, chunk, subset, pure=False))

    for _ in range(min(n_workers * _TASKS_IN_FLIGHT_PER_WORKER, _MAX_TASKS_IN_FLIGHT)):
        submit_next()
    show = sys.stderr.isatty() if progress is None else progress
    exposures_seen = 0
    try:
        with tqdm(total=len(files), unit="file", disable=not show, leave=False) as bar:
            for outcomes in _results(in_flight, client.scheduler.address):
                submit_next()
                batcher.add(outcomes)
                exposures_seen += sum(len(o.record.exposures) for o in outcomes if o.record)
                bar.update(len(outcomes))
                bar.set_postfix(exposures=exposures_seen, failed=batcher.summary.failed)
    except BaseException:
        _abandon(client, in_flight)
        raise


def _abandon(client: Client, in_flight: as_completed) -> None:
    """Cancel the tasks still in flight when the run stops (the writer failed, say), and let
    results already on their way arrive (a few seconds at most): closing the client under them
    makes Dask log each one as an error, burying the reason the run stopped."""
    pending = list(in_flight.futures)
    if pending and client.status == "running":
        client.cancel(pending)
        deadline = time.monotonic() + _ABANDON_WAIT_S
        while in_flight.futures and time.monotonic() < deadline:
            time.sleep(0.05)
    in_flight.clear()


def _results(in_flight: as_completed, scheduler: str) -> Iterator[list[FileOutcome]]:
    """Each task's outcomes as it finishes; a cluster that cannot run the tasks is an error.

    Dask reruns the tasks of a worker that dies; it gives up on a task after its workers died
    ``distributed.scheduler.allowed-failures`` times (KilledWorker), or when no worker joins
    within the scheduler's ``no-workers-timeout`` (NoWorkerError).
    """
    try:
        for _, outcomes in in_flight:
            if isinstance(outcomes, BaseException):
                # Task errors raise from `in_flight`, but a cancelled task comes back as its
                # reason: that happens when this client loses the scheduler.
                reason = getattr(outcomes, "reason", outcomes)
                msg = f"lost the Dask scheduler at {scheduler} (task cancelled: {reason})"
                raise ClusterError(msg)
            yield outcomes
    except (KilledWorker, NoWorkerError) as exc:
        msg = f"the Dask cluster at {scheduler} could not read the files: {exc}"
        raise ClusterError(msg) from exc
