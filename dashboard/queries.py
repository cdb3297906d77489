"""Read-only queries of the store, shared by the command line summaries and the dashboard.

Plain functions ``(engine, filters...) -> DataFrame or dataclass``, no Streamlit: the dashboard's
pages call them through a cache, tests call them directly on real SQLite and PostgreSQL stores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    and_,
    case,
    distinct,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    union,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import aliased

from analysis.digest import Digest, build_digest, summary_blocks
from dashboard.sql_console import (
    SqlError,
    SqlRefusedError,
    SqlResult,
    SqlRoleError,
    SqlTimeoutError,
    read_only_engine,
    ready_queries,
    run_readonly_sql,
    sql_page_refusal,
)
from models.jif_keywords import checklist_keywords
from models.tables import (
    AnalysisRun,
    Association,
    Base,
    Exposure,
    FitsHeader,
    Flag,
    ImagePreview,
    IngestRun,
    JitterSample,
    NightlyRun,
    PsfMeasurement,
    SourceFile,
    Verdict,
)

__all__ = [
    "ACTION_VERDICTS",
    "JITTER_METRICS",
    "PERIODS",
    "ActionItem",
    "DailySummary",
    "ExposureDetail",
    "FilterOptions",
    "ProgramSummary",
    "RunInfo",
    "SqlError",
    "SqlRefusedError",
    "SqlResult",
    "SqlRoleError",
    "SqlTimeoutError",
    "StoreCounts",
    "TrendFilters",
    "VisitDetail",
    "action_count",
    "action_items",
    "action_list",
    "daily_summary",
    "exposure_detail",
    "exposure_key",
    "failed_files",
    "filter_options",
    "find_ids",
    "fits_headers",
    "flag_counts",
    "flag_rates",
    "flagged_exposures",
    "image_previews",
    "is_empty",
    "jitter_outliers",
    "jitter_samples",
    "jitter_trend",
    "last_analysis_run",
    "last_ingest_run",
    "last_nightly_run",
    "nightly_headline",
    "normalise_id",
    "period_bounds",
    "program_list",
    "program_summaries",
    "program_visits",
    "psf_measurements",
    "psf_outliers",
    "psf_trend",
    "radial_profiles",
    "read_only_engine",
    "ready_queries",
    "run_readonly_sql",
    "scope_problem",
    "sql_page_refusal",
    "store_columns",
    "store_counts",
    "store_version",
    "take_data_down_spans",
    "visit_detail",
    "visit_exposures",
]


@dataclass(frozen=True)
class ProgramSummary:
    """What the observing logs of one program say, counted per exposure."""

    proposid: int
    configs: str
    associations: int
    exposures: int
    samples: int
    gs_acq_failures: int
    loss_of_lock: int
    take_data_down: int
    guiding_degraded: int


def _count(condition) -> object:  # type: ignore[no-untyped-def]
    return func.sum(case((condition, 1), else_=0))


def _guiding_rank(mode: ColumnElement[str]) -> ColumnElement[int]:
    """FINE LOCK 2, FINE LOCK/GYRO 1, GYRO 0, anything else NULL (never below or above)."""
    return case(
        (mode == "FINE LOCK", 2), (mode == "FINE LOCK/GYRO", 1), (mode == "GYRO", 0), else_=null()
    )


def program_summaries(engine: Engine) -> list[ProgramSummary]:
    """Per program: exposures and the failures their jitter files report.

    A guide-star acquisition failure is a GSFAIL code or a JIF that left GSACQ blank, unless the
    visit was commanded on gyros; loss of lock is NLOSSES > 0; take-data down is the TDF-DOWN
    flag; guiding degraded is GUIDEACT below the association's GUIDECMD.
    """
    commanded_gyro = func.coalesce(Association.guidecmd, "") == "GYRO"
    gs_failure = and_(
        or_(
            Exposure.gsfail.is_not(None),
            and_(Exposure.jif_file_id.is_not(None), Exposure.gsacq.is_(None)),
        ),
        ~commanded_gyro,  # on gyros, as commanded, there is no guide star to acquire
    )
    degraded = _guiding_rank(Exposure.guideact) < _guiding_rank(Association.guidecmd)
    query = (
        select(
            Exposure.proposid,
            func.count(distinct(Exposure.config)),
            func.min(Exposure.config),
            func.count(distinct(Exposure.asn_id)),
            func.count(),
            func.coalesce(func.sum(Exposure.jit_n_samples), 0),
            _count(gs_failure),
            _count(Exposure.nlosses > 0),
            _count(Exposure.tdf_down.is_(True)),
            _count(degraded),
        )
        .outerjoin(Association, Association.asn_id == Exposure.asn_id)
        .group_by(Exposure.proposid)
        .order_by(Exposure.proposid)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        ProgramSummary(
            proposid=row[0],
            configs=row[2] if row[1] == 1 else f"{row[2]} +{row[1] - 1}",
            associations=row[3],
            exposures=row[4],
            samples=int(row[5]),
            gs_acq_failures=int(row[6] or 0),
            loss_of_lock=int(row[7] or 0),
            take_data_down=int(row[8] or 0),
            guiding_degraded=int(row[9] or 0),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class ActionItem:
    """A visit that needs the observer: its verdict, deadline and the sentence that says why."""

    visit_id: str  # ipppss
    verdict: str
    hopr_deadline: object
    days_left: int | None
    summary: str


def action_list(engine: Engine, limit: int = 20) -> list[ActionItem]:
    """Visits whose verdict is hopr or helpdesk: open HOPRs, nearest deadline first, then HOPRs
    whose 90-day limit has passed (still HOPRs, shown after the open ones), then the help desk."""
    open_hopr = and_(Verdict.verdict == "hopr", Verdict.days_left >= 0)
    query = (
        select(
            Verdict.visit_id,
            Verdict.verdict,
            Verdict.hopr_deadline,
            Verdict.days_left,
            Verdict.summary,
        )
        .where(Verdict.visit_id.is_not(None), Verdict.verdict.in_(("hopr", "helpdesk")))
        .order_by(
            case((open_hopr, 0), (Verdict.verdict == "hopr", 1), else_=2),
            # upcoming deadlines soonest first, then passed ones most recent first
            case((Verdict.days_left >= 0, Verdict.days_left), else_=100_000 - Verdict.days_left),
            Verdict.visit_id,
        )
        .limit(limit)
    )
    with engine.connect() as connection:
        return [ActionItem(*row) for row in connection.execute(query)]


def flag_counts(engine: Engine) -> list[tuple[str, str, int]]:
    """(rule, severity, exposures flagged), most frequent first."""
    query = (
        select(Flag.rule, Flag.severity, func.count())
        .group_by(Flag.rule, Flag.severity)
        .order_by(func.count().desc(), Flag.rule)
    )
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


# --- The dashboard's queries: (engine, filters...) -> DataFrame or dataclass ---------------------
# Every value a user chooses reaches SQL as a bound parameter; the only SQL text built here comes
# from constants (period formats) or from the database's own catalogue (optional column names).

PERIODS = ("month", "week", "day")
JITTER_METRICS: dict[str, str] = {
    "v2_rms_mas": "V2 RMS (mas)",
    "v3_rms_mas": "V3 RMS (mas)",
    "si_rms_p95_mas": "SI RMS p95 (mas)",
    "drift_v2_mas": "drift V2 (mas)",
    "drift_v3_mas": "drift V3 (mas)",
    "drift_trend_v2_mas": "steady drift V2 (mas)",
    "drift_trend_v3_mas": "steady drift V3 (mas)",
}
# Science-image columns (schema revision 0003); a store at an older revision lacks them.
FILTER_COLUMNS = ("filter",)
FWHM_COLUMNS = ("fwhm_median_pix",)
NOMINAL_FWHM_COLUMNS = ("fwhm_nominal_pix",)
ACTION_VERDICTS = ("hopr", "helpdesk")


def _utc_frame(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Timestamps as UTC-aware pandas values (SQLite returns naive UTC, PostgreSQL aware)."""
    for name in columns:
        if name in frame:
            frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame


