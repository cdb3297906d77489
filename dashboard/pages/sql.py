"""SQL: ready queries for jitter statistics, editable, run read-only with row and time limits."""

from __future__ import annotations

import streamlit as st

from dashboard.pages import _common as ui
from dashboard.queries import (
    SqlError,
    SqlRefusedError,
    SqlResult,
    SqlRoleError,
    SqlTimeoutError,
    ready_queries,
    run_readonly_sql,
    sql_page_refusal,
)
from models.tables import Base

CUSTOM = "(your own query)"


def _dialect() -> str:
    return "postgresql" if ui.reader_url().startswith("postgresql") else "sqlite"


@st.cache_data(ttl=60, show_spinner=False)
def _refusal(url: str) -> str | None:
    """Why the SQL page does not run on ``url`` (a role that reaches beyond the store)."""
    return sql_page_refusal(url)


def _load_ready() -> None:
    name = st.session_state.get("sql_ready")
    if name in ready_queries(_dialect()):
        st.session_state["sql_text"] = ready_queries(_dialect())[name]


def _schema_reference() -> None:
    with st.expander("Tables and columns (units in the comments)", icon=":material/table:"):
        for table in Base.metadata.sorted_tables:
            columns = ", ".join(f"`{c.name}`" for c in table.columns)
            st.markdown(f"**{table.name}** — {table.comment or ''}  \n{columns}")


def _run(sql: str, row_limit: int, timeout_s: float) -> None:
    try:
        result = run_readonly_sql(
            ui.reader_url(), sql, int(row_limit), float(timeout_s), viewer=ui.viewer()
        )
    except SqlRoleError as error:
        st.session_state["sql_result"] = ("error", str(error))
    except SqlRefusedError as error:
        st.session_state["sql_result"] = ("refused", f"Not run: {error}.")
    except SqlTimeoutError as error:
        st.session_state["sql_result"] = ("timeout", f"Stopped: {error}.")
    except SqlError as error:
        st.session_state["sql_result"] = ("error", f"The database said: {error}")
    else:
        st.session_state["sql_result"] = ("ok", result)


def _show_result() -> None:
    outcome = st.session_state.get("sql_result")
    if outcome is None:
        return
    status, payload = outcome
    if status != "ok":
        (st.warning if status == "refused" else st.error)(payload)
        return
    result: SqlResult = payload
    more = " (row limit reached: more rows exist)" if result.truncated else ""
    st.caption(f"{len(result.frame):,} row(s){more} in {result.seconds * 1000:.0f} ms.")
    st.dataframe(result.frame, hide_index=True)
    st.download_button(
        "Download CSV", data=result.frame.to_csv(index=False).encode(), file_name="hstmon.csv",
        mime="text/csv", on_click="ignore", icon=":material/download:",
    )  # fmt: skip


def _role_refused() -> bool:
    """Show why the SQL page does not run here, if it does not; True then."""
    try:
        refusal = _refusal(ui.reader_url())
    except SqlError as error:
        st.error(f"Cannot check the SQL page's connection: {error}", icon=":material/database:")
        return True
    if refusal:
        st.error(refusal, icon=":material/gpp_bad:")
    return refusal is not None


ui.login_required()
st.title("SQL")
st.caption(
    "Read-only: the connection cannot write (SQLite opened read-only, PostgreSQL as a reader "
    "role in a read-only transaction), only one SELECT, WITH, VALUES or EXPLAIN statement runs, "
    f"and it sees what {ui.viewer().describe()} may see."
)
if ui.store_ready(allow_empty=True) and not _role_refused():
    ready = ready_queries(_dialect())
    if "sql_text" not in st.session_state:
        st.session_state["sql_text"] = next(iter(ready.values()))
    st.selectbox("Ready queries", list(ready), key="sql_ready", on_change=_load_ready)
    with st.form("sql_form", border=False):
        sql = st.text_area("Query", key="sql_text", height=260)
        limits = st.columns([1, 1, 3])
        row_limit = limits[0].number_input("Row limit", 1, 100_000, 1000, step=100)
        timeout_s = limits[1].number_input("Time limit (s)", 0.5, 60.0, 5.0, step=0.5)
        if st.form_submit_button("Run", type="primary", icon=":material/play_arrow:"):
            _run(sql, row_limit, timeout_s)
    _show_result()
    _schema_reference()
