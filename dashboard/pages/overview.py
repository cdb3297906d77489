"""Overview: the last nightly run, what the store holds, and the visits that need an observer."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.pages import _common as ui
from dashboard.queries import RunInfo, StoreCounts

STATUS_ICONS = {
    "succeeded": ":green[:material/check_circle:]",
    "failed": ":orange[:material/warning:]",
    "error": ":red[:material/error:]",
    "running": ":blue[:material/pending:]",
    "aborted": ":red[:material/cancel:]",
}


def _run_line(title: str, run: RunInfo | None, command: str) -> None:
    if run is None:
        st.markdown(f"**{title}:** never run — `{command}`")
        return
    icon = STATUS_ICONS.get(run.status, "")
    finished = (
        f"finished {ui.when(run.finished_at)}"
        if run.finished_at is not None
        else "not finished (running, or killed)"
    )
    st.markdown(
        f"**{title} #{run.run_id}:** {icon} {run.status} — started {ui.when(run.started_at)} "
        f"({ui.ago(run.started_at)}), {finished}"
    )
    if run.message:
        st.error(run.message)


def _nightly_headline() -> None:
    """What the last nightly digest said first (the files hold the whole digest)."""
    blocks: list[tuple[str, list[str]]] = ui.query("nightly_headline")
    for lead, items in blocks:
        st.markdown(f"- {lead}" + "".join(f"\n  - {item}" for item in items))


def _ingest_counts(run: RunInfo | None) -> None:
    if run is None or not run.counts:
        return
    names = ("files_seen", "files_ingested", "files_unchanged", "files_failed", "files_skipped")
    cells = st.columns(len(names))
    for cell, name in zip(cells, names, strict=True):
        value = run.counts.get(name, 0 if name != "files_seen" else None)
        cell.metric(
            name.replace("files_", "files ").replace("_", " "), "—" if value is None else value
        )


def _store_metrics(counts: StoreCounts) -> None:
    cells = st.columns(7)
    cells[0].metric("exposures", f"{counts.exposures:,}")
    cells[1].metric("visits", f"{counts.visits:,}")
    cells[2].metric("programs", f"{counts.programs:,}")
    cells[3].metric("JIT samples", f"{counts.samples:,}")
    cells[4].metric("flagged exposures", f"{counts.flagged_exposures:,}")
    cells[5].metric("HOPR verdicts", f"{counts.verdicts.get('hopr', 0):,}")
    cells[6].metric("help-desk verdicts", f"{counts.verdicts.get('helpdesk', 0):,}")
    span = f"{ui.when(counts.first_window)} – {ui.when(counts.last_window)}"
    st.caption(f"Observation windows {span}.")


def _failed_files(counts: StoreCounts) -> None:
    if not counts.failed_files:
        return
    label = f"{counts.failed_files} file(s) could not be read"
    with st.expander(label, expanded=True, icon=":material/warning:"):
        st.dataframe(ui.query("failed_files", limit=100), hide_index=True)


_ACTION_COLUMNS = {
    "days_left": st.column_config.NumberColumn("days left", help="to the HOPR deadline"),
    "hopr_deadline": st.column_config.DateColumn("HOPR deadline"),
    "summary": st.column_config.TextColumn("summary", width="large"),
    "proposid": st.column_config.NumberColumn("program", format="%d"),
}


def _action_list() -> None:
    st.subheader("Action list")
    totals = ui.query("action_count")
    if not totals:
        st.success("No exposure or visit needs a HOPR or the help desk.", icon=":material/check:")
        return
    kinds = st.segmented_control(
        "Show", ["visits and exposures", "visits", "exposures"], default="visits and exposures",
        key="action_kind", label_visibility="collapsed",
    )  # fmt: skip
    actions: pd.DataFrame = ui.query("action_items", limit=500)
    if kinds in ("visits", "exposures"):
        actions = actions[actions["kind"] == kinds[:-1]]
    shown = sum(totals.values())
    late = totals.get("hopr_limit_passed", 0)
    st.caption(
        f"{totals.get('hopr', 0)} open HOPR and {totals.get('helpdesk', 0)} help-desk verdicts "
        f"(visits and exposures{'; the first 500 by deadline' if shown > 500 else ''}), "
        "soonest HOPR deadline first. Click a row or “open” for its drilldown."
    )
    passed = actions["limit_passed"].astype(bool)
    ui.linked_table(
        actions[~passed].drop(columns="limit_passed"), key="actions", target="target",
        kind="kind", column_config=_ACTION_COLUMNS, height=420,
    )  # fmt: skip
    if passed.any():
        st.markdown(f"**HOPRs past their 90-day limit ({late})**")
        st.caption(
            "Still HOPRs: the failure is real, but filing now needs the help desk's agreement."
        )
        ui.linked_table(
            actions[passed].drop(columns="limit_passed"), key="actions_late", target="target",
            kind="kind", column_config=_ACTION_COLUMNS, height=300,
        )  # fmt: skip


def _flag_chart() -> None:
    rows = ui.query("flag_counts")
    if not rows:
        return
    frame = pd.DataFrame(rows, columns=["rule", "severity", "flags"])
    chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("flags:Q", title="exposures flagged"),
            y=alt.Y("rule:N", sort="-x", title=None),
            color=alt.Color(
                "severity:N",
                scale=alt.Scale(
                    domain=["high", "medium", "info"], range=["#c62828", "#ef8f00", "#7d8ca3"]
                ),
            ),
            tooltip=["rule", "severity", "flags"],
        )
        .properties(height=alt.Step(24))
    )
    st.altair_chart(chart, width="stretch")


ui.login_required()
st.title("hstmon — overview")
st.caption(f"Store: {ui.database_label(ui.database_url())} · viewing as {ui.viewer().describe()}")
if ui.store_ready():
    counts: StoreCounts = ui.query("store_counts")
    ingest: RunInfo | None = ui.query("last_ingest_run")
    analysis: RunInfo | None = ui.query("last_analysis_run")
    nightly: RunInfo | None = ui.query("last_nightly_run")
    st.subheader("Last runs")
    if nightly is not None:
        _run_line("Nightly", nightly, "hstmon nightly")
        _nightly_headline()
    _run_line("Ingest", ingest, "hstmon ingest DIR")
    _ingest_counts(ingest)
    _run_line("Analysis", analysis, "hstmon analyze")
    _failed_files(counts)
    st.subheader("The store")
    _store_metrics(counts)
    _action_list()
    st.subheader("Flags by rule")
    _flag_chart()
