"""The nightly digest: what one night's analysis found, as terminal text, Markdown, HTML and JSON.

"New" means rows of ``flag`` and ``verdict`` written by the given analysis runs: analysis is
incremental, so those are exactly the exposures (and their visits) that changed overnight.
:func:`build_digest` reads them into one :class:`Digest`, with what the caller says of the night
(problems, files still outstanding, what discovery passed over, warnings); the renderers only
format it. A digest for readers without access to proprietary programs leaves those programs
out, and says how many.
"""

from __future__ import annotations

import html
import json
import math
import numbers
import re
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, func, or_, select, union
from sqlalchemy.orm import aliased

from analysis.config import SEVERITIES
from analysis.report import PAGE_STYLE
from models.tables import Association, Exposure, Flag, Verdict

__all__ = [
    "NOTHING_NEW",
    "Digest",
    "FlagItem",
    "OutstandingFile",
    "Problem",
    "VerdictItem",
    "build_digest",
    "digest_json",
    "render_html",
    "render_markdown",
    "render_text",
    "summary_blocks",
    "write_digest",
]

NOTHING_NEW = "Nothing new needs attention."
HEADLINE_ITEMS = 5  # per verdict kind in the summary lines; the details list them all
_VERDICT_ORDER = ("hopr", "helpdesk", "not_repeatable", "incomplete")
_VERDICT_LABEL = {
    "hopr": "HOPR",
    "helpdesk": "help desk",
    "not_repeatable": "not repeatable",
    "incomplete": "incomplete",
}
_LEAD = {  # what a visit (or exposure) of each verdict is, singular and plural
    "hopr": ("needs a HOPR", "need a HOPR"),
    "helpdesk": ("is for the WFC3 help desk", "are for the WFC3 help desk"),
    "not_repeatable": (
        "lost data that will not be repeated (SNAP)",
        "lost data that will not be repeated (SNAP)",
    ),
    "incomplete": (
        "cannot be judged: observing logs missing from the store",
        "cannot be judged: observing logs missing from the store",
    ),
}
# A HOPR whose 90-day limit has passed stays a HOPR, listed apart from the open ones.
_LATE_LEAD = (
    "had a HOPR-worthy failure, but the 90-day limit has passed (ask the help desk whether a "
    "late HOPR is possible)",
    "had HOPR-worthy failures, but the 90-day limit has passed (ask the help desk whether a "
    "late HOPR is possible)",
)


@dataclass
class VerdictItem:
    """A verdict that is not 'ok', of a visit (with its exposures' verdicts) or an exposure.

    ``days_left`` counts from the digest's day to ``hopr_deadline`` (negative: the 90-day limit
    has passed). ``summary`` is the analysis's sentence, whose own day count is from
    ``decided_on``; ``happened`` is its part after the advice (what went wrong).
    """

    level: str  # "visit" | "exposure"
    subject: str  # visit_id (ipppss) of a visit, exposure_id of an exposure (lowercase)
    verdict: str  # hopr | helpdesk | not_repeatable | incomplete
    summary: str
    happened: str
    hopr_deadline: date | None
    days_left: int | None
    decided_on: date | None
    asn_id: str | None  # an exposure's association (None for a visit)
    member_index: int | None  # the exposure's number within its association
    proposid: int | None
    config: str | None
    targname: str | None
    analysis_run_id: int | None
    exposures: list[VerdictItem] = field(default_factory=list)


@dataclass
class FlagItem:
    """One flag written by the night's analysis, with the evidence that fired it."""

    exposure_id: str
    asn_id: str | None
    member_index: int | None
    rule: str
    rule_version: int
    severity: str
    message: str
    evidence: dict[str, Any]
    analysis_run_id: int | None


@dataclass
class Problem:
    """Something of the night that failed: where (a file, a URL, a step) and why."""

    where: str
    reason: str


@dataclass
class OutstandingFile:
    """A MAST file whose download failed for good reason (4xx, not FITS), tried again from
    ``next_try_at`` (UTC); ``attempts`` nightly runs have failed on it, tonight's included when
    ``failed_tonight``."""

    filename: str
    uri: str
    reason: str
    attempts: int
    first_failed_at: datetime
    next_try_at: datetime
    failed_tonight: bool
    program: int | None = None  # proposal id, where known: hidden from readers without access


