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
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sqlalchemy import Connection, select

from analysis.verdicts import member_list
from models.tables import (
    Association,
    Exposure,
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
    "render_html",
    "render_text",
]

PROBLEM_FLAGS = (  # keyword, column, value when all is well
    ("T_GDACT", "t_gdact", True), ("T_ACTGSP", "t_actgsp", True), ("T_GSFAIL", "t_gsfail", False),
    ("T_SGSTAR", "t_sgstar", False), ("T_TLMPRB", "t_tlmprb", False),
    ("T_NOTLM", "t_notlm", False), ("T_NTMGAP", "t_ntmgap", 0), ("T_TMGAP", "t_tmgap", 0.0),
    ("T_GSGAP", "t_gsgap", False), ("T_SLEWNG", "t_slewng", False),
    ("T_TDFDWN", "t_tdfdwn", False),
)  # fmt: skip
EXPOSURE_KEYWORDS = (  # the notebook's per-extension keywords, as the store holds them
    ("#", "asn_member_index"), ("exposure", "exposure_id"), ("rootname", "rootname"),
    ("GUIDEACT", "guideact"), ("GSACQ", "gsacq"), ("GSFAIL", "gsfail"),
    ("TDF-DOWN", "tdf_down"), ("ACTGSSEP ″", "actgssep_arcsec"),
    ("GSSEPRMS mas", "gsseprms_mas"), ("NLOSSES", "nlosses"), ("LOCKLOSS s", "lockloss_s"),
    ("V2_RMS mas", "v2_rms_mas"), ("V3_RMS mas", "v3_rms_mas"), ("JIT rows", "jit_n_samples"),
    ("fill rows", "jit_n_fill"), ("TakeData=1", "jit_takedata_frac"),
)  # fmt: skip


class UnknownIdError(LookupError):
    """No association or exposure of that name is in the store."""


@dataclass
class Assessment:
    """Everything the checklist looks at, for one visit (or the visit of one exposure)."""

    requested: str
    association: dict[str, Any] | None
    exposures: list[dict[str, Any]]
    flags: list[dict[str, Any]]
    verdicts: dict[str, dict[str, Any]]  # exposure_id or asn_id -> verdict row
    samples: dict[str, pd.DataFrame]
    previews: dict[str, list[dict[str, Any]]]  # exposure_id -> image_preview rows
    psf: dict[str, list[dict[str, Any]]]  # exposure_id -> psf_measurement rows

    @property
    def visit_verdict(self) -> dict[str, Any] | None:
        if self.association:
            return self.verdicts.get(self.association["asn_id"])
        return None

    def as_json(self) -> dict[str, Any]:
        return _jsonable(
            {
                "requested": self.requested,
                "association": self.association,
                "verdict": self.visit_verdict,
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


def _resolve(connection: Connection, requested: str) -> tuple[str | None, list[str]]:
    """The association and exposures an id names: an asn id, a rootname or an exposure id."""
    name = requested.strip().lower()
    if connection.execute(select(Association.asn_id).where(Association.asn_id == name)).first():
        members = select(Exposure.exposure_id).where(Exposure.asn_id == name)
        return name, list(connection.execute(members).scalars())
    exposure = connection.execute(
        select(Exposure.exposure_id, Exposure.asn_id).where(Exposure.exposure_id == name[:8])
    ).first()
    if exposure is None:
        msg = f"{requested}: no association or exposure of that name has been ingested"
        raise UnknownIdError(msg)
    return exposure.asn_id, [exposure.exposure_id]


def gather(connection: Connection, requested: str) -> Assessment:
    """Read everything the report shows for ``requested`` from the store."""
    asn_id, exposure_ids = _resolve(connection, requested)
    association = None
    if asn_id:
        found = _rows(connection, select(Association).where(Association.asn_id == asn_id))
        association = found[0] if found else None
    exposures = _rows(
        connection,
        select(Exposure)
        .where(Exposure.exposure_id.in_(exposure_ids))
        .order_by(Exposure.asn_member_index, Exposure.exposure_id),
    )
    flags = _rows(
        connection,
        select(Flag)
        .where(Flag.exposure_id.in_(exposure_ids))
        .order_by(Flag.exposure_id, Flag.rule),
    )
    subjects = select(Verdict).where(
        Verdict.exposure_id.in_(exposure_ids) | (Verdict.asn_id == asn_id)
    )
    verdicts = {v["exposure_id"] or v["asn_id"]: v for v in _rows(connection, subjects)}
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
    return Assessment(requested, association, exposures, flags, verdicts, samples, previews, psf)


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


def _headline(assessment: Assessment) -> str:
    verdict = assessment.visit_verdict or next(iter(assessment.verdicts.values()), None)
    if verdict is None:
        return "Not analysed yet: run `hstmon analyze`."
    return f"{verdict['verdict'].upper()}: {verdict['summary']}"


def render_text(assessment: Assessment) -> str:
    """The terminal summary: the verdict, the keyword table, and every flag."""
    lines = [f"Assessment of {assessment.requested}", "", _headline(assessment), ""]
    if assessment.association:
        a = assessment.association
        bad = [k for k, column, ok in PROBLEM_FLAGS if a[column] is not None and a[column] != ok]
        lines.append(
            f"Visit {a['asn_id']}  program {a['proposid']}  {a['config']}  "
            f"GUIDECMD={a['guidecmd'] or '—'}  problem flags: {', '.join(bad) or 'none'}"
        )
    header = [title for title, _ in EXPOSURE_KEYWORDS] + ["verdict"]
    table = [header]
    for e in assessment.exposures:
        verdict = assessment.verdicts.get(e["exposure_id"], {}).get("verdict", "—")
        table.append([_fmt(e[column]) for _, column in EXPOSURE_KEYWORDS] + [verdict])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
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


def render_html(assessment: Assessment) -> str:
    """One self-contained page (plots inlined) that can be mailed or attached to a HOPR."""
    visit = assessment.visit_verdict
    headline = html.escape(_headline(assessment))
    css = visit["verdict"] if visit else ""
    body = [f"<h1>hstmon assessment: {html.escape(assessment.requested)}</h1>",
            f"<p class='verdict {css}'>{headline}</p>"]  # fmt: skip
    if assessment.association:
        a = assessment.association
        body.append(
            f"<h2>Visit {a['asn_id']}</h2><p>Program {a['proposid']}, {a['config']}, target "
            f"{html.escape(a['targname'] or '—')}; GUIDECMD {a['guidecmd'] or '—'}; window "
            f"{_fmt(a['window_start'])} – {_fmt(a['window_end'])} UTC.</p>"
            "<h3>JIF problem flags and warnings</h3>" + _html_problem_flags(a)
        )
        numbers = [e["asn_member_index"] for e in assessment.exposures if e["asn_member_index"]]
        if numbers:
            body.append(f"<p>Exposures {member_list(numbers)} of this visit are in the store.</p>")
    body += ["<h2>Per-exposure keywords (JIF) and jitter statistics (JIT)</h2>",
             _html_exposure_table(assessment), "<h2>Exposures</h2>"]  # fmt: skip
    body += [_html_exposure(assessment, e) for e in assessment.exposures]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>hstmon assessment {html.escape(assessment.requested)}</title>"
        f"<style>{PAGE_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
