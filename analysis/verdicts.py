"""HOPR verdicts: from the flags of an exposure and of its visit to what to do, and by when.

Policy: a HOPR may be filed within 90 days of the data's first delivery when science was lost to
a telescope or guiding failure; failed SNAP exposures are never repeated; a visit that obtained
more than 90% of its data is unlikely to be repeated, so the help desk is the right first call.
Internal exposures are not guided and never get a HOPR. An exposure whose observing logs are not
in the store cannot be judged: it is ``incomplete``, never "nominal". A visit is ``ipppss``: its
associations and lone exposures are judged together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from analysis.config import RuleSet
from analysis.kinds import exposure_kinds, instrument

__all__ = [
    "VERDICTS",
    "VerdictRecord",
    "exposure_verdicts",
    "first_deliveries",
    "member_list",
    "visit_id",
    "visit_verdicts",
]

VERDICTS = ("hopr", "helpdesk", "ok", "not_repeatable", "incomplete")
# For the summary sentence: what an exposure suffered, singular and plural, worst cause first.
CAUSES: dict[str, tuple[str, str]] = {
    "gs_acq_failure": ("lost its guide star", "lost their guide star"),
    "wrong_guide_star_pair": (
        "was locked on the wrong guide-star pair",
        "were locked on the wrong guide-star pair",
    ),
    "exposure_interrupted": ("was interrupted", "were interrupted"),
    "loss_of_lock": ("lost lock", "lost lock"),
    "take_data_down": ("had the take-data flag down", "had the take-data flag down"),
    "guiding_degraded": ("was not guided as commanded", "were not guided as commanded"),
}
_RANK = {"hopr": 4, "not_repeatable": 3, "helpdesk": 2, "incomplete": 1, "ok": 0}
_OTHER_GROUPS = {  # story group -> (singular, plural) of what those exposures are
    "lost": ("lost data", "lost data"),
    "helpdesk": ("needs a closer look", "need a closer look"),
    "incomplete": ("has no observing log in the store", "have no observing log in the store"),
    "internal": ("is internal (not guided)", "are internal (not guided)"),
    "nominal": ("is nominal", "are nominal"),
}


def visit_id(exposure_id: str) -> str:
    """The visit of an exposure: ``ipppss``, the first 6 characters of its name."""
    return exposure_id[:6]


@dataclass
class VerdictRecord:
    """One row of the verdict table, before it is written."""

    verdict: str
    summary: str
    reasons: list[str] = field(default_factory=list)
    exposure_id: str | None = None
    visit_id: str | None = None
    delivered_on: date | None = None
    delivery_basis: str | None = None
    hopr_deadline: date | None = None
    days_left: int | None = None
    cause: str | None = None  # the worst HOPR rule, for visit summaries (not stored)
    internal: bool = False  # an internal exposure (not stored)

    def row(self, today: date, run_id: int) -> dict[str, Any]:
        return {
            "exposure_id": self.exposure_id,
            "visit_id": self.visit_id,
            "verdict": self.verdict,
            "summary": self.summary,
            "reasons": self.reasons,
            "delivered_on": self.delivered_on,
            "delivery_basis": self.delivery_basis,
            "hopr_deadline": self.hopr_deadline,
            "days_left": self.days_left,
            "decided_on": today,
            "analysis_run_id": run_id,
        }


_DELIVERY_SOURCES = (  # column, basis
    ("proctime", "PROCTIME of the observing log (JIF/JIT)"),
    ("date_delivered", "PROCTIME of the science file"),
    ("first_ingested_at", "first ingest by hstmon"),
)
_REPROCESSED = "observation end: later products are reprocessings"
_UNKNOWN = "observation end (no delivery date known)"


def _days(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A date or time column as UTC days (datetime64[D]); NaT where missing."""
    if column not in frame:
        return np.full(len(frame), np.datetime64("NaT"), dtype="datetime64[D]")
    moments = pd.to_datetime(frame[column], utc=True).dt.tz_localize(None)
    return moments.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")