@dataclass
class Digest:
    """Everything the nightly digest says, read once from the store; renderers only format it."""

    generated_at: datetime
    today: date  # the day days_left counts from
    window: tuple[datetime | None, datetime | None]  # the night's discovery window
    analysis_run_ids: list[int]
    facts: dict[str, Any]  # what the night did, as the caller counted it
    verdicts: list[VerdictItem]  # visits (exposures nested), then lone exposures; soonest first
    flags: list[FlagItem]  # high, medium, info; at most max_flags of them
    flag_counts: dict[str, dict[str, int]]  # rule -> severity -> flags (all, not only listed)
    problems: list[Problem]
    outstanding: list[OutstandingFile] = field(default_factory=list)  # soonest next try first
    skipped: dict[str, int] = field(default_factory=dict)  # why discovery passed over -> rows
    warnings: list[Problem] = field(default_factory=list)  # odd but not failed
    withheld_programs: int = 0  # proprietary programs whose news this digest leaves out

    @property
    def flags_total(self) -> int:
        return sum(sum(by_severity.values()) for by_severity in self.flag_counts.values())

    @property
    def flags_by_severity(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for by_severity in self.flag_counts.values():
            for severity, count in by_severity.items():
                totals[severity] = totals.get(severity, 0) + count
        return {s: totals[s] for s in _severity_order(totals)}

    @property
    def flags_omitted(self) -> int:
        return self.flags_total - len(self.flags)

    @property
    def nothing_new(self) -> bool:
        """No new verdict needing action, no new flag, no problem and no file newly
        outstanding: a quiet night (files outstanding from earlier nights are still listed)."""
        newly_outstanding = any(
            item.failed_tonight and item.attempts == 1 for item in self.outstanding
        )
        return (
            not self.verdicts
            and not self.flag_counts
            and not self.problems
            and not newly_outstanding
        )


# --- Reading the store ----------------------------------------------------------------------------


def build_digest(
    connection: Connection,
    analysis_run_ids: Sequence[int],
    *,
    facts: dict[str, Any],
    problems: Sequence[tuple[str, str] | tuple[str, str, int | None]] = (),
    outstanding: Sequence[OutstandingFile] = (),
    skipped: dict[str, int] | None = None,
    warnings: Sequence[tuple[str, str] | tuple[str, str, int | None]] = (),
    window: tuple[datetime | None, datetime | None] = (None, None),
    today: date | None = None,
    max_flags: int = 500,
    hidden_programs: Collection[int] = (),
) -> Digest:
    """The digest of what ``analysis_run_ids`` wrote: verdicts that are not 'ok', and flags.

    ``today`` (default: the UTC date now) is the day ``days_left`` counts from. At most
    ``max_flags`` flags are listed, the most severe first; ``flag_counts`` counts them all.
    ``problems`` and ``warnings`` are (where, what) pairs, or (where, what, program);
    ``skipped`` counts what discovery passed over, by the reason in words. Verdicts, flags,
    problems, warnings and outstanding files of ``hidden_programs`` are left out, for readers
    without access to them; ``withheld_programs`` counts those programs.
    """
    if max_flags < 0:
        msg = f"max_flags must be 0 or more, not {max_flags}"
        raise ValueError(msg)
    generated_at = datetime.now(UTC)
    today = today or generated_at.date()
    run_ids = sorted({int(run_id) for run_id in analysis_run_ids})
    hidden = frozenset(int(p) for p in hidden_programs)
    said = [*problems, *warnings, *((o.filename, o.reason, o.program) for o in outstanding)]
    withheld = {int(p[2]) for p in said if len(p) == 3 and p[2] is not None} & hidden
    if run_ids and hidden:
        withheld |= _withheld_programs(connection, run_ids, hidden)
    return Digest(
        generated_at=generated_at,
        today=today,
        window=(window[0], window[1]),
        analysis_run_ids=run_ids,
        facts=dict(facts),
        verdicts=_read_verdicts(connection, run_ids, today, hidden) if run_ids else [],
        flags=_read_flags(connection, run_ids, max_flags, hidden) if run_ids else [],
        flag_counts=_read_flag_counts(connection, run_ids, hidden) if run_ids else {},
        problems=_visible(problems, hidden),
        outstanding=[o for o in outstanding if o.program is None or o.program not in hidden],
        skipped=dict(skipped or {}),
        warnings=_visible(warnings, hidden),
        withheld_programs=len(withheld),
    )


def _visible(
    said: Sequence[tuple[str, str] | tuple[str, str, int | None]], hidden: frozenset[int]
) -> list[Problem]:
    """(where, what[, program]) as Problems, but those of a hidden program."""
    return [
        Problem(str(item[0]), str(item[1]))
        for item in said
        if len(item) < 3 or item[2] is None or int(item[2]) not in hidden
    ]


def _not_hidden(program: ColumnElement[Any], hidden: frozenset[int]) -> ColumnElement[bool]:
    return or_(program.is_(None), program.not_in(sorted(hidden)))


def _verdict_program() -> ColumnElement[Any]:
    """A verdict's program: its exposure's, or for a visit's verdict, its exposures' (the visit
    ``ipppss`` begins each of their ids)."""
    member = aliased(Exposure)
    of_visit = (
        select(func.max(member.proposid))
        .where(member.exposure_id.like(Verdict.visit_id + "%"))
        .scalar_subquery()
    )
    return func.coalesce(Exposure.proposid, of_visit)


def _withheld_programs(
    connection: Connection, run_ids: list[int], hidden: frozenset[int]
) -> set[int]:
    """The hidden programs that have a verdict or a flag from these runs."""
    verdicts = (
        select(_verdict_program().label("proposid"))
        .select_from(Verdict)
        .outerjoin(Exposure, Exposure.exposure_id == Verdict.exposure_id)
        .where(Verdict.analysis_run_id.in_(run_ids), _verdict_program().in_(sorted(hidden)))
    )
    flags = (
        select(Exposure.proposid)
        .join(Flag, Flag.exposure_id == Exposure.exposure_id)
        .where(Flag.analysis_run_id.in_(run_ids), Exposure.proposid.in_(sorted(hidden)))
    )
    found = union(verdicts, flags)  # UNION: each program once
    return {int(p) for p in connection.execute(found).scalars()}


def _read_verdicts(
    connection: Connection, run_ids: list[int], today: date, hidden: frozenset[int]
) -> list[VerdictItem]:
    query = (
        select(
            Verdict.exposure_id,
            func.coalesce(Verdict.visit_id, Verdict.asn_id).label("visit_id"),
            Verdict.verdict,
            Verdict.summary,
            Verdict.hopr_deadline,
            Verdict.decided_on,
            Verdict.analysis_run_id,
            Exposure.asn_id.label("exposure_asn_id"),
            Exposure.asn_member_index,
            _verdict_program().label("proposid"),
            func.coalesce(Exposure.config, Association.config).label("config"),
            func.coalesce(Exposure.targname, Association.targname).label("targname"),
        )
        .outerjoin(Exposure, Exposure.exposure_id == Verdict.exposure_id)
        .outerjoin(Association, Association.asn_id == Exposure.asn_id)
        .where(Verdict.analysis_run_id.in_(run_ids), Verdict.verdict != "ok")
    )
    if hidden:
        query = query.where(_not_hidden(_verdict_program(), hidden))
    rows = list(connection.execute(query).mappings())
    visits = {row["visit_id"] for row in rows if row["exposure_id"] is None}
    context = _visit_context(connection, visits)
    items = [_verdict_item(row, today, context) for row in rows]
    return _group_by_visit(items)


def _visit_context(connection: Connection, visits: set[str]) -> dict[str, dict[str, Any]]:
    """Program, configuration and target of each visit, from its exposures."""
    if not visits:
        return {}
    visit = func.substr(Exposure.exposure_id, 1, 6)
    query = (
        select(
            visit.label("visit"),
            func.min(func.coalesce(Exposure.proposid, Association.proposid)).label("proposid"),
            func.min(func.coalesce(Exposure.config, Association.config)).label("config"),
            func.min(func.coalesce(Exposure.targname, Association.targname)).label("targname"),
        )
        .outerjoin(Association, Association.asn_id == Exposure.asn_id)
        .where(visit.in_(sorted(visits)))
        .group_by(visit)
    )
    return {row["visit"]: dict(row) for row in connection.execute(query).mappings()}


def _verdict_item(row: Any, today: date, context: dict[str, dict[str, Any]]) -> VerdictItem:
    deadline = row["hopr_deadline"]
    is_visit = row["exposure_id"] is None
    where = context.get(row["visit_id"], {}) if is_visit else row
    return VerdictItem(
        level="visit" if is_visit else "exposure",
        subject=row["visit_id"] if is_visit else row["exposure_id"],
        verdict=row["verdict"],
        summary=row["summary"],
        happened=_what_happened(row["summary"]),
        hopr_deadline=deadline,
        days_left=(deadline - today).days if deadline is not None else None,
        decided_on=row["decided_on"],
        asn_id=None if is_visit else row["exposure_asn_id"],
        member_index=None if is_visit else row["asn_member_index"],
        proposid=where.get("proposid"),
        config=where.get("config"),
        targname=where.get("targname"),
        analysis_run_id=row["analysis_run_id"],
    )


def _what_happened(summary: str) -> str:
    """A verdict sentence without its advice: 'File a HOPR by ... (24 days left): <this>.'

    The advice ends at the first ': ' outside parentheses; a sentence without one is kept whole.
    """
    depth = 0
    for index, character in enumerate(summary):
        if character == "(":
            depth += 1
        elif character == ")":
            depth = max(depth - 1, 0)
        elif character == ":" and depth == 0 and summary[index + 1 : index + 2] == " ":
            return summary[index + 2 :].strip().rstrip(".")
    return summary.strip().rstrip(".")


def _urgency(item: VerdictItem) -> tuple[int, int, int, str]:
    """Open deadlines soonest first, then passed ones (latest passed first), then unknown."""
    rank = _VERDICT_ORDER.index(item.verdict) if item.verdict in _VERDICT_ORDER else 9
    if item.days_left is None:
        return 2, 0, rank, item.subject
    if item.days_left >= 0:
        return 0, item.days_left, rank, item.subject
    return 1, -item.days_left, rank, item.subject


def _group_by_visit(items: list[VerdictItem]) -> list[VerdictItem]:
    visits = {item.subject: item for item in items if item.level == "visit"}
    alone: list[VerdictItem] = []
    for item in items:
        if item.level == "visit":
            continue
        visit = visits.get(item.subject[:6])
        (visit.exposures if visit else alone).append(item)
    for visit in visits.values():
        visit.exposures.sort(key=lambda e: (e.member_index is None, e.member_index or 0, e.subject))
    return sorted(visits.values(), key=_urgency) + sorted(alone, key=_urgency)


def _read_flags(
    connection: Connection, run_ids: list[int], limit: int, hidden: frozenset[int]
) -> list[FlagItem]:
    rank = case(
        {s: i for i, s in enumerate(SEVERITIES)}, value=Flag.severity, else_=len(SEVERITIES)
    )
    query = (
        select(
            Flag.exposure_id,
            Flag.asn_id,
            Exposure.asn_member_index.label("member_index"),
            Flag.rule,
            Flag.rule_version,
            Flag.severity,
            Flag.message,
            Flag.evidence,
            Flag.analysis_run_id,
        )
        .outerjoin(Exposure, Exposure.exposure_id == Flag.exposure_id)
        .where(Flag.analysis_run_id.in_(run_ids))
        .order_by(rank, Flag.exposure_id, Flag.rule)
        .limit(limit)
    )
    if hidden:
        query = query.where(_not_hidden(Exposure.proposid, hidden))
    return [FlagItem(**row) for row in connection.execute(query).mappings()]


def _read_flag_counts(
    connection: Connection, run_ids: list[int], hidden: frozenset[int]
) -> dict[str, dict[str, int]]:
    query = (
        select(Flag.rule, Flag.severity, func.count())
        .where(Flag.analysis_run_id.in_(run_ids))
        .group_by(Flag.rule, Flag.severity)
    )
    if hidden:
        query = query.outerjoin(Exposure, Exposure.exposure_id == Flag.exposure_id).where(
            _not_hidden(Exposure.proposid, hidden)
        )
    counts: dict[str, dict[str, int]] = {}
    for rule, severity, count in connection.execute(query).all():
        counts.setdefault(rule, {})[severity] = int(count)
    # Most severe rules first, then the most frequent.
    order = sorted(counts, key=lambda r: (*(-counts[r].get(s, 0) for s in SEVERITIES), r))
    return {rule: {s: counts[rule][s] for s in _severity_order(counts[rule])} for rule in order}


def _severity_order(severities: Any) -> list[str]:
    known = [s for s in SEVERITIES if s in severities]
    return known + sorted(s for s in severities if s not in SEVERITIES)


# --- Words shared by the renderers ----------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _name(identifier: str | None) -> str:
    """Dataset names as MAST and the HOPR form spell them: upper case."""
    return identifier.upper() if identifier else "—"


def _deadline_words(item: VerdictItem) -> str:
    if item.hopr_deadline is None or item.days_left is None:
        return "HOPR deadline unknown (no delivery date)"
    days = item.days_left
    if days > 0:
        return f"by {item.hopr_deadline} ({_plural(days, 'day')} left)"
    if days == 0:
        return f"by {item.hopr_deadline} (today is the last day)"
    return f"late: the 90-day limit passed on {item.hopr_deadline} ({_plural(-days, 'day')} ago)"


def _deadline_detail(item: VerdictItem) -> str:
    if item.hopr_deadline is None or item.days_left is None:
        return "HOPR deadline unknown (no delivery date)"
    return f"HOPR deadline {item.hopr_deadline} ({_days_left_words(item)})"


def _days_left_words(item: VerdictItem) -> str:
    if item.days_left is None:
        return "—"
    if item.days_left < 0:
        return f"passed {_plural(-item.days_left, 'day')} ago"
    return f"{_plural(item.days_left, 'day')} left"


def _where(item: VerdictItem) -> str:
    """'program 16748, WFC3/UVIS, NGC-1234' for a verdict's subject."""
    parts = [f"program {item.proposid}" if item.proposid is not None else None, item.config]
    return ", ".join(p for p in [*parts, item.targname] if p) or "—"


def _flag_subject(flag: FlagItem) -> str:
    if flag.asn_id and flag.member_index is not None:
        return f"{_name(flag.exposure_id)} ({_name(flag.asn_id)} #{flag.member_index})"
    return _name(flag.exposure_id)


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(_json_safe(value), separators=(", ", ": "))
    return str(value)


def _evidence_words(evidence: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_value(value)}" for key, value in (evidence or {}).items())


def _when(moment: datetime) -> str:
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _window_words(window: tuple[datetime | None, datetime | None]) -> str | None:
    start, end = window
    if start and end:
        return f"Files discovered between {_when(start)} and {_when(end)}."
    if start:
        return f"Files discovered since {_when(start)}."
    if end:
        return f"Files discovered until {_when(end)}."
    return None


def _title(digest: Digest) -> str:
    return f"hstmon nightly digest, {digest.today}"


def _provenance(digest: Digest) -> str:
    runs = ", ".join(map(str, digest.analysis_run_ids)) or "none"
    label = "analysis run" if len(digest.analysis_run_ids) == 1 else "analysis runs"
    text = f"Generated {_when(digest.generated_at)} from {label} {runs}."
    window = _window_words(digest.window)
    return f"{text} {window}" if window else text


def _headline_item(item: VerdictItem) -> str:
    if item.verdict == "hopr":
        return f"{_name(item.subject)} {_deadline_words(item)} – {item.happened}"
    return f"{_name(item.subject)} – {item.happened}"


def _late(item: VerdictItem) -> bool:
    """A HOPR whose 90-day limit passed before the digest's day."""
    return item.verdict == "hopr" and item.days_left is not None and item.days_left < 0


def _verdict_groups(digest: Digest, level: str) -> list[tuple[str, list[VerdictItem], bool]]:
    """(verdict, items, limit passed) in the order the summary lists them: open HOPRs, HOPRs
    past their limit apart from them, then help desk, not repeatable, incomplete."""
    kinds = list(_VERDICT_ORDER) + sorted({v.verdict for v in digest.verdicts} - set(_LEAD))
    chosen = [v for v in digest.verdicts if v.level == level]
    groups = []
    for kind in kinds:
        of_kind = [v for v in chosen if v.verdict == kind]
        if kind == "hopr":
            groups.append((kind, [v for v in of_kind if not _late(v)], False))
            groups.append((kind, [v for v in of_kind if _late(v)], True))
        else:
            groups.append((kind, of_kind, False))
    return [group for group in groups if group[1]]


def _verdict_blocks(digest: Digest) -> list[tuple[str, list[str]]]:
    blocks = []
    for level in ("visit", "exposure"):
        for kind, chosen, late in _verdict_groups(digest, level):
            singular, plural = (
                _LATE_LEAD if late else _LEAD.get(kind, (f"is {kind}", f"are {kind}"))
            )
            noun = level if level == "visit" else "exposure outside a judged visit"
            noun = noun if len(chosen) == 1 else noun.replace(level, f"{level}s", 1)
            lead = f"{len(chosen)} {noun} {singular if len(chosen) == 1 else plural}"
            items = [_headline_item(v) for v in chosen[:HEADLINE_ITEMS]]
            if len(chosen) > HEADLINE_ITEMS:
                items.append(f"… and {len(chosen) - HEADLINE_ITEMS} more, listed below")
            blocks.append((f"{lead}:", items))
    return blocks


def summary_blocks(digest: Digest) -> list[tuple[str, list[str]]]:
    """The first lines of every format: (lead, items) in plain words, most urgent first."""
    blocks = _verdict_blocks(digest)
    if digest.nothing_new:
        blocks.append((NOTHING_NEW, []))
    elif not digest.verdicts:
        blocks.append(("No new verdict needs action.", []))
    if digest.flag_counts:
        severities = ", ".join(f"{n} {s}" for s, n in digest.flags_by_severity.items())
        blocks.append((f"{_plural(digest.flags_total, 'new flag')}: {severities}.", []))
    if digest.withheld_programs:
        blocks.append((_withheld_words(digest.withheld_programs), []))
    if digest.problems:
        items = [f"{p.where}: {p.reason}" for p in digest.problems[:HEADLINE_ITEMS]]
        if len(digest.problems) > HEADLINE_ITEMS:
            items.append(f"… and {len(digest.problems) - HEADLINE_ITEMS} more, listed below")
        blocks.append((f"{_plural(len(digest.problems), 'problem')} during the night:", items))
    if digest.outstanding:
        items = [_outstanding_words(o) for o in digest.outstanding[:HEADLINE_ITEMS]]
        if len(digest.outstanding) > HEADLINE_ITEMS:
            items.append(f"… and {len(digest.outstanding) - HEADLINE_ITEMS} more, listed below")
        count = len(digest.outstanding)
        lead = (
            f"{_plural(count, 'file')} from MAST {'is' if count == 1 else 'are'} outstanding "
            "(refused, missing or broken; tried again later on a slower schedule):"
        )
        blocks.append((lead, items))
    return blocks


def _withheld_words(programs: int) -> str:
    return (
        f"News of {_plural(programs, 'proprietary program')} is left out of this digest: "
        "people granted access see it in the dashboard."
    )


def _outstanding_words(item: OutstandingFile) -> str:
    return (
        f"{item.filename}: {item.reason}; next try from {_when(item.next_try_at)} "
        f"(failed {_plural(item.attempts, 'night')})"
    )


def _outstanding_rows(digest: Digest) -> tuple[list[str], list[list[str]]]:
    header = ["file", "next try from", "nights failed", "first failed", "reason"]
    rows = [
        [o.filename, _when(o.next_try_at), str(o.attempts), _when(o.first_failed_at), o.reason]
        for o in digest.outstanding
    ]
    return header, rows


def _skipped_rows(digest: Digest) -> list[tuple[str, str]]:
    return [(reason, str(count)) for reason, count in digest.skipped.items()]


def _facts_rows(digest: Digest) -> list[tuple[str, str]]:
    return [(str(key).replace("_", " "), _value(value)) for key, value in digest.facts.items()]


def _flag_count_rows(digest: Digest) -> tuple[list[str], list[list[str]]]:
    severities = list(digest.flags_by_severity)
    rows = [
        [rule, *(str(counts.get(s, 0)) for s in severities), str(sum(counts.values()))]
        for rule, counts in digest.flag_counts.items()
    ]
    return ["rule", *severities, "total"], rows


def _label(verdict: str) -> str:
    return _VERDICT_LABEL.get(verdict, verdict)


def _item_label(item: VerdictItem) -> str:
    """The verdict's label; a HOPR past its 90-day limit says so."""
    return f"{_label(item.verdict)} (late)" if _late(item) else _label(item.verdict)


# --- Terminal text --------------------------------------------------------------------------------


def _text_table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in table]  # fmt: skip


