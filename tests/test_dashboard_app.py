"""Every dashboard page under Streamlit's AppTest: with data, with an empty store, and broken.

The pages read the store named by $HSTMON_DATABASE_URL (what `hstmon dashboard --db` sets).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from click.testing import CliRunner
from conftest import scratch_database, sql_page_url
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest
from test_dashboard_queries import STORES, build_store, write_science_images

from dashboard import cli
from dashboard.environment import ANONYMOUS_ENV, GROUPS_CLAIM_ENV, READER_URL_ENV
from dashboard.pages import _common
from models.database import DATABASE_URL_ENV, make_engine
from models.tables import NightlyRun

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PAGES = ("pages/overview.py", "pages/trends.py", "pages/programs.py", "pages/exposure.py",
         "pages/sql.py")  # fmt: skip


@pytest.fixture(scope="module", params=STORES)
def store_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    synthetic_archive: Path,
    dask_scheduler: str,
) -> Iterator[str]:
    """A populated store of each kind (the synthetic archive and IEPP01010's FLC files)."""
    images = write_science_images(synthetic_archive, tmp_path_factory.mktemp("science"))
    with scratch_database(request.param, tmp_path_factory.mktemp("store")) as url:
        build_store(url, [synthetic_archive, images], dask_scheduler)
        yield url
        _common.dispose_engines()  # the app's pooled connections, before the database goes


def open_page(
    url: str, monkeypatch: pytest.MonkeyPatch, page: str | None = None, **params: str
) -> AppTest:
    """Run the app on ``url`` at ``page`` (default: the overview) with URL query parameters."""
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.run()
    if page is not None:
        for name, value in params.items():
            app.query_params[name] = value
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def texts(app: AppTest) -> str:
    """Every piece of text the page shows, one per line."""
    parts: list[Any] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning",
                 "error", "success"):  # fmt: skip
        parts += [element.value for element in getattr(app, kind)]
    parts += [f"{m.label}: {m.value}" for m in app.metric]
    return "\n".join(str(p) for p in parts)


# --- With data ------------------------------------------------------------------------------------


