"""`hstmon nightly`: what MAST released since the last good night -> download -> ingest ->
analyze -> digest, unattended and restartable.

Every stage is incremental on its own (a present file is not fetched again, an ingested file is
not parsed again, an unchanged exposure is not analysed again), so a run that died at any stage is
finished by the next one: its discovery window starts where the last *succeeded* run's ended.
A file whose download failed for good reason (4xx, not FITS) does not hold the window back: it
is recorded in ``download_failure`` and tried again on its own, slower schedule.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import DBAPIError

from analysis.digest import Digest, OutstandingFile, build_digest, digest_json, write_digest
from analysis.download_failures import (
    RETRY_AFTER,
    Outstanding,
    read_outstanding,
    record_downloads,
    split_due,
)
from analysis.run import run_analysis
from ingest.mast import (
    SKIP_REASONS,
    Discovery,
    DownloadOutcome,
    MastProduct,
    MastSelection,
    download_products,
    find_products,
    resolve_token,
    split_present,
)
from ingest.pipeline import IngestSummary, dask_client, run_ingest
from models.access import Viewer, hidden_programs, record_data_rights, summarize_rights
from models.database import ensure_schema, make_engine
from models.locks import job_lock
from models.runs import open_run, this_process
from models.tables import IngestRun, NightlyRun

__all__ = ["NightlyOptions", "NightlyResult", "discovery_window", "run_nightly"]

# With no earlier successful run and no --since, look this far back (a week of deliveries).
FIRST_RUN_LOOKBACK = timedelta(days=7)


@dataclass(frozen=True)
class NightlyOptions:
    """What one nightly run is asked to do. The MAST token is never stored anywhere."""

    archive_root: Path
    selection: MastSelection = field(default_factory=MastSelection)
    database_url: str | None = None
    since: datetime | None = None
    overlap: timedelta = timedelta(days=1)
    scheduler: str | None = None
    workers: int | None = None
    token: str | None = None
    retries: int = 3
    retry_wait_s: float = 2.0
    retry_schedule: tuple[timedelta, ...] = RETRY_AFTER
    digest_dir: Path | None = None
    rules_file: Path | None = None
    today: date | None = None
    progress: bool | None = None

    def as_json(self) -> dict[str, Any]:
        """The parameters a run records (everything but the token)."""
        return {
            "selection": self.selection.as_json(),
            "archive_root": str(self.archive_root),
            "overlap_hours": self.overlap.total_seconds() / 3600,
            "since": self.since.isoformat() if self.since else None,
            "scheduler": self.scheduler,
            "workers": self.workers,
            "retries": self.retries,
            "retry_schedule_days": [wait / timedelta(days=1) for wait in self.retry_schedule],
            "rules_file": str(self.rules_file) if self.rules_file else None,
            "with_token": self.token is not None,
        }


@dataclass
class NightlyResult:
    """How a run ended and what it found; ``digest_paths`` are the files written."""

    run_id: int
    status: str
    window: tuple[datetime | None, datetime]
    counts: dict[str, Any]
    digest: Digest | None = None
    digest_paths: dict[str, Path] = field(default_factory=dict)
    aborted_runs: list[int] = field(default_factory=list)


def discovery_window(
    engine: Engine, options: NightlyOptions, now: datetime
) -> tuple[datetime | None, datetime]:
    """From the last succeeded run's end (less the overlap), or --since, up to now.

    The overlap re-asks MAST about the edge of the last window: products released late within
    it are found, and already-present ones cost nothing. Before any run has succeeded, the
    window starts where the first run's did (7 days back, or its --since), so the failed first
    nights are covered whole.
    """
    if options.since is not None:
        return options.since, now
    same_field = NightlyRun.date_field == options.selection.date_field
    with engine.connect() as connection:
        last_end = connection.execute(
            select(func.max(NightlyRun.window_end)).where(
                same_field, NightlyRun.status == "succeeded"
            )
        ).scalar()
        first_start = connection.execute(
            select(func.min(NightlyRun.window_start)).where(same_field)
        ).scalar()
    if last_end is not None:
        return _as_utc(last_end) - options.overlap, now
    if first_start is not None:
        return _as_utc(first_start), now
    return now - FIRST_RUN_LOOKBACK, now


def _as_utc(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes for timezone-aware columns.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def abort_dead_runs(engine: Engine) -> list[int]:
    """Mark as aborted the nightly runs (and their ingests) whose process died mid-run.

    Called while holding the nightly lock, so no other nightly run can be alive.
    """
    now = datetime.now(UTC)
    with engine.begin() as connection:
        dead = list(
            connection.execute(
                select(NightlyRun.run_id).where(NightlyRun.status == "running")
            ).scalars()
        )
        if not dead:
            return []
        connection.execute(
            update(NightlyRun)
            .where(NightlyRun.run_id.in_(dead))
            .values(
                status="aborted",
                finished_at=now,
                message="its process stopped before the run finished; the next run covered it",
            )
        )
        running_ingests = connection.execute(
            select(IngestRun.run_id, IngestRun.parameters).where(IngestRun.status == "running")
        )
        orphans = [
            row.run_id
            for row in running_ingests
            if (row.parameters or {}).get("nightly_run_id") in dead
        ]
        if orphans:
            connection.execute(
                update(IngestRun)
                .where(IngestRun.run_id.in_(orphans))
                .values(status="aborted", finished_at=now, message="its nightly run died")
            )
    return dead


class _Run:
    """The nightly_run row of this run, updated as stages begin and end."""

    def __init__(self, engine: Engine, options: NightlyOptions, window: tuple) -> None:
        self.engine = engine
        self.counts: dict[str, Any] = {}
        self.run_id = open_run(
            engine,
            NightlyRun,
            stage="discover",
            date_field=options.selection.date_field,
            window_start=window[0],
            window_end=window[1],
            parameters=options.as_json(),
            **this_process(),
        )

    def update(self, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(NightlyRun)
                .where(NightlyRun.run_id == self.run_id)
                .values(counts=dict(self.counts), **values)
            )

    @contextmanager
    def stage(self, name: str, **values: Any) -> Iterator[None]:
        """Record that stage ``name`` began (for a run that dies in it) and how long it took."""
        self.update(stage=name, **values)
        started = time.perf_counter()
        yield
        self.counts.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 2)

    def finish(self, status: str, message: str | None = None, **values: Any) -> None:
        self.update(status=status, finished_at=datetime.now(UTC), message=message, **values)


def run_nightly(options: NightlyOptions) -> NightlyResult:
    """One night's work; raises LockBusyError when another nightly run holds the lock."""
    engine = make_engine(options.database_url)
    try:
        ensure_schema(engine)
        with job_lock(engine, "nightly"):
            aborted = abort_dead_runs(engine)
            window = discovery_window(engine, options, datetime.now(UTC))
            run = _Run(engine, options, window)
            try:
                result = _stages(engine, options, run, window)
            except BaseException as exc:
                _record_error(run, exc)
                raise
            result.aborted_runs = aborted
            return result
    finally:
        engine.dispose()


