"""Trends for the instrument team: jitter, flag rates and PSF FWHM over time; outliers lead on."""

from __future__ import annotations

from datetime import date

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.pages import _common as ui
from dashboard.queries import (
    JITTER_METRICS,
    PERIODS,
    FilterOptions,
    TrendFilters,
    filter_options,
    flag_rates,
    jitter_trend,
    period_bounds,
    psf_trend,
)

OUTLIERS = 100  # exposures drawn as points and listed, per chart


def _filters(options: FilterOptions) -> tuple[TrendFilters, str]:
    """The filter widgets; returns what they select and the period length."""
    first, last = options.first_day, options.last_day
    top = st.columns([3, 2, 2, 2, 2, 1.4])
    span = top[0].date_input(
        "Observed between (UTC)", value=(first, last), min_value=first, max_value=last,
        key="trend_dates",
    )  # fmt: skip
    days = tuple(span) if isinstance(span, tuple | list) else (span,)
    start: date | None = days[0] if days else None
    end: date | None = days[1] if len(days) > 1 else start
    configs = top[1].multiselect("Detector / config", options.configs, key="trend_configs")
    guideacts = top[2].multiselect("Guiding mode (GUIDEACT)", options.guideacts, key="trend_guide")
    programs = top[3].multiselect("Program", options.proposids, key="trend_programs")
    science: list[str] = []
    if options.filters is not None:
        science = top[4].multiselect("Filter", options.filters, key="trend_filters")
    else:
        top[4].caption("Filter: this store's schema has no FILTER column yet.")
    unit = top[5].selectbox("Per", PERIODS, index=0, key="trend_unit")
    chosen = TrendFilters(
        start=start, end=end, proposids=tuple(programs), configs=tuple(configs),
        guideacts=tuple(guideacts), filters=tuple(science),
    )  # fmt: skip
    return chosen, unit


def _open_selected(event: object, name: str) -> None:
    """Go to the drilldown of the point a user clicked on a chart."""
    selection = getattr(event, "selection", None) or {}
    points = selection.get(name) if isinstance(selection, dict) else None
    if points:
        exposure_id = points[0].get("exposure_id")
        if exposure_id:
            ui.open_drilldown(str(exposure_id))


