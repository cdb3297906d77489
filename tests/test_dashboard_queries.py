"""The dashboard's query module, on its own, against real SQLite and PostgreSQL stores.

One store per database kind and module: the synthetic archive (600 exposures) plus FLC files for
the IEPP01010 visit, ingested and analysed. Answers are checked against pandas on the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from conftest import scratch_database, sql_page_url
from numpy.testing import assert_allclose
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from analysis.run import run_analysis
from dashboard import queries as q
from dashboard.sql_console import check_statement
from ingest.pipeline import run_ingest
from ingest.synth import read_truth
from ingest.synth_images import write_archive_images
from models.database import make_engine, upgrade

TODAY = date(2026, 11, 26)  # the analysis date: days left to HOPR deadlines count from it
STORES = ["sqlite", "postgres"]


def write_science_images(archive: Path, folder: Path, count: int = 8) -> Path:
    """FLC/FLT files for ``count`` exposures of ``archive`` (IEPP01010 first), in ``folder``."""
    truth = read_truth(archive)
    for exposure in truth:
        (folder / str(exposure.proposid) / exposure.asn_id).mkdir(parents=True, exist_ok=True)
    write_archive_images(folder, truth, count, seed=7)
    return folder


def build_store(url: str, paths: list[Path], scheduler: str) -> None:
    """Ingest ``paths`` into the database at ``url`` and analyse it as of TODAY."""
    upgrade(url)
    summary = run_ingest(paths, url, scheduler=scheduler)
    assert summary.failed == 0, summary.failures
    run_analysis(url, today=TODAY)


@pytest.fixture(scope="module")
def science_images(tmp_path_factory: pytest.TempPathFactory, synthetic_archive: Path) -> Path:
    return write_science_images(synthetic_archive, tmp_path_factory.mktemp("science"))


@pytest.fixture(scope="module", params=STORES)
def store_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    synthetic_archive: Path,
    science_images: Path,
    dask_scheduler: str,
) -> Iterator[str]:
    """A populated store of each kind, shared by a module's tests (which only read it)."""
    with scratch_database(request.param, tmp_path_factory.mktemp("store"), "hstmon_dash") as url:
        build_store(url, [synthetic_archive, science_images], dask_scheduler)
        yield url


@pytest.fixture(scope="module")
def sql_url(store_url: str) -> Iterator[str]:
    """What the SQL page runs queries with: a reader role on PostgreSQL."""
    with sql_page_url(store_url) as url:
        yield url


@pytest.fixture(scope="module")
def store(store_url: str) -> Iterator[Engine]:
    engine = q.read_only_engine(store_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def rows(store_url: str) -> pd.DataFrame:
    """Every exposure as pandas sees it: the reference the queries are checked against."""
    engine = make_engine(store_url)
    with engine.connect() as connection:
        frame = pd.read_sql_query(text("SELECT * FROM exposure"), connection)
    engine.dispose()
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True, format="ISO8601")
    return frame


@pytest.fixture(scope="module")
def flag_rows(store_url: str) -> pd.DataFrame:
    engine = make_engine(store_url)
    with engine.connect() as connection:
        frame = pd.read_sql_query(text("SELECT exposure_id, rule FROM flag"), connection)
    engine.dispose()
    return frame


def _month(times: pd.Series) -> pd.Series:
    return times.dt.tz_localize(None).dt.to_period("M").dt.start_time.dt.tz_localize("UTC")


# --- Overview -------------------------------------------------------------------------------------


def test_store_counts_and_last_runs_describe_the_store(store: Engine, rows: pd.DataFrame) -> None:
    counts = q.store_counts(store)
    assert counts.exposures == len(rows) == 600 + 0  # the images add no exposure
    assert counts.samples == rows["jit_n_samples"].sum()
    assert counts.visits >= counts.programs > 0
    assert counts.first_window == rows["window_start"].min()
    assert set(counts.flags_by_severity) <= {"high", "medium", "info"}
    assert counts.verdicts["hopr"] > 0 and counts.failed_files == 0
    ingest, analysis = q.last_ingest_run(store), q.last_analysis_run(store)
    assert ingest is not None and ingest.status == "succeeded" and ingest.finished_at is not None
    assert ingest.counts["files_seen"] > 0 and ingest.counts.get("files_failed", 0) == 0
    assert analysis is not None and analysis.status == "succeeded"
    assert q.failed_files(store).empty