def _text_verdicts(digest: Digest) -> list[str]:
    lines = ["", "Verdicts (soonest HOPR deadline first; visits with their exposures)"]
    for item in digest.verdicts:
        lines.append(
            f"  {_item_label(item).upper():<15}{_name(item.subject)}  {_where(item)}  "
            f"{_deadline_detail(item)}"
        )
        lines.append(f"  {'':<15}{item.happened}")
        for exposure in item.exposures:
            number = f"#{exposure.member_index}" if exposure.member_index is not None else "#?"
            lines.append(
                f"  {'':<15}  {number:>3} {_name(exposure.subject)}  "
                f"{_item_label(exposure)}: {exposure.happened}"
            )
    return lines


def _text_flags(digest: Digest) -> list[str]:
    lines = ["", f"Flags ({digest.flags_total}), by rule"]
    lines += _text_table(*_flag_count_rows(digest))
    lines.append("")
    for flag in digest.flags:
        lines.append(
            f"  [{flag.severity}] {_flag_subject(flag)} {flag.rule} v{flag.rule_version}: "
            f"{flag.message}"
        )
        if flag.evidence:
            lines.append(f"      evidence: {_evidence_words(flag.evidence)}")
    if digest.flags_omitted:
        lines.append(f"  … {digest.flags_omitted} more flags not listed (the least severe).")
    return lines


