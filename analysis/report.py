"""`hstmon assess`: the exception-report checklist for one visit or exposure, from the store.

Gathers the JIF keyword tables, the JIT time series, the flags with their evidence and the
verdicts, and renders them as terminal text, JSON, or one self-contained HTML page with plots.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sqlalchemy import Connection, select

from analysis.verdicts import member_list, visit_id
from models.jif_keywords import checklist_columns, problem_flags
from models.tables import (
    Association,
    Exposure,
    FileWarning,
    Flag,
    ImagePreview,
    JitterSample,
    PsfMeasurement,
    Verdict,
)

__all__ = [
    "PAGE_STYLE",
    "Assessment",
    "UnknownIdError",
    "gather",
    "jitter_plot_png",
    "limit_passed",
    "render_html",
    "render_text",
]

PROBLEM_FLAGS = tuple(
    (k.keyword, k.column, k.ok) for k in problem_flags()
)  # value when all is well
EXPOSURE_KEYWORDS = checklist_columns()  # the checklist's per-exposure table, as stored


class UnknownIdError(LookupError):
    """No association or exposure of that name is in the store."""


@dataclass
class Assessment:
    """Everything the checklist looks at, for one visit (or the visit of one exposure)."""

    requested: str
    visit: str  # ipppss
    associations: list[dict[str, Any]]  # the visit's jitter file sets, in name order
    exposures: list[dict[str, Any]]
    flags: list[dict[str, Any]]
    verdicts: dict[str, dict[str, Any]]  # exposure_id or visit_id -> verdict row
    samples: dict[str, pd.DataFrame]
    previews: dict[str, list[dict[str, Any]]]  # exposure_id -> image_preview rows
    psf: dict[str, list[dict[str, Any]]]  # exposure_id -> psf_measurement rows
    warnings: list[dict[str, Any]]  # file_warning rows of the visit's exposures

    @property
    def visit_verdict(self) -> dict[str, Any] | None:
        return self.verdicts.get(self.visit)

    def as_json(self) -> dict[str, Any]:
        return _jsonable(
            {
                "requested": self.requested,
                "visit": self.visit,
                "associations": self.associations,
                "verdict": self.visit_verdict,
                "warnings": self.warnings,
                "exposures": [
                    e
                    | {
                        "verdict": self.verdicts.get(e["exposure_id"]),
                        "flags": [f for f in self.flags if f["exposure_id"] == e["exposure_id"]],
                    }
                    for e in self.exposures
                ],
            }
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _rows(connection: Connection, query: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in connection.execute(query).mappings()]


def _resolve(connection: Connection, requested: str) -> tuple[str, list[str]]:
    """The visit an id names, and the exposures to show: a visit (ipppss) or an association id
    shows every exposure of the visit; a rootname or exposure id shows that exposure."""
    name = requested.strip().lower()
    association = (
        connection.execute(select(Association.asn_id).where(Association.asn_id == name)).first()
        or connection.execute(
            select(Exposure.asn_id).where(Exposure.asn_id == name).limit(1)
        ).first()
    )
    exposure = connection.execute(
        select(Exposure.exposure_id).where(Exposure.exposure_id == name[:8])
    ).scalar()
    if association is None and exposure is not None and len(name) in (8, 9):
        return visit_id(exposure), [exposure]
    visit = visit_id(name)
    members = list(
        connection.execute(
            select(Exposure.exposure_id).where(Exposure.exposure_id.like(f"{visit}%"))
        ).scalars()
    )
    if not members or (association is None and len(name) != 6):
        msg = f"{requested}: no association or exposure of that name has been ingested"
        raise UnknownIdError(msg)
    return visit, members


def gather(connection: Connection, requested: str) -> Assessment:
    """Read everything the report shows for the visit ``requested`` names from the store."""
    visit, exposure_ids = _resolve(connection, requested)
    exposures = _rows(
        connection,
        select(Exposure)
        .where(Exposure.exposure_id.in_(exposure_ids))
        .order_by(Exposure.asn_id, Exposure.asn_member_index, Exposure.exposure_id),
    )
    asn_ids = sorted({e["asn_id"] for e in exposures if e["asn_id"]})
    associations = _rows(
        connection, select(Association).where(Association.asn_id.in_(asn_ids)).order_by("asn_id")
    )
    flags = _rows(
        connection,
        select(Flag)
        .where(Flag.exposure_id.in_(exposure_ids))
        .order_by(Flag.exposure_id, Flag.rule),
    )
    subjects = select(Verdict).where(
        Verdict.exposure_id.in_(exposure_ids) | (Verdict.visit_id == visit)
    )
    verdicts = {v["exposure_id"] or v["visit_id"]: v for v in _rows(connection, subjects)}
    warnings = _rows(
        connection,
        select(FileWarning.exposure_id, FileWarning.hdu_index, FileWarning.keyword,
               FileWarning.raw_value, FileWarning.message)
        .where(FileWarning.exposure_id.in_(exposure_ids))
        .order_by(FileWarning.exposure_id, FileWarning.keyword),
    )  # fmt: skip
    columns = ("exposure_id", "sample_index", "seconds", "si_v2_avg", "si_v3_avg", "si_v2_rms",
               "si_v3_rms", "take_data")  # fmt: skip
    samples_query = (
        select(*(getattr(JitterSample, c) for c in columns))
        .where(JitterSample.exposure_id.in_(exposure_ids))
        .order_by(JitterSample.exposure_id, JitterSample.sample_index)
    )
    table = pd.DataFrame(connection.execute(samples_query).all(), columns=list(columns))
    samples = {key: group for key, group in table.groupby("exposure_id")}
    previews: dict[str, list[dict[str, Any]]] = {}
    for row in _rows(
        connection,
        select(ImagePreview)
        .where(ImagePreview.exposure_id.in_(exposure_ids))
        .order_by(ImagePreview.kind, ImagePreview.extver),
    ):
        previews.setdefault(row["exposure_id"], []).append(row)
    psf: dict[str, list[dict[str, Any]]] = {}
    for row in _rows(
        connection,
        select(PsfMeasurement)
        .where(PsfMeasurement.exposure_id.in_(exposure_ids))
        .order_by(PsfMeasurement.kind, PsfMeasurement.extver),
    ):
        psf.setdefault(row["exposure_id"], []).append(row)
    return Assessment(
        requested, visit, associations, exposures, flags, verdicts, samples, previews, psf,
        warnings,
    )  # fmt: skip


def jitter_plot_png(samples: pd.DataFrame, title: str) -> bytes:
    """The notebook's jitter plot (V2/V3 AVG and RMS in mas vs seconds), fill as gaps,
    take-data-down spans shaded."""
    # The object API, not pyplot: no global figure state, no display needed.
    figure = Figure(figsize=(7, 3.6), dpi=100)
    axis = figure.subplots()
    seconds = samples["seconds"].to_numpy(dtype=float)
    series = (("si_v2_avg", "V2 AVG", "o"), ("si_v3_avg", "V3 AVG", "o"),
              ("si_v2_rms", "V2 RMS", "s"), ("si_v3_rms", "V3 RMS", "s"))  # fmt: skip
    for column, label, marker in series:
        values = samples[column].to_numpy(dtype=float) * 1000.0
        axis.plot(seconds, values, marker=marker, markersize=2.5, linewidth=0.6, label=label)
    down = samples["take_data"].to_numpy() != 1
    if down.any():
        step = float(np.median(np.diff(seconds))) if len(seconds) > 1 else 3.0
        for start in seconds[down]:
            axis.axvspan(start - step, start, color="tab:red", alpha=0.12, linewidth=0)
        axis.plot([], [], color="tab:red", alpha=0.3, linewidth=6, label="TakeData=0")
    if np.isnan(samples["si_v2_avg"].to_numpy(dtype=float)).all():
        axis.text(0.5, 0.5, "every row is 1.6e38 fill: no guiding data", ha="center",
                  va="center", transform=axis.transAxes, color="tab:red")  # fmt: skip
    axis.set_xlabel("seconds from observation window start")
    axis.set_ylabel("jitter [mas]")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.4)
    axis.legend(fontsize=7, ncol=5, loc="upper right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def limit_passed(verdict: dict[str, Any], today: date | None = None) -> bool:
    """A HOPR verdict whose 90-day limit is behind ``today`` (default: the UTC date now)."""
    deadline = verdict.get("hopr_deadline")
    today = today or datetime.now(UTC).date()
    return verdict.get("verdict") == "hopr" and deadline is not None and deadline < today


def _headline(assessment: Assessment) -> str:
    verdict = assessment.visit_verdict or next(iter(assessment.verdicts.values()), None)
    if verdict is None:
        return "Not analysed yet: run `hstmon analyze`."
    label = verdict["verdict"].upper()
    if limit_passed(verdict):
        # Still a HOPR, but shown apart: filing now needs the help desk's agreement.
        label += f" (90-day limit passed on {verdict['hopr_deadline']})"
    return f"{label}: {verdict['summary']}"


def _problem_flags_up(association: dict[str, Any]) -> list[str]:
    return [
        keyword
        for keyword, column, ok in PROBLEM_FLAGS
        if association[column] is not None and association[column] != ok
    ]


def _delivery_words(verdict: dict[str, Any]) -> str:
    """'First delivery 2017-07-01 (PROCTIME of ...); HOPR deadline 2017-09-29.'"""
    if verdict.get("delivered_on") is None:
        return "No delivery date known: the HOPR deadline cannot be computed."
    return (
        f"First delivery {verdict['delivered_on']} ({verdict['delivery_basis']}); HOPR deadline "
        f"{verdict['hopr_deadline']}."
    )


def render_text(assessment: Assessment) -> str:
    """The terminal summary: the verdict, the keyword table, and every flag."""
    lines = [f"Assessment of {assessment.requested} (visit {assessment.visit})", ""]
    lines += [_headline(assessment)]
    if assessment.visit_verdict:
        lines.append(_delivery_words(assessment.visit_verdict))
    lines.append("")
    for a in assessment.associations:
        bad = _problem_flags_up(a)
        lines.append(
            f"Visit {assessment.visit}, set {a['asn_id']}  program {a['proposid']}  "
            f"{a['config']}  GUIDECMD={a['guidecmd'] or '—'}  problem flags: "
            f"{', '.join(bad) or 'none'}"
        )
    header = [title for title, _ in EXPOSURE_KEYWORDS] + ["verdict"]
    table = [header]
    for e in assessment.exposures:
        verdict = assessment.verdicts.get(e["exposure_id"], {}).get("verdict", "—")
        table.append([_fmt(e[column]) for _, column in EXPOSURE_KEYWORDS] + [verdict])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    if assessment.warnings:
        lines += ["", "Keyword values that could not be read (NULL in the store):"]
        lines += [f"  {w['exposure_id']}: {w['message']}" for w in assessment.warnings]
    if assessment.flags:
        lines += ["", "Flags:"]
        lines += [f"  [{f['severity']}] {f['exposure_id']} {f['rule']}: {f['message']}"
                  for f in assessment.flags]  # fmt: skip
    return "\n".join(lines)


# The CSS of hstmon's self-contained HTML pages (this report, the nightly digest).
PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f0f0f0}.bad{background:#fdd}.verdict{padding:1em;border-radius:6px;font-size:16px}
.hopr{background:#fdd;border:2px solid #c00}.helpdesk{background:#ffe9c6;border:2px solid #c80}
.ok{background:#e3f6e3;border:2px solid #393}.not_repeatable{background:#eee;border:2px solid #888}
.incomplete{background:#eef3fb;border:2px solid #57a}
.high{color:#b00;font-weight:bold}.medium{color:#a60}.info{color:#555}
pre{background:#f7f7f7;padding:4px;font-size:11px;white-space:pre-wrap}
"""


