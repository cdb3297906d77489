"""What every dashboard page shares: who is looking, the store's engine scoped to them, cached
queries, links and empty states."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from dashboard import queries
from dashboard.environment import ANONYMOUS_ENV, GROUPS_CLAIM_ENV, READER_URL_ENV
from models.access import Viewer
from models.database import resolve_database_url

__all__ = [
    "EMPTY_MESSAGE",
    "EXPOSURE_PAGE",
    "PROGRAMS_PAGE",
    "daily_summary",
    "database_label",
    "database_url",
    "dispose_engines",
    "drilldown_url",
    "engine",
    "fitted_height",
    "linked_table",
    "login_configured",
    "login_page",
    "login_required",
    "needs_login",
    "query",
    "reader_url",
    "signed_in_sidebar",
    "store_ready",
    "viewer",
]

EMPTY_MESSAGE = "No exposures yet: run `hstmon ingest DIR` or `hstmon demo`."
EXPOSURE_PAGE = "pages/exposure.py"
PROGRAMS_PAGE = "pages/programs.py"
CACHE_TTL_S = 60  # a nightly ingest shows up within a minute; a page re-renders from the cache


def database_url() -> str:
    """The store this dashboard reads: $HSTMON_DATABASE_URL (set by `hstmon dashboard --db`)."""
    return resolve_database_url(None)


def reader_url() -> str:
    """The SQL page's store: $HSTMON_READER_DATABASE_URL (--reader-db), else the pages' store."""
    return os.environ.get(READER_URL_ENV) or database_url()


def login_configured() -> bool:
    """True when the secrets configure a login (an ``[auth]`` section): every page needs one."""
    return st.secrets.load_if_toml_exists() and "auth" in st.secrets


def _claimed_groups(user: Any) -> tuple[str, ...]:
    claimed = user.get(os.environ.get(GROUPS_CLAIM_ENV) or "groups") or ()
    return (claimed,) if isinstance(claimed, str) else tuple(str(g) for g in claimed)


def viewer() -> Viewer:
    """Who is looking: the logged-in person, else the operator on 127.0.0.1, else anonymous.

    The user is the login's ``email`` claim (its ``sub`` without one, or when the provider says
    the address is not verified), the groups its ``groups`` claim ($HSTMON_GROUPS_CLAIM names
    another).
    """
    if login_configured():
        user = st.user
        verified = user.get("email_verified") is not False
        name = (user.get("email") if verified else None) or user.get("sub")
        if not user.get("is_logged_in", False) or not name:
            return Viewer()
        return Viewer.person(str(name), _claimed_groups(user))
    if os.environ.get(ANONYMOUS_ENV) == "everything":
        return Viewer.operator()
    return Viewer()


def _providers() -> list[str | None]:
    """The login providers the secrets configure: None for an unnamed one."""
    section = st.secrets["auth"]
    named = [name for name, value in section.items() if isinstance(value, dict)]
    return [None] if "client_id" in section or not named else named


def needs_login() -> bool:
    """True while a login is configured and this person has not logged in."""
    return login_configured() and not st.user.get("is_logged_in", False)


def login_page() -> None:
    """The only page a person who has not logged in is shown."""
    st.title("hstmon")
    st.info("Log in to see the store: proprietary programs show only to those granted them.")
    for provider in _providers():
        label = f"Log in with {provider}" if provider else "Log in"
        args = (provider,) if provider else ()
        st.button(label, on_click=st.login, args=args, type="primary", icon=":material/login:")


def login_required() -> None:
    """Stop here, on the login page, while a login is configured and the person has not logged in.

    Every page calls it first: until some session has run the router (app.py), Streamlit serves
    the scripts of pages/ on their own, by their names, without the router's login page.
    """
    if needs_login():
        login_page()
        st.stop()


def signed_in_sidebar() -> None:
    """Who is looking, and a way out, when a login is configured."""
    if login_configured():
        st.sidebar.caption(f"Signed in as {viewer().describe()}")
        st.sidebar.button("Log out", on_click=st.logout, icon=":material/logout:")


def database_label(url: str) -> str:
    """The store for a caption: the SQLite file, or the PostgreSQL URL without its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite {parsed.database}"
    return parsed.render_as_string(hide_password=True)


_ENGINES: list[Engine] = []  # every engine made here, so tests can dispose of them


@st.cache_resource(show_spinner=False)
def _engine_for(url: str, who: Viewer) -> Engine:
    engine = queries.read_only_engine(url, pooled=True, viewer=who)
    _ENGINES.append(engine)
    return engine


def dispose_engines() -> None:
    """Close the pooled connections of every engine this process made (for tests)."""
    for engine in _ENGINES:
        engine.dispose()


def engine() -> Engine:
    """The read-only engine of the store, scoped to this viewer (one per process, URL and
    viewer)."""
    return _engine_for(database_url(), viewer())