def render_text(digest: Digest, *, details: bool = True) -> str:
    """For the terminal: summary lines first, then (unless ``details`` is False) the facts,
    problems, every verdict and the listed flags. Plain text, no colour codes."""
    lines = [_title(digest), _provenance(digest), ""]
    for lead, items in summary_blocks(digest):
        lines.append(lead)
        lines += [f"  - {item}" for item in items]
    if not details:
        return "\n".join(lines) + "\n"
    if digest.facts:
        lines += ["", "What the night did", *_text_table(["", ""], _facts_rows(digest))[1:]]
    if digest.problems:
        lines += ["", f"Problems ({len(digest.problems)})"]
        lines += [f"  {p.where}: {p.reason}" for p in digest.problems]
    if digest.outstanding:
        lines += ["", f"Outstanding downloads ({len(digest.outstanding)})"]
        lines += _text_table(*_outstanding_rows(digest))
    if digest.skipped:
        lines += ["", "Not fetched, by design (rows MAST listed)"]
        lines += _text_table(["", ""], [list(row) for row in _skipped_rows(digest)])[1:]
    if digest.warnings:
        lines += ["", f"Warnings ({len(digest.warnings)})"]
        lines += [f"  {w.where}: {w.reason}" for w in digest.warnings]
    if digest.verdicts:
        lines += _text_verdicts(digest)
    if digest.flag_counts:
        lines += _text_flags(digest)
    return "\n".join(lines) + "\n"


