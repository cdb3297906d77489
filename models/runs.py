"""Bookkeeping rows of runs (ingest_run, analysis_run): opened at the start, closed at the end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, update

from models.tables import AnalysisRun, IngestRun

__all__ = ["RunModel", "close_run", "open_run"]

RunModel = type[IngestRun] | type[AnalysisRun]


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