def test_action_items_put_open_deadlines_first_then_the_latest_passed(store: Engine) -> None:
    items = q.action_items(store, today=TODAY, limit=5000)
    totals = q.action_count(store)
    assert len(items) == sum(totals.values()) and set(items["verdict"]) == {"hopr", "helpdesk"}
    assert set(items["kind"]) == {"visit", "exposure"}
    deadlines = pd.to_datetime(items["hopr_deadline"])
    assert (items["days_left"] == (deadlines - pd.Timestamp(TODAY)).dt.days).all()
    open_, passed = items[items["days_left"] >= 0], items[items["days_left"] < 0]
    assert open_.index.max() < passed.index.min(), "open deadlines come first"
    assert open_["days_left"].is_monotonic_increasing
    assert passed["days_left"].is_monotonic_decreasing
    iepp = items[items["target"] == "iepp01010"].iloc[0]
    assert (iepp["kind"], iepp["verdict"], iepp["proposid"]) == ("visit", "hopr", 16748)
    first = q.action_items(store, today=TODAY, limit=15)
    assert list(first["target"]) == list(items["target"][:15]), "a short list is the same head"


# --- Trends ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_summary", [False, True], ids=["sql", "summary"])
def test_jitter_trend_matches_pandas(store: Engine, rows: pd.DataFrame, use_summary: bool) -> None:
    summary = q.daily_summary(store) if use_summary else None
    trend = q.jitter_trend(store, unit="month", summary=summary)
    expected = (
        rows.assign(period=_month(rows["window_start"]))
        .groupby(["period", "config"])
        .agg(
            exposures=("exposure_id", "size"),
            mean=("v2_rms_mas", "mean"),
            peak=("si_rms_p95_mas", "max"),
        )
        .reset_index()
    )
    assert list(trend["period"]) == list(expected["period"])
    assert list(trend["exposures"]) == list(expected["exposures"])
    assert_allclose(trend["v2_rms_mas_mean"], expected["mean"], rtol=1e-9)
    assert_allclose(trend["si_rms_p95_mas_max"], expected["peak"], rtol=1e-9)


def test_every_trend_filter_narrows_the_same_way_with_or_without_the_summary(
    store: Engine, rows: pd.DataFrame
) -> None:
    summary = q.daily_summary(store)
    start = rows["window_start"].min().date() + timedelta(days=400)
    chosen = q.TrendFilters(start=start, end=start + timedelta(days=900),
                            configs=("WFC3/IR",), guideacts=("FINE LOCK",))  # fmt: skip
    day = rows["window_start"].dt.tz_localize(None).dt.normalize()
    inside = rows[(day >= pd.Timestamp(chosen.start)) & (day <= pd.Timestamp(chosen.end))
                  & (rows["config"] == "WFC3/IR") & (rows["guideact"] == "FINE LOCK")]  # fmt: skip
    assert 0 < len(inside) < len(rows)
    for unit in q.PERIODS:
        by_sql = q.jitter_trend(store, chosen, unit)
        by_summary = q.jitter_trend(store, chosen, unit, summary=summary)
        assert by_sql["exposures"].sum() == by_summary["exposures"].sum() == len(inside)
        assert list(by_sql["period"]) == list(by_summary["period"]), unit
        assert_allclose(by_sql["drift_v2_mas_mean"], by_summary["drift_v2_mas_mean"], rtol=1e-9)
        rates = q.flag_rates(store, chosen, unit)
        pd.testing.assert_frame_equal(rates, q.flag_rates(store, chosen, unit, summary=summary))
    program = int(inside["proposid"].iloc[0])
    narrowed = q.TrendFilters(proposids=(program,))
    assert q.jitter_trend(store, narrowed, summary=summary)["exposures"].sum() == int(
        (rows["proposid"] == program).sum()
    )


def test_flag_rates_count_flagged_exposures_per_rule(
    store: Engine, rows: pd.DataFrame, flag_rows: pd.DataFrame
) -> None:
    rates = q.flag_rates(store)
    months = rows.assign(period=_month(rows["window_start"]))
    flagged = flag_rows.merge(months[["exposure_id", "period"]], on="exposure_id")
    expected = flagged.groupby(["period", "rule"])["exposure_id"].nunique()
    observed = rates.set_index(["period", "rule"])["flagged"]
    pd.testing.assert_series_equal(observed.sort_index(), expected.sort_index(),
                                   check_names=False)  # fmt: skip
    totals = months.groupby("period").size()
    assert_allclose(rates["rate"], rates["flagged"] / rates["period"].map(totals), rtol=1e-12)


def test_jitter_outliers_are_the_largest_values(store: Engine, rows: pd.DataFrame) -> None:
    outliers = q.jitter_outliers(store, metric="v3_rms_mas", limit=10)
    expected = rows["v3_rms_mas"].dropna().sort_values(ascending=False).head(10)
    assert_allclose(outliers["value"], expected, rtol=1e-12)
    worst = rows.loc[rows["v3_rms_mas"].idxmax(), "exposure_id"]
    assert outliers["exposure_id"].iloc[0] == worst