def _jitter_chart(trend: pd.DataFrame, outliers: pd.DataFrame, metric: str) -> alt.LayerChart:
    label = JITTER_METRICS[metric]
    x = alt.X("period:T", title=None)
    color = alt.Color("config:N", title="config")
    tooltip = [
        alt.Tooltip("period:T", title="period"), "config:N", "exposures:Q",
        alt.Tooltip(f"{metric}_mean:Q", title="mean", format=".2f"),
        alt.Tooltip(f"{metric}_max:Q", title="max", format=".2f"),
    ]  # fmt: skip
    base = alt.Chart(trend).encode(x=x, color=color, tooltip=tooltip)
    mean = base.mark_line(point=True).encode(y=alt.Y(f"{metric}_mean:Q", title=label))
    peak = base.mark_line(strokeDash=[4, 3], opacity=0.45).encode(y=f"{metric}_max:Q")
    picked = alt.selection_point(name="outlier", fields=["exposure_id"], on="click")
    points = (
        alt.Chart(outliers)
        .mark_point(filled=True, size=70, stroke="black", strokeWidth=0.6, opacity=0.85)
        .encode(
            x=alt.X("window_start:T"),
            y=alt.Y("value:Q"),
            color=color,
            shape=alt.value("diamond"),
            tooltip=[
                "exposure_id:N",
                "config:N",
                "proposid:Q",
                "guideact:N",
                alt.Tooltip("window_start:T", title="window start", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("value:Q", title=label, format=".2f"),
            ],
        )
        .add_params(picked)
    )
    return alt.layer(peak, mean, points).properties(height=340)


def _jitter_section(filters: TrendFilters, unit: str) -> None:
    st.subheader("Jitter")
    metric = st.selectbox(
        "Metric", list(JITTER_METRICS), index=2, format_func=JITTER_METRICS.get, key="metric"
    )
    trend = jitter_trend(ui.engine(), filters, unit, summary=ui.daily_summary())
    if trend.empty:
        st.info("No exposure matches these filters.")
        return
    outliers: pd.DataFrame = ui.query(
        "jitter_outliers", filters=filters, metric=metric, limit=OUTLIERS
    )
    st.caption(
        f"Mean per {unit} (solid) and maximum (dashed) per configuration, over "
        f"{int(trend['exposures'].sum()):,} exposures; diamonds are the {len(outliers)} largest "
        "values: hover for the exposure, click to open it."
    )
    event = st.altair_chart(
        _jitter_chart(trend, outliers, metric), key="jitter_chart", on_select="rerun",
        selection_mode="outlier", width="stretch",
    )  # fmt: skip
    _open_selected(event, "outlier")
    with st.expander(f"The {len(outliers)} largest {JITTER_METRICS[metric]}", expanded=False):
        ui.linked_table(outliers.rename(columns={"value": metric}), key="outlier_table")
    means = trend.melt(
        id_vars=["period", "config"],
        value_vars=[f"{m}_mean" for m in JITTER_METRICS if m != metric][:4],
        var_name="metric",
        value_name="mean",
    )
    means["metric"] = means["metric"].str.removesuffix("_mean").map(JITTER_METRICS)
    small = (
        alt.Chart(means)
        .mark_line()
        .encode(
            x=alt.X("period:T", title=None),
            y=alt.Y("mean:Q", title="mean (mas)"),
            color="config:N",
            tooltip=["period:T", "config:N", "metric:N", alt.Tooltip("mean:Q", format=".2f")],
        )
        .properties(width=330, height=150)
        .facet(facet=alt.Facet("metric:N", title=None), columns=2)
        .resolve_scale(y="independent")
    )
    st.altair_chart(small)


def _selected_day(value: object) -> date:
    """A temporal value from a chart selection (epoch milliseconds, or ISO text) as a UTC day."""
    if isinstance(value, int | float):
        return pd.Timestamp(value, unit="ms", tz="UTC").date()
    return pd.Timestamp(str(value)).date()


def _rates_section(filters: TrendFilters, unit: str) -> None:
    st.subheader(f"Flag rates per {unit}, by rule")
    rates = flag_rates(ui.engine(), filters, unit, summary=ui.daily_summary())
    if rates.empty:
        st.info("No exposure in this selection is flagged (or `hstmon analyze` has not run).")
        return
    picked = alt.selection_point(name="rate", fields=["period", "rule"], on="click")
    chart = (
        alt.Chart(rates)
        .mark_line(point=True)
        .encode(
            x=alt.X("period:T", title=None),
            y=alt.Y("rate:Q", title="exposures flagged", axis=alt.Axis(format="%")),
            color=alt.Color("rule:N"),
            tooltip=[
                alt.Tooltip("period:T", title="period"),
                "rule:N",
                "flagged:Q",
                "exposures:Q",
                alt.Tooltip("rate:Q", format=".1%"),
            ],
        )
        .add_params(picked)
        .properties(height=300)
    )
    event = st.altair_chart(
        chart, key="rates_chart", on_select="rerun", selection_mode="rate", width="stretch"
    )
    st.caption("Click a point to list the exposures that rule flagged in that period.")
    selection = getattr(event, "selection", None) or {}
    points = selection.get("rate") if isinstance(selection, dict) else None
    if points:
        period = _selected_day(points[0]["period"])
        first, last = period_bounds(period, unit)
        narrowed = TrendFilters(**{**filters.__dict__, "start": first, "end": last})
        rule = str(points[0]["rule"])
        flagged = ui.query("flagged_exposures", filters=narrowed, rule=rule)
        st.markdown(f"**{rule}**, {first} – {last}: {len(flagged)} exposure(s)")
        ui.linked_table(flagged, key="flagged_table")


def _psf_section(filters: TrendFilters, unit: str) -> None:
    st.subheader("PSF FWHM per filter")
    psf = psf_trend(ui.engine(), filters, unit, summary=ui.daily_summary())
    if psf is None:
        st.info(
            "This store has no FILTER or PSF FWHM columns yet (its schema predates image "
            "ingest): run `hstmon db upgrade`, then ingest the FLT/FLC/IMA files.",
            icon=":material/info:",
        )
        return
    if psf.empty:
        st.info(
            "No exposure in this selection has a measured PSF FWHM: ingest the science files "
            "(FLT/FLC/IMA) beside the jitter files to measure it."
        )
        return
    color = alt.Color("filter:N")
    base = alt.Chart(psf).encode(x=alt.X("period:T", title=None), color=color)
    fwhm = base.mark_line(point=True).encode(
        y=alt.Y("fwhm_mean_pix:Q", title="FWHM (pixels)"),
        tooltip=["period:T", "filter:N", "exposures:Q",
                 alt.Tooltip("fwhm_mean_pix:Q", format=".2f"),
                 alt.Tooltip("nominal_fwhm_pix:Q", format=".2f")],
    )  # fmt: skip
    nominal = base.mark_line(strokeDash=[2, 2], opacity=0.6).encode(y="nominal_fwhm_pix:Q")
    st.altair_chart(alt.layer(nominal, fwhm).properties(height=300), width="stretch")
    st.caption("Solid: mean measured FWHM per filter; dotted: its nominal value.")
    worst = ui.query("psf_outliers", filters=filters, limit=OUTLIERS)
    if worst is not None and len(worst):
        with st.expander(f"The {len(worst)} exposures furthest above nominal FWHM"):
            ui.linked_table(worst, key="psf_table")


ui.login_required()
st.title("Trends")
if ui.store_ready():
    options = filter_options(ui.engine(), ui.daily_summary())
    chosen, period_unit = _filters(options)
    _jitter_section(chosen, period_unit)
    _rates_section(chosen, period_unit)
    _psf_section(chosen, period_unit)