def first_deliveries(frame: pd.DataFrame, within_days: int) -> pd.DataFrame:
    """Per exposure, the data's first delivery: ``delivered`` (a date), ``basis`` and ``note``.

    The earliest date the store knows of: the observing log's PROCTIME, the science file's
    PROCTIME, the first ingest of the exposure. A product made ``within_days`` or more after the
    observation is a reprocessing (or a late ingest): the first delivery followed the
    observation, so the observation's end (EXPEND, else the window's) is taken, and a
    reprocessing never moves the deadline. ``note`` explains that case.
    """
    candidates = np.stack([_days(frame, column) for column, _ in _DELIVERY_SOURCES])
    known = ~np.isnat(candidates)
    latest = np.datetime64("9999-12-31", "D")
    first = np.where(known, candidates, latest).argmin(axis=0)
    earliest = candidates[first, np.arange(len(frame))]
    observed = _days(frame, "expend")
    observed = np.where(np.isnat(observed), _days(frame, "window_end"), observed)
    gap = (earliest - observed).astype("timedelta64[D]").astype(float)
    reprocessed = known.any(axis=0) & ~np.isnat(observed) & (gap >= within_days)
    delivered = np.where(reprocessed | ~known.any(axis=0), observed, earliest)
    basis = np.array([basis for _, basis in _DELIVERY_SOURCES], dtype=object)[first]
    basis = np.where(reprocessed, _REPROCESSED, basis)
    basis = np.where(~known.any(axis=0), np.where(np.isnat(observed), None, _UNKNOWN), basis)
    notes = np.full(len(frame), None, dtype=object)
    for i in np.flatnonzero(reprocessed):
        source = _DELIVERY_SOURCES[first[i]][1]
        notes[i] = (
            f"The earliest product in the store ({source}, {earliest[i]}) was made "
            f"{int(gap[i])} days after the observation: a reprocessing, so the first delivery "
            f"is taken as the observation's end ({observed[i]})."
        )
    days = pd.Series(delivered, index=frame.index)
    return pd.DataFrame(
        {
            "delivered": [None if pd.isna(d) else pd.Timestamp(d).date() for d in days],
            "basis": basis,
            "note": notes,
        },
        index=frame.index,
    )


def _deadline_words(deadline: date | None, today: date) -> str:
    if deadline is None:
        return "File a HOPR (no delivery date known: the 90-day limit cannot be computed)"
    days = (deadline - today).days
    if days < 0:
        return (
            f"A HOPR is warranted but its 90-day limit passed on {deadline} ({-days} days ago); "
            "ask the help desk whether a late HOPR is possible"
        )
    return f"File a HOPR by {deadline} ({days} days left)"


def member_list(numbers: list[int]) -> str:
    """'4-7', '1, 3', '2-3, 6' for exposure numbers within a visit."""
    numbers = sorted(numbers)
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][-1] + 1:
            spans[-1].append(number)
        else:
            spans.append([number])
    return ", ".join(f"{s[0]}-{s[-1]}" if len(s) > 1 else str(s[0]) for s in spans)


@dataclass(frozen=True)
class _FlagNote:
    rule: str
    severity: str
    message: str


def _missing_logs(row: Any) -> str | None:
    """What the store lacks to judge the guiding, in words; None when both logs are there."""
    has_jif, has_jit = pd.notna(row.jif_file_id), pd.notna(row.jit_file_id)
    if has_jif and has_jit:
        return None
    if has_jif:
        return "its JIT is not in the store (no jitter time series)"
    if has_jit:
        return "its JIF is not in the store, so GSACQ, GUIDEACT and the problem flags were not read"
    missing = "no observing log (JIF or JIT) of it is in the store"
    if pd.notna(row.asn_memprsnt) and not bool(row.asn_memprsnt):
        missing += ", and its association table marks it not present (MEMPRSNT=F)"
    return missing


def _internal_words(row: Any) -> str:
    imagetyp = row.imagetyp if isinstance(row.imagetyp, str) else None
    if imagetyp and imagetyp.strip().upper() != "EXT":
        return f"IMAGETYP={imagetyp.strip()}"
    return f"target {row.targname or row.asn_targname}"


@dataclass(frozen=True)
class _Context:
    rules: RuleSet
    today: date
    snaps: set[int]


def _exposure_verdict(row: Any, flags: list[_FlagNote], context: _Context) -> VerdictRecord:
    delivered = None if pd.isna(row.delivered) else row.delivered
    basis = row.basis if isinstance(row.basis, str) else None
    note = row.note if isinstance(row.note, str) else None
    limit = int(context.rules.policy.get("hopr_limit_days", 90))
    deadline = delivered + timedelta(days=limit) if delivered else None
    record = VerdictRecord(
        verdict="ok",
        summary="No action needed: the observing logs show nominal guiding.",
        reasons=[flag.message for flag in flags] + ([note] if note else []),
        exposure_id=row.exposure_id,
        delivered_on=delivered,
        delivery_basis=basis,
        hopr_deadline=deadline,
        days_left=(deadline - context.today).days if deadline else None,
    )
    if row.internal:
        record.internal = True
        record.summary = (
            f"No HOPR applies: an internal exposure ({_internal_words(row)}) is not guided."
        )
        return record
    missing = _missing_logs(row)
    desk = f"Ask the {row.instrument_name or 'HST'} help desk"
    serious = [flag for flag in flags if flag.severity != "info"]
    lost = [f for f in serious if f.severity == "high" and context.rules.rules[f.rule].hopr]
    after = f" Note: {missing}." if missing else ""
    if lost:
        lost_rules = {flag.rule for flag in lost}
        record.cause = next((c for c in CAUSES if c in lost_rules), lost[0].rule)
        if row.possible_acquisition:
            record.verdict = "helpdesk"
            record.summary = (
                f"{desk}: {lost[0].message} {row.instrument_name} exposures can be target "
                "acquisitions, and the science header that names the mode is not in the store."
                f"{after}"
            )
        elif pd.notna(row.proposid) and int(row.proposid) in context.snaps:
            record.verdict = "not_repeatable"
            record.summary = (
                f"Not repeatable: program {int(row.proposid)} is a SNAP program and failed SNAP "
                f"exposures are never repeated. {lost[0].message}"
            )
        else:
            record.verdict = "hopr"
            record.summary = f"{_deadline_words(deadline, context.today)}: {lost[0].message}{after}"
    elif serious:
        record.verdict = "helpdesk"
        record.summary = f"{desk}: {serious[0].message}{after}"
    elif missing and pd.isna(row.jif_file_id) and pd.isna(row.jit_file_id):
        record.verdict = "incomplete"
        record.summary = f"Cannot judge the guiding: {missing}."
    elif missing:
        record.summary = f"No action needed: the logs in the store show nominal guiding; {missing}."
    return record