def test_psf_trend_and_outliers_come_from_the_science_files(store: Engine) -> None:
    options = q.filter_options(store)
    assert options.has_psf and options.filters == ("F606W",)
    psf = q.psf_trend(store)
    assert psf is not None and set(psf["filter"]) == {"F606W"}
    assert psf["exposures"].sum() == 8 and (psf["nominal_fwhm_pix"] > 1.5).all()
    assert_allclose(psf["fwhm_mean_pix"], q.psf_trend(store, summary=q.daily_summary(store))[
        "fwhm_mean_pix"], rtol=1e-9)  # fmt: skip
    worst = q.psf_outliers(store, limit=4)
    assert worst is not None
    assert set(worst["exposure_id"]) == {"iepp01uy", "iepp01uz", "iepp01v0", "iepp01v1"}
    assert (worst["ratio"] > 2).all(), "the trailed exposures have the widest PSF"


# --- Programs and drilldown -----------------------------------------------------------------------


def test_program_browser_leads_from_a_program_to_its_flagged_exposures(store: Engine) -> None:
    programs = q.program_list(store)
    assert programs["last_window"].is_monotonic_decreasing and 16748 in set(programs["proposid"])
    for search in ("iepp", "IEPP01UV", "16748", "ngc-1898"):
        assert 16748 in set(q.program_list(store, search)["proposid"]), search
    visits = q.program_visits(store, 16748)
    iepp = visits.set_index("asn_id").loc["iepp01010"]
    assert (iepp["exposures"], iepp["flagged_exposures"], iepp["verdict"]) == (7, 4, "hopr")
    members = q.visit_exposures(store, "IEPP01010")
    assert list(members["asn_member_index"]) == list(range(1, 8))
    lost = members[members["flags"].str.contains("gs_acq_failure")]
    assert list(lost["asn_member_index"]) == [4, 5, 6, 7]
    assert set(lost["worst_severity"]) == {"high"} and set(lost["verdict"]) == {"hopr"}
    found = q.find_ids(store, "iepp01")
    assert set(found["kind"]) == {"visit", "exposure"} and "iepp01uv" in set(found["target"])
    assert list(q.find_ids(store, "iepp01uvq")["target"]) == ["iepp01uv"]


def test_exposure_drilldown_has_what_the_exception_checklist_needs(store: Engine) -> None:
    detail = q.exposure_detail(store, " IEPP01UYQ ")  # a rootname, as an observer pastes it
    assert detail is not None and detail.exposure["exposure_id"] == "iepp01uy"
    assert detail.association is not None and detail.association["t_gsfail"] is True
    rules = [f["rule"] for f in detail.flags]
    assert "gs_acq_failure" in rules and "degraded_psf" in rules
    failure = next(f for f in detail.flags if f["rule"] == "gs_acq_failure")
    assert failure["evidence"]["GSFAIL"] == "NOLOCK" and failure["severity"] == "high"
    assert detail.verdict is not None and detail.verdict["verdict"] == "hopr"
    assert detail.visit_verdict is not None and detail.visit_verdict["visit_id"] == "iepp01"
    assert detail.exposure["filter"] == "F606W"
    samples = q.jitter_samples(store, "iepp01uy")
    assert len(samples) == detail.exposure["jit_n_samples"]
    assert samples["si_v2_avg"].isna().sum() == detail.exposure["jit_n_fill"]
    headers = q.fits_headers(store, "iepp01uy")
    assert {0, detail.exposure["asn_member_index"]} <= set(headers["hdu_index"])
    jif = headers[(headers["kind"] == "jif") & (headers["hdu_index"] > 0)]
    extension = jif.iloc[0]["header"]
    assert extension["GSFAIL"] == "NOLOCK" and extension["V2_RMS"] == -32767.0, "raw sentinel"
    previews = q.image_previews(store, "iepp01uy")
    assert len(previews) == 2 and all(p[:4] == b"\x89PNG" for p in previews["sci_png"])
    psf = q.psf_measurements(store, "iepp01uy")
    profiles = q.radial_profiles(psf)
    assert len(psf) == 2 and not profiles.empty
    assert_allclose(profiles.loc[profiles["radius_pix"] == 0, "profile"], 1.0)
    assert q.exposure_detail(store, "ixxx01zz") is None
    visit = q.visit_detail(store, "iepp01010")
    assert visit is not None and visit.verdict is not None and visit.verdict["verdict"] == "hopr"


