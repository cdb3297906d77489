"""Every dashboard page as viewers with and without access to a proprietary program (AppTest), on
SQLite and on PostgreSQL read through the reader role, and the login the pages wait for."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from conftest import reader_role, scratch_database
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url
from streamlit.testing.v1 import AppTest
from test_dashboard_queries import STORES, build_store, write_science_images

from dashboard.environment import ANONYMOUS_ENV
from dashboard.pages import _common
from models.access import grant_access, mark_program
from models.database import DATABASE_URL_ENV, make_engine
from models.tables import AnalysisRun, NightlyRun

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PROPRIETARY = 16748  # IEPP01010's program: a HOPR visit, flags, FLC images
AUTH = {  # a login configured; AppTest's user says who has logged in
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a-cookie-secret-long-enough-for-tests",
    "client_id": "hstmon",
    "client_secret": "secret",
    "server_metadata_url": "http://localhost:9/.well-known/openid-configuration",
}
ALICE = {"is_logged_in": True, "email": "Alice@Example.org", "sub": "alice"}  # granted it
BOB = {"is_logged_in": True, "email": "bob@example.org", "groups": ["other-team"]}  # not granted
# Claims to be alice, but her provider has not verified the address: she is her subject.
MALLORY = {"is_logged_in": True, "email": "alice@example.org", "email_verified": False,
           "sub": "mallory"}  # fmt: skip


@dataclass(frozen=True)
class Store:
    owner_url: str  # what ingests and analyses
    page_url: str  # what the pages read: a reader role on PostgreSQL
    hidden: tuple[str, ...]  # the proprietary program's exposure and visit ids
    exposures: int
    hidden_exposures: int


@pytest.fixture(scope="module", params=STORES)
def store(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    synthetic_archive: Path,
    dask_scheduler: str,
) -> Iterator[Store]:
    images = write_science_images(synthetic_archive, tmp_path_factory.mktemp("science"))
    with scratch_database(request.param, tmp_path_factory.mktemp("store"), "hstmon_pages") as url:
        build_store(url, [synthetic_archive, images], dask_scheduler)
        engine = make_engine(url)
        mark_program(engine, PROPRIETARY, proprietary=True, until=None, marked_by="lead")
        grant_access(engine, PROPRIETARY, "alice@example.org", "user", "lead")
        with engine.connect() as connection:
            ids = connection.execute(
                text("SELECT exposure_id FROM exposure WHERE proposid = :p"), {"p": PROPRIETARY}
            ).scalars()
            asn_ids = connection.execute(
                text("SELECT asn_id FROM association WHERE proposid = :p"), {"p": PROPRIETARY}
            ).scalars()
            hidden = tuple(sorted({*ids, *asn_ids}))
            total = connection.execute(text("SELECT count(*) FROM exposure")).scalar_one()
        engine.dispose()
        assert "iepp01010" in hidden and "iepp01uy" in hidden
        hidden_exposures = sum(1 for i in hidden if len(i) == 8)
        if request.param == "sqlite":
            yield Store(url, url, hidden, total, hidden_exposures)
        else:
            with reader_role(url) as reader:
                yield Store(url, reader, hidden, total, hidden_exposures)
                _common.dispose_engines()
        _common.dispose_engines()


def open_page(
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    page: str | None = None,
    user: dict[str, Any] | None = None,
    **params: str,
) -> AppTest:
    """The app on ``url`` as ``user`` (logged in through a configured login), or anonymous."""
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    app = AppTest.from_file(str(APP), default_timeout=120)
    if user is not None:
        app.secrets["auth"] = AUTH
        app.user = user
    app.run()
    if page is not None:
        for name, value in params.items():
            app.query_params[name] = value
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


# The ids the drilldown's hint gives as examples of what to type (the seed notebook's visit).
EXAMPLES = ("`iepp01uv`", "`iepp01010`")


def shown(app: AppTest, echoed: tuple[str, ...] = ()) -> str:
    """Everything the page shows: texts (less the ids the URL asked for, which a page may echo),
    metrics, tables, charts' data and widgets' options."""
    parts: list[Any] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning",
                 "error", "success"):  # fmt: skip
        parts += [element.value for element in getattr(app, kind)]
    parts += [f"{m.label}: {m.value}" for m in app.metric]
    words = "\n".join(str(p) for p in parts)
    for asked in (*echoed, *EXAMPLES):
        words = words.replace(asked, "")
    data = [frame.value.to_csv(index=False) for frame in app.dataframe]
    data += [str(chart.proto) for chart in app.get("vega_lite_chart")]
    data += [str(widget.options) for widget in [*app.multiselect, *app.selectbox]]
    return "\n".join([words, *data])


def leaked(app: AppTest, store: Store, echoed: tuple[str, ...] = ()) -> list[str]:
    """The proprietary program's ids and number on the page."""
    page = shown(app, echoed)
    found = [name for name in store.hidden if name in page or name.upper() in page]
    return found + ([str(PROPRIETARY)] if str(PROPRIETARY) in page else [])


