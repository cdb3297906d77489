"""Who sees which program: the hiding rule, MAST's data rights, grants, and every table as each
viewer sees it through the SQL page, on the genuine HST files in SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import scratch_database, sql_page_url
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from tests_support import REAL_PROGRAMS, build_real_store

from dashboard import sql_console
from models.access import (
    ProgramRights,
    Viewer,
    grant_access,
    hidden_programs,
    mark_program,
    record_data_rights,
    revoke_access,
    summarize_rights,
)
from models.cli import main
from models.database import make_engine
from models.tables import Base, Program

ALICE = Viewer.person("Alice@Example.org")  # granted program 14933
BOB = Viewer.person("bob@example.org", ["wfc3-team"])  # his group is granted program 11665
VIEWERS = {
    "anonymous": (Viewer(), {14933, 11665}),
    "alice": (ALICE, {11665}),
    "bob": (BOB, {14933}),
    "operator": (Viewer.operator(), set()),
}  # viewer -> the programs hidden from them


@dataclass(frozen=True)
class RealStore:
    """The genuine files' store with two proprietary programs, and what names each program."""

    url: str
    sql_url: str  # what the SQL page runs queries with (a reader role on PostgreSQL)
    names: dict[int, set[str]]  # program -> its exposure ids, asn ids and file names


def _names(engine: Engine) -> dict[int, set[str]]:
    names: dict[int, set[str]] = {p: set() for p in REAL_PROGRAMS}
    queries = (
        "SELECT proposid, exposure_id FROM exposure",
        "SELECT proposid, asn_id FROM association",
        "SELECT e.proposid, f.path FROM source_file f JOIN fits_header h ON h.file_id = f.file_id"
        " JOIN exposure e ON e.exposure_id = h.exposure_id",
    )
    with engine.connect() as connection:
        for query in queries:
            for proposid, name in connection.execute(text(query)):
                names[int(proposid)].add(Path(name).name.split(".")[0])
    return names


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def real_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, dask_scheduler: str
) -> Iterator[RealStore]:
    with scratch_database(request.param, tmp_path_factory.mktemp("store"), "hstmon_acc") as url:
        build_real_store(url, tmp_path_factory.mktemp("real"), dask_scheduler)
        engine = make_engine(url)
        mark_program(engine, 14933, proprietary=True, until=None, marked_by="lead")
        future = datetime.now(UTC) + timedelta(days=365)
        mark_program(engine, 11665, proprietary=True, until=future, marked_by="lead")
        past = datetime.now(UTC) - timedelta(days=1)  # its exclusive access is over
        mark_program(engine, 15305, proprietary=True, until=past, marked_by="lead")
        grant_access(engine, 14933, "alice@example.org", "user", "lead")
        grant_access(engine, 11665, "wfc3-team", "group", "lead")
        grant_access(engine, 15626, "alice@example.org", "user", "lead")  # a public program
        names = _names(engine)
        engine.dispose()
        with sql_page_url(url) as reader:
            yield RealStore(url, reader, names)


@pytest.mark.parametrize("who", list(VIEWERS))
def test_hidden_programs_follow_marks_grants_groups_and_dates(
    real_store: RealStore, who: str
) -> None:
    viewer, hidden = VIEWERS[who]
    engine = make_engine(real_store.url)
    with engine.connect() as connection:
        assert hidden_programs(connection, viewer) == hidden
        if engine.dialect.name == "postgresql":  # the policies' rule says the same
            connection.execute(
                text("SELECT set_config('hstmon.viewer', :v, false)"), {"v": viewer.setting()}
            )
            in_sql = connection.execute(text("SELECT hstmon_hidden_programs()")).scalars()
            assert set(in_sql) == hidden
    engine.dispose()


@pytest.mark.parametrize("who", list(VIEWERS))
def test_every_table_shows_a_viewer_only_the_programs_they_may_see(
    real_store: RealStore, who: str
) -> None:
    viewer, hidden = VIEWERS[who]
    seen = []
    for table in Base.metadata.tables:
        result = sql_console.run_readonly_sql(
            real_store.sql_url, f"SELECT * FROM {table}", row_limit=10**6, timeout_s=60,
            viewer=viewer,
        )  # fmt: skip
        assert not result.truncated
        seen.append(result.frame.map(repr).to_csv(index=False))
    shown = "\n".join(seen)
    for program, names in real_store.names.items():
        assert names, f"program {program} names nothing: the test would prove nothing"
        present = sorted(name for name in names if name in shown)
        if program in hidden:
            assert not present, f"{who} sees hidden program {program}: {present}"
        else:
            assert present == sorted(names), f"{who} misses program {program}"


