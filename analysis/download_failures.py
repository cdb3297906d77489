"""MAST files whose download failed for good reason: one ``download_failure`` row per file,
tried again on a slower schedule so that the nightly window never waits for them.

A failure is permanent when asking again soon cannot help (MAST answered 4xx, or sent a file
that was still not whole FITS after its retries; `ingest.mast.DownloadOutcome.permanent`).
Transient failures are not recorded here: the run ends ``failed`` and the next one asks MAST
about the same window again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, Row, insert, select, update

from ingest.mast import DownloadOutcome, MastProduct
from models.tables import DownloadFailure

__all__ = [
    "RETRY_AFTER",
    "SCHEDULE_SLACK",
    "Outstanding",
    "next_try",
    "read_outstanding",
    "record_downloads",
    "split_due",
]

# Wait 1 day after a file's first failed night, 3 after its second, 7 after its third, then
# weekly: a file MAST does not have yet is asked for again soon, one it refuses rarely.
RETRY_AFTER = (timedelta(days=1), timedelta(days=3), timedelta(days=7))
# A nightly job starts at about the same time each night, some minutes earlier or later: a file
# due "one day" after last night's run is due to tonight's, whenever within this it started.
SCHEDULE_SLACK = timedelta(hours=3)


@dataclass(frozen=True)
class Outstanding:
    """A file still outstanding: the product as MAST listed it, why its last try failed, how
    many nightly runs tried it, and from when the next run may try again (UTC)."""

    product: MastProduct
    reason: str
    attempts: int
    first_failed_at: datetime
    next_try_at: datetime


def next_try(failed_at: datetime, attempts: int, schedule: Sequence[timedelta]) -> datetime:
    """When a file that has now failed ``attempts`` nightly runs is tried again: the
    schedule's wait for that many failures, its last wait for any more."""
    if attempts < 1 or not schedule:
        msg = f"attempts must be 1 or more and the schedule not empty, got {attempts}, {schedule}"
        raise ValueError(msg)
    return failed_at + schedule[min(attempts, len(schedule)) - 1]


def read_outstanding(connection: Connection) -> list[Outstanding]:
    """Every outstanding file, soonest next try first."""
    rows = connection.execute(
        select(DownloadFailure.__table__)
        .where(DownloadFailure.resolved_at.is_(None))
        .order_by(DownloadFailure.next_try_at, DownloadFailure.filename)
    )
    return [
        Outstanding(
            _product(row),
            row.reason,
            row.attempts,
            _utc(row.first_failed_at),
            _utc(row.next_try_at),
        )
        for row in rows
    ]


def split_due(
    outstanding: Iterable[Outstanding], now: datetime, slack: timedelta = SCHEDULE_SLACK
) -> tuple[list[Outstanding], list[Outstanding]]:
    """(due now, not yet): due when the next try is at most ``slack`` after ``now``."""
    due, waiting = [], []
    for item in outstanding:
        (due if item.next_try_at <= now + slack else waiting).append(item)
    return due, waiting


def record_downloads(
    engine: Engine,
    run_id: int,
    products: Iterable[MastProduct],
    outcomes: Iterable[DownloadOutcome],
    in_place: Iterable[MastProduct],
    now: datetime,
    schedule: Sequence[timedelta] = RETRY_AFTER,
) -> None:
    """Record one night's downloads: permanent failures (new or again) with their next try;
    outstanding files now fetched, or found in place, resolved. Transient failures change
    nothing here."""
    by_uri = {p.uri: p for p in products}
    outcomes = list(outcomes)
    failed = [o for o in outcomes if o.status == "failed" and o.permanent]
    fetched = {o.uri for o in outcomes if o.status != "failed"} | {p.uri for p in in_place}
    with engine.begin() as connection:
        # The table holds failures only, a few rows per thousand files: read it whole.
        records = {
            row.uri: row
            for row in connection.execute(
                select(DownloadFailure.uri, DownloadFailure.attempts, DownloadFailure.resolved_at)
            )
        }
        for outcome in failed:
            record = records.get(outcome.uri)
            # A file fetched since its last failures starts counting again.
            before = record.attempts if record and record.resolved_at is None else 0
            values = _failure(outcome, before + 1, run_id, now, schedule)
            if record is None:
                connection.execute(
                    insert(DownloadFailure).values(**_listing(by_uri[outcome.uri]), **values)
                )
            else:
                connection.execute(
                    update(DownloadFailure)
                    .where(DownloadFailure.uri == outcome.uri)
                    .values(**values)
                )
        resolved = [
            uri for uri, row in records.items() if uri in fetched and row.resolved_at is None
        ]
        if resolved:
            connection.execute(
                update(DownloadFailure)
                .where(DownloadFailure.uri.in_(resolved))
                .values(resolved_at=now, nightly_run_id=run_id)
            )


def _failure(
    outcome: DownloadOutcome,
    attempts: int,
    run_id: int,
    now: datetime,
    schedule: Sequence[timedelta],
) -> dict[str, object]:
    values: dict[str, object] = {
        "path": outcome.path,
        "reason": outcome.error or "failed",
        "attempts": attempts,
        "last_failed_at": now,
        "next_try_at": next_try(now, attempts, schedule),
        "resolved_at": None,
        "nightly_run_id": run_id,
    }
    if attempts == 1:
        values["first_failed_at"] = now
    return values


def _listing(product: MastProduct) -> dict[str, object]:
    """What MAST listed of the file, for trying it again once the window has moved on."""
    return {
        "uri": product.uri,
        "filename": product.filename,
        "obs_id": product.obs_id,
        "proposal_id": product.proposal_id,
        "product_type": product.product_type,
        "listed_size_bytes": product.size_bytes,
        "project": product.project,
        "data_rights": product.data_rights,
        "released_at": product.released_at,
    }


def _product(row: Row) -> MastProduct:
    return MastProduct(
        uri=row.uri,
        filename=row.filename,
        obs_id=row.obs_id,
        proposal_id=row.proposal_id,
        product_type=row.product_type,
        size_bytes=row.listed_size_bytes,
        project=row.project,
        data_rights=row.data_rights,
        released_at=_utc(row.released_at) if row.released_at else None,
    )


def _utc(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes for timezone-aware columns.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