WITHOUT_ACCESS = {"anonymous": None, "bob": BOB, "mallory": MALLORY}
DEEP_LINKS = [
    ("pages/overview.py", {}),
    ("pages/trends.py", {}),
    ("pages/programs.py", {}),
    ("pages/programs.py", {"program": str(PROPRIETARY), "visit": "iepp01010"}),
    ("pages/programs.py", {"q": "iepp01"}),
    ("pages/exposure.py", {}),
    ("pages/exposure.py", {"exposure": "iepp01uy"}),
    ("pages/exposure.py", {"visit": "iepp01010"}),
]


@pytest.mark.parametrize("who", list(WITHOUT_ACCESS))
def test_a_viewer_without_access_sees_none_of_a_proprietary_program(
    store: Store, monkeypatch: pytest.MonkeyPatch, who: str
) -> None:
    user = WITHOUT_ACCESS[who]
    for page, params in DEEP_LINKS:
        app = open_page(store.page_url, monkeypatch, page, user, **params)
        found = leaked(app, store, tuple(params.values()))
        assert not found, f"{who} on {page} {params}: {found}"
        if params.get("exposure"):
            assert "No exposure “iepp01uy” is in the store." in shown(app)
    overview = open_page(store.page_url, monkeypatch, None, user)
    assert f"exposures: {store.exposures - store.hidden_exposures:,}" in shown(overview)
    trends = open_page(store.page_url, monkeypatch, "pages/trends.py", user)
    assert str(PROPRIETARY) not in trends.multiselect(key="trend_programs").options
    sql = open_page(store.page_url, monkeypatch, "pages/sql.py", user)
    sql.text_area(key="sql_text").input("SELECT * FROM exposure ORDER BY exposure_id")
    sql.button[0].click().run()
    rows = sql.dataframe[0].value  # every column: a float may hold "16748" among its digits
    assert PROPRIETARY not in set(rows["proposid"]) and "row(s)" in shown(sql)
    assert not set(rows["exposure_id"]) & set(store.hidden)
    assert not set(rows["asn_id"].dropna()) & set(store.hidden)
    sql.text_area(key="sql_text").input("SELECT count(*) AS n FROM jitter_sample j "
                                        "WHERE j.exposure_id LIKE 'iepp01%'")  # fmt: skip
    sql.button[0].click().run()
    assert sql.dataframe[0].value["n"].iloc[0] == 0