def test_counts_through_the_sql_page_follow_the_viewer(real_store: RealStore) -> None:
    engine = make_engine(real_store.url)
    with engine.connect() as connection:
        per_program = dict(
            connection.execute(text("SELECT proposid, count(*) FROM exposure GROUP BY 1")).all()
        )
    engine.dispose()
    for who, (viewer, hidden) in VIEWERS.items():
        result = sql_console.run_readonly_sql(
            real_store.sql_url, "SELECT count(*) AS n FROM exposure", viewer=viewer
        )
        expected = sum(n for p, n in per_program.items() if p not in hidden)
        assert result.frame["n"].iloc[0] == expected, who


QUERIES_BEHIND_THE_VIEWS = (
    "SELECT * FROM main.exposure",
    # SQLite names a CTE as the view its reads come from: one named like a table is no view.
    "WITH exposure AS (SELECT * FROM main.exposure) SELECT * FROM exposure",
    "WITH x AS (SELECT * FROM main.verdict) SELECT * FROM x",
    "SELECT * FROM pragma_table_list",
    "SELECT count(*) FROM main.jitter_sample",
    "SELECT sql FROM sqlite_temp_master",
    "SELECT sql FROM temp.sqlite_master",
    "SELECT * FROM pragma_table_info('exposure')",
    "SELECT * FROM (SELECT * FROM main.flag) AS f",
)


@pytest.mark.parametrize("sql", QUERIES_BEHIND_THE_VIEWS)
def test_sqlite_queries_cannot_reach_behind_the_viewers_views(
    real_store: RealStore, sql: str
) -> None:
    if make_url(real_store.url).get_backend_name() != "sqlite":
        pytest.skip("SQLite's views; PostgreSQL's policies have no way around them to try")
    with pytest.raises(sql_console.SqlError, match=r"not authorized|prohibited"):
        sql_console.run_readonly_sql(real_store.sql_url, sql, viewer=Viewer())
    with pytest.raises(sql_console.SqlRefusedError, match="EXPLAIN is not available"):
        sql_console.run_readonly_sql(real_store.sql_url, f"EXPLAIN {sql}", viewer=Viewer())
    explained = sql_console.run_readonly_sql(
        real_store.sql_url, "EXPLAIN QUERY PLAN SELECT * FROM exposure", viewer=Viewer.operator()
    )
    assert len(explained.frame) > 0, "nothing hidden: EXPLAIN runs"
    # The views are the tables for a query: reading them by their own name, or in a CTE, is fine.
    for fine in (
        "SELECT * FROM temp.exposure",
        "WITH x AS (SELECT * FROM exposure) SELECT * FROM x",
    ):
        assert len(sql_console.run_readonly_sql(real_store.sql_url, fine).frame) > 0


# --- MAST's data rights ---------------------------------------------------------------------------


def test_rights_are_summarised_per_program_most_restrictive_first() -> None:
    soon, later = datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 6, 1, tzinfo=UTC)
    products = [
        ("17097", "PUBLIC", None), ("17097", "EXCLUSIVE_ACCESS", soon),
        ("17097", "EXCLUSIVE_ACCESS", later), ("16748", "PUBLIC", None),
        ("15000", "RESTRICTED", None), ("15000", "EXCLUSIVE_ACCESS", soon), ("", "PUBLIC", None),
        ("16999", None, None),
    ]  # fmt: skip
    assert summarize_rights(products) == [
        ProgramRights(15000, "RESTRICTED", None),  # no end date known: none
        ProgramRights(16748, "PUBLIC", None),
        ProgramRights(17097, "EXCLUSIVE_ACCESS", later),
    ]


def _program(engine: Engine, proposid: int) -> dict:
    with engine.connect() as connection:
        row = connection.execute(select(Program).where(Program.proposid == proposid)).mappings()
        return dict(row.one())


def test_mast_rights_only_ever_make_a_program_more_private(engine: Engine) -> None:
    now = datetime.now(UTC)
    until = now + timedelta(days=200)
    assert record_data_rights(engine, [ProgramRights(16748, "PUBLIC", None)]) == []
    assert not _program(engine, 16748)["proprietary"]
    newly = record_data_rights(engine, [ProgramRights(16748, "EXCLUSIVE_ACCESS", until)])
    assert newly == [16748]
    row = _program(engine, 16748)
    assert row["proprietary"] and row["source"] == "mast"
    assert abs(row["exclusive_until"].replace(tzinfo=UTC) - until) < timedelta(seconds=1)
    # Public products of the same program do not unhide it while its exclusive period runs...
    assert record_data_rights(engine, [ProgramRights(16748, "PUBLIC", None)]) == []
    assert _program(engine, 16748)["proprietary"]
    # ... a longer one extends it, and a shorter one does not shorten it.
    longer = until + timedelta(days=30)
    record_data_rights(engine, [ProgramRights(16748, "EXCLUSIVE_ACCESS", longer)])
    record_data_rights(engine, [ProgramRights(16748, "EXCLUSIVE_ACCESS", now + timedelta(days=1))])
    stored = _program(engine, 16748)["exclusive_until"].replace(tzinfo=UTC)
    assert abs(stored - longer) < timedelta(seconds=1)
    # A program marked by hand is the administrator's: MAST's word does not change it.
    mark_program(engine, 17097, proprietary=False, until=None, marked_by="lead")
    assert record_data_rights(engine, [ProgramRights(17097, "EXCLUSIVE_ACCESS", until)]) == []
    assert not _program(engine, 17097)["proprietary"]
    # Once its exclusive period is over, a program MAST saw exclusive is public again.
    record_data_rights(engine, [ProgramRights(15000, "EXCLUSIVE_ACCESS", now - timedelta(days=1))])
    with engine.connect() as connection:
        assert hidden_programs(connection, Viewer()) == {16748}