def _html_problem_flags(association: dict[str, Any]) -> str:
    cells = []
    for keyword, column, ok in PROBLEM_FLAGS:
        value = association[column]
        bad = value is not None and value != ok
        cells.append(f"<td class='{'bad' if bad else ''}'>{keyword}<br><b>{_fmt(value)}</b></td>")
    return "<table><tr>" + "".join(cells) + "</tr></table>"


def _html_exposure_table(assessment: Assessment) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for t, _ in EXPOSURE_KEYWORDS) + "<th>verdict</th>"
    rows = []
    for e in assessment.exposures:
        verdict = assessment.verdicts.get(e["exposure_id"], {}).get("verdict", "—")
        bad = verdict in ("hopr", "not_repeatable")
        cells = "".join(f"<td>{html.escape(_fmt(e[c]))}</td>" for _, c in EXPOSURE_KEYWORDS)
        rows.append(f"<tr class='{'bad' if bad else ''}'>{cells}<td>{verdict}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _html_exposure(assessment: Assessment, exposure: dict[str, Any]) -> str:
    exposure_id = exposure["exposure_id"]
    number = exposure["asn_member_index"]
    title = f"Exposure {number}: {exposure_id} ({exposure['rootname'] or exposure['jitter_name']})"
    parts = [f"<h3 id='{exposure_id}'>{html.escape(title)}</h3>"]
    verdict = assessment.verdicts.get(exposure_id)
    if verdict:
        parts.append(
            f"<p class='verdict {verdict['verdict']}'>{html.escape(verdict['summary'])}</p>"
        )
        flagged = {f["message"] for f in assessment.flags if f["exposure_id"] == exposure_id}
        notes = [r for r in verdict.get("reasons") or [] if r not in flagged]
        lines = [_delivery_words(verdict), *notes]
        parts.append("".join(f"<p>{html.escape(line)}</p>" for line in lines if line))
    samples = assessment.samples.get(exposure_id)
    if samples is not None and len(samples):
        png = base64.b64encode(jitter_plot_png(samples, f"Jitter: {exposure_id}")).decode()
        parts.append(f"<img alt='jitter plot of {exposure_id}' src='data:image/png;base64,{png}'>")
    else:
        parts.append("<p>No JIT table ingested for this exposure.</p>")
    parts.append(_html_images(assessment, exposure_id))
    for flag in (f for f in assessment.flags if f["exposure_id"] == exposure_id):
        evidence = html.escape(json.dumps(flag["evidence"], indent=1, default=str))
        parts.append(
            f"<p class='{flag['severity']}'>[{flag['severity']}] {flag['rule']} "
            f"v{flag['rule_version']}: {html.escape(flag['message'])}</p><pre>{evidence}</pre>"
        )
    return "\n".join(parts)


def radial_profile_png(psf_rows: list[dict[str, Any]], title: str) -> bytes:
    """The fitted Moffat profiles of the measured stars, peak-normalised, against radius, with
    the FWHM expected for the filter: a trailed or drifting PSF stands out as wider curves."""
    figure = Figure(figsize=(5, 3.4), dpi=100)
    axis = figure.subplots()
    radius = np.linspace(0, 8, 200)
    for row in psf_rows:
        for star in row["stars"] or []:
            gamma, alpha = star.get("moffat_gamma_pix"), star.get("moffat_alpha")
            if gamma and alpha:
                axis.plot(radius, (1 + (radius / gamma) ** 2) ** -alpha, color="tab:blue",
                          alpha=0.25, linewidth=0.8)  # fmt: skip
    nominal = next((r["fwhm_nominal_pix"] for r in psf_rows if r["fwhm_nominal_pix"]), None)
    if nominal:
        axis.axvline(nominal / 2, color="tab:green", linestyle="--", label="nominal HWHM")
    measured = [r["fwhm_median_pix"] for r in psf_rows if r["fwhm_median_pix"]]
    if measured:
        axis.axvline(float(np.median(measured)) / 2, color="tab:red", label="measured HWHM")
    axis.axhline(0.5, color="grey", linewidth=0.6)
    axis.set_xlabel("radius [pixels]")
    axis.set_ylabel("normalised Moffat fit")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _png_tag(png: bytes, alt: str, width: int = 192) -> str:
    encoded = base64.b64encode(png).decode()
    return f"<img alt='{html.escape(alt)}' width='{width}' src='data:image/png;base64,{encoded}'>"


def _html_images(assessment: Assessment, exposure_id: str) -> str:
    previews = assessment.previews.get(exposure_id, [])
    if not previews:
        return "<p><i>No FLT/FLC/IMA file of this exposure is in the store: no images.</i></p>"
    parts = ["<h4>Images (SCI, ERR, DQ; zscale)</h4>"]
    for row in previews:
        cells = [
            _png_tag(row[f"{plane}_png"], f"{row['kind']} {plane} {row['extver']}")
            for plane in ("sci", "err", "dq")
            if row[f"{plane}_png"]
        ]
        parts.append(f"<p>{row['kind'].upper()} [SCI,{row['extver']}]<br>{''.join(cells)}</p>")
    psf_rows = assessment.psf.get(exposure_id, [])
    if psf_rows:
        summary = "; ".join(
            f"chip {r['extver']}: FWHM {_fmt(r['fwhm_median_pix'])} px (nominal "
            f"{_fmt(r['fwhm_nominal_pix'])}), elongation {_fmt(r['elongation_median'])}, "
            f"{r['n_psf_stars']} stars" + (f" ({r['reason']})" if r["reason"] else "")
            for r in psf_rows
        )
        png = radial_profile_png(psf_rows, f"Radial profiles: {exposure_id}")
        parts.append(f"<p>{html.escape(summary)}</p>{_png_tag(png, 'radial profiles', 500)}")
    return "".join(parts)


def _html_visit(assessment: Assessment) -> list[str]:
    body = [f"<h2>Visit {html.escape(assessment.visit)}</h2>"]
    for a in assessment.associations:
        body.append(
            f"<h3>Set {a['asn_id']}</h3><p>Program {a['proposid']}, {a['config']}, target "
            f"{html.escape(a['targname'] or '—')}; GUIDECMD {a['guidecmd'] or '—'}; window "
            f"{_fmt(a['window_start'])} – {_fmt(a['window_end'])} UTC.</p>"
            "<h4>JIF problem flags and warnings</h4>" + _html_problem_flags(a)
        )
        numbers = [
            e["asn_member_index"]
            for e in assessment.exposures
            if e["asn_member_index"] and e["asn_id"] == a["asn_id"]
        ]
        if numbers:
            body.append(f"<p>Exposures {member_list(numbers)} of this set are in the store.</p>")
    if assessment.warnings:
        items = "".join(
            f"<li>{html.escape(w['exposure_id'] or '')}: {html.escape(w['message'])}</li>"
            for w in assessment.warnings
        )
        body.append(f"<h4>Keyword values that could not be read (NULL)</h4><ul>{items}</ul>")
    return body


def render_html(assessment: Assessment) -> str:
    """One self-contained page (plots inlined) that can be mailed or attached to a HOPR."""
    visit = assessment.visit_verdict
    headline = html.escape(_headline(assessment))
    css = visit["verdict"] if visit else ""
    body = [f"<h1>hstmon assessment: {html.escape(assessment.requested)}</h1>",
            f"<p class='verdict {css}'>{headline}</p>"]  # fmt: skip
    if visit:
        body.append(f"<p>{html.escape(_delivery_words(visit))}</p>")
    body += _html_visit(assessment)
    body += ["<h2>Per-exposure keywords (JIF) and jitter statistics (JIT)</h2>",
             _html_exposure_table(assessment), "<h2>Exposures</h2>"]  # fmt: skip
    body += [_html_exposure(assessment, e) for e in assessment.exposures]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>hstmon assessment {html.escape(assessment.requested)}</title>"
        f"<style>{PAGE_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
