"""Bookkeeping rows of runs (ingest_run, analysis_run): opened at the start, closed at the end."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from models.tables import AnalysisRun, IngestRun, NightlyRun

__all__ = ["RunModel", "abort_dead_local_runs", "close_run", "open_run", "this_process"]

RunModel = type[IngestRun] | type[AnalysisRun] | type[NightlyRun]


def open_run(engine: Engine, model: RunModel, **values: Any) -> int:
    """A new 'running' row of ``model``, committed at once so a crash leaves it visible."""
    with engine.begin() as connection:
        result = connection.execute(
            insert(model)
            .values(started_at=datetime.now(UTC), status="running", **values)
            .returning(model.run_id)
        )
        return int(result.scalar_one())


def close_run(
    engine: Engine, model: RunModel, run_id: int, status: str, counts: dict, message: str | None
) -> None:
    """End the run's row with its status, what it counted, and why it failed if it did."""
    with engine.begin() as connection:
        connection.execute(
            update(model)
            .where(model.run_id == run_id)
            .values(finished_at=datetime.now(UTC), status=status, counts=counts, message=message)
        )


def this_process() -> dict[str, Any]:
    """Where a run runs, kept in its parameters so a later run can tell whether it died."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def abort_dead_local_runs(engine: Engine, model: RunModel) -> list[int]:
    """Mark 'running' rows whose process, on this machine, no longer exists as aborted.

    A killed run cannot close its own row. Runs on other machines are left alone: whether they
    live cannot be told from here.
    """
    host = socket.gethostname()
    with engine.begin() as connection:
        running = connection.execute(
            select(model.run_id, model.parameters).where(model.status == "running")
        ).all()
        dead = [
            row.run_id
            for row in running
            if (row.parameters or {}).get("host") == host
            and isinstance((row.parameters or {}).get("pid"), int)
            and not _alive(row.parameters["pid"])
        ]
        if dead:
            connection.execute(
                update(model)
                .where(model.run_id.in_(dead))
                .values(
                    status="aborted",
                    finished_at=datetime.now(UTC),
                    message="its process ended without closing the run (killed?)",
                )
            )
    return dead