# --- Markdown -------------------------------------------------------------------------------------

_MARKDOWN_SPECIAL = set("\\`*_[]<>|~&")


def _md(text: Any) -> str:
    """Text that Markdown shows as written: punctuation that means something is escaped."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in str(text)).replace("\n", " ")


def _md_code(text: str) -> str:
    """A code span that holds any text: its fence is longer than any run of backticks in it."""
    text = text.replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _md_verdicts(digest: Digest) -> list[str]:
    header = ["verdict", "visit / exposure", "program", "HOPR deadline", "days left",
              "what happened"]  # fmt: skip
    rows = []
    for item in digest.verdicts:
        rows.append([f"**{_md(_item_label(item))}**", f"**{_md(_name(item.subject))}**",
                     _md(_where(item)), str(item.hopr_deadline or "—"),
                     _md(_days_left_words(item)), _md(item.happened)])  # fmt: skip
        for exposure in item.exposures:
            number = f"#{exposure.member_index} " if exposure.member_index is not None else ""
            rows.append([_md(_item_label(exposure)), f"↳ {number}{_md(_name(exposure.subject))}",
                         "", str(exposure.hopr_deadline or "—"),
                         _md(_days_left_words(exposure)), _md(exposure.happened)])  # fmt: skip
    return ["", "## Verdicts", "", *_md_table(header, rows)]


def _md_flags(digest: Digest) -> list[str]:
    header, rows = _flag_count_rows(digest)
    lines = ["", f"## Flags ({digest.flags_total})", "",
             *_md_table(header, [[_md_code(row[0]), *row[1:]] for row in rows]), ""]  # fmt: skip
    for flag in digest.flags:
        evidence = (
            f" — evidence: {_md_code(_evidence_words(flag.evidence))}" if flag.evidence else ""
        )
        lines.append(
            f"- **{_md(flag.severity)}** {_md(_flag_subject(flag))} {_md_code(flag.rule)} "
            f"v{flag.rule_version}: {_md(flag.message)}{evidence}"
        )
    if digest.flags_omitted:
        lines.append(f"- … {digest.flags_omitted} more flags not listed (the least severe).")
    return lines


def render_markdown(digest: Digest) -> str:
    """The digest as Markdown (GitHub-flavoured tables), e.g. for an issue or a mail."""
    lines = [f"# {_md(_title(digest))}", "", _md(_provenance(digest)), ""]
    for lead, items in summary_blocks(digest):
        lines.append(f"- **{_md(lead)}**" if items else f"- {_md(lead)}")
        lines += [f"  - {_md(item)}" for item in items]
    if digest.facts:
        rows = [[_md(k), _md(v)] for k, v in _facts_rows(digest)]
        lines += ["", "## What the night did", "", *_md_table(["fact", "value"], rows)]
    if digest.problems:
        lines += ["", f"## Problems ({len(digest.problems)})", ""]
        lines += [f"- {_md_code(p.where)}: {_md(p.reason)}" for p in digest.problems]
    if digest.outstanding:
        header, rows = _outstanding_rows(digest)
        rows = [[_md_code(row[0]), *(_md(cell) for cell in row[1:])] for row in rows]
        lines += ["", f"## Outstanding downloads ({len(digest.outstanding)})", ""]
        lines += _md_table(header, rows)
    if digest.skipped:
        rows = [[_md(reason), count] for reason, count in _skipped_rows(digest)]
        lines += ["", "## Not fetched, by design", ""]
        lines += _md_table(["rows MAST listed", "rows"], rows)
    if digest.warnings:
        lines += ["", f"## Warnings ({len(digest.warnings)})", ""]
        lines += [f"- {_md_code(w.where)}: {_md(w.reason)}" for w in digest.warnings]
    if digest.verdicts:
        lines += _md_verdicts(digest)
    if digest.flag_counts:
        lines += _md_flags(digest)
    return "\n".join(lines) + "\n"


# --- HTML -----------------------------------------------------------------------------------------

_DIGEST_STYLE = """
.verdict ul{margin:0.2em 0 0.6em 0}.verdict p{margin:0.3em 0}
tr.visit td{border-top:2px solid #999}tr.member td:nth-child(2){padding-left:2em}
td.late{color:#b00}code{font-size:11px;white-space:pre-wrap}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _html_table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _html_summary(digest: Digest) -> str:
    kinds = {v.verdict for v in digest.verdicts}
    attention = digest.problems or digest.outstanding
    css = next((k for k in _VERDICT_ORDER if k in kinds), "helpdesk" if attention else "ok")
    parts = []
    for lead, items in summary_blocks(digest):
        parts.append(f"<p>{_esc(lead)}</p>")
        if items:
            parts.append("<ul>" + "".join(f"<li>{_esc(i)}</li>" for i in items) + "</ul>")
    return f"<div class='verdict {css}'>{''.join(parts)}</div>"


def _html_verdict_row(item: VerdictItem, member: bool) -> str:
    late = " late" if item.days_left is not None and item.days_left < 0 else ""
    number = f"#{item.member_index} " if member and item.member_index is not None else ""
    cells = [
        f"<td class='{_esc(item.verdict)}'>{_esc(_item_label(item))}</td>",
        f"<td>{_esc(number)}<b>{_esc(_name(item.subject))}</b></td>",
        f"<td>{'' if member else _esc(_where(item))}</td>",
        f"<td>{_esc(item.hopr_deadline or '—')}</td>",
        f"<td class='{late.strip()}'>{_esc(_days_left_words(item))}</td>",
        f"<td>{_esc(item.happened)}</td>",
    ]
    return f"<tr class='{'member' if member else 'visit'}'>{''.join(cells)}</tr>"


def _html_verdicts(digest: Digest) -> str:
    rows = []
    for item in digest.verdicts:
        rows.append(_html_verdict_row(item, member=False))
        rows += [_html_verdict_row(e, member=True) for e in item.exposures]
    header = ["verdict", "visit / exposure", "program", "HOPR deadline", "days left",
              "what happened"]  # fmt: skip
    return "<h2>Verdicts</h2>" + _html_table(header, rows)


def _html_flags(digest: Digest) -> str:
    header, counts = _flag_count_rows(digest)
    count_rows = ["<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in counts]
    rows = [
        f"<tr><td class='{_esc(f.severity)}'>{_esc(f.severity)}</td>"
        f"<td>{_esc(_flag_subject(f))}</td><td>{_esc(f.rule)} v{f.rule_version}</td>"
        f"<td>{_esc(f.message)}</td><td><code>{_esc(_evidence_words(f.evidence))}</code></td></tr>"
        for f in digest.flags
    ]
    omitted = (
        f"<p>… {digest.flags_omitted} more flags not listed (the least severe).</p>"
        if digest.flags_omitted
        else ""
    )
    return (
        f"<h2>Flags ({digest.flags_total})</h2>{_html_table(header, count_rows)}"
        + _html_table(["severity", "exposure", "rule", "message", "evidence"], rows)
        + omitted
    )


def _html_where_what(title: str, items: list[Problem], what: str) -> str:
    rows = [f"<tr><td>{_esc(i.where)}</td><td>{_esc(i.reason)}</td></tr>" for i in items]
    return f"<h2>{_esc(title)} ({len(items)})</h2>" + _html_table(["where", what], rows)


def render_html(digest: Digest) -> str:
    """One self-contained page (inline CSS, no scripts, no links); every text is escaped."""
    body = [f"<h1>{_esc(_title(digest))}</h1>", f"<p>{_esc(_provenance(digest))}</p>",
            _html_summary(digest)]  # fmt: skip
    if digest.facts:
        rows = [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _facts_rows(digest)]
        body.append(f"<h2>What the night did</h2><table>{''.join(rows)}</table>")
    if digest.problems:
        body.append(_html_where_what("Problems", digest.problems, "reason"))
    if digest.outstanding:
        header, cells = _outstanding_rows(digest)
        rows = ["<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in cells]
        body.append(f"<h2>Outstanding downloads ({len(digest.outstanding)})</h2>")
        body.append(_html_table(header, rows))
    if digest.skipped:
        rows = [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _skipped_rows(digest)]
        body.append(f"<h2>Not fetched, by design</h2><table>{''.join(rows)}</table>")
    if digest.warnings:
        body.append(_html_where_what("Warnings", digest.warnings, "what"))
    if digest.verdicts:
        body.append(_html_verdicts(digest))
    if digest.flag_counts:
        body.append(_html_flags(digest))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_esc(_title(digest))}</title>"
        f"<style>{PAGE_STYLE}{_DIGEST_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


# --- JSON and files -------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)


def digest_json(digest: Digest) -> dict[str, Any]:
    """The digest as JSON-safe data: dates as ISO strings, NaN as null, ids lowercase."""
    document = asdict(digest)
    document["summary"] = [{"lead": lead, "items": items} for lead, items in summary_blocks(digest)]
    document["nothing_new"] = digest.nothing_new
    document["flags_total"] = digest.flags_total
    document["flags_by_severity"] = digest.flags_by_severity
    document["flags_omitted"] = digest.flags_omitted
    return _json_safe(document)


def write_digest(digest: Digest, directory: Path, stem: str) -> dict[str, Path]:
    """Write ``stem``.md, .html and .json into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    contents = {
        "md": render_markdown(digest),
        "html": render_html(digest),
        "json": json.dumps(digest_json(digest), indent=1, ensure_ascii=False) + "\n",
    }
    paths = {}
    for suffix, text in contents.items():
        path = directory / f"{stem}.{suffix}"
        path.write_text(text, encoding="utf-8")
        paths[suffix] = path
    return paths