def _record_error(run: _Run, exc: BaseException) -> None:
    """Say why the run stopped, if the database can still be told (it may be what failed)."""
    try:
        run.finish("error", f"{type(exc).__name__}: {exc}")
    except DBAPIError:
        # The store itself is gone; the next run finds this one 'running' and marks it aborted.
        run.engine.dispose()


def _stages(engine: Engine, options: NightlyOptions, run: _Run, window: tuple) -> NightlyResult:
    with run.stage("discover"):
        discovery, wanted, to_fetch, present = _discover(engine, options, run, window)
    # One Dask client for downloads and parsing; none started on a night with nothing to do.
    with ExitStack() as cluster:
        client = (
            cluster.enter_context(dask_client(options.scheduler, options.workers))
            if to_fetch
            else None
        )
        with run.stage("download"):
            outcomes = _download(options, to_fetch, client)
            record_downloads(
                engine, run.run_id, wanted, outcomes, present, window[1], options.retry_schedule
            )
            _count_downloads(run.counts, outcomes)
        with run.stage("ingest"):
            ingest = _ingest(options, run, client)
    with run.stage("analyze", ingest_run_id=ingest.run_id if ingest else None):
        analysis = run_analysis(
            options.database_url, rules_file=options.rules_file, today=options.today
        )
        run.counts["exposures_analyzed"] = analysis.exposures_analyzed
    with run.stage("digest", analysis_run_id=analysis.run_id):
        report = _night_report(engine, run, discovery, outcomes, ingest, options.archive_root)
        digest = _digest(engine, run, analysis.run_id, report, window, options.today)
        stem = f"nightly-{run.run_id:05d}-{window[1]:%Y%m%d}"
        paths = write_digest(digest, _digest_dir(options), stem)
    status, message = _ending(run.counts)
    run.finish(status, message, digest=_stored_digest(digest_json(digest), paths))
    return NightlyResult(run.run_id, status, window, run.counts, digest, paths)