def _utc(value: Any) -> pd.Timestamp | None:
    """A timestamp from either store as UTC (SQLite gives naive UTC, PostgreSQL aware)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _frame(engine: Engine, query: Any, *time_columns: str) -> pd.DataFrame:
    with engine.connect() as connection:
        result = connection.execute(query)
        # Plain tuples: pandas probing Row objects costs more than the query on wide results.
        rows = [tuple(row) for row in result]
        frame = pd.DataFrame.from_records(rows, columns=list(result.keys()))
    return _utc_frame(frame, *time_columns)


def _ints(values: Iterable[Any], what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        msg = f"{what} must be whole numbers, not {list(values)!r}"
        raise ValueError(msg) from exc


def _strs(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def store_columns(engine: Engine, table: str = "exposure") -> tuple[str, ...]:
    """The columns ``table`` has in this store (its schema may be newer than this code)."""
    if table not in Base.metadata.tables:
        msg = f"{table!r} is not an hstmon table"
        raise ValueError(msg)
    quoted = engine.dialect.identifier_preparer.quote(table)
    with engine.connect() as connection:  # no rows: just the column names, fast on both stores
        return tuple(connection.exec_driver_sql(f"SELECT * FROM {quoted} WHERE 1 = 0").keys())


def _first_present(present: Iterable[str], candidates: tuple[str, ...]) -> str | None:
    names = set(present)
    return next((name for name in candidates if name in names), None)


def _exposure_column(engine: Engine, name: str) -> ColumnElement[Any]:
    """A column of ``exposure`` by a name read from the store's catalogue, quoted for SQL."""
    known = Exposure.__table__.c.get(name)
    if known is not None:
        return known
    quoted = engine.dialect.identifier_preparer.quote(name)
    return literal_column(f"exposure.{quoted}")


def _period(engine: Engine, column: ColumnElement[Any], unit: str) -> ColumnElement[str]:
    """The calendar period (UTC) a timestamp falls in, as text: 'YYYY-MM' or 'YYYY-MM-DD'."""
    if unit not in PERIODS:
        msg = f"period must be one of {', '.join(PERIODS)}, not {unit!r}"
        raise ValueError(msg)
    if engine.dialect.name == "postgresql":
        utc = column.op("AT TIME ZONE")(literal_column("'UTC'"))
        if unit == "week":
            utc = func.date_trunc(literal_column("'week'"), utc)
        form = "'YYYY-MM'" if unit == "month" else "'YYYY-MM-DD'"
        return func.to_char(utc, literal_column(form))
    # SQLite stores timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text, in UTC.
    if unit == "week":  # the Monday on or before the day
        return func.date(
            func.substr(column, literal_column("1"), literal_column("10")),
            literal_column("'weekday 0'"),
            literal_column("'-6 days'"),
        )
    length = literal_column("7" if unit == "month" else "10")
    return func.substr(column, literal_column("1"), length)


def _period_start(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame):
        text = frame["period"].astype(str)
        frame["period"] = pd.to_datetime(text.where(text.str.len() > 7, text + "-01"), utc=True)
    return frame


@dataclass(frozen=True)
class TrendFilters:
    """What the trend page is restricted to; empty tuples mean everything.

    ``start`` and ``end`` are UTC days, both included; ``filters`` (science filter names) apply
    only when the store has a filter column.
    """

    start: date | None = None
    end: date | None = None
    proposids: tuple[int, ...] = ()
    configs: tuple[str, ...] = ()
    guideacts: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()


def _conditions(engine: Engine, filters: TrendFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Exposure.window_start.is_not(None)]
    if filters.start is not None:
        start = datetime.combine(filters.start, datetime.min.time())
        conditions.append(Exposure.window_start >= start)
    if filters.end is not None:
        end = datetime.combine(filters.end + timedelta(days=1), datetime.min.time())
        conditions.append(Exposure.window_start < end)
    if filters.proposids:
        conditions.append(Exposure.proposid.in_(_ints(filters.proposids, "programs")))
    if filters.configs:
        conditions.append(Exposure.config.in_(_strs(filters.configs)))
    if filters.guideacts:
        conditions.append(Exposure.guideact.in_(_strs(filters.guideacts)))
    if filters.filters:
        name = _first_present(store_columns(engine), FILTER_COLUMNS)
        if name is not None:
            column = _exposure_column(engine, name)
            conditions.append(column.in_(_strs(filters.filters)))
    return conditions


# --- Overview -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreCounts:
    """How much the store holds, and how much of it needs attention."""

    exposures: int
    visits: int
    programs: int
    samples: int  # JIT rows, summed from the exposures' jit_n_samples
    first_window: datetime | None
    last_window: datetime | None
    flags_by_severity: dict[str, int]
    flagged_exposures: int
    verdicts: dict[str, int]  # verdict -> exposures and visits judged so
    failed_files: int


def store_counts(engine: Engine) -> StoreCounts:
    """Counts for the overview: rows, flags by severity, verdicts, failed files."""
    with engine.connect() as connection:
        # Separate statements: min() and max() alone are answered from the window_start index.
        scalar = connection.execute
        exposures, samples = scalar(
            select(func.count(), func.coalesce(func.sum(Exposure.jit_n_samples), 0))
        ).one()
        first = scalar(select(func.min(Exposure.window_start))).scalar_one()
        last = scalar(select(func.max(Exposure.window_start))).scalar_one()
        visits, programs = scalar(
            select(func.count(), func.count(distinct(Association.proposid)))
        ).one()
        severities = scalar(select(Flag.severity, func.count()).group_by(Flag.severity)).all()
        # count(*) of a GROUP BY: a hash aggregate on PostgreSQL, 3x faster than count(DISTINCT)
        flagged_ids = select(Flag.exposure_id).group_by(Flag.exposure_id).subquery()
        flagged = scalar(select(func.count()).select_from(flagged_ids)).scalar_one()
        verdicts = scalar(select(Verdict.verdict, func.count()).group_by(Verdict.verdict)).all()
        failed = scalar(select(func.count()).where(SourceFile.status == "failed")).scalar_one()
    first, last = _utc(first), _utc(last)
    return StoreCounts(
        exposures=int(exposures),
        visits=int(visits),
        programs=int(programs),
        samples=int(samples),
        first_window=first,
        last_window=last,
        flags_by_severity={str(k): int(v) for k, v in severities},
        flagged_exposures=int(flagged),
        verdicts={str(k): int(v) for k, v in verdicts},
        failed_files=int(failed),
    )


@dataclass(frozen=True)
class RunInfo:
    """The last ingest or analysis run: when, how it ended, and what it counted."""

    run_id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    counts: dict[str, Any]
    message: str | None


def _last_run(
    engine: Engine, model: type[IngestRun] | type[AnalysisRun] | type[NightlyRun]
) -> RunInfo | None:
    query = select(
        model.run_id, model.started_at, model.finished_at, model.status, model.counts,
        model.message,
    ).order_by(model.run_id.desc()).limit(1)  # fmt: skip
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    started, finished = _utc(row[1]), _utc(row[2])
    return RunInfo(int(row[0]), started, finished, str(row[3]), dict(row[4] or {}), row[5])