def test_take_data_down_spans_join_consecutive_rows() -> None:
    samples = pd.DataFrame({"seconds": [3.0, 6.0, 9.0, 12.0, 15.0, 18.0],
                            "take_data": [1, 0, 0, 1, None, 1]})  # fmt: skip
    spans = q.take_data_down_spans(samples)
    assert spans.values.tolist() == [[3.0, 9.0], [12.0, 15.0]]


# --- Safety ---------------------------------------------------------------------------------------

PAYLOADS = (
    "x' OR '1'='1",
    "'; DROP TABLE exposure; --",
    "iepp01uv') UNION SELECT sqlite_version() --",
    "%' OR 1=1 OR exposure_id LIKE '%",
)


def test_every_user_value_reaches_sql_as_a_bound_parameter(store_url: str) -> None:
    engine = q.read_only_engine(store_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: statements.append(statement))  # fmt: skip
    for payload in PAYLOADS:
        hostile = q.TrendFilters(configs=(payload,), guideacts=(payload,), filters=(payload,))
        assert q.jitter_trend(engine, hostile).empty
        assert q.jitter_outliers(engine, hostile).empty
        assert q.flag_rates(engine, hostile).empty
        assert q.flagged_exposures(engine, hostile, rule=payload).empty
        assert q.psf_trend(engine, hostile).empty
        assert q.program_list(engine, payload).empty
        assert q.find_ids(engine, payload).empty
        assert q.visit_exposures(engine, payload).empty
        assert q.jitter_samples(engine, payload).empty
        assert q.fits_headers(engine, payload).empty
        assert q.image_previews(engine, payload).empty
        assert q.exposure_detail(engine, payload) is None
        assert q.visit_detail(engine, payload) is None
    assert statements and not [s for s in statements for p in PAYLOADS if p in s]
    with pytest.raises(ValueError, match="programs must be whole numbers"):
        q.jitter_trend(engine, q.TrendFilters(proposids=("1 OR 1=1",)))
    with pytest.raises(ValueError, match="proposid must be whole numbers"):
        q.program_visits(engine, "16748; DROP TABLE exposure")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metrics must be among"):
        q.jitter_outliers(engine, metric="v2_rms_mas; DROP TABLE exposure")
    with pytest.raises(ValueError, match="period must be one of"):
        q.jitter_trend(engine, unit="month'); DROP TABLE exposure; --")
    engine.dispose()
    assert q.store_counts(q.read_only_engine(store_url)).exposures == 600


def test_empty_store_gives_empty_answers(engine: Engine, database_url: str) -> None:
    store = q.read_only_engine(database_url)
    assert q.is_empty(store) and q.store_counts(store).exposures == 0
    assert q.last_ingest_run(store) is None and q.last_analysis_run(store) is None
    assert q.last_nightly_run(store) is None
    assert q.action_items(store).empty and q.action_count(store) == {}
    options = q.filter_options(store)
    assert options.first_day is None and options.proposids == () and options.filters == ()
    summary = q.daily_summary(store)
    for source in (None, summary):
        assert q.jitter_trend(store, summary=source).empty
        assert q.flag_rates(store, summary=source).empty
        psf = q.psf_trend(store, summary=source)
        assert psf is not None and psf.empty
    assert q.filter_options(store, summary).first_day is None
    assert q.jitter_outliers(store).empty and q.program_list(store).empty
    assert q.find_ids(store, "iepp").empty and q.exposure_detail(store, "iepp01uv") is None
    assert q.jitter_samples(store, "iepp01uv").empty and q.fits_headers(store, "iepp01uv").empty
    assert len(q.store_version(store)) == 5
    store.dispose()


# --- The SQL page ---------------------------------------------------------------------------------


def test_ready_queries_run_on_each_store(sql_url: str) -> None:
    dialect = make_url(sql_url).get_backend_name()
    ready = q.ready_queries("postgresql" if dialect == "postgresql" else "sqlite")
    assert len(ready) >= 5
    for name, sql in ready.items():
        result = q.run_readonly_sql(sql_url, sql, row_limit=500, timeout_s=20)
        assert len(result.frame) > 0, name
        assert result.frame.to_csv(index=False).count("\n") == len(result.frame) + 1