def test_with_access_a_viewer_sees_all_of_it(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    overview = open_page(store.page_url, monkeypatch, None, ALICE)
    assert f"exposures: {store.exposures:,}" in shown(overview)
    assert "Signed in as alice@example.org" in "".join(c.value for c in overview.sidebar.caption)
    programs = open_page(store.page_url, monkeypatch, "pages/programs.py", ALICE,
                         program=str(PROPRIETARY), visit="iepp01010")  # fmt: skip
    assert f"Program {PROPRIETARY}: 1 visit(s)" in shown(programs)
    assert "Visit iepp01010: 7 exposure(s)" in shown(programs)
    drilldown = open_page(store.page_url, monkeypatch, "pages/exposure.py", ALICE,
                          exposure="iepp01uy")  # fmt: skip
    assert "Exposure verdict: HOPR" in shown(drilldown) and "gs_acq_failure" in shown(drilldown)
    assert len(drilldown.get("image")) == 6, "SCI, ERR and DQ of both chips"
    trends = open_page(store.page_url, monkeypatch, "pages/trends.py", ALICE)
    assert str(PROPRIETARY) in trends.multiselect(key="trend_programs").options
    sql = open_page(store.page_url, monkeypatch, "pages/sql.py", ALICE)
    sql.text_area(key="sql_text").input("SELECT count(*) AS n FROM exposure")
    sql.button[0].click().run()
    assert sql.dataframe[0].value["n"].iloc[0] == store.exposures


def test_the_last_night_reads_as_each_viewer_may_see_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored digest leaves the proprietary program out; the overview makes it again for
    each viewer, so a viewer with access reads its news, and one without does not."""
    public = {
        "summary": [{"lead": "Nothing new needs attention.", "items": []}],
        "withheld_programs": 1, "facts": {}, "problems": [], "window": [None, None],
    }  # fmt: skip
    now = datetime.now(UTC)
    engine = make_engine(store.owner_url)
    with engine.begin() as connection:
        analysis = connection.execute(select(AnalysisRun.run_id)).scalar_one()
        connection.execute(
            insert(NightlyRun).values(
                started_at=now, finished_at=now, status="succeeded", stage="digest",
                date_field="release", window_start=now, window_end=now, parameters={},
                digest=public, host="here", pid=1, analysis_run_id=analysis,
            )
        )  # fmt: skip
    engine.dispose()
    st.cache_data.clear()
    with_access = open_page(store.page_url, monkeypatch, None, ALICE)
    without = open_page(store.page_url, monkeypatch, None, BOB)
    assert not leaked(without, store)
    engine = make_engine(store.owner_url)
    with engine.connect() as connection:
        proprietary_hoprs = connection.execute(
            text(
                "SELECT count(*) FROM verdict v WHERE v.exposure_id IS NULL"
                " AND v.verdict = 'hopr' AND v.visit_id IN"
                " (SELECT substr(exposure_id, 1, 6) FROM exposure WHERE proposid = :p)"
            ),
            {"p": PROPRIETARY},
        ).scalar_one()
    engine.dispose()
    assert proprietary_hoprs >= 1
    assert _hopr_visits(with_access) == _hopr_visits(without) + proprietary_hoprs


def _hopr_visits(app: AppTest) -> int:
    """How many visits the overview's nightly headline says need a HOPR (open, or past the
    90-day limit and listed apart)."""
    text_ = shown(app)
    found = [
        re.search(r"(\d+) visits? needs? a HOPR", text_),
        re.search(r"(\d+) visits? had (?:a )?HOPR-worthy failure", text_),
    ]
    assert any(found), text_[:2000]
    return sum(int(match.group(1)) for match in found if match)


def test_pages_wait_for_the_login(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    logged_out = {"is_logged_in": False}
    app = open_page(store.page_url, monkeypatch, None, logged_out)
    assert "Log in to see the store" in shown(app) and [b.label for b in app.button] == ["Log in"]
    with pytest.raises(ValueError, match="Known pages: \\['Log in'\\]"):
        app.switch_page("pages/sql.py")  # the router has no other page to offer
    # Each page's script run on its own (Streamlit's pages/ folder) stops at the login too.
    monkeypatch.setenv(DATABASE_URL_ENV, store.page_url)
    for page in ("overview", "trends", "programs", "exposure", "sql"):
        alone = AppTest.from_file(str(APP.parent / "pages" / f"{page}.py"), default_timeout=120)
        alone.secrets["auth"] = AUTH
        alone.user = logged_out
        alone.query_params["exposure"] = "iepp01uy"
        alone.run()
        assert not alone.exception, [e.value for e in alone.exception]
        assert "Log in to see the store" in shown(alone), page
        assert not alone.dataframe and not alone.metric and not leaked(alone, store), page


def test_pages_refuse_a_postgres_role_that_bypasses_row_level_security(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if make_url(store.owner_url).get_backend_name() != "postgresql":
        pytest.skip("SQLite has no roles: its connections are scoped by views")
    for page in ("pages/overview.py", "pages/programs.py"):
        app = open_page(store.owner_url, monkeypatch, page)  # the suite's superuser, anonymous
        assert "whom row-level security does not apply to" in shown(app)
        assert "hstmon db reader" in shown(app) and not app.dataframe
    # The operator at their own machine has nothing hidden: the superuser serves them.
    monkeypatch.setenv(ANONYMOUS_ENV, "everything")
    app = open_page(store.owner_url, monkeypatch, "pages/programs.py",
                    program=str(PROPRIETARY))  # fmt: skip
    assert f"Program {PROPRIETARY}: 1 visit(s)" in shown(app)
