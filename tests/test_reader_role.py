"""The SQL page on PostgreSQL: it refuses a role that reaches beyond the store, and the reader
role `hstmon db reader` makes refuses every attack tried, on the suite's real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from conftest import reader_role, scratch_postgres_database
from sqlalchemy import text
from sqlalchemy.engine import make_url
from tests_support import build_real_store

from dashboard import sql_console
from models.access import Viewer, mark_program
from models.cli import main
from models.database import make_engine, resolve_database_url, upgrade
from models.reader import ensure_reader_role

HIDDEN = 14933  # ldfd01010's program, proprietary in this store


@dataclass(frozen=True)
class PgStore:
    url: str  # the suite's superuser on the store
    reader: str  # the reader role `hstmon db reader` made
    visible_exposures: int  # what an anonymous viewer sees


def _fingerprint(url: str) -> tuple:
    engine = make_engine(url)
    with engine.connect() as connection:
        counts = tuple(
            connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("exposure", "flag", "verdict", "program", "program_access")
        )
        relations = connection.execute(
            text("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        ).scalar_one()
        policies = connection.execute(text("SELECT count(*) FROM pg_policies")).scalar_one()
        objects = connection.execute(text("SELECT count(*) FROM pg_largeobject_metadata")).scalar()
    engine.dispose()
    return (*counts, relations, policies, objects)


@pytest.fixture(scope="module")
def pg_store(tmp_path_factory: pytest.TempPathFactory, dask_scheduler: str) -> Iterator[PgStore]:
    with scratch_postgres_database("hstmon_reader") as url:
        build_real_store(url, tmp_path_factory.mktemp("real"), dask_scheduler)
        engine = make_engine(url)
        mark_program(engine, HIDDEN, proprietary=True, until=None, marked_by="lead")
        with engine.begin() as connection:
            # dblink, where the server has it, so the reader's refusal of it is tried for real.
            if connection.execute(
                text("SELECT 1 FROM pg_available_extensions WHERE name = 'dblink'")
            ).first():
                connection.execute(text("CREATE EXTENSION dblink"))
            connection.execute(text("ANALYZE"))  # statistics for pg_stats to (not) show
            visible = connection.execute(
                text("SELECT count(*) FROM exposure WHERE proposid <> :p"), {"p": HIDDEN}
            ).scalar_one()
        engine.dispose()
        with reader_role(url) as reader:
            yield PgStore(url, reader, visible)


def _psycopg(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- Refusing a role that reaches beyond the store -----------------------------------------------


def test_the_sql_page_refuses_a_superuser_and_says_how_to_make_the_reader(
    pg_store: PgStore,
) -> None:
    with pytest.raises(sql_console.SqlRoleError) as refused:
        sql_console.run_readonly_sql(pg_store.url, "SELECT pg_read_file('/etc/hostname')")
    message = str(refused.value)
    assert "The SQL page does not run as postgres: postgres is a superuser" in message
    assert "hstmon db reader hstmon_reader" in message and "--reader-db" in message
    assert sql_console.sql_page_refusal(pg_store.url) == message
    assert sql_console.sql_page_refusal(pg_store.reader) is None
    result = sql_console.run_readonly_sql(pg_store.reader, "SELECT count(*) AS n FROM exposure")
    assert result.frame["n"].iloc[0] == pg_store.visible_exposures


def test_the_sql_page_refuses_the_tables_owner_and_a_reader_of_server_files(
    postgres_url: str,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    owner, filer = f"hstmon_owner_{suffix}", f"hstmon_filer_{suffix}"
    admin = make_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE ROLE {owner} LOGIN"))
        connection.execute(text(f"GRANT CREATE, USAGE ON SCHEMA public TO {owner}"))
    owner_url = resolve_database_url(make_url(postgres_url).set(username=owner).render_as_string())
    try:
        upgrade(owner_url)  # the migrations run as the owner: it owns every table
        done = " ".join(ensure_reader_role(admin, filer))
        for taken in ("set_config", "pg_terminate_backend", "pg_cancel_backend", "TEMPORARY"):
            assert taken in done, "taken from PUBLIC, given back to the owner"
        with psycopg.connect(_psycopg(owner_url), autocommit=True) as as_owner:
            assert as_owner.execute("SELECT set_config('hstmon.x', '1', false)").fetchone()
            as_owner.execute("CREATE TEMP TABLE scratch (a integer)")
        with admin.begin() as connection:
            connection.execute(text(f"GRANT pg_read_server_files TO {filer}"))
        refusal = sql_console.sql_page_refusal(owner_url)
        assert refusal is not None and f"row-level security does not apply to {owner}" in refusal
        filer_url = make_url(postgres_url).set(username=filer).render_as_string()
        refusal = sql_console.sql_page_refusal(filer_url)
        assert refusal is not None and "pg_read_server_files" in refusal
        # `hstmon db reader` brings the role back in line: no membership survives it.
        result = CliRunner().invoke(main, ["db", "reader", filer, "--db", postgres_url])
        assert result.exit_code == 0, result.output
        assert sql_console.sql_page_refusal(filer_url) is None
    finally:
        with admin.begin() as connection:
            for role in (owner, filer):
                connection.execute(text(f"REASSIGN OWNED BY {role} TO CURRENT_USER"))
                connection.execute(text(f"DROP OWNED BY {role}"))
                connection.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_db_reader_creates_a_safe_role_again_and_again_and_checks_it(pg_store: PgStore) -> None:
    role = f"hstmon_reader_{uuid.uuid4().hex[:10]}"
    engine = make_engine(pg_store.url)
    try:
        made = CliRunner().invoke(main, ["db", "reader", role, "--db", pg_store.url])
        assert made.exit_code == 0, made.output
        assert f"created role {role}" in made.output
        database = make_url(pg_store.url).database
        assert f"--reader-db postgresql://{role}@127.0.0.1:5432/{database}" in made.output
        again = CliRunner().invoke(main, ["db", "reader", role, "--db", pg_store.url])
        assert again.exit_code == 0 and f"updated role {role}" in again.output, again.output
        checked = CliRunner().invoke(main, ["db", "reader", role, "--check", "--db", pg_store.url])
        assert checked.exit_code == 0 and "can only read hstmon's tables" in checked.output
        superuser = CliRunner().invoke(
            main, ["db", "reader", "postgres", "--check", "--db", pg_store.url]
        )
        assert superuser.exit_code == 1 and "postgres is not a safe reader" in superuser.output
        reader_url = make_url(pg_store.url).set(username=role).render_as_string()
        by_reader = CliRunner().invoke(main, ["db", "reader", "other", "--db", reader_url])
        assert by_reader.exit_code == 1 and "only a superuser may" in by_reader.output
        bad = CliRunner().invoke(main, ["db", "reader", "Robert'); DROP", "--db", pg_store.url])
        assert bad.exit_code == 1 and "is not a plain role name" in bad.output
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE IF EXISTS {role}"))
        engine.dispose()


# --- Attacks through the reader role --------------------------------------------------------------

# What the reader role itself refuses, on a plain connection (no read-only transaction, no
# statement check): each must fail with insufficient_privilege (SQLSTATE 42501).
ROLE_REFUSES = {
    "read a server file": "SELECT pg_read_file('/etc/hostname')",
    "read a server file as bytes": "SELECT pg_read_binary_file('/etc/hostname')",
    "list the data directory": "SELECT pg_ls_dir('.')",
    "stat a server file": "SELECT pg_stat_file('/etc/hostname')",
    "ask where the data directory is": "SELECT current_setting('data_directory')",
    "end another session": "SELECT pg_terminate_backend({victim})",
    "cancel another session's query": "SELECT pg_cancel_backend({victim})",
    "import a server file": "SELECT lo_import('/etc/hostname')",
    "create a large object": "SELECT lo_create(0)",
    "connect elsewhere with dblink": "SELECT dblink('dbname=postgres', 'SELECT 1')",
    "run a program": "COPY exposure TO PROGRAM 'id'",
    "write a server file": "COPY exposure TO '/tmp/hstmon_reader_attack.csv'",
    "load a server file": "COPY flag FROM '/etc/hostname'",
    "name another viewer with set_config": "SELECT set_config('hstmon.viewer',"
    " '{{\"all\": true}}', false)",
    "become a superuser": "SET ROLE postgres",
    "become a superuser's session": "SET SESSION AUTHORIZATION postgres",
    "insert": "INSERT INTO program_access (proposid, grantee, grantee_kind, granted_by, granted_at)"
    " VALUES (14933, 'mallory', 'user', 'mallory', now())",
    "update": "UPDATE program SET proprietary = false",
    "delete": "DELETE FROM program",
    "truncate": "TRUNCATE flag",
    "drop a table": "DROP TABLE flag",
    "switch row-level security off": "ALTER TABLE exposure DISABLE ROW LEVEL SECURITY",
    "drop a policy": "DROP POLICY hstmon_viewer_sees ON exposure",
    "create a table": "CREATE TABLE evil (a integer)",
    "create a temporary table": "CREATE TEMP TABLE evil (a integer)",
    "create a schema": "CREATE SCHEMA evil",
    "create a function": "CREATE FUNCTION evil() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
    "create an extension": "CREATE EXTENSION pgcrypto",
    "make itself a reader of server files": "GRANT pg_read_server_files TO CURRENT_USER",
    "set its own viewer for later sessions": "ALTER ROLE CURRENT_USER SET hstmon.viewer = '{{}}'",
}  # fmt: skip
# What the SQL page refuses besides, for a session holding the reader's password could run them:
# they change only that session, which the dashboard never lends to anyone.
PAGE_REFUSES = {
    **ROLE_REFUSES,
    "name another viewer with SET": "SET hstmon.viewer = '{{\"all\": true}}'",
    "name another viewer inside a function": "SELECT query_to_xml("
    "'SET hstmon.viewer = ''{{\"all\": true}}''', true, false, '')",
    "name another viewer and count at once": "SELECT set_config('hstmon.viewer', "
    "'{{\"all\": true}}', true), (SELECT count(*) FROM exposure)",
    "hold a cursor open": "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM exposure",
    "reset the session": "RESET ALL",
}  # fmt: skip


@pytest.fixture
def victim(pg_store: PgStore) -> Iterator[psycopg.Connection]:
    """Another session of the reader role: another person's dashboard."""
    with psycopg.connect(_psycopg(pg_store.reader), autocommit=True) as session:
        yield session