WRITES = (
    "INSERT INTO flag (exposure_id, rule, rule_version, severity, message, evidence) "
    "VALUES ('x', 'r', 1, 'info', 'm', '{}')",
    "DELETE FROM flag",
    "UPDATE exposure SET v2_rms_mas = 0",
    "DROP TABLE flag",
    "CREATE TABLE evil (a INTEGER)",
    "SELECT * INTO evil FROM flag",
    "WITH gone AS (DELETE FROM flag RETURNING *) SELECT count(*) FROM gone",
    "SELECT 1; DROP TABLE flag",
)
SQLITE_WRITES = ("ATTACH DATABASE '{path}' AS evil", "PRAGMA journal_mode = DELETE",
                 "PRAGMA user_version = 7", "VACUUM", "VACUUM INTO '{path}'")  # fmt: skip


def _writes(store_url: str, tmp_path: Path) -> list[str]:
    if make_url(store_url).get_backend_name() != "sqlite":
        return list(WRITES)
    return [*WRITES, *(s.format(path=tmp_path / "evil.sqlite") for s in SQLITE_WRITES)]


def _fingerprint(store_url: str) -> tuple[int, ...]:
    engine = make_engine(store_url)
    with engine.connect() as connection:
        counts = tuple(
            connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("exposure", "flag", "verdict", "association")
        )
        version = connection.execute(text("SELECT sum(v2_rms_mas) FROM exposure")).scalar_one()
    engine.dispose()
    return (*counts, round(float(version), 6))


def test_sql_page_refuses_every_write(store_url: str, sql_url: str, tmp_path: Path) -> None:
    before = _fingerprint(store_url)
    for sql in _writes(store_url, tmp_path):
        with pytest.raises(q.SqlRefusedError):
            q.run_readonly_sql(sql_url, sql)
        # The statement check is the second line: the connection refuses on its own.
        with pytest.raises(q.SqlError):
            q.run_readonly_sql(sql_url, sql, check=False)
    assert _fingerprint(store_url) == before
    assert not (tmp_path / "evil.sqlite").exists(), "ATTACH created no file"


def test_read_only_engine_cannot_write(store_url: str) -> None:
    engine = q.read_only_engine(store_url)
    for sql in ("DELETE FROM flag", "CREATE TABLE evil (a INTEGER)", "DROP TABLE verdict"):
        with engine.connect() as connection, pytest.raises(DBAPIError):
            connection.exec_driver_sql(sql)
    engine.dispose()


def test_sql_page_limits_rows_and_time(sql_url: str) -> None:
    result = q.run_readonly_sql(sql_url, "SELECT exposure_id FROM exposure;", row_limit=5)
    assert len(result.frame) == 5 and result.truncated
    whole = q.run_readonly_sql(sql_url, "SELECT count(*) AS n FROM exposure", row_limit=5)
    assert not whole.truncated and whole.frame["n"].iloc[0] == 600
    endless = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
               "WHERE i < 2000000000) SELECT count(*) FROM n")  # fmt: skip
    started = time.perf_counter()
    with pytest.raises(q.SqlTimeoutError, match=r"longer than 0\.5 s"):
        q.run_readonly_sql(sql_url, endless, timeout_s=0.5)
    assert time.perf_counter() - started < 5
    with pytest.raises(q.SqlError, match="nosuch"):
        q.run_readonly_sql(sql_url, "SELECT * FROM nosuch")


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1", "select 1;", "  WITH x AS (SELECT 1) SELECT * FROM x ;; ", "EXPLAIN SELECT 1",
     "SELECT ';' AS s, 'DROP TABLE x' AS t", "SELECT 1 -- ; DROP TABLE x", "VALUES (1)",
     "SELECT replace('a', 'b', 'c'), updated_at FROM exposure"],
)  # fmt: skip
def test_check_statement_accepts_one_read(sql: str) -> None:
    assert check_statement(sql).rstrip(";").strip()


@pytest.mark.parametrize(
    "sql",
    ["", " ; ", "SELECT 1; SELECT 2", "UPDATE exposure SET v2_rms_mas = 0", "SELECT 'open",
     "SELECT 1 /* open", "SELECT 1 INTO x", "PRAGMA query_only = 0", "ATTACH 'x' AS y",
     "BEGIN", "COPY flag TO '/tmp/x'", "WITH d AS (DELETE FROM flag RETURNING 1) SELECT 1",
     "SELECT set_config('x', 'y', false); SET ROLE postgres"],
)  # fmt: skip
def test_check_statement_refuses_anything_else(sql: str) -> None:
    with pytest.raises(q.SqlRefusedError):
        check_statement(sql)


def test_period_bounds_cover_whole_periods() -> None:
    assert q.period_bounds(date(2024, 2, 1), "month") == (date(2024, 2, 1), date(2024, 2, 29))
    assert q.period_bounds(date(2024, 2, 5), "week") == (date(2024, 2, 5), date(2024, 2, 11))
