"""HOPR verdicts: from the flags of an exposure and its visit to what to do, and by when.

Policy (DOMAIN.md 9): a HOPR may be filed within 90 days of delivery when science was lost to a
telescope or guiding failure; failed SNAP exposures are never repeated; a visit that obtained more
than 90% of its data is unlikely to be repeated, so the help desk is the right first call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pandas as pd

from analysis.config import RuleSet

__all__ = ["VerdictRecord", "association_verdicts", "exposure_verdicts", "member_list"]

# For the summary sentence: what an exposure suffered, singular and plural, worst cause first.
CAUSES: dict[str, tuple[str, str]] = {
    "gs_acq_failure": ("lost its guide star", "lost their guide star"),
    "exposure_interrupted": ("was interrupted", "were interrupted"),
    "loss_of_lock": ("lost lock", "lost lock"),
    "take_data_down": ("had the take-data flag down", "had the take-data flag down"),
    "guiding_degraded": ("was not guided as commanded", "were not guided as commanded"),
}
_RANK = {"hopr": 3, "not_repeatable": 2, "helpdesk": 1, "ok": 0}


@dataclass
class VerdictRecord:
    """One row of the verdict table, before it is written."""

    verdict: str
    summary: str
    reasons: list[str] = field(default_factory=list)
    exposure_id: str | None = None
    asn_id: str | None = None
    delivered_on: date | None = None
    delivery_basis: str | None = None
    hopr_deadline: date | None = None
    days_left: int | None = None
    cause: str | None = None  # the worst HOPR rule, for visit summaries (not stored)

    def row(self, today: date, run_id: int) -> dict[str, Any]:
        return {
            "exposure_id": self.exposure_id,
            "asn_id": self.asn_id,
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


def _delivery(row: Any) -> tuple[date | None, str | None]:
    """The best delivery date the files give, and which keyword it came from."""
    delivered = getattr(row, "date_delivered", None)
    if pd.notna(delivered):
        return pd.Timestamp(delivered).date(), "science file delivery date"
    if pd.notna(row.proctime):
        return row.proctime.date(), "PROCTIME of the jitter file (processing, ~delivery)"
    if pd.notna(row.window_end):
        return row.window_end.date(), "observation window end (no delivery date known)"
    return None, None


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


def _exposure_verdict(
    row: Any, flags: list[_FlagNote], rules: RuleSet, today: date, snaps: set[int]
) -> VerdictRecord:
    delivered, basis = _delivery(row)
    limit = int(rules.policy.get("hopr_limit_days", 90))
    deadline = delivered + timedelta(days=limit) if delivered else None
    record = VerdictRecord(
        verdict="ok",
        summary="No action needed: the observing logs show nominal guiding.",
        exposure_id=row.exposure_id,
        delivered_on=delivered,
        delivery_basis=basis,
        hopr_deadline=deadline,
        days_left=(deadline - today).days if deadline else None,
    )
    if not flags:
        return record
    record.reasons = [flag.message for flag in flags]
    serious = [flag for flag in flags if flag.severity != "info"]
    lost = [f for f in serious if f.severity == "high" and rules.rules[f.rule].hopr]
    if lost:
        lost_rules = {flag.rule for flag in lost}
        record.cause = next((c for c in CAUSES if c in lost_rules), lost[0].rule)
        if pd.notna(row.proposid) and int(row.proposid) in snaps:
            record.verdict = "not_repeatable"
            record.summary = (
                f"Not repeatable: program {int(row.proposid)} is a SNAP program and failed SNAP "
                f"exposures are never repeated. {lost[0].message}"
            )
        else:
            record.verdict = "hopr"
            record.summary = f"{_deadline_words(deadline, today)}: {lost[0].message}"
    elif serious:
        record.verdict = "helpdesk"
        record.summary = f"Ask the WFC3 help desk: {serious[0].message}"
    return record


def exposure_verdicts(
    frame: pd.DataFrame, flags: pd.DataFrame, rules: RuleSet, today: date
) -> dict[str, VerdictRecord]:
    """A verdict for every exposure in ``frame`` (plain Python per row: 300k rows in seconds)."""
    by_exposure: dict[str, list[_FlagNote]] = {}
    columns = (flags["rule"], flags["severity"], flags["message"])
    for exposure_id, rule, severity, message in zip(flags.index, *columns, strict=True):
        by_exposure.setdefault(exposure_id, []).append(_FlagNote(rule, severity, message))
    snaps = {int(p) for p in rules.policy.get("snap_programs", [])}
    wanted = ["exposure_id", "proposid", "proctime", "window_end"]
    if "date_delivered" in frame:
        wanted.append("date_delivered")
    return {
        row.exposure_id: _exposure_verdict(
            row, by_exposure.get(row.exposure_id, []), rules, today, snaps
        )
        for row in frame[wanted].itertuples(index=False)
    }


@dataclass(frozen=True)
class _Member:
    exposure_id: str
    number: int
    seconds: float


def _visit_summary(members: list[_Member], verdicts: dict[str, VerdictRecord]) -> list[str]:
    """'exposures 4-7 lost their guide star', '1-3 are nominal': worst news first."""
    groups: dict[str, list[int]] = {}
    for member in members:
        verdict = verdicts[member.exposure_id]
        if verdict.verdict in ("hopr", "not_repeatable"):
            key = verdict.cause or "lost"
        else:
            key = "nominal" if verdict.verdict == "ok" else "helpdesk"
        groups.setdefault(key, []).append(member.number)
    order = [*CAUSES, "lost", "helpdesk", "nominal"]
    parts = []
    for key in sorted(groups, key=order.index):
        numbers = groups[key]
        plural = len(numbers) > 1
        label = member_list(numbers)
        if not parts:
            label = f"exposure{'s' if plural else ''} {label}"
        if key in CAUSES:
            parts.append(f"{label} {CAUSES[key][plural]}")
        elif key == "nominal":
            parts.append(f"{label} {'are' if plural else 'is'} nominal")
        elif key == "helpdesk":
            parts.append(f"{label} need{'' if plural else 's'} a closer look")
        else:
            parts.append(f"{label} lost data")
    return parts


def _association_verdict(
    asn_id: str,
    members: list[_Member],
    verdicts: dict[str, VerdictRecord],
    rules: RuleSet,
    today: date,
) -> VerdictRecord:
    member_verdicts = [verdicts[m.exposure_id] for m in members]
    worst = max(member_verdicts, key=lambda v: _RANK[v.verdict]).verdict
    deadline = min((v.hopr_deadline for v in member_verdicts if v.hopr_deadline), default=None)
    delivered = min((v.delivered_on for v in member_verdicts if v.delivered_on), default=None)
    record = VerdictRecord(
        verdict=worst,
        summary="",
        asn_id=asn_id,
        reasons=[f"{v.exposure_id}: {v.summary}" for v in member_verdicts if v.verdict != "ok"],
        delivered_on=delivered,
        delivery_basis=next((v.delivery_basis for v in member_verdicts if v.delivery_basis), None),
        hopr_deadline=deadline,
        days_left=(deadline - today).days if deadline else None,
    )
    story = "; ".join(_visit_summary(members, verdicts))
    if worst == "hopr":
        total = sum(m.seconds for m in members)
        lost = sum(m.seconds for m in members if verdicts[m.exposure_id].verdict == "hopr")
        obtained = 1 - lost / total if total > 0 else 0.0
        if obtained > float(rules.policy.get("repeat_unlikely_fraction", 0.9)):
            record.verdict = "helpdesk"
            record.summary = (
                f"Ask the WFC3 help desk: {obtained:.0%} of the visit's data were obtained, so a "
                f"repeat is unlikely unless the lost exposure is uniquely important; {story}."
            )
        else:
            record.summary = f"{_deadline_words(deadline, today)}: {story}."
    elif worst == "not_repeatable":
        record.summary = f"Not repeatable (SNAP program): {story}."
    elif worst == "helpdesk":
        record.summary = f"Ask the WFC3 help desk: {story}."
    else:
        record.summary = f"No action needed: all {len(members)} exposures are nominal."
    return record


def association_verdicts(
    frame: pd.DataFrame,
    verdicts: dict[str, VerdictRecord],
    rules: RuleSet,
    today: date,
    asn_ids: Iterable[str],
) -> list[VerdictRecord]:
    """A verdict for each association in ``asn_ids``, from its members' verdicts."""
    wanted = set(asn_ids)
    members = frame.loc[
        frame["asn_id"].isin(wanted), ["asn_id", "exposure_id", "asn_member_index", "seconds"]
    ]
    by_visit: dict[str, list[_Member]] = {}
    for asn_id, exposure_id, number, seconds in members.itertuples(index=False):
        number = int(number) if pd.notna(number) else 0
        seconds = float(seconds) if pd.notna(seconds) else 0.0
        by_visit.setdefault(asn_id, []).append(_Member(exposure_id, number, seconds))
    return [
        _association_verdict(asn_id, sorted(group, key=lambda m: m.number), verdicts, rules, today)
        for asn_id, group in sorted(by_visit.items())
    ]