_VERDICT_COLUMNS = (
    "exposure_id", "proposid", "jif_file_id", "jit_file_id", "asn_memprsnt", "imagetyp",
    "targname", "asn_targname",
)  # fmt: skip


def exposure_verdicts(
    frame: pd.DataFrame, flags: pd.DataFrame, rules: RuleSet, today: date
) -> dict[str, VerdictRecord]:
    """A verdict for every exposure in ``frame`` (plain Python per row: 300k rows in seconds)."""
    by_exposure: dict[str, list[_FlagNote]] = {}
    columns = (flags["rule"], flags["severity"], flags["message"])
    for exposure_id, rule, severity, message in zip(flags.index, *columns, strict=True):
        by_exposure.setdefault(exposure_id, []).append(_FlagNote(rule, severity, message))
    context = _Context(rules, today, {int(p) for p in rules.policy.get("snap_programs", [])})
    kinds = exposure_kinds(frame, rules)
    within = int(rules.policy.get("first_delivery_within_days", 30))
    table = frame.reindex(columns=list(_VERDICT_COLUMNS)).assign(
        internal=kinds["internal"],
        possible_acquisition=kinds["possible_acquisition"],
        instrument_name=instrument(frame),
    )
    table = table.join(first_deliveries(frame, within))
    return {
        row.exposure_id: _exposure_verdict(row, by_exposure.get(row.exposure_id, []), context)
        for row in table.itertuples(index=False)
    }


@dataclass(frozen=True)
class _Member:
    exposure_id: str
    asn_id: str | None
    number: int | None
    seconds: float
    start_ns: float  # EXPSTART (else the window's start) in ns since 1970; NaN when unknown


def _group(verdict: VerdictRecord) -> str:
    if verdict.verdict in ("hopr", "not_repeatable"):
        return verdict.cause if verdict.cause in CAUSES else "lost"
    if verdict.verdict in ("helpdesk", "incomplete"):
        return verdict.verdict
    return "internal" if verdict.internal else "nominal"


def _visit_story(members: list[_Member], verdicts: dict[str, VerdictRecord]) -> list[str]:
    """'exposures 4-7 lost their guide star', '1-3 are nominal': worst news first.

    Exposures are numbered as in their jitter files when the visit is one association; a visit
    of several associations and lone exposures names them.
    """
    # Association ids end in 0; a lone exposure's set is named by its jitter name (ends in j).
    asn_ids = {m.asn_id for m in members}
    numbered = (
        len(asn_ids) == 1
        and str(next(iter(asn_ids))).endswith("0")
        and all(m.number for m in members)
    )
    groups: dict[str, list[_Member]] = {}
    for member in members:
        groups.setdefault(_group(verdicts[member.exposure_id]), []).append(member)
    order = [*CAUSES, *_OTHER_GROUPS]
    parts = []
    for key in sorted(groups, key=order.index):
        chosen = groups[key]
        plural = len(chosen) > 1
        if numbered:
            label = member_list([m.number for m in chosen if m.number])
        else:
            label = ", ".join(m.exposure_id for m in chosen)
        if not parts:
            label = f"exposure{'s' if plural else ''} {label}"
        words = CAUSES.get(key) or _OTHER_GROUPS[key]
        parts.append(f"{label} {words[plural]}")
    return parts