@pytest.mark.parametrize("attack", list(ROLE_REFUSES))
def test_the_reader_role_refuses(
    attack: str, pg_store: PgStore, victim: psycopg.Connection
) -> None:
    if "dblink" in attack and _missing_dblink(pg_store):
        pytest.skip("this server has no dblink extension to try")
    before = _fingerprint(pg_store.url)
    statement = ROLE_REFUSES[attack].format(victim=victim.info.backend_pid)
    with psycopg.connect(_psycopg(pg_store.reader), autocommit=True) as attacker:
        with pytest.raises(psycopg.Error) as refused:
            attacker.execute(statement)
        assert refused.value.sqlstate == "42501", str(refused.value)
    assert victim.execute("SELECT 1").fetchone() == (1,), "the other session lives"
    assert _fingerprint(pg_store.url) == before
    assert not Path("/tmp/hstmon_reader_attack.csv").exists()


@pytest.mark.parametrize("attack", list(PAGE_REFUSES))
def test_the_sql_page_refuses(attack: str, pg_store: PgStore, victim: psycopg.Connection) -> None:
    if "dblink" in attack and _missing_dblink(pg_store):
        pytest.skip("this server has no dblink extension to try")
    before = _fingerprint(pg_store.url)
    statement = PAGE_REFUSES[attack].format(victim=victim.info.backend_pid)
    for check in (True, False):  # the statement check, then the connection on its own
        with pytest.raises(sql_console.SqlError):
            sql_console.run_readonly_sql(pg_store.reader, statement, check=check)
    assert victim.execute("SELECT 1").fetchone() == (1,)
    assert _fingerprint(pg_store.url) == before
    shown = sql_console.run_readonly_sql(pg_store.reader, "SELECT count(*) AS n FROM exposure")
    assert shown.frame["n"].iloc[0] == pg_store.visible_exposures, "still anonymous"