def _discover(
    engine: Engine, options: NightlyOptions, run: _Run, window: tuple
) -> tuple[Discovery, list[MastProduct], list[MastProduct], list[MastProduct]]:
    """(what MAST listed, tonight's products, those to fetch, those already in place).

    Proprietary products are asked for only with a token; outstanding files come in when due.
    """
    selection = replace(
        options.selection,
        since=window[0],
        until=window[1],
        public_only=resolve_token(options.token) is None,
    )
    discovery = find_products(selection, progress=options.progress)
    # Before any file lands: a program MAST keeps exclusive is hidden from the start (the
    # products withheld for want of a token say so too).
    listed = [*discovery.products, *discovery.not_public]
    record_data_rights(
        engine, summarize_rights((p.proposal_id, p.data_rights, p.released_at) for p in listed)
    )
    with engine.connect() as connection:
        due, waiting = split_due(read_outstanding(connection), window[1])
    wanted = _wanted(discovery, due, waiting)
    to_fetch, present = split_present(wanted, options.archive_root)
    run.counts.update(
        products_found=len(discovery.products),
        products_present=len(present),
        products_skipped=dict(sorted(discovery.skipped.items())),
        retries_due=len(due),
        retries_waiting=len(waiting),
    )
    return discovery, wanted, to_fetch, present


def _ending(counts: dict[str, Any]) -> tuple[str, str | None]:
    """(status, message): a download that failed for now fails the run, so that the next run
    covers the window again; files outstanding for good reason do not."""
    transient = counts["downloads_failed"] - counts["downloads_failed_permanent"]
    if not transient:
        return "succeeded", None
    message = (
        f"{transient} downloads failed for now (server errors, timeouts, lost connections); "
        "the next run asks for them again"
    )
    return "failed", message


def _wanted(
    discovery: Discovery, due: list[Outstanding], waiting: list[Outstanding]
) -> list[MastProduct]:
    """Tonight's products: what discovery found, less the outstanding files whose next try is
    later, plus those due (found again or not: the window may have moved past them)."""
    later = {item.product.uri for item in waiting}
    wanted = {p.uri: p for p in discovery.products if p.uri not in later}
    for item in due:
        wanted.setdefault(item.product.uri, item.product)
    return list(wanted.values())


def _download(options: NightlyOptions, products: list, client: Any) -> list[DownloadOutcome]:
    if not products:
        return []
    return download_products(
        products,
        options.archive_root,
        client=client,
        token=options.token,
        retries=options.retries,
        backoff_s=options.retry_wait_s,
        progress=options.progress,
    )


# The copy of the digest kept in nightly_run: the summary, counts and the first items. A first
# night over a large archive can list 10^5 verdicts; the files hold them all.
_STORED_ITEMS = 200


def _stored_digest(document: dict[str, Any], paths: dict[str, Path]) -> dict[str, Any]:
    stored = dict(document)
    for key in ("verdicts", "flags", "problems", "outstanding", "warnings"):
        items = document.get(key) or []
        stored[key] = items[:_STORED_ITEMS]
        stored[f"{key}_not_stored"] = max(0, len(items) - _STORED_ITEMS)
    stored["files"] = {kind: str(path) for kind, path in sorted(paths.items())}
    return stored


def _count_downloads(counts: dict[str, Any], outcomes: list[DownloadOutcome]) -> None:
    done = [o for o in outcomes if o.status == "downloaded"]
    failed = [o for o in outcomes if o.status == "failed"]
    counts.update(
        products_downloaded=len(done),
        downloads_failed=len(failed),
        downloads_failed_permanent=sum(o.permanent for o in failed),
        download_size_warnings=sum(o.warning is not None for o in outcomes),
        bytes_downloaded=sum(o.size_bytes for o in done),
        download_seconds=round(sum(o.seconds for o in outcomes), 2),
    )


