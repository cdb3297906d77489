"""`hstmon analyze`: flag anomalous exposures and give verdicts, only where something changed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, Table, delete

from analysis.config import RuleSet, load_rules
from analysis.frame import load_exposures, stale_exposure_ids
from analysis.rules import evaluate, exposure_seconds
from analysis.verdicts import VerdictRecord, exposure_verdicts, visit_id, visit_verdicts
from models.bulk import bulk_insert
from models.database import ensure_schema, make_engine
from models.locks import serialize_transaction
from models.runs import close_run, open_run
from models.tables import AnalysisRun, AnalysisState, Flag, Verdict

__all__ = ["AnalysisSummary", "run_analysis"]

# Deletes name their rows in chunks: SQLite allows 32766 bound parameters per statement.
_IN_CHUNK = 10_000


@dataclass
class AnalysisSummary:
    """What an analysis run did."""

    run_id: int
    exposures_analyzed: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)
    not_evaluated: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "exposures_analyzed": self.exposures_analyzed,
            "flags_by_severity": self.flags,
            "verdicts": self.verdicts,
            "rules_not_evaluated": self.not_evaluated,
            "seconds": round(self.seconds, 2),
        }


def _chunks(values: Sequence[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield list(values[start : start + _IN_CHUNK])


def _delete_in(connection: Connection, table: Table, column: str, values: Iterable[Any]) -> None:
    for chunk in _chunks(sorted(set(values))):
        connection.execute(delete(table).where(table.c[column].in_(chunk)))


def _start(engine: Engine, rules: RuleSet, full: bool) -> int:
    used = {"versions": rules.versions(), "files": list(rules.sources), "full": full}
    return open_run(engine, AnalysisRun, rules=used)


def _finish(engine: Engine, summary: AnalysisSummary, status: str, message: str | None) -> None:
    close_run(engine, AnalysisRun, summary.run_id, status, summary.as_json(), message)


def _flag_rows(flags: pd.DataFrame, frame: pd.DataFrame, run_id: int) -> list[dict[str, Any]]:
    asn_ids = frame["asn_id"]
    return [
        {
            "exposure_id": exposure_id,
            "asn_id": asn_ids.get(exposure_id),
            "rule": row.rule,
            "rule_version": int(row.rule_version),
            "severity": row.severity,
            "message": row.message,
            "evidence": row.evidence,
            "analysis_run_id": run_id,
        }
        for exposure_id, row in zip(flags.index, flags.itertuples(index=False), strict=True)
    ]


def _write(
    connection: Connection,
    targets: list[str],
    flag_rows: list[dict[str, Any]],
    verdict_rows: list[dict[str, Any]],
    state_rows: list[dict[str, Any]],
) -> None:
    """Replace the targets' flags, verdicts and analysis state in one transaction."""
    _delete_in(connection, Flag.__table__, "exposure_id", targets)
    _delete_in(connection, Verdict.__table__, "exposure_id", targets)
    visits = [r["visit_id"] for r in verdict_rows if r["visit_id"]]
    _delete_in(connection, Verdict.__table__, "visit_id", visits)
    # Association-level verdicts of stores analysed before visits were judged as ipppss.
    connection.execute(delete(Verdict.__table__).where(Verdict.__table__.c.asn_id.is_not(None)))
    _delete_in(connection, AnalysisState.__table__, "exposure_id", targets)
    for model, rows in ((Flag, flag_rows), (Verdict, verdict_rows), (AnalysisState, state_rows)):
        bulk_insert(connection, model.__table__, rows)


def run_analysis(
    database_url: str | None = None,
    *,
    rules_file: Path | None = None,
    full: bool = False,
    today: date | None = None,
) -> AnalysisSummary:
    """Analyse every exposure that changed since its last analysis (all with ``full``)."""
    started = datetime.now(UTC)
    today = today or started.date()
    rules = load_rules(rules_file)
    engine = make_engine(database_url)
    ensure_schema(engine)
    summary = AnalysisSummary(_start(engine, rules, full))
    try:
        with engine.connect() as connection:
            stale = None if full else stale_exposure_ids(connection, rules.signature)
            # Nothing changed: no need to read the archive's exposures at all.
            frame = load_exposures(connection) if stale is None or stale else None
        if frame is not None:
            targets = sorted(set(frame.index) if stale is None else stale)
            _analyse(engine, frame, targets, rules, today, summary)
    except BaseException as exc:
        _finish(engine, summary, "error", f"{type(exc).__name__}: {exc}")
        engine.dispose()
        raise
    summary.seconds = (datetime.now(UTC) - started).total_seconds()
    _finish(engine, summary, "succeeded", None)
    engine.dispose()
    return summary


def _analyse(
    engine: Engine,
    frame: pd.DataFrame,
    targets: list[str],
    rules: RuleSet,
    today: date,
    summary: AnalysisSummary,
) -> None:
    flags, summary.not_evaluated = evaluate(frame, rules)
    frame = frame.assign(seconds=exposure_seconds(frame))
    target_flags = flags[flags.index.isin(targets)]
    visits = {visit_id(e) for e in targets}
    # A visit's verdict needs every member's, analysed or not.
    judged = frame[frame["exposure_id"].str[:6].isin(visits)]
    verdicts = exposure_verdicts(judged, flags[flags.index.isin(judged.index)], rules, today)
    records: list[VerdictRecord] = [verdicts[e] for e in targets]
    records += visit_verdicts(judged, verdicts, rules, today, visits)
    now, signature = datetime.now(UTC), rules.signature
    state = [
        {"exposure_id": e, "analyzed_at": now, "rules_signature": signature,
         "analysis_run_id": summary.run_id}
        for e in targets
    ]  # fmt: skip
    with engine.begin() as connection:
        # Two analyses at once (a nightly one and a manual one) replace rows one after the other.
        serialize_transaction(connection, "analysis-writer")
        _write(
            connection,
            targets,
            _flag_rows(target_flags, frame, summary.run_id),
            [record.row(today, summary.run_id) for record in records],
            state,
        )
    summary.exposures_analyzed = len(targets)
    summary.flags = {k: int(v) for k, v in target_flags["severity"].value_counts().items()}
    counts: dict[str, int] = {}
    for record in records:
        key = f"{'visit' if record.visit_id else 'exposure'}_{record.verdict}"
        counts[key] = counts.get(key, 0) + 1
    summary.verdicts = counts