def last_ingest_run(engine: Engine) -> RunInfo | None:
    """The most recent ``hstmon ingest`` run (the nightly one, on a production store)."""
    return _last_run(engine, IngestRun)


def last_nightly_run(engine: Engine) -> RunInfo | None:
    """The most recent ``hstmon nightly`` run (its counts include seconds per stage)."""
    return _last_run(engine, NightlyRun)


def nightly_headline(engine: Engine) -> list[tuple[str, list[str]]]:
    """The summary of the last nightly digest: (lead, items) in plain words, most urgent first.

    Empty when no nightly run has written a digest. The stored digest is the one for readers
    without access; when it left proprietary programs out, the summary is made again from the
    night's analysis as this engine's viewer sees it (with the programs granted to them).
    """
    query = (
        select(NightlyRun.digest, NightlyRun.analysis_run_id)
        .where(NightlyRun.digest.is_not(None))
        .order_by(NightlyRun.run_id.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
        if row is None or not row.digest:
            return []
        digest = row.digest
        if digest.get("withheld_programs") and row.analysis_run_id is not None:
            return summary_blocks(_viewer_digest(connection, digest, row.analysis_run_id))
    return [
        (str(b.get("lead", "")), [str(i) for i in b.get("items", [])])
        for b in digest.get("summary", [])
    ]


def _viewer_digest(connection: Any, stored: dict[str, Any], analysis_run_id: int) -> Digest:
    window = tuple(_utc(t) if t else None for t in (stored.get("window") or (None, None)))
    problems = [(str(p["where"]), str(p["reason"])) for p in stored.get("problems") or []]
    return build_digest(
        connection, [analysis_run_id], facts=stored.get("facts") or {}, problems=problems,
        window=(window[0], window[1]),
    )  # fmt: skip


def scope_problem(engine: Engine) -> str | None:
    """Why the pages must not show this store through this engine, or None.

    PostgreSQL leaves the programs hidden from the engine's viewer out by row-level security,
    which does not apply to a superuser or the tables' owner: with something to hide, such a
    connection would show it. (SQLite connections are scoped by views: nothing to refuse.)
    """
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        if not connection.exec_driver_sql(
            "SELECT to_regprocedure('hstmon_hidden_programs()') IS NOT NULL"
        ).scalar():
            return None  # a store older than program access has nothing to hide
        hidden, applies, role = connection.exec_driver_sql(
            "SELECT EXISTS (SELECT hstmon_hidden_programs()), row_security_active('exposure'),"
            " current_user"
        ).one()
    if not hidden or applies:
        return None
    return (
        f"This store has proprietary programs, and the dashboard reads it as {role}, whom "
        "row-level security does not apply to (a superuser, or the owner of the tables): it "
        "would show them to everyone. Serve it as the reader role: `hstmon db reader "
        "hstmon_reader` (once, as a superuser), then `hstmon dashboard --db "
        "postgresql://hstmon_reader@HOST/DATABASE`."
    )


def last_analysis_run(engine: Engine) -> RunInfo | None:
    """The most recent ``hstmon analyze`` run."""
    return _last_run(engine, AnalysisRun)


def failed_files(engine: Engine, limit: int = 50) -> pd.DataFrame:
    """Files an ingest could not read, most recent first: path, kind, error, run, when."""
    query = (
        select(
            SourceFile.path, SourceFile.kind, SourceFile.error, SourceFile.ingest_run_id,
            SourceFile.ingested_at,
        )
        .where(SourceFile.status == "failed")
        .order_by(SourceFile.ingested_at.desc(), SourceFile.path)
        .limit(int(limit))
    )  # fmt: skip
    return _frame(engine, query, "ingested_at")


def _action_ids(engine: Engine, today: date, limit: int) -> list[int]:
    """The verdict ids of the first ``limit`` action items, in action-list order.

    Small range scans of the (verdict, hopr_deadline) index, one per verdict and deadline group,
    instead of sorting every hopr and helpdesk verdict.
    """
    deadline = Verdict.hopr_deadline
    found: list[tuple[int, float, int, int]] = []  # (group, key, hopr last, verdict_id)
    with engine.connect() as connection:
        for hopr_last, verdict in enumerate(ACTION_VERDICTS):
            base = select(Verdict.verdict_id, deadline).where(Verdict.verdict == verdict)
            groups = (
                base.where(deadline >= today).order_by(deadline.asc()),
                base.where(deadline < today).order_by(deadline.desc()),
                base.where(deadline.is_(None)).order_by(Verdict.verdict_id),
            )
            for group, query in enumerate(groups):
                for verdict_id, when in connection.execute(query.limit(limit)):
                    days = (pd.Timestamp(when).date() - today).days if when is not None else 0
                    key = days if group == 0 else -days
                    found.append((group, key, hopr_last, int(verdict_id)))
    return [verdict_id for *_, verdict_id in sorted(found)[:limit]]


def _first_association(visit: ColumnElement[str]) -> Any:
    """The visit's first association id (what the visit page opens), as a scalar subquery."""
    sets = aliased(Association)
    return (
        select(func.min(sets.asn_id))
        .where(func.substr(sets.asn_id, 1, 6) == visit)
        .correlate_except(sets)
        .scalar_subquery()
    )


def action_items(engine: Engine, today: date | None = None, limit: int = 200) -> pd.DataFrame:
    """Exposures and visits whose verdict is hopr or helpdesk, by days left to the HOPR deadline.

    Open deadlines come first (soonest first), then passed ones (most recently passed first),
    then those without a known deadline; HOPR before help desk on the same day. ``days_left``
    counts from ``today`` (default: the UTC date now), not from the day of the analysis.
    ``limit_passed`` marks HOPRs whose 90-day limit is behind ``today``: still HOPRs, to show
    apart from the open ones. ``visit`` is the visit (ipppss); ``target`` is the exposure id, or
    for a visit-level verdict (``kind``) the id its page opens (its first association).
    """
    today = today or datetime.now(UTC).date()
    chosen = _action_ids(engine, today, int(limit))
    columns = ["kind", "target", "visit", "asn_id", "proposid", "config", "verdict",
               "hopr_deadline", "days_left", "limit_passed", "summary"]  # fmt: skip
    if not chosen:
        return pd.DataFrame(columns=columns)
    visit = func.coalesce(Verdict.visit_id, func.substr(Verdict.exposure_id, 1, 6))
    query = (
        select(
            Verdict.verdict_id,
            case((Verdict.exposure_id.is_(None), "visit"), else_="exposure").label("kind"),
            func.coalesce(
                Verdict.exposure_id, _first_association(Verdict.visit_id), Verdict.visit_id
            ).label("target"),
            visit.label("visit"),
            Exposure.asn_id,
            func.coalesce(Exposure.proposid, Association.proposid).label("proposid"),
            func.coalesce(Exposure.config, Association.config).label("config"),
            Verdict.verdict,
            Verdict.hopr_deadline,
            Verdict.summary,
        )
        .outerjoin(Exposure, Exposure.exposure_id == Verdict.exposure_id)
        .outerjoin(Association, Association.asn_id == _first_association(visit))
        .where(Verdict.verdict_id.in_(chosen))
    )
    frame = _frame(engine, query).set_index("verdict_id").loc[chosen].reset_index()
    deadlines = pd.to_datetime(frame["hopr_deadline"])
    frame["days_left"] = ((deadlines - pd.Timestamp(today)).dt.days).astype("Int64")
    frame["limit_passed"] = (frame["verdict"] == "hopr") & (frame["days_left"] < 0).fillna(False)
    return frame[columns]


def action_count(engine: Engine, today: date | None = None) -> dict[str, int]:
    """How many verdicts are hopr (``hopr_limit_passed`` when their 90-day limit is behind
    ``today``) and helpdesk, exposures and visits together."""
    today = today or datetime.now(UTC).date()
    kind = case(
        (and_(Verdict.verdict == "hopr", Verdict.hopr_deadline < today), "hopr_limit_passed"),
        else_=Verdict.verdict,
    )
    query = select(kind, func.count()).where(Verdict.verdict.in_(ACTION_VERDICTS)).group_by(kind)
    with engine.connect() as connection:
        return {str(k): int(v) for k, v in connection.execute(query).all()}


# --- Trends ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterOptions:
    """What the trend filters can choose from; ``filters`` is None without a filter column."""

    first_day: date | None
    last_day: date | None
    proposids: tuple[int, ...]
    configs: tuple[str, ...]
    guideacts: tuple[str, ...]
    filters: tuple[str, ...] | None
    has_psf: bool  # the store has FWHM (and nominal FWHM) columns


def filter_options(engine: Engine, summary: DailySummary | None = None) -> FilterOptions:
    """The date span, programs, configurations, guiding modes and filters in the store.

    With a :func:`daily_summary`, the span, configurations and guiding modes come from it.
    """
    present = store_columns(engine)
    filter_name = _first_present(present, FILTER_COLUMNS)
    with engine.connect() as connection:
        proposids = connection.execute(
            select(Association.proposid).where(Association.proposid.is_not(None)).distinct()
        ).scalars()
        proposids = tuple(sorted(int(p) for p in proposids))
        filters = None
        if filter_name is not None:  # indexed: a short scan
            column = _exposure_column(engine, filter_name)
            found = connection.execute(select(column).where(column.is_not(None)).distinct())
            filters = tuple(sorted(str(f) for f in found.scalars()))
        if summary is not None:
            days = summary.jitter["day"]
            span = [d.date() if pd.notna(d) else None for d in (days.min(), days.max())]
            configs = tuple(sorted(summary.jitter["config"].dropna().unique()))
            guideacts = tuple(sorted(summary.jitter["guideact"].dropna().unique()))
        else:
            # Separate statements: min() and max() alone are answered from the index.
            span = [
                connection.execute(select(extreme(Exposure.window_start))).scalar_one()
                for extreme in (func.min, func.max)
            ]
            span = [stamp.date() if (stamp := _utc(t)) is not None else None for t in span]
            configs = tuple(sorted(connection.execute(
                select(Association.config).where(Association.config.is_not(None)).distinct()
            ).scalars()))  # fmt: skip
            guideacts = tuple(sorted(connection.execute(
                select(Exposure.guideact).where(Exposure.guideact.is_not(None)).distinct()
            ).scalars()))  # fmt: skip
    has_psf = _first_present(present, FWHM_COLUMNS) is not None
    return FilterOptions(span[0], span[1], proposids, configs, guideacts, filters, has_psf)


def _metric_columns(metrics: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(metrics))
    unknown = [m for m in chosen if m not in JITTER_METRICS]
    if unknown or not chosen:
        msg = f"metrics must be among {', '.join(JITTER_METRICS)}, not {unknown or chosen!r}"
        raise ValueError(msg)
    return chosen


def jitter_trend(
    engine: Engine,
    filters: TrendFilters = TrendFilters(),
    unit: str = "month",
    metrics: Iterable[str] = tuple(JITTER_METRICS),
    summary: DailySummary | None = None,
) -> pd.DataFrame:
    """Jitter per period and configuration: exposures, and the mean and maximum of each metric.

    Columns: ``period`` (UTC start of the period), ``config``, ``exposures``, then
    ``<metric>_mean`` and ``<metric>_max`` for each metric (mas). With a :func:`daily_summary`
    of the store, filters on dates, configurations and guiding modes are rolled up from it in
    memory; filters on programs or science filters always query the store.
    """
    chosen = _metric_columns(metrics)
    if summary is not None and _summary_covers(filters):
        return _rollup_jitter(summary.jitter, filters, unit, chosen)
    period = _period(engine, Exposure.window_start, unit).label("period")
    aggregates: list[Any] = [func.count().label("exposures")]
    for name in chosen:
        column = getattr(Exposure, name)
        aggregates += [
            func.avg(column).label(f"{name}_mean"),
            func.max(column).label(f"{name}_max"),
        ]
    query = (
        select(period, Exposure.config, *aggregates)
        .where(*_conditions(engine, filters))
        .group_by(period, Exposure.config)
        .order_by(period, Exposure.config)
    )
    return _period_start(_frame(engine, query))


def jitter_outliers(
    engine: Engine, filters: TrendFilters = TrendFilters(), metric: str = "si_rms_p95_mas",
    limit: int = 100,
) -> pd.DataFrame:  # fmt: skip
    """The ``limit`` exposures with the largest ``metric`` (mas) within the filters, largest first.

    Columns: exposure_id, asn_id, proposid, config, guideact, window_start, value (the metric).
    """
    (name,) = _metric_columns([metric])
    value = getattr(Exposure, name)
    query = (
        select(
            Exposure.exposure_id, Exposure.asn_id, Exposure.proposid, Exposure.config,
            Exposure.guideact, Exposure.window_start, value.label("value"),
        )
        .where(*_conditions(engine, filters), value.is_not(None))
        .order_by(value.desc(), Exposure.exposure_id)
        .limit(int(limit))
    )  # fmt: skip
    return _frame(engine, query, "window_start")


def flag_rates(
    engine: Engine,
    filters: TrendFilters = TrendFilters(),
    unit: str = "month",
    summary: DailySummary | None = None,
) -> pd.DataFrame:
    """Per period and rule: exposures flagged, exposures observed, and their ratio ``rate``.

    Rates are of the exposures observed in the period (by window start) within the filters.
    A :func:`daily_summary` answers them in memory, as for :func:`jitter_trend`.
    """
    if summary is not None and _summary_covers(filters):
        return _rollup_flag_rates(summary, filters, unit)
    period = _period(engine, Exposure.window_start, unit).label("period")
    conditions = _conditions(engine, filters)
    totals = select(period, func.count().label("exposures")).where(*conditions).group_by(period)
    flagged = (
        select(period, Flag.rule, func.count(distinct(Flag.exposure_id)).label("flagged"))
        .join(Exposure, Exposure.exposure_id == Flag.exposure_id)
        .where(*conditions)
        .group_by(period, Flag.rule)
    )
    return _rates(_period_start(_frame(engine, flagged)), _period_start(_frame(engine, totals)))


def _rates(flagged: pd.DataFrame, observed: pd.DataFrame) -> pd.DataFrame:
    if flagged.empty:
        return pd.DataFrame(columns=["period", "rule", "flagged", "exposures", "rate"])
    frame = flagged.merge(observed, on="period", how="left")
    frame["flagged"] = frame["flagged"].astype(int)
    frame["exposures"] = frame["exposures"].astype(int)
    frame["rate"] = frame["flagged"] / frame["exposures"]
    return frame.sort_values(["period", "rule"], ignore_index=True)


# --- Daily summaries: one scan of the store, then every trend view is a pandas roll-up ----------


@dataclass(frozen=True)
class DailySummary:
    """What the trend charts aggregate, per UTC day, configuration and guiding mode.

    ``jitter``: day, config, guideact, exposures, then ``<metric>_n`` (non-null values),
    ``<metric>_sum`` and ``<metric>_max`` (mas) per jitter metric. ``flags``: day, config,
    guideact, rule, flagged (exposures). ``psf`` (None without PSF columns): day, config,
    guideact, filter, fwhm_n, fwhm_sum, fwhm_max, nominal_n, nominal_sum (pixels). Built in a
    few passes over the store, it makes any date range, period length, configuration or guiding
    mode selection a roll-up in memory; rebuild it when :func:`store_version` changes.
    """

    jitter: pd.DataFrame
    flags: pd.DataFrame
    psf: pd.DataFrame | None = None


def store_version(engine: Engine) -> tuple[Any, ...]:
    """A value that changes whenever an ingest or analysis run writes (cheap: indexed maxima)."""
    parts = (
        select(func.max(IngestRun.run_id)),
        select(func.max(IngestRun.finished_at)),
        select(func.max(AnalysisRun.run_id)),
        select(func.max(AnalysisRun.finished_at)),
        select(func.max(Exposure.updated_at)),
    )
    with engine.connect() as connection:
        return tuple(str(connection.execute(part).scalar_one()) for part in parts)


def daily_summary(engine: Engine) -> DailySummary:
    """Summarise the store per day, configuration and guiding mode (see :class:`DailySummary`)."""
    day = _period(engine, Exposure.window_start, "day").label("day")
    keys = (day, Exposure.config, Exposure.guideact)
    aggregates: list[Any] = [func.count().label("exposures")]
    for name in JITTER_METRICS:
        column = getattr(Exposure, name)
        aggregates += [
            func.count(column).label(f"{name}_n"),
            func.sum(column).label(f"{name}_sum"),
            func.max(column).label(f"{name}_max"),
        ]
    jitter = select(*keys, *aggregates).where(Exposure.window_start.is_not(None)).group_by(*keys)
    flags = (
        select(*keys, Flag.rule, func.count(distinct(Flag.exposure_id)).label("flagged"))
        .join(Exposure, Exposure.exposure_id == Flag.exposure_id)
        .where(Exposure.window_start.is_not(None))
        .group_by(*keys, Flag.rule)
    )
    queries = [jitter, flags]
    columns = _psf_columns(engine)
    if columns is not None:
        filter_column, fwhm, nominal = columns
        nominal = nominal if nominal is not None else null()
        psf_keys = (*keys, filter_column.label("filter"))
        queries.append(
            select(
                *psf_keys, func.count(fwhm).label("fwhm_n"), func.sum(fwhm).label("fwhm_sum"),
                func.max(fwhm).label("fwhm_max"), func.count(nominal).label("nominal_n"),
                func.sum(nominal).label("nominal_sum"),
            )
            .where(Exposure.window_start.is_not(None), fwhm.is_not(None))
            .group_by(*keys, filter_column)
        )  # fmt: skip
    frames = [_frame(engine, query) for query in queries]
    for frame in frames:
        frame["day"] = pd.to_datetime(frame["day"], utc=True)
    return DailySummary(*frames)


def _summary_covers(filters: TrendFilters) -> bool:
    return not filters.proposids and not filters.filters


def _summary_rows(frame: pd.DataFrame, filters: TrendFilters) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    if filters.start is not None:
        keep &= frame["day"] >= pd.Timestamp(filters.start, tz="UTC")
    if filters.end is not None:
        keep &= frame["day"] <= pd.Timestamp(filters.end, tz="UTC")
    if filters.configs:
        keep &= frame["config"].isin(_strs(filters.configs))
    if filters.guideacts:
        keep &= frame["guideact"].isin(_strs(filters.guideacts))
    return frame[keep]


def _period_of(days: pd.Series, unit: str) -> pd.Series:
    if unit not in PERIODS:
        msg = f"period must be one of {', '.join(PERIODS)}, not {unit!r}"
        raise ValueError(msg)
    if unit == "day":
        return days
    if unit == "week":
        return days - pd.to_timedelta(days.dt.day_of_week, unit="D")
    return days - pd.to_timedelta(days.dt.day - 1, unit="D")


def _rollup_jitter(
    frame: pd.DataFrame, filters: TrendFilters, unit: str, metrics: list[str]
) -> pd.DataFrame:
    rows = _summary_rows(frame, filters)
    rows = rows.assign(period=_period_of(rows["day"], unit))
    sums = {"exposures": ("exposures", "sum")}
    for name in metrics:
        sums |= {f"{name}_n": (f"{name}_n", "sum"), f"{name}_sum": (f"{name}_sum", "sum"),
                 f"{name}_max": (f"{name}_max", "max")}  # fmt: skip
    grouped = rows.groupby(["period", "config"], dropna=False, sort=True).agg(**sums)
    result = grouped.reset_index()[["period", "config", "exposures"]]
    for name in metrics:
        counts = grouped[f"{name}_n"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = grouped[f"{name}_sum"].to_numpy(dtype=float) / counts
        result[f"{name}_mean"] = np.where(counts > 0, mean, np.nan)
        result[f"{name}_max"] = grouped[f"{name}_max"].to_numpy(dtype=float)
    result["exposures"] = result["exposures"].astype(int)
    return result


def _rollup_psf(frame: pd.DataFrame, filters: TrendFilters, unit: str) -> pd.DataFrame:
    rows = _summary_rows(frame, filters)
    if filters.filters:
        rows = rows[rows["filter"].isin(_strs(filters.filters))]
    rows = rows.assign(period=_period_of(rows["day"], unit))
    grouped = rows.groupby(["period", "filter"], sort=True).agg(
        exposures=("fwhm_n", "sum"), fwhm_sum=("fwhm_sum", "sum"), fwhm_max_pix=("fwhm_max", "max"),
        nominal_n=("nominal_n", "sum"), nominal_sum=("nominal_sum", "sum"),
    )  # fmt: skip
    result = grouped.reset_index()
    result["fwhm_mean_pix"] = result["fwhm_sum"] / result["exposures"]
    with np.errstate(invalid="ignore", divide="ignore"):
        nominal = result["nominal_sum"].to_numpy(dtype=float) / result["nominal_n"].to_numpy(
            dtype=float
        )
    result["nominal_fwhm_pix"] = np.where(result["nominal_n"] > 0, nominal, np.nan)
    result["exposures"] = result["exposures"].astype(int)
    columns = ["period", "filter", "exposures", "fwhm_mean_pix", "fwhm_max_pix", "nominal_fwhm_pix"]
    return result[columns]


def _rollup_flag_rates(summary: DailySummary, filters: TrendFilters, unit: str) -> pd.DataFrame:
    observed = _summary_rows(summary.jitter, filters)
    observed = observed.assign(period=_period_of(observed["day"], unit))
    totals = observed.groupby("period", as_index=False)["exposures"].sum()
    flags = _summary_rows(summary.flags, filters)
    flags = flags.assign(period=_period_of(flags["day"], unit))
    flagged = flags.groupby(["period", "rule"], as_index=False)["flagged"].sum()
    return _rates(flagged, totals)


def _psf_columns(engine: Engine) -> tuple[Any, Any, Any] | None:
    """(filter, FWHM, nominal FWHM or None) columns, or None when the store has no PSF yet."""
    present = store_columns(engine)
    names = [_first_present(present, c) for c in (FILTER_COLUMNS, FWHM_COLUMNS)]
    if None in names:
        return None
    nominal = _first_present(present, NOMINAL_FWHM_COLUMNS)
    filter_column, fwhm = (_exposure_column(engine, n) for n in names)  # type: ignore[arg-type]
    return filter_column, fwhm, _exposure_column(engine, nominal) if nominal else None


def psf_trend(
    engine: Engine,
    filters: TrendFilters = TrendFilters(),
    unit: str = "month",
    summary: DailySummary | None = None,
) -> pd.DataFrame | None:
    """PSF FWHM per period and filter against its nominal value (pixels); None when the store has
    no filter or FWHM columns yet.

    Columns: period, filter, exposures (with a FWHM), fwhm_mean_pix, fwhm_max_pix,
    nominal_fwhm_pix. A :func:`daily_summary` answers it in memory unless programs are chosen.
    """
    if summary is not None and not filters.proposids:
        if summary.psf is None:
            return None
        return _rollup_psf(summary.psf, filters, unit)
    columns = _psf_columns(engine)
    if columns is None:
        return None
    filter_column, fwhm, nominal = columns
    period = _period(engine, Exposure.window_start, unit).label("period")
    query = (
        select(
            period, filter_column.label("filter"), func.count().label("exposures"),
            func.avg(fwhm).label("fwhm_mean_pix"), func.max(fwhm).label("fwhm_max_pix"),
            (func.avg(nominal) if nominal is not None else null()).label("nominal_fwhm_pix"),
        )
        .where(*_conditions(engine, filters), fwhm.is_not(None))
        .group_by(period, filter_column)
        .order_by(period, filter_column)
    )  # fmt: skip
    return _period_start(_frame(engine, query))


def psf_outliers(
    engine: Engine, filters: TrendFilters = TrendFilters(), limit: int = 100
) -> pd.DataFrame | None:
    """Exposures with the largest FWHM / nominal FWHM ratio; None without PSF columns."""
    columns = _psf_columns(engine)
    if columns is None or columns[2] is None:
        return None
    filter_column, fwhm, nominal = columns
    ratio = (fwhm / func.nullif(nominal, 0)).label("ratio")
    query = (
        select(
            Exposure.exposure_id, Exposure.config, Exposure.window_start,
            filter_column.label("filter"), fwhm.label("fwhm_pix"),
            nominal.label("nominal_fwhm_pix"), ratio,
        )
        .where(*_conditions(engine, filters), fwhm.is_not(None), nominal.is_not(None))
        .order_by(ratio.desc(), Exposure.exposure_id)
        .limit(int(limit))
    )  # fmt: skip
    return _frame(engine, query, "window_start")


# --- Program browser ------------------------------------------------------------------------------


def _id_prefix(column: ColumnElement[str], prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``: for lowercase alphanumeric ids also as a range the
    primary-key index answers (a LIKE alone scans the table on SQLite)."""
    exact = column.startswith(prefix, autoescape=True)
    if not prefix or not prefix.isascii() or not prefix.isalnum():
        return exact
    following = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < following, exact)


def _search_programs(search: str) -> Any:
    """Programs with a visit, exposure or target matching ``search`` (a bound parameter)."""
    text = search.strip()
    lowered = text.lower()
    by_visit = select(Association.proposid).where(
        or_(
            _id_prefix(Association.asn_id, lowered),
            Association.targname.icontains(text, autoescape=True),
        )
    )
    by_exposure = select(Exposure.proposid).where(
        _id_prefix(Exposure.exposure_id, exposure_key(lowered))
    )
    parts = [by_visit, by_exposure]
    if text.isdigit():
        parts.append(select(literal(int(text), Integer)))
    return union(*parts)


def _recent_programs(engine: Engine, limit: int) -> list[int]:
    """The ``limit`` programs with the latest visits, newest first: a walk down the
    association window_start index that stops as soon as it has them."""
    query = (
        select(Association.proposid)
        .where(Association.window_start.is_not(None), Association.proposid.is_not(None))
        .order_by(Association.window_start.desc())
    )
    found: dict[int, None] = {}
    with engine.connect() as connection:
        streamed = connection.execution_options(stream_results=True)
        for chunk in streamed.execute(query).scalars().partitions(2000):
            found.update(dict.fromkeys(chunk))
            if len(found) >= limit:
                break
    return [int(p) for p in found][:limit]


def program_list(engine: Engine, search: str = "", limit: int = 200) -> pd.DataFrame:
    """Programs, the most recently observed first: the ``limit`` latest, or those matching
    ``search``.

    ``search`` matches a program id, the start of a visit (asn_id) or exposure id, or part of a
    target name. Columns: proposid, config, target, visits, first_window, last_window,
    exposures, flags, flagged_exposures.
    """
    query = select(
        Association.proposid,
        func.min(Association.config).label("config"),
        func.count(distinct(Association.config)).label("n_configs"),
        func.min(Association.targname).label("target"),
        func.count().label("visits"),
        func.min(Association.window_start).label("first_window"),
        func.max(Association.window_start).label("last_window"),
    ).group_by(Association.proposid)
    if search.strip():
        query = query.where(Association.proposid.in_(_search_programs(search)))
    else:
        query = query.where(Association.proposid.in_(_recent_programs(engine, int(limit))))
    programs = _frame(engine, query, "first_window", "last_window")
    programs = programs.sort_values(
        ["last_window", "proposid"], ascending=[False, True], na_position="last"
    ).head(int(limit))
    ids = [int(p) for p in programs["proposid"]]
    exposures = (
        select(Exposure.proposid, func.count().label("exposures"))
        .where(Exposure.proposid.in_(ids))
        .group_by(Exposure.proposid)
    )
    per_exposure = (
        select(Association.proposid, Flag.exposure_id, func.count().label("n"))
        .join(Flag, Flag.asn_id == Association.asn_id)
        .where(Association.proposid.in_(ids))
        .group_by(Association.proposid, Flag.exposure_id)
        .subquery()
    )
    flags = select(
        per_exposure.c.proposid,
        func.sum(per_exposure.c.n).label("flags"),
        func.count().label("flagged_exposures"),
    ).group_by(per_exposure.c.proposid)
    programs = programs.merge(_frame(engine, exposures), on="proposid", how="left")
    programs = programs.merge(_frame(engine, flags), on="proposid", how="left")
    for name in ("exposures", "flags", "flagged_exposures"):
        programs[name] = programs[name].fillna(0).astype(int)
    extra = programs.pop("n_configs").fillna(1).astype(int) - 1
    programs["config"] = [
        f"{c} +{n}" if n > 0 else c for c, n in zip(programs["config"], extra, strict=True)
    ]
    return programs


def program_visits(engine: Engine, proposid: int) -> pd.DataFrame:
    """The visits (associations) of a program with their exposures, flags and visit verdict."""
    (proposid,) = _ints([proposid], "proposid")
    visits = _frame(
        engine,
        select(
            Association.asn_id, Association.targname, Association.config,
            Association.window_start, Association.guidecmd, Association.asn_stat,
        )
        .where(Association.proposid == proposid)
        .order_by(Association.window_start, Association.asn_id),
        "window_start",
    )  # fmt: skip
    ids = list(visits["asn_id"])
    counts = _frame(
        engine,
        select(Exposure.asn_id, func.count().label("exposures"))
        .where(Exposure.proposid == proposid)
        .group_by(Exposure.asn_id),
    )
    flags = _frame(
        engine,
        select(
            Flag.asn_id,
            func.count().label("flags"),
            func.count(distinct(Flag.exposure_id)).label("flagged_exposures"),
        )
        .where(Flag.asn_id.in_(ids))
        .group_by(Flag.asn_id),
    )
    verdicts = _frame(
        engine,
        select(Verdict.visit_id, Verdict.verdict, Verdict.summary, Verdict.hopr_deadline).where(
            Verdict.visit_id.in_(sorted({asn_id[:6] for asn_id in ids}))
        ),
    )
    frame = visits.merge(counts, on="asn_id", how="left").merge(flags, on="asn_id", how="left")
    # A visit (ipppss) may hold several associations: each row shows its visit's verdict.
    frame = frame.assign(visit_id=frame["asn_id"].str[:6]).merge(
        verdicts, on="visit_id", how="left"
    )
    for name in ("exposures", "flags", "flagged_exposures"):
        frame[name] = frame[name].fillna(0).astype(int)
    return frame


# The checklist's per-exposure guiding keywords (JIF, from the keyword map) and JIT statistics.
VISIT_EXPOSURE_COLUMNS = (
    "exposure_id", "asn_member_index", "rootname", "window_start",
    *(k.column for k in checklist_keywords()),
    "jit_n_samples", "jit_n_fill", "jit_takedata_frac", "si_rms_p95_mas",
)  # fmt: skip


def visit_exposures(engine: Engine, asn_id: str) -> pd.DataFrame:
    """The exposures of a visit: the notebook's guiding keywords, JIT statistics, flags (rules,
    worst severity) and verdict, one row each in member order."""
    asn_id = str(asn_id).strip().lower()
    columns = [getattr(Exposure, name) for name in VISIT_EXPOSURE_COLUMNS]
    exposures = _frame(
        engine,
        select(*columns)
        .where(Exposure.asn_id == asn_id)
        .order_by(Exposure.asn_member_index, Exposure.exposure_id),
        "window_start",
        "gsacq",
    )
    flags = _frame(
        engine,
        select(Flag.exposure_id, Flag.rule, Flag.severity)
        .where(Flag.asn_id == asn_id)
        .order_by(Flag.exposure_id, Flag.rule),
    )
    verdicts = _frame(
        engine,
        select(Verdict.exposure_id, Verdict.verdict).where(
            Verdict.exposure_id.in_(list(exposures["exposure_id"]))
        ),
    )
    rules = flags.groupby("exposure_id")["rule"].agg(", ".join).rename("flags")
    rank = {"high": 0, "medium": 1, "info": 2}
    worst = (
        flags.assign(rank=flags["severity"].map(rank))
        .sort_values("rank")
        .groupby("exposure_id")["severity"]
        .first()
        .rename("worst_severity")
    )
    frame = exposures.join(rules, on="exposure_id").join(worst, on="exposure_id")
    frame = frame.merge(verdicts, on="exposure_id", how="left")
    frame["flags"] = frame["flags"].fillna("")
    return frame


def find_ids(engine: Engine, search: str, limit: int = 20) -> pd.DataFrame:
    """Visits and exposures whose id starts with ``search`` (a rootname finds its exposure)."""
    lowered = search.strip().lower()
    if not lowered:
        return pd.DataFrame(columns=["kind", "target", "asn_id", "proposid"])
    exposures = (
        select(
            literal("exposure").label("kind"), Exposure.exposure_id.label("target"),
            Exposure.asn_id, Exposure.proposid,
        )
        .where(_id_prefix(Exposure.exposure_id, exposure_key(lowered)))
        .order_by(Exposure.exposure_id)
        .limit(int(limit))
    )  # fmt: skip
    visits = (
        select(
            literal("visit").label("kind"), Association.asn_id.label("target"),
            Association.asn_id, Association.proposid,
        )
        .where(_id_prefix(Association.asn_id, lowered))
        .order_by(Association.asn_id)
        .limit(int(limit))
    )  # fmt: skip
    frames = [_frame(engine, q) for q in (visits, exposures)]
    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


# --- Exposure drilldown ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExposureDetail:
    """Everything the drilldown shows about one exposure, except samples and headers."""

    exposure: dict[str, Any]  # every column the store's exposure table has
    association: dict[str, Any] | None
    flags: list[dict[str, Any]]
    verdict: dict[str, Any] | None  # the exposure's own
    visit_verdict: dict[str, Any] | None


def normalise_id(requested: str) -> str:
    """An exposure id, rootname or asn id as the store keys it: stripped, lowercase."""
    return str(requested).strip().lower()


def exposure_key(requested: str) -> str:
    """The exposure id a request names: a 9-character rootname loses its last character."""
    name = normalise_id(requested)
    return name[:8] if len(name) == 9 and name.isalnum() else name


def _row_dict(connection: Any, query: Any) -> dict[str, Any] | None:
    row = connection.execute(query).mappings().first()
    return dict(row) if row is not None else None


def exposure_detail(engine: Engine, requested: str) -> ExposureDetail | None:
    """The exposure ``requested`` names (exposure id or 9-char rootname), or None if unknown."""
    exposure_id = exposure_key(requested)
    columns = [_exposure_column(engine, name) for name in store_columns(engine)]
    with engine.connect() as connection:
        exposure = _row_dict(
            connection, select(*columns).where(Exposure.exposure_id == exposure_id)
        )
        if exposure is None:
            return None
        asn_id = exposure.get("asn_id")
        association = _row_dict(connection, select(Association).where(Association.asn_id == asn_id))
        # asn_id narrows the scan to its index; flag has none on exposure_id.
        flags = [
            dict(r)
            for r in connection.execute(
                select(Flag)
                .where(Flag.asn_id == asn_id, Flag.exposure_id == exposure_id)
                .order_by(Flag.severity, Flag.rule)
            ).mappings()
        ]
        if asn_id is None:
            flags = [dict(r) for r in connection.execute(
                select(Flag).where(Flag.exposure_id == exposure_id).order_by(Flag.rule)
            ).mappings()]  # fmt: skip
        verdicts = [
            dict(r)
            for r in connection.execute(
                select(Verdict).where(
                    or_(Verdict.exposure_id == exposure_id, Verdict.visit_id == exposure_id[:6])
                )
            ).mappings()
        ]
    own = next((v for v in verdicts if v["exposure_id"] == exposure_id), None)
    visit = next((v for v in verdicts if v["exposure_id"] is None), None)
    rank = {"high": 0, "medium": 1, "info": 2}
    flags.sort(key=lambda f: (rank.get(f["severity"], 3), f["rule"]))
    return ExposureDetail(exposure, association, flags, own, visit)


@dataclass(frozen=True)
class VisitDetail:
    """An association with its visit's verdict; its exposures come from :func:`visit_exposures`.

    A visit is ``ipppss``: the verdict judges every association and lone exposure of it.
    """

    association: dict[str, Any]
    verdict: dict[str, Any] | None


def visit_detail(engine: Engine, asn_id: str) -> VisitDetail | None:
    """The association ``asn_id`` (or a visit's first one, given an ``ipppss``) and its visit's
    verdict, or None if unknown."""
    asn_id = normalise_id(asn_id)
    with engine.connect() as connection:
        if len(asn_id) == 6:
            first = select(func.min(Association.asn_id)).where(
                Association.asn_id.like(f"{asn_id}%")
            )
            asn_id = connection.execute(first).scalar() or asn_id
        association = _row_dict(connection, select(Association).where(Association.asn_id == asn_id))
        if association is None:
            return None
        verdict = _row_dict(connection, select(Verdict).where(Verdict.visit_id == asn_id[:6]))
    return VisitDetail(association, verdict)


SAMPLE_COLUMNS = ("sample_index", "seconds", "si_v2_avg", "si_v3_avg", "si_v2_rms", "si_v3_rms",
                  "take_data", "recenter", "slew_flag")  # fmt: skip


def jitter_samples(engine: Engine, exposure_id: str) -> pd.DataFrame:
    """The JIT time series of one exposure, in file units (arcsec); fill rows are NaN."""
    exposure_id = exposure_key(exposure_id)
    query = (
        select(*(getattr(JitterSample, c) for c in SAMPLE_COLUMNS))
        .where(JitterSample.exposure_id == exposure_id)
        .order_by(JitterSample.sample_index)
    )
    frame = _frame(engine, query)
    for name in ("si_v2_avg", "si_v3_avg", "si_v2_rms", "si_v3_rms", "seconds"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return frame


def take_data_down_spans(samples: pd.DataFrame) -> pd.DataFrame:
    """Runs of JIT rows with TakeData != 1 as [start_s, end_s] spans (a row covers the 3 s
    before its Seconds value)."""
    if samples.empty:
        return pd.DataFrame(columns=["start_s", "end_s"])
    seconds = samples["seconds"].to_numpy(dtype=float)
    step = float(pd.Series(seconds).diff().median()) if len(seconds) > 1 else 3.0
    down = (samples["take_data"].fillna(0).to_numpy() != 1).tolist()
    spans: list[tuple[float, float]] = []
    for index, is_down in enumerate(down):
        if not is_down:
            continue
        start = seconds[index] - step
        if spans and index > 0 and down[index - 1]:
            spans[-1] = (spans[-1][0], float(seconds[index]))
        else:
            spans.append((float(start), float(seconds[index])))
    return pd.DataFrame(spans, columns=["start_s", "end_s"])


def fits_headers(engine: Engine, exposure_id: str) -> pd.DataFrame:
    """The full headers behind an exposure: its extensions and the primary HDUs of their files.

    Columns: path, kind, hdu_index, extname, header (dict, raw sentinels kept).
    """
    exposure_id = exposure_key(exposure_id)
    files = select(FitsHeader.file_id).where(FitsHeader.exposure_id == exposure_id)
    query = (
        select(
            SourceFile.path, SourceFile.kind, FitsHeader.hdu_index, FitsHeader.extname,
            FitsHeader.header,
        )
        .join(SourceFile, SourceFile.file_id == FitsHeader.file_id)
        .where(
            or_(
                FitsHeader.exposure_id == exposure_id,
                and_(FitsHeader.hdu_index == 0, FitsHeader.file_id.in_(files)),
            )
        )
        .order_by(SourceFile.kind, SourceFile.path, FitsHeader.hdu_index)
    )  # fmt: skip
    return _frame(engine, query)


def is_empty(engine: Engine) -> bool:
    """True when the store holds no exposure yet (schema present, nothing ingested)."""
    with engine.connect() as connection:
        return connection.execute(select(Exposure.exposure_id).limit(1)).first() is None


def period_bounds(period_start: date, unit: str) -> tuple[date, date]:
    """First and last day (both included) of the period starting on ``period_start``."""
    if unit not in PERIODS:
        msg = f"period must be one of {', '.join(PERIODS)}, not {unit!r}"
        raise ValueError(msg)
    if unit == "day":
        return period_start, period_start
    if unit == "week":
        return period_start, period_start + timedelta(days=6)
    following = (pd.Timestamp(period_start) + pd.offsets.MonthBegin(1)).date()
    return period_start, following - timedelta(days=1)


def flagged_exposures(
    engine: Engine, filters: TrendFilters = TrendFilters(), rule: str | None = None,
    limit: int = 200,
) -> pd.DataFrame:  # fmt: skip
    """Exposures flagged (by ``rule``, or by any rule) within the filters, most recent first.

    Columns: exposure_id, asn_id, proposid, config, window_start, rule, severity, message.
    """
    query = (
        select(
            Exposure.exposure_id, Exposure.asn_id, Exposure.proposid, Exposure.config,
            Exposure.window_start, Flag.rule, Flag.severity, Flag.message,
        )
        .join(Flag, Flag.exposure_id == Exposure.exposure_id)
        .where(*_conditions(engine, filters))
        .order_by(Exposure.window_start.desc(), Exposure.exposure_id, Flag.rule)
        .limit(int(limit))
    )  # fmt: skip
    if rule is not None:
        query = query.where(Flag.rule == str(rule))
    return _frame(engine, query, "window_start")


_KIND_ORDER = {"flc": 0, "flt": 1, "ima": 2}


def _per_image(engine: Engine, model: Any, exposure_id: str) -> pd.DataFrame:
    """Rows of a per-chip science table for one exposure (empty on a store without it)."""
    query = select(model).where(model.exposure_id == exposure_key(exposure_id))
    try:
        frame = _frame(engine, query)
    except DBAPIError:  # a store at a schema revision before images
        return pd.DataFrame()
    if frame.empty:
        return frame
    order = frame["kind"].map(_KIND_ORDER).fillna(9)
    return frame.assign(_order=order).sort_values(["_order", "extver"]).drop(columns="_order")


def image_previews(engine: Engine, exposure_id: str) -> pd.DataFrame:
    """The stored SCI, ERR and DQ previews (zscale PNG bytes) of each chip or read of an
    exposure's science files, FLC first. Columns: kind, extver, sci_png, err_png, dq_png."""
    frame = _per_image(engine, ImagePreview, exposure_id)
    columns = ["kind", "extver", "sci_png", "err_png", "dq_png"]
    return frame[columns].reset_index(drop=True) if len(frame) else pd.DataFrame(columns=columns)


def psf_measurements(engine: Engine, exposure_id: str) -> pd.DataFrame:
    """The PSF of each chip of an exposure's FLT/FLC: FWHM (pixels), nominal FWHM, elongation,
    stars fitted, why a value is missing, and the fitted stars (Moffat parameters)."""
    frame = _per_image(engine, PsfMeasurement, exposure_id)
    columns = ["kind", "extver", "ccdchip", "n_psf_stars", "fwhm_median_pix", "fwhm_p90_pix",
               "fwhm_nominal_pix", "elongation_median", "reason", "stars"]  # fmt: skip
    return frame[columns].reset_index(drop=True) if len(frame) else pd.DataFrame(columns=columns)


def radial_profiles(
    psf: pd.DataFrame, max_radius_pix: float = 8.0, points: int = 81
) -> pd.DataFrame:
    """The peak-normalised Moffat profile ``(1 + (r/gamma)^2)^-alpha`` of every fitted star.

    Columns: chip (e.g. "FLC 1"), star (index within the chip), radius_pix, profile, fwhm_pix.
    """
    radius = np.linspace(0.0, max_radius_pix, points)
    parts = []
    for row in psf.itertuples():
        for number, star in enumerate(row.stars or []):
            gamma, alpha = star.get("moffat_gamma_pix"), star.get("moffat_alpha")
            if not gamma or not alpha:
                continue
            parts.append(pd.DataFrame({
                "chip": f"{str(row.kind).upper()} {row.extver}", "star": number,
                "radius_pix": radius, "profile": (1 + (radius / gamma) ** 2) ** -alpha,
                "fwhm_pix": star.get("fwhm_pix"),
            }))  # fmt: skip
    if not parts:
        return pd.DataFrame(columns=["chip", "star", "radius_pix", "profile", "fwhm_pix"])
    return pd.concat(parts, ignore_index=True)