def test_overview_shows_last_runs_counts_and_the_action_list(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(store_url, monkeypatch)
    shown = texts(app)
    assert "Ingest #1" in shown and "succeeded" in shown and "Analysis #1" in shown
    assert "exposures: 600" in shown and "files failed: 0" in shown
    assert "Action list" in shown and "HOPR" in shown
    # Open deadlines first; HOPRs past their 90-day limit (IEPP01010's, of 2022) in a table apart.
    tables = [frame.value for frame in app.dataframe[:2]]
    for actions in tables:
        assert {"open", "kind", "target", "verdict", "days_left"} <= set(actions.columns)
        assert actions["open"].str.startswith("./exposure?").all()
    assert "iepp01010" in set(tables[-1]["target"]) and "HOPRs past their 90-day limit" in shown
    assert (tables[-1]["verdict"] == "hopr").all() and (tables[-1]["days_left"] < 0).all()
    app.segmented_control(key="action_kind").set_value("visits").run()
    assert set(app.dataframe[0].value["kind"]) == {"visit"}


def test_overview_shows_the_last_nightly_digest(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = {"summary": [{"lead": "1 visit needs a HOPR:",
                           "items": ["IEPP01010 by 2022-06-01 (92 days left) – exposures 4-7 "
                                     "lost their guide star; 1-3 are nominal"]},
                          {"lead": "3 new flags: 3 high.", "items": []}]}  # fmt: skip
    now = datetime.now(UTC)
    engine = make_engine(store_url)
    with engine.begin() as connection:
        connection.execute(
            insert(NightlyRun).values(
                started_at=now, finished_at=now, status="succeeded", stage="digest",
                date_field="release", window_start=now, window_end=now, parameters={},
                digest=digest, host="here", pid=1,
            )
        )  # fmt: skip
    engine.dispose()
    st.cache_data.clear()  # the page caches its queries for a minute; earlier tests ran it
    shown = texts(open_page(store_url, monkeypatch))
    assert "Nightly #1" in shown and "1 visit needs a HOPR:" in shown
    assert "exposures 4-7 lost their guide star" in shown and "3 new flags: 3 high." in shown


def test_trends_show_jitter_flag_rates_and_psf_with_filters(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(store_url, monkeypatch, "pages/trends.py")
    shown = texts(app)
    for section in ("Jitter", "Flag rates per month, by rule", "PSF FWHM per filter"):
        assert section in shown
    assert "has no FILTER" not in shown and "no exposure" not in shown.lower()
    app.multiselect(key="trend_configs").set_value(["WFC3/UVIS"]).run()
    app.multiselect(key="trend_filters").set_value(["F606W"]).run()
    app.selectbox(key="trend_unit").set_value("week").run()
    app.selectbox(key="metric").set_value("drift_v2_mas").run()
    assert not app.exception, [e.value for e in app.exception]
    app.multiselect(key="trend_programs").set_value([16748]).run()
    assert not app.exception and "Jitter" in texts(app)


def test_program_browser_deep_link_lists_visits_and_flagged_exposures(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(store_url, monkeypatch, "pages/programs.py", program="16748",
                    visit="iepp01010")  # fmt: skip
    shown = texts(app)
    assert "Program 16748: 1 visit(s)" in shown and "Visit iepp01010: 7 exposure(s)" in shown
    exposures = app.dataframe[-1].value
    members = ("uv", "uw", "ux", "uy", "uz", "v0", "v1")
    assert list(exposures["exposure_id"]) == [f"iepp01{m}" for m in members]
    assert exposures["flags"].str.contains("gs_acq_failure").sum() == 4
    app.text_input(key="program_search").input("iepp01").run()
    assert "starting with “iepp01”" in texts(app)


def test_drilldown_deep_link_shows_the_whole_checklist(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(store_url, monkeypatch, "pages/exposure.py", exposure="iepp01uy")
    shown = texts(app)
    assert "Exposure iepp01uy (iepp01uyq)" in shown
    assert "Exposure verdict: HOPR" in shown and "HOPR deadline" in shown
    assert "JIF problem flags and warnings" in shown and "T_GSFAIL" in shown
    assert "gs_acq_failure" in shown and "degraded_psf" in shown, "every flag, with evidence"
    assert "Every one of the" in shown, "an unguided exposure says its JIT is all fill"
    assert "Images (SCI, ERR, DQ) and PSF" in shown and "No FLT/FLC/IMA file" not in shown
    assert len(app.get("image")) == 6, "SCI, ERR and DQ of both UVIS chips"
    assert len(app.get("vega_lite_chart")) == 2, "the jitter time series and radial profiles"
    assert "Open to load every header" in shown
    app.session_state["headers_open"] = True  # open the full-headers expander
    app.run()
    assert not app.exception and "HDU" in "".join(str(t.label) for t in app.tabs)


def test_drilldown_of_a_visit_and_of_an_unknown_id(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(store_url, monkeypatch, "pages/exposure.py", visit="iepp01010")
    shown = texts(app)
    assert "Visit iepp01010" in shown and "Visit verdict: HOPR" in shown
    assert "exposures 4-7 lost their guide star" in shown
    app = open_page(store_url, monkeypatch, "pages/exposure.py", exposure="ixxx01zz")
    assert "No exposure “ixxx01zz” is in the store." in texts(app)
    app = open_page(store_url, monkeypatch, "pages/exposure.py")
    assert "Nearest HOPR deadlines" in texts(app)
    app.text_input(key="drill_id").input("IEPP01010").run()
    assert not app.exception and "Visit iepp01010" in texts(app)


def test_sql_page_runs_a_query_offers_csv_and_refuses_writes(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sql_page_url(store_url) as reader:  # a reader role on PostgreSQL
        monkeypatch.setenv(READER_URL_ENV, reader)
        _sql_page_session(store_url, monkeypatch)
        _common.dispose_engines()


def _sql_page_session(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = open_page(store_url, monkeypatch, "pages/sql.py")
    assert app.text_area(key="sql_text").value.lstrip().upper().startswith("SELECT")
    app.text_area(key="sql_text").input("SELECT count(*) AS n FROM exposure")
    app.button[0].click().run()
    assert not app.exception and "1 row(s)" in texts(app)
    assert app.dataframe[0].value["n"].iloc[0] == 600
    assert app.get("download_button"), "results download as CSV"
    app.text_area(key="sql_text").input("DROP TABLE flag")
    app.button[0].click().run()
    assert "Not run: only SELECT, WITH, VALUES or EXPLAIN can run here" in texts(app)
    app.text_area(key="sql_text").input("SELECT * FROM nosuch")
    app.button[0].click().run()
    assert "The database said:" in texts(app)


# --- Without data ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_page_is_friendly_on_an_empty_store(
    page: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(database_url, monkeypatch, page)
    assert _common.EMPTY_MESSAGE in texts(app)
    _common.dispose_engines()


@pytest.mark.parametrize("page", PAGES)
def test_a_missing_database_is_a_friendly_error(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(f"sqlite:///{tmp_path / 'nowhere.sqlite'}", monkeypatch, page)
    assert "No database at" in texts(app) and not (tmp_path / "nowhere.sqlite").exists()


def test_a_store_without_the_schema_says_how_to_create_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    sqlite3.connect(tmp_path / "bare.sqlite").close()
    app = open_page(f"sqlite:///{tmp_path / 'bare.sqlite'}", monkeypatch, "pages/trends.py")
    assert "has no hstmon tables yet" in texts(app)


# --- The command ----------------------------------------------------------------------------------


def test_dashboard_command_serves_the_app_headless_on_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "store.sqlite"
    database.touch()
    started: dict[str, Any] = {}

    class FakeStreamlit:
        def __init__(self, command: list[str], env: dict[str, str]) -> None:
            started.update(command=command, env=env)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", FakeStreamlit)
    result = CliRunner().invoke(cli.dashboard, ["--db", f"sqlite:///{database}", "--port", "8600"])
    assert result.exit_code == 0, result.output
    assert "Open http://127.0.0.1:8600/" in result.output
    command = started["command"]
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == str(cli.APP_PATH)
    assert command[command.index("--server.headless") :][:2] == ["--server.headless", "true"]
    assert started["env"][DATABASE_URL_ENV] == f"sqlite:///{database}"


def test_dashboard_command_refuses_a_missing_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.dashboard, ["--db", f"sqlite:///{tmp_path / 'none.sqlite'}"])
    assert result.exit_code == 1
    assert "run `hstmon ingest DIR` or `hstmon demo` first" in result.output
    assert CliRunner().invoke(cli.dashboard, ["--help"]).exit_code == 0


def _serve(monkeypatch: pytest.MonkeyPatch, *words: str) -> tuple[Any, dict[str, Any]]:
    """`hstmon dashboard WORDS` with streamlit replaced by a recorder of what it was given."""
    started: dict[str, Any] = {}

    class FakeStreamlit:
        def __init__(self, command: list[str], env: dict[str, str]) -> None:
            started.update(command=command, env=env)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", FakeStreamlit)
    return CliRunner().invoke(cli.dashboard, list(words)), started


def test_serving_other_machines_needs_a_login_or_no_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    monkeypatch.setenv("HOME", str(tmp_path))
    database = tmp_path / "store.sqlite"
    database.touch()
    store = ["--db", f"sqlite:///{database}"]
    result, started = _serve(monkeypatch, *store)
    assert result.exit_code == 0 and started["env"][ANONYMOUS_ENV] == "everything"
    result, started = _serve(monkeypatch, *store, "--host", "0.0.0.0")
    assert result.exit_code == 2 and not started
    assert "no login is configured" in result.output and "--no-auth" in result.output
    result, started = _serve(monkeypatch, *store, "--host", "0.0.0.0", "--no-auth")
    assert result.exit_code == 0 and started["env"][ANONYMOUS_ENV] == "public"
    assert "warning: serving 0.0.0.0 without a login" in result.output
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[auth]\nredirect_uri = "http://hstmon.example.org/oauth2callback"\n')
    reader = "postgresql://hstmon_reader@db/hstmon"
    result, started = _serve(monkeypatch, *store, "--host", "0.0.0.0", "--secrets", str(secrets),
                             "--reader-db", reader, "--groups-claim", "roles")  # fmt: skip
    assert result.exit_code == 0 and f"Login required (configured in {secrets})" in result.output
    assert started["command"][-2:] == ["--secrets.files", str(secrets)]
    assert started["env"][READER_URL_ENV] == "postgresql+psycopg://hstmon_reader@db/hstmon"
    assert started["env"][GROUPS_CLAIM_ENV] == "roles"
    result, _ = _serve(monkeypatch, *store, "--secrets", str(secrets), "--no-auth")
    assert result.exit_code == 2 and "--no-auth contradicts the login" in result.output
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text(secrets.read_text())
    result, started = _serve(monkeypatch, *store, "--host", "10.1.2.3")
    assert result.exit_code == 0 and started["env"][ANONYMOUS_ENV] == "public", result.output
