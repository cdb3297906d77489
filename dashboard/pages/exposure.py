"""Exposure drilldown (?exposure=iepp01uv) and visit view (?visit=iepp01010): the exception-report
checklist on one page, from keywords and the jitter time series to flags, verdict and headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from analysis.report import jitter_plot_png
from dashboard.pages import _common as ui
from dashboard.queries import ExposureDetail, VisitDetail, radial_profiles, take_data_down_spans
from models.jif_keywords import checklist_columns, problem_flags

# The keyword tables come from the one JIF keyword map, as the report's do.
EXPOSURE_KEYWORDS = checklist_columns()
PROBLEM_FLAGS = tuple((k.keyword, k.column, k.ok) for k in problem_flags())
SERIES = {
    "si_v2_avg": "V2 AVG",
    "si_v3_avg": "V3 AVG",
    "si_v2_rms": "V2 RMS",
    "si_v3_rms": "V3 RMS",
}
IDENTITY = (
    ("exposure", "exposure_id"), ("rootname", "rootname"), ("jitter name", "jitter_name"),
    ("visit (asn_id)", "asn_id"), ("member", "asn_member_index"), ("ASN_MTYP", "asn_mtyp"),
    ("program", "proposid"), ("config", "config"), ("aperture", "aperture"),
    ("window start", "window_start"), ("window end", "window_end"), ("PROCTIME", "proctime"),
    ("RA_AVG deg", "ra_avg"), ("DEC_AVG deg", "dec_avg"), ("ROLL_AVG deg", "roll_avg"),
)  # fmt: skip
SCIENCE = (
    ("INSTRUME", "instrument"), ("DETECTOR", "detector"), ("FILTER", "filter"),
    ("SUBARRAY", "subarray"), ("TARGNAME", "targname"), ("RA_TARG deg", "ra_targ"),
    ("DEC_TARG deg", "dec_targ"), ("EXPSTART", "expstart"), ("EXPEND", "expend"),
    ("EXPTIME s", "exptime_s"), ("EXPFLAG", "expflag"), ("FGSLOCK", "fgslock"),
    ("GYROMODE", "gyromode"), ("QUALITY", "quality"), ("SCAN_TYP", "scan_typ"),
    ("MTFLAG", "mtflag"), ("delivered", "date_delivered"), ("CAL_VER", "cal_ver"),
    ("PHOTPLAM Å", "photplam_angstrom"), ("image-quality file rank", "sci_rank"),
    ("PSF stars", "n_psf_stars"), ("FWHM median px", "fwhm_median_pix"),
    ("FWHM p90 px", "fwhm_p90_pix"), ("FWHM nominal px", "fwhm_nominal_pix"),
    ("elongation", "elongation_median"), ("median S/N", "median_snr"),
    ("IMA read outlier σ", "read_outlier_sigma"),
)  # fmt: skip
_JIT_STATISTICS = (
    "jit_duration_s", "si_v2_avg_std_mas", "si_v3_avg_std_mas", "si_v2_rms_median_mas",
    "si_v3_rms_median_mas", "si_rms_p95_mas", "drift_v2_mas", "drift_v3_mas",
    "drift_trend_v2_mas", "drift_trend_v3_mas", "v2_p2p_mas", "v3_p2p_mas", "nrecent",
    "recentr_s",
)  # fmt: skip
# Columns shown in a group above or in the guiding table; any other is listed as it comes.
_SHOWN = (
    {c for _, c in IDENTITY} | {c for _, c in SCIENCE} | {c for _, c in EXPOSURE_KEYWORDS}
    | set(_JIT_STATISTICS) | {"jif_file_id", "jit_file_id", "sci_file_id", "updated_at"}
)  # fmt: skip
VERDICT_BOXES = {"hopr": st.error, "helpdesk": st.warning, "ok": st.success, "incomplete": st.info}


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, datetime | pd.Timestamp):
        stamp = pd.Timestamp(value)
        return ui.when(stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pairs(record: dict[str, Any], pairs: Any) -> pd.DataFrame:
    rows = [(label, _text(record.get(column))) for label, column in pairs if column in record]
    return pd.DataFrame(rows, columns=["keyword", "value"])


def _deadline_words(verdict: dict[str, Any]) -> str:
    deadline = verdict.get("hopr_deadline")
    if deadline is None:
        return "No HOPR deadline known (no delivery date)."
    days = (pd.Timestamp(deadline).date() - datetime.now(UTC).date()).days
    left = f"{days} days left" if days >= 0 else f"passed {-days} days ago"
    basis = verdict.get("delivery_basis") or "delivery date"
    return (
        f"HOPR deadline **{deadline}** ({left}); delivered {verdict.get('delivered_on')} ({basis})."
    )


def _verdict_box(verdict: dict[str, Any] | None, what: str) -> None:
    if verdict is None:
        st.info(f"{what}: not analysed yet — run `hstmon analyze`.")
        return
    box = VERDICT_BOXES.get(verdict["verdict"], st.info)
    body = f"**{what}: {verdict['verdict'].upper()}** — {verdict['summary']}"
    if verdict["verdict"] != "ok":
        body += "\n\n" + _deadline_words(verdict)
    box(body)
    reasons = verdict.get("reasons") or []
    if len(reasons) > 1:
        st.markdown("\n".join(f"- {reason}" for reason in reasons))


def _problem_flags(association: dict[str, Any] | None) -> None:
    st.subheader("JIF problem flags and warnings")
    if association is None:
        st.info("This exposure has no association (visit) row in the store.")
        return
    values = {keyword: association.get(column) for keyword, column, _ in PROBLEM_FLAGS}
    bad = [
        keyword
        for keyword, column, ok in PROBLEM_FLAGS
        if association.get(column) is not None and association.get(column) != ok
    ]
    frame = pd.DataFrame([{k: _text(v) for k, v in values.items()}])
    styled = (
        frame.style.map(lambda _: "background-color: #fdd", subset=bad or None) if bad else frame
    )
    st.dataframe(styled, hide_index=True)
    st.caption(
        f"Visit {association['asn_id']}: GUIDECMD {association.get('guidecmd') or '—'}; "
        + (f"problems: {', '.join(bad)} (red)." if bad else "every flag has its nominal value.")
    )


def _guiding_table(asn_id: str | None, current: str | None) -> None:
    if not asn_id:
        return
    members: pd.DataFrame = ui.query("visit_exposures", asn_id)
    if members.empty:
        return
    labels = {column: label for label, column in EXPOSURE_KEYWORDS}
    shown = members.rename(columns=labels)
    if current is not None:
        st.caption(f"Every exposure of visit {asn_id}; ▶ marks this one.")
        shown.insert(0, "this", ["▶" if m == current else "" for m in members["exposure_id"]])
    ui.linked_table(
        shown, key=f"members_{asn_id}_{current}", target="exposure",
        column_config={"flags": st.column_config.TextColumn("flags", width="medium"),
                       "this": st.column_config.TextColumn("", width="small")},
    )  # fmt: skip


def _segments(samples: pd.DataFrame) -> pd.Series:
    """A new segment after every fill row, so lines break where the JIT has no data."""
    fill = samples["si_v2_avg"].isna() & samples["si_v3_avg"].isna()
    return fill.cumsum()


def _jitter_chart(samples: pd.DataFrame, spans: pd.DataFrame) -> alt.LayerChart:
    data = samples.assign(segment=_segments(samples))
    long = data.melt(
        id_vars=["seconds", "sample_index", "take_data", "segment"],
        value_vars=list(SERIES), var_name="series", value_name="arcsec",
    )  # fmt: skip
    long = long.dropna(subset=["arcsec"])
    long["mas"] = long["arcsec"] * 1000.0
    long["series"] = long["series"].map(SERIES)
    zoom = alt.selection_interval(bind="scales", encodings=["x"])
    lines = (
        alt.Chart(long)
        .mark_line(point=alt.OverlayMarkDef(size=10), strokeWidth=1)
        .encode(
            x=alt.X("seconds:Q", title="seconds from observation window start"),
            y=alt.Y("mas:Q", title="jitter (mas)", axis=alt.Axis(format=".1f")),
            color=alt.Color("series:N", sort=list(SERIES.values()), title=None),
            detail="segment:N",
            tooltip=[
                "sample_index:Q",
                "seconds:Q",
                "series:N",
                alt.Tooltip("mas:Q", format=".2f"),
                "take_data:Q",
            ],
        )
        .add_params(zoom)
    )
    shade = (
        alt.Chart(spans.assign(what="TakeData ≠ 1"))
        .mark_rect(color="#d62728", opacity=0.15)
        .encode(x="start_s:Q", x2="end_s:Q", tooltip=["what:N", "start_s:Q", "end_s:Q"])
    )
    return alt.layer(shade, lines).properties(height=320)


def _jitter_section(exposure: dict[str, Any]) -> None:
    st.subheader("Jitter time series (JIT)")
    exposure_id = exposure["exposure_id"]
    samples: pd.DataFrame = ui.query("jitter_samples", exposure_id)
    if samples.empty:
        st.info("No JIT table has been ingested for this exposure.")
        return
    spans = take_data_down_spans(samples)
    fill = int((samples["si_v2_avg"].isna() & samples["si_v3_avg"].isna()).sum())
    if fill == len(samples):
        st.warning(f"Every one of the {fill} JIT rows is 1.6e38 fill: no guiding data.")
    st.altair_chart(_jitter_chart(samples, spans), width="stretch")
    st.caption(
        f"{len(samples)} rows; {fill} fill rows shown as gaps; {len(spans)} span(s) with "
        "TakeData ≠ 1 shaded red. Drag to pan, scroll to zoom."
    )
    title = f"Jitter: {exposure_id}"
    st.download_button(
        "Download the plot (PNG, for a HOPR)", data=lambda: jitter_plot_png(samples, title),
        file_name=f"{exposure_id}_jitter.png", mime="image/png", on_click="ignore",
        icon=":material/download:",
    )  # fmt: skip


def _radial_chart(profiles: pd.DataFrame, psf: pd.DataFrame) -> alt.LayerChart:
    lines = (
        alt.Chart(profiles)
        .mark_line(opacity=0.35, strokeWidth=1)
        .encode(
            x=alt.X("radius_pix:Q", title="radius (pixels)"),
            y=alt.Y("profile:Q", title="normalised Moffat fit"),
            color=alt.Color("chip:N", title=None),
            detail="star:N",
            tooltip=["chip:N", "star:Q", alt.Tooltip("fwhm_pix:Q", format=".2f")],
        )
    )
    half = pd.DataFrame(
        [("measured HWHM", v / 2) for v in psf["fwhm_median_pix"].dropna()]
        + [("nominal HWHM", v / 2) for v in psf["fwhm_nominal_pix"].dropna()[:1]],
        columns=["what", "radius_pix"],
    )
    rules = (
        alt.Chart(half)
        .mark_rule(strokeDash=[4, 3])
        .encode(
            x="radius_pix:Q",
            color=alt.Color("what:N", scale=alt.Scale(range=["#d62728", "#2ca02c"]), title=None),
            tooltip=["what:N", alt.Tooltip("radius_pix:Q", format=".2f")],
        )
    )
    return alt.layer(lines, rules).resolve_scale(color="independent").properties(height=260)


def _images_section(exposure_id: str) -> None:
    st.subheader("Images (SCI, ERR, DQ) and PSF")
    previews: pd.DataFrame = ui.query("image_previews", exposure_id)
    if previews.empty:
        st.info(
            "No FLT/FLC/IMA file of this exposure is in the store: no images or radial "
            "profiles (ingest the science files beside the jitter files to add them).",
            icon=":material/image:",
        )
        return
    for row in previews.itertuples():
        planes = [(p.upper(), getattr(row, f"{p}_png")) for p in ("sci", "err", "dq")]
        planes = [(name, png) for name, png in planes if png is not None]
        cells = st.columns(3)
        for cell, (name, png) in zip(cells, planes, strict=False):
            cell.image(bytes(png), caption=f"{row.kind.upper()} [{name},{row.extver}] (zscale)")
    psf: pd.DataFrame = ui.query("psf_measurements", exposure_id)
    if psf.empty:
        return
    summary = psf[["kind", "extver", "ccdchip", "n_psf_stars", "fwhm_median_pix",
                   "fwhm_nominal_pix", "elongation_median", "reason"]]  # fmt: skip
    st.dataframe(summary, hide_index=True, height=ui.fitted_height(len(summary)))
    profiles = radial_profiles(psf)
    if profiles.empty:
        st.caption("No star could be fitted: no radial profile.")
        return
    st.altair_chart(_radial_chart(profiles, psf), width="stretch")
    st.caption(
        "Moffat fits of the brightest isolated stars, peak-normalised: a trailed or drifting PSF "
        "shows as wider curves, its measured half width (red) beyond the nominal one (green)."
    )


def _flags_section(flags: list[dict[str, Any]]) -> None:
    st.subheader(f"Flags ({len(flags)})")
    if not flags:
        st.success("No rule flagged this exposure.")
        return
    for flag in flags:
        with st.container(border=True):
            left, right = st.columns([3, 2])
            left.markdown(
                f"**{flag['severity'].upper()} · {flag['rule']}** (rule v{flag['rule_version']})"
                f"\n\n{flag['message']}"
            )
            right.json(flag.get("evidence") or {}, expanded=True)


def _headers_section(exposure_id: str) -> None:
    panel = st.expander("Full FITS headers", key="headers_open", on_change="rerun",
                        icon=":material/description:")  # fmt: skip
    with panel:
        if not panel.open:
            st.caption("Open to load every header of this exposure's files.")
            return
        headers: pd.DataFrame = ui.query("fits_headers", exposure_id)
        if headers.empty:
            st.info("No header of this exposure is stored.")
            return
        names = [
            f"{row.kind.upper()} HDU {row.hdu_index}" + (f" ({row.extname})" if row.extname else "")
            for row in headers.itertuples()
        ]
        for tab, row in zip(st.tabs(names), headers.itertuples(), strict=True):
            with tab:
                st.caption(row.path)
                cards = [(k, json.dumps(v) if isinstance(v, list | dict) else str(v))
                         for k, v in (row.header or {}).items()]  # fmt: skip
                st.dataframe(pd.DataFrame(cards, columns=["keyword", "value"]), hide_index=True,
                             height=360)  # fmt: skip


def _exposure_view(requested: str) -> None:
    detail: ExposureDetail | None = ui.query("exposure_detail", requested)
    if detail is None:
        st.warning(f"No exposure “{requested}” is in the store.")
        _suggest(requested)
        return
    e, a = detail.exposure, detail.association
    st.header(f"Exposure {e['exposure_id']}" + (f" ({e['rootname']})" if e["rootname"] else ""))
    where = [f"program {e['proposid']}", e["config"] or "—"]
    if a is not None:
        where.insert(0, f"member {e['asn_member_index']} of visit {a['asn_id']}")
        where.append(f"target {a['targname'] or '—'}")
    st.caption(" · ".join(str(w) for w in where))
    _verdict_box(detail.verdict, "Exposure verdict")
    if a is not None:
        visit_verdict = (detail.visit_verdict or {}).get("verdict", "not analysed")
        st.page_link(
            ui.EXPOSURE_PAGE,
            query_params={"visit": a["asn_id"]},
            label=f"Visit {a['asn_id']} (verdict: {visit_verdict})",
            icon=":material/arrow_upward:",
        )
    identity_column, science_column, jit_column = st.columns(3)
    with identity_column:
        st.markdown("**Identity**")
        identity = _pairs(e, IDENTITY)
        st.dataframe(identity, hide_index=True, height=ui.fitted_height(len(identity), 600))
    with science_column:
        st.markdown("**Science keywords and image quality**")
        science = [(label, c) for label, c in SCIENCE if e.get(c) is not None]
        science += [(c, c) for c in e if c not in _SHOWN and e.get(c) is not None]
        if science:
            keywords = _pairs(e, science)
            st.dataframe(keywords, hide_index=True, height=ui.fitted_height(len(keywords), 600))
        else:
            st.caption("No science file (FLT/FLC/IMA) of this exposure is in the store.")
    with jit_column:
        st.markdown("**JIT statistics**")
        statistics = _pairs(e, [(c, c) for c in _JIT_STATISTICS])
        st.dataframe(statistics, hide_index=True, height=ui.fitted_height(len(statistics), 600))
    _problem_flags(a)
    st.subheader("Guiding keywords (JIF) per exposure")
    _guiding_table(e.get("asn_id"), e["exposure_id"])
    _jitter_section(e)
    _images_section(e["exposure_id"])
    _flags_section(detail.flags)
    _headers_section(e["exposure_id"])


def _visit_view(asn_id: str) -> None:
    detail: VisitDetail | None = ui.query("visit_detail", asn_id)
    if detail is None:
        st.warning(f"No visit “{asn_id}” is in the store.")
        _suggest(asn_id)
        return
    a = detail.association
    st.header(f"Visit {a['asn_id']}")
    st.caption(
        f"program {a['proposid']} · {a['config'] or '—'} · target {a['targname'] or '—'} · "
        f"window {_text(a['window_start'])} – {_text(a['window_end'])} · "
        f"ASN_STAT {a['asn_stat'] or '—'}"
    )
    _verdict_box(detail.verdict, "Visit verdict")
    _problem_flags(a)
    st.subheader("Exposures")
    st.caption("Click a row or “open” for an exposure's drilldown.")
    _guiding_table(a["asn_id"], None)


def _suggest(requested: str) -> None:
    matches: pd.DataFrame = ui.query("find_ids", requested[:6])
    if len(matches):
        st.markdown("Did you mean one of these?")
        ui.linked_table(matches, key="suggestions", target="target", kind="kind")


def _landing() -> None:
    st.info(
        "Enter an exposure id (e.g. `iepp01uv`), a rootname or a visit (`iepp01010`), or open "
        "one from the overview's action list. This page's URL (`?exposure=...`) can be shared."
    )
    actions: pd.DataFrame = ui.query("action_items", limit=10)
    if len(actions):
        st.markdown("**Nearest HOPR deadlines**")
        ui.linked_table(actions, key="landing_actions", target="target", kind="kind")


def _requested() -> tuple[str, str]:
    """What the URL asks for: ("exposure" | "visit" | "", id)."""
    for kind in ("exposure", "visit"):
        value = (st.query_params.get(kind) or "").strip().lower()
        if value:
            return kind, value
    return "", ""


def _on_search() -> None:
    typed = (st.session_state.get("drill_id") or "").strip().lower()
    st.query_params.clear()
    if typed:
        kind = "visit" if len(typed) == 9 and ui.query("visit_detail", typed) else "exposure"
        st.query_params[kind] = typed


ui.login_required()
st.title("Exposure drilldown")
if ui.store_ready():
    kind, requested = _requested()
    if st.session_state.get("drill_for") != requested:  # a new URL: show what it asks for
        st.session_state["drill_id"] = requested
        st.session_state["drill_for"] = requested
    st.text_input(
        "Exposure, rootname or visit",
        key="drill_id",
        on_change=_on_search,
        placeholder="e.g. iepp01uv, iepp01uvq or iepp01010",
    )
    if kind == "visit" or (len(requested) == 9 and ui.query("visit_detail", requested)):
        _visit_view(requested)
    elif requested:
        _exposure_view(requested)
    else:
        _landing()