def _visit_verdict(
    visit: str,
    members: list[_Member],
    verdicts: dict[str, VerdictRecord],
    rules: RuleSet,
    today: date,
    desk: str,
) -> VerdictRecord:
    member_verdicts = [verdicts[m.exposure_id] for m in members]
    worst = max(member_verdicts, key=lambda v: _RANK[v.verdict]).verdict
    deadline = min((v.hopr_deadline for v in member_verdicts if v.hopr_deadline), default=None)
    delivered = min((v.delivered_on for v in member_verdicts if v.delivered_on), default=None)
    record = VerdictRecord(
        verdict=worst,
        summary="",
        visit_id=visit,
        reasons=[f"{v.exposure_id}: {v.summary}" for v in member_verdicts if v.verdict != "ok"],
        delivered_on=delivered,
        delivery_basis=next((v.delivery_basis for v in member_verdicts if v.delivery_basis), None),
        hopr_deadline=deadline,
        days_left=(deadline - today).days if deadline else None,
    )
    story = "; ".join(_visit_story(members, verdicts))
    if worst == "hopr":
        external = [m for m in members if not verdicts[m.exposure_id].internal]
        total = sum(m.seconds for m in external)
        lost = sum(m.seconds for m in external if verdicts[m.exposure_id].verdict == "hopr")
        obtained = 1 - lost / total if total > 0 else 0.0
        if obtained > float(rules.policy.get("repeat_unlikely_fraction", 0.9)):
            record.verdict = "helpdesk"
            record.summary = (
                f"{desk}: {_share(obtained)} of the visit's data were obtained, so a repeat is "
                f"unlikely unless the lost exposure is uniquely important; {story}."
            )
        else:
            record.summary = f"{_deadline_words(deadline, today)}: {story}."
    elif worst == "not_repeatable":
        record.summary = f"Not repeatable (SNAP program): {story}."
    elif worst == "helpdesk":
        record.summary = f"{desk}: {story}."
    elif worst == "incomplete":
        record.summary = f"Cannot judge the whole visit: {story}."
    elif all(_group(v) == "nominal" for v in member_verdicts):
        record.summary = f"No action needed: all {len(members)} exposures are nominal."
    else:
        record.summary = f"No action needed: {story}."
    return record


def _nanoseconds(frame: pd.DataFrame, column: str) -> pd.Series:
    moments = pd.to_datetime(frame[column], utc=True)
    return pd.Series(moments.array.asi8, index=frame.index, dtype=float).where(moments.notna())


def _members(frame: pd.DataFrame, visits: set[str]) -> dict[str, list[_Member]]:
    chosen = frame[frame["exposure_id"].str[:6].isin(visits)]
    starts = _nanoseconds(chosen, "window_start")
    if "expstart" in chosen:
        starts = _nanoseconds(chosen, "expstart").fillna(starts)
    numbers = pd.to_numeric(chosen["asn_member_index"], errors="coerce")
    asn_ids = chosen["asn_id"].where(chosen["asn_id"].map(lambda v: isinstance(v, str)), None)
    rows = zip(
        chosen["exposure_id"].tolist(), asn_ids.tolist(), numbers.tolist(),
        pd.to_numeric(chosen["seconds"], errors="coerce").fillna(0.0).tolist(), starts.tolist(),
        strict=True,
    )  # fmt: skip
    by_visit: dict[str, list[_Member]] = {}
    for exposure_id, asn_id, number, seconds, start in rows:
        number = None if number != number else int(number)  # NaN: no member number
        member = _Member(exposure_id, asn_id, number, seconds, start)
        by_visit.setdefault(visit_id(exposure_id), []).append(member)
    return by_visit


def _in_order(members: list[_Member]) -> list[_Member]:
    """Jitter-file order within one association; otherwise by start time, then name."""
    if len({m.asn_id for m in members}) == 1:
        return sorted(members, key=lambda m: (m.number or 0, m.exposure_id))
    return sorted(
        members,
        key=lambda m: (m.start_ns != m.start_ns, m.start_ns if m.start_ns == m.start_ns else 0.0,
                       m.exposure_id),
    )  # fmt: skip


def visit_verdicts(
    frame: pd.DataFrame,
    verdicts: dict[str, VerdictRecord],
    rules: RuleSet,
    today: date,
    visits: Iterable[str],
) -> list[VerdictRecord]:
    """A verdict for each visit (``ipppss``) in ``visits``, from all its exposures' verdicts."""
    by_visit = _members(frame, set(visits))
    instruments = instrument(frame).groupby(frame["exposure_id"].str[:6]).first()
    records = []
    for visit, members in sorted(by_visit.items()):
        desk = f"Ask the {instruments.get(visit) or 'HST'} help desk"
        ordered = _in_order(members)
        records.append(_visit_verdict(visit, ordered, verdicts, rules, today, desk))
    return records


def _share(fraction: float) -> str:
    """A share in per cent, never rounded up to 100% while something was lost."""
    percent = math.floor(fraction * 1000) / 10
    return f"{percent:.0f}%" if percent == int(percent) else f"{percent:.1f}%"