def _missing_dblink(pg_store: PgStore) -> bool:
    engine = make_engine(pg_store.url)
    with engine.connect() as connection:
        missing = connection.execute(
            text("SELECT 1 FROM pg_extension WHERE extname = 'dblink'")
        ).first()
    engine.dispose()
    return missing is None


def test_statistics_and_plans_do_not_tell_of_hidden_rows(pg_store: PgStore) -> None:
    def run(sql: str, viewer: Viewer | None = None) -> list:
        frame = sql_console.run_readonly_sql(pg_store.reader, sql, viewer=viewer).frame
        return frame.to_numpy().tolist()

    stats = "SELECT count(*) FROM pg_stats WHERE tablename = 'exposure'"
    engine = make_engine(pg_store.url)
    with engine.connect() as connection:
        assert connection.execute(text(stats)).scalar_one() > 0, "the superuser sees statistics"
    engine.dispose()
    assert run(stats) == [[0]], "pg_stats hides tables under row-level security"
    with pytest.raises(sql_console.SqlRefusedError, match="EXPLAIN is not available"):
        run("EXPLAIN SELECT * FROM exposure WHERE proposid = 14933")
    assert run("EXPLAIN SELECT 1", Viewer.operator()), "nothing hidden: EXPLAIN runs"
    files = run("SELECT hstmon_hidden_files()")
    assert files and all(isinstance(f, int) for (f,) in files), "file numbers, never paths"
    assert run("SELECT hstmon_hidden_codes()") == [["dfd"]], "ldfd01010's program code alone"
    assert run("SELECT current_setting('hstmon.viewer')") == [[Viewer().setting()]]
    assert [14933] in run("SELECT proposid FROM program"), "which programs are proprietary"
    assert run("SELECT count(*) FROM exposure WHERE proposid = 14933") == [[0]]
    assert run("SELECT count(*) FROM exposure WHERE proposid = 14933", Viewer.operator())[0][0] > 0
