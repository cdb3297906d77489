"""Read-only queries of the store, shared by the command line summaries and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, and_, case, distinct, func, or_, select

from models.tables import Association, Exposure, Flag, Verdict

__all__ = ["ActionItem", "ProgramSummary", "action_list", "flag_counts", "program_summaries"]


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


def program_summaries(engine: Engine) -> list[ProgramSummary]:
    """Per program: exposures and the failures their jitter files report.

    A guide-star acquisition failure is a GSFAIL code or a JIF that left GSACQ blank; loss of lock
    is NLOSSES > 0; take-data down is the TDF-DOWN flag; guiding degraded is GUIDEACT differing
    from the association's GUIDECMD.
    """
    gs_failure = or_(
        Exposure.gsfail.is_not(None),
        and_(Exposure.jif_file_id.is_not(None), Exposure.gsacq.is_(None)),
    )
    degraded = and_(Exposure.guideact.is_not(None), Exposure.guideact != Association.guidecmd)
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

    asn_id: str
    verdict: str
    hopr_deadline: object
    days_left: int | None
    summary: str


def action_list(engine: Engine, limit: int = 20) -> list[ActionItem]:
    """Visits whose verdict is hopr or helpdesk, the nearest HOPR deadline first."""
    query = (
        select(
            Verdict.asn_id,
            Verdict.verdict,
            Verdict.hopr_deadline,
            Verdict.days_left,
            Verdict.summary,
        )
        .where(Verdict.asn_id.is_not(None), Verdict.verdict.in_(("hopr", "helpdesk")))
        .order_by(
            case((Verdict.verdict == "hopr", 0), else_=1),
            # upcoming deadlines soonest first, then passed ones most recent first
            case((Verdict.days_left >= 0, Verdict.days_left), else_=100_000 - Verdict.days_left),
            Verdict.asn_id,
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
