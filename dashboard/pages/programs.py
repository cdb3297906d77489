"""Program browser: program -> visits (associations) -> exposures with their flags, searchable."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.pages import _common as ui

VERDICT_COLUMN = st.column_config.TextColumn(
    "verdict", help="hopr | helpdesk | ok | not_repeatable"
)


def _selected_row(frame: pd.DataFrame, key: str) -> pd.Series | None:
    event = st.dataframe(
        frame, key=key, hide_index=True, on_select="rerun", selection_mode="single-row",
        column_config={
            "proposid": st.column_config.NumberColumn("program", format="%d"),
            "verdict": VERDICT_COLUMN,
            "summary": st.column_config.TextColumn("summary", width="large"),
        },
        height=min(420, 38 + 35 * max(1, len(frame))),
    )  # fmt: skip
    rows = event.selection.rows if event is not None else []
    return frame.iloc[rows[0]] if rows else None


def _choose(parameter: str, value: str, clears: tuple[str, ...] = ()) -> None:
    if st.query_params.get(parameter) != value:
        st.query_params[parameter] = value
        for name in clears:
            st.query_params.pop(name, None)


def _search_matches(search: str) -> None:
    matches: pd.DataFrame = ui.query("find_ids", search)
    if len(matches):
        st.markdown(f"**Visits and exposures starting with “{search.strip()}”**")
        ui.linked_table(matches, key="id_matches", target="target", kind="kind")


def _programs(search: str) -> None:
    programs: pd.DataFrame = ui.query("program_list", search)
    if programs.empty:
        st.info(f"No program, visit, exposure or target matches “{search}”.")
        return
    which = (
        f"{len(programs)} program(s) matching “{search.strip()}”"
        if search.strip()
        else f"The {len(programs)} most recently observed program(s) (search for older ones)"
    )
    st.caption(f"{which}, newest first. Select one to see its visits.")
    row = _selected_row(programs, key=f"programs_{search}")
    if row is not None:
        _choose("program", str(int(row["proposid"])), clears=("visit",))


def _visits(proposid: int) -> None:
    visits: pd.DataFrame = ui.query("program_visits", proposid)
    st.subheader(f"Program {proposid}: {len(visits)} visit(s)")
    if visits.empty:
        st.info(f"Program {proposid} has no visit in the store.")
        return
    st.caption("Select a visit to see its exposures and their flags.")
    row = _selected_row(visits, key=f"visits_{proposid}")
    if row is not None:
        _choose("visit", str(row["asn_id"]))


def _exposures(asn_id: str) -> None:
    exposures: pd.DataFrame = ui.query("visit_exposures", asn_id)
    st.subheader(f"Visit {asn_id}: {len(exposures)} exposure(s)")
    st.page_link(ui.EXPOSURE_PAGE, label=f"Open visit {asn_id}", query_params={"visit": asn_id},
                 icon=":material/open_in_new:")  # fmt: skip
    if exposures.empty:
        st.info(f"No exposure of {asn_id} is in the store.")
        return
    ui.linked_table(exposures, key=f"exposures_{asn_id}")


ui.login_required()
st.title("Programs")
if ui.store_ready():
    search = st.text_input(
        "Search", value=st.query_params.get("q", ""), key="program_search",
        placeholder="program id, visit or exposure id (e.g. iepp01), or part of a target name",
    )  # fmt: skip
    if search != st.query_params.get("q", ""):
        if search:
            st.query_params["q"] = search
        else:
            st.query_params.pop("q", None)
    if search.strip():
        _search_matches(search)
    _programs(search)
    program = st.query_params.get("program", "")
    if program.isdigit():
        _visits(int(program))
        visit = st.query_params.get("visit", "")
        if visit:
            _exposures(visit)
    elif program:
        st.warning(f"“{program}” is not a program id (a number).")