# Cached answers are kept per viewer: one never sees another's.
@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=500)
def _cached(
    name: str, url: str, who: Viewer, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> Any:
    function: Callable[..., Any] = getattr(queries, name)
    return function(_engine_for(url, who), *args, **dict(kwargs))


def query(name: str, *args: Any, **kwargs: Any) -> Any:
    """``queries.<name>(engine, *args, **kwargs)``, cached for a minute per store, viewer and
    arguments."""
    return _cached(name, database_url(), viewer(), args, tuple(sorted(kwargs.items())))


@st.cache_data(ttl=10, show_spinner=False)
def _store_version(url: str, who: Viewer) -> tuple[Any, ...]:
    return queries.store_version(_engine_for(url, who))


@st.cache_data(ttl=24 * 3600, max_entries=16, show_spinner="Summarising the store for the trends…")
def _daily_summary(url: str, who: Viewer, version: tuple[Any, ...]) -> queries.DailySummary:
    return queries.daily_summary(_engine_for(url, who))


def daily_summary() -> queries.DailySummary:
    """The store's :class:`~dashboard.queries.DailySummary` as this viewer sees it, rebuilt
    only after a run wrote."""
    url, who = database_url(), viewer()
    return _daily_summary(url, who, _store_version(url, who))


def _unreachable_message(url: str, error: Exception) -> str:
    text = str(getattr(error, "orig", error)).strip().splitlines()[0]
    where = database_label(url)
    if "unable to open database file" in text:
        return f"No database at {where} yet. {EMPTY_MESSAGE}"
    if "no such table" in text or "does not exist" in text:
        return (
            f"{where} has no hstmon tables yet. Run `hstmon db upgrade`, then "
            "`hstmon ingest DIR` (or `hstmon demo`)."
        )
    return f"Cannot read {where}: {text}"


def store_ready(allow_empty: bool = False) -> bool:
    """Show a friendly message and return False when the store is unreachable or empty."""
    url = database_url()
    try:
        refusal = query("scope_problem")
        empty = query("is_empty")
    except (DBAPIError, queries.SqlError) as error:
        st.error(_unreachable_message(url, error), icon=":material/database:")
        return False
    if refusal:
        st.error(refusal, icon=":material/lock:")
        return False
    if empty:
        st.info(EMPTY_MESSAGE, icon=":material/inbox:")
        return allow_empty
    return True


def drilldown_url(target: str, kind: str = "exposure") -> str:
    """A link to the drilldown of an exposure or a visit, relative to the app's root."""
    return f"./exposure?{'visit' if kind == 'visit' else 'exposure'}={target}"


def open_drilldown(target: str, kind: str = "exposure") -> None:
    """Go to the drilldown page of an exposure or a visit (its URL can be shared)."""
    parameter = "visit" if kind == "visit" else "exposure"
    st.switch_page(EXPOSURE_PAGE, query_params={parameter: target})


def linked_table(
    frame: pd.DataFrame,
    key: str,
    target: str = "exposure_id",
    kind: str | None = None,
    column_config: dict[str, Any] | None = None,
    height: int | None = None,
) -> None:
    """A table whose rows lead to their drilldown: an "open" link, and a click selects the row.

    ``target`` names the id column; ``kind`` a column saying "visit" or "exposure" per row
    (default: every row is an exposure).
    """
    kinds = frame[kind] if kind else pd.Series("exposure", index=frame.index)
    shown = frame.copy()
    shown.insert(
        0, "open", [drilldown_url(t, k) for t, k in zip(frame[target], kinds, strict=True)]
    )
    config: dict[str, Any] = {
        "open": st.column_config.LinkColumn("open", display_text="open ↗", width="small")
    }
    for name in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[name]):
            config[name] = st.column_config.DatetimeColumn(name, format="YYYY-MM-DD HH:mm:ss")
    event = st.dataframe(
        shown,
        key=key,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        column_config=config | (column_config or {}),
        height=height or fitted_height(len(frame)),
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        row = frame.iloc[rows[0]]
        open_drilldown(str(row[target]), str(kinds.iloc[rows[0]]))


def fitted_height(rows: int, limit: int = 420) -> int:
    """A table height (pixels) that shows ``rows`` rows without scrolling, up to ``limit``."""
    return min(limit, 38 + 35 * max(1, rows))


def when(value: Any) -> str:
    """A UTC timestamp for people: '2026-11-26 15:38 UTC', or an em dash."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M UTC")


def ago(value: Any) -> str:
    """How long ago a UTC timestamp was: '3 h ago', '2 days ago'."""
    if value is None or pd.isna(value):
        return ""
    seconds = (pd.Timestamp.now(tz="UTC") - pd.Timestamp(value)).total_seconds()
    if seconds < 3600:
        return f"{max(0, int(seconds // 60))} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"