# --- The administrator's commands -----------------------------------------------------------------


def test_access_commands_grant_revoke_mark_and_list(database_url: str) -> None:
    def hstmon(*words: str) -> str:
        result = CliRunner().invoke(main, [*words, "--db", database_url])
        assert result.exit_code == 0, result.output
        return result.output

    assert "every program is public" in hstmon("access", "list")
    assert "program 17097 is proprietary until 2027-03-01" in hstmon(
        "access", "mark", "17097", "--proprietary", "--until", "2027-03-01", "--by", "lead"
    )
    assert "user carol@example.org may now see program 17097" in hstmon(
        "access", "grant", "17097", "Carol@Example.org"
    )
    assert "could already see" in hstmon("access", "grant", "17097", "carol@example.org")
    assert "group wfc3-team may now see" in hstmon(
        "access", "grant", "17097", "wfc3-team", "--group"
    )
    listed = hstmon("access", "list")
    assert "program 17097: proprietary until 2027-03-01 (marked by lead), 2 grant(s)" in listed
    assert "user carol@example.org" in listed and "group wfc3-team" in listed
    engine = make_engine(database_url)
    with engine.connect() as connection:
        assert hidden_programs(connection, Viewer.person("carol@example.org")) == set()
        assert hidden_programs(connection, Viewer.person("dave@example.org")) == {17097}
    assert revoke_access(engine, 17097, "CAROL@example.org", "user")
    engine.dispose()
    assert "may no longer see" in hstmon("access", "revoke", "17097", "wfc3-team", "--group")
    missing = CliRunner().invoke(main, ["access", "revoke", "17097", "x@y", "--db", database_url])
    assert missing.exit_code == 1 and "had no grant for program 17097" in missing.output
    public = CliRunner().invoke(
        main, ["access", "mark", "17097", "--public", "--until", "2027-01-01", "--db", database_url]
    )
    assert (
        public.exit_code == 1 and "--until applies to a proprietary program only" in public.output
    )
    assert "program 17097 is public" in hstmon("access", "mark", "17097", "--public")
    assert "program 17097: public (marked by" in hstmon("access", "list", "17097")


def test_a_reader_role_needs_postgresql(sqlite_url: str) -> None:
    result = CliRunner().invoke(main, ["db", "reader", "reader", "--db", sqlite_url])
    assert result.exit_code == 1 and "SQLite has no roles" in result.output


def test_viewer_settings_are_what_the_policies_read() -> None:
    assert Viewer().setting() == '{"user":null,"groups":[]}'
    assert ALICE.setting() == '{"user":"alice@example.org","groups":[]}'
    assert BOB.setting() == '{"user":"bob@example.org","groups":["wfc3-team"]}'
    assert Viewer.operator().setting() == '{"all":true}'
    assert "public programs only" in Viewer().describe()


_PROGRAM_COLUMNS = {"proposid", "proposal_id", "exposure_id", "asn_id", "visit_id", "obs_id",
                    "file_id", "path"}  # fmt: skip
_HOLD_NO_PROGRAM_DATA = {"program", "ingest_run", "analysis_run", "nightly_run"}


def test_every_table_that_names_a_program_is_scoped_on_both_stores(database_url: str) -> None:
    """A new table with a program's rows must get a policy and a scoped view, or it leaks."""
    from models.access import SCOPED_TABLES

    naming = {
        name
        for name, table in Base.metadata.tables.items()
        if _PROGRAM_COLUMNS & set(table.columns.keys())
    }
    assert naming - _HOLD_NO_PROGRAM_DATA <= set(SCOPED_TABLES), "unscoped on SQLite"
    engine = make_engine(database_url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            secured = set(
                connection.execute(
                    text("SELECT relname FROM pg_class WHERE relrowsecurity")
                ).scalars()
            )
        assert set(SCOPED_TABLES) <= secured | _views(engine)
    engine.dispose()


def _views(engine: Engine) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(engine).get_view_names())