def _ingest(options: NightlyOptions, run: _Run, client: Any) -> IngestSummary | None:
    if not options.archive_root.exists():
        return None
    summary = run_ingest(
        [options.archive_root],
        options.database_url,
        client=client,
        scheduler=options.scheduler,
        workers=options.workers,
        progress=options.progress,
        parent={"nightly_run_id": run.run_id},
    )
    run.counts.update(
        files_seen=summary.files_seen,
        files_ingested=summary.counts.get("ingested", 0),
        files_unchanged=summary.counts.get("unchanged", 0),
        files_failed=summary.failed,
        exposures_written=summary.exposures,
    )
    return summary


@dataclass
class _NightReport:
    """What the night says beside its analysis: failures, outstanding files, what discovery
    passed over (words -> rows) and warnings, as (where, what) pairs."""

    problems: list[tuple[str, str, int | None]]  # (where, what, program)
    outstanding: list[OutstandingFile]
    skipped: dict[str, int]
    warnings: list[tuple[str, str]]


def _night_report(
    engine: Engine,
    run: _Run,
    discovery: Discovery,
    outcomes: list[DownloadOutcome],
    ingest: IngestSummary | None,
    archive_root: Path,
) -> _NightReport:
    with engine.connect() as connection:
        outstanding = read_outstanding(connection)
    run.counts["files_outstanding"] = len(outstanding)
    return _NightReport(
        problems=_problems(outcomes, ingest, archive_root),
        outstanding=_outstanding_files(outstanding, outcomes),
        skipped={SKIP_REASONS[k]: n for k, n in run.counts["products_skipped"].items()},
        warnings=_warnings(discovery, outcomes),
    )


def _problems(
    outcomes: list[DownloadOutcome], ingest: IngestSummary | None, archive_root: Path
) -> list[tuple[str, str, int | None]]:
    """(where, why, program) of transient download failures and files ingest could not read
    (permanent download failures are listed as outstanding files instead); the program is the
    archive folder a file belongs in."""
    problems = [
        (f"download {o.uri}", o.error or "failed", _program_of(o.path, archive_root))
        for o in outcomes
        if o.status == "failed" and not o.permanent
    ]
    if ingest:
        problems += [
            (f"ingest {path}", error, _program_of(path, archive_root))
            for path, error in ingest.failures
        ]
    return problems


def _program_of(path: str | Path, archive_root: Path) -> int | None:
    """The program of a file in the archive tree (``<root>/<proposal_id>/<obs_id>/<file>``)."""
    try:
        folder = Path(path).resolve().relative_to(archive_root.resolve()).parts[0]
    except (ValueError, IndexError):
        return None
    return int(folder) if folder.isdigit() else None


def _warnings(discovery: Discovery, outcomes: list[DownloadOutcome]) -> list[tuple[str, str]]:
    warnings = [("discovery", text) for text in discovery.warnings]
    return warnings + [(f"download {o.uri}", o.warning) for o in outcomes if o.warning]


def _outstanding_files(
    outstanding: list[Outstanding], outcomes: list[DownloadOutcome]
) -> list[OutstandingFile]:
    tonight = {o.uri for o in outcomes if o.status == "failed" and o.permanent}
    return [
        OutstandingFile(
            filename=item.product.filename,
            uri=item.product.uri,
            reason=item.reason,
            attempts=item.attempts,
            first_failed_at=item.first_failed_at,
            next_try_at=item.next_try_at,
            failed_tonight=item.product.uri in tonight,
            program=int(item.product.proposal_id) if item.product.proposal_id.isdigit() else None,
        )
        for item in outstanding
    ]


def _digest(
    engine: Engine,
    run: _Run,
    analysis_run_id: int,
    report: _NightReport,
    window: tuple,
    today: date | None,
) -> Digest:
    """The digest for readers without access: proprietary programs are left out of it (the
    dashboard shows them to those granted access)."""
    facts = {k: v for k, v in run.counts.items() if k != "products_skipped"}
    with engine.connect() as connection:
        return build_digest(
            connection,
            [analysis_run_id],
            facts=facts,
            problems=report.problems,
            outstanding=report.outstanding,
            skipped=report.skipped,
            warnings=report.warnings,
            window=window,
            today=today,
            hidden_programs=hidden_programs(connection, Viewer()),
        )


def _digest_dir(options: NightlyOptions) -> Path:
    if options.digest_dir is not None:
        return options.digest_dir
    return Path(platformdirs.user_data_dir("hstmon", appauthor=False)) / "digests"
