"""Read-only SQL for the dashboard: engines scoped to a viewer, and one user query with limits.

Safety rests on the connection, not on parsing. Every connection is opened for a viewer, and
sees only the programs that viewer may see: PostgreSQL applies row-level security to the
``hstmon.viewer`` setting the connection starts with; SQLite gets TEMP views that shadow the
tables (``models.access.scope_sqlite``). SQLite is opened read-only (``mode=ro``) with ``PRAGMA
query_only`` and an authorizer that allows only reads (of those views, where they exist) while a
user's query runs. PostgreSQL sessions default to read-only transactions, each user query runs
inside ``SET TRANSACTION READ ONLY`` with a ``statement_timeout``, and the SQL page refuses a
role that could step outside the store (``models.reader.reader_check``): a superuser, the tables'
owner, a role that reads the server's files. :func:`check_statement` is a second line of defence
that refuses anything but one SELECT, WITH, VALUES or EXPLAIN statement.
"""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool, QueuePool

from models.access import SCOPED_TABLES, VIEWER_SETTING, SqliteScope, Viewer, scope_sqlite
from models.database import resolve_database_url
from models.reader import HOW_TO_CREATE, reader_check
from models.tables import Base

__all__ = [
    "READY_QUERIES",
    "SqlError",
    "SqlRefusedError",
    "SqlResult",
    "SqlRoleError",
    "SqlTimeoutError",
    "check_statement",
    "read_only_engine",
    "ready_queries",
    "run_readonly_sql",
    "sql_page_refusal",
]

_ALLOWED_FIRST_WORDS = frozenset({"select", "with", "values", "explain"})
# Words that only appear in statements that change something (outside strings and comments).
# (EXPLAIN ANALYZE stays allowed: it runs a SELECT; anything else is refused by the connection.)
_WRITE_WORDS = frozenset({
    "insert", "update", "delete", "merge", "upsert", "drop", "create", "alter", "truncate",
    "attach", "detach", "pragma", "vacuum", "reindex", "grant", "revoke", "copy", "call", "do",
    "set", "reset", "lock", "begin", "commit", "rollback", "savepoint", "release", "prepare",
    "execute", "deallocate", "listen", "notify", "load", "import", "cluster", "refresh",
    "discard", "into",
})  # fmt: skip
_TOKEN = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$.*?\$(?P=tag)\$)
    | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\])
    | (?P<semicolon>;)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<unterminated>'|"|`|/\*|\$[A-Za-z_]*\$)
    """,
    re.DOTALL | re.VERBOSE,
)

# SQLite authorizer action codes a read may need; everything else (ATTACH, PRAGMA, writes,
# transactions, CREATE ...) is denied while a user's statement is prepared.
_SQLITE_READ_ACTIONS = frozenset({
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
})  # fmt: skip
_SQLITE_FORBIDDEN_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit"})
SCOPE_RECYCLE_S = 60  # a pooled SQLite connection's age at which its viewer's scope is made anew
# On a connection scoped to a viewer, the tables of main a user's query may read: hstmon's
# tables that hold no program's data, and the schema. Not the scoped tables (only the viewer's
# views read those), nor sqlite_stat1 (row counts per index).
_SQLITE_OPEN_TABLES = frozenset(
    (set(Base.metadata.tables) - set(SCOPED_TABLES)) | {"sqlite_master", "sqlite_schema"}
)


class SqlError(RuntimeError):
    """The database refused or failed the query; the message is the database's, made readable."""


class SqlRefusedError(SqlError):
    """The text is not one read-only statement (SELECT, WITH, VALUES or EXPLAIN)."""


class SqlTimeoutError(SqlError):
    """The query ran longer than its time limit and was cancelled."""


class SqlRoleError(SqlError):
    """The connection's role could reach beyond the store: the SQL page does not run on it."""


@dataclass(frozen=True)
class SqlResult:
    """Rows of a user's query, at most ``row_limit`` of them."""

    frame: pd.DataFrame
    truncated: bool  # more rows existed than the row limit
    seconds: float  # wall time of the query and the fetch


def check_statement(sql: str) -> str:
    """The statement without trailing semicolons, if it is one read-only statement.

    Raises
    ------
    SqlRefusedError
        Empty text, several statements, a first word other than SELECT/WITH/VALUES/EXPLAIN, or a
        word that only writing statements use (INSERT, DROP, ATTACH, PRAGMA, SET, INTO...).
    """
    words: list[str] = []
    end_of_statement: int | None = None
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind == "unterminated":
            msg = f"unterminated quote or comment at character {match.start() + 1}"
            raise SqlRefusedError(msg)
        if kind == "semicolon":
            end_of_statement = match.start() if end_of_statement is None else end_of_statement
        elif kind == "word":
            if end_of_statement is not None:
                msg = "only one statement can run at a time: remove what follows the ';'"
                raise SqlRefusedError(msg)
            words.append(match.group().lower())
    if not words:
        raise SqlRefusedError("the query is empty")
    if words[0] not in _ALLOWED_FIRST_WORDS:
        msg = f"only SELECT, WITH, VALUES or EXPLAIN can run here, not {words[0].upper()}"
        raise SqlRefusedError(msg)
    writes = sorted({w for w in words if w in _WRITE_WORDS})
    if writes:
        msg = f"this page only reads: {', '.join(w.upper() for w in writes)} is not allowed"
        raise SqlRefusedError(msg)
    return sql[:end_of_statement].strip() if end_of_statement is not None else sql.strip()


def _sqlite_read_only_url(url: URL) -> URL:
    database = url.database or ""
    if database.startswith("file:"):  # already a URI filename: force read-only
        return url.set(query={**url.query, "mode": "ro", "uri": "true"})
    if database in ("", ":memory:"):
        msg = "a read-only connection needs an SQLite file, not an in-memory database"
        raise SqlError(msg)
    path = urllib.parse.quote(str(Path(database).expanduser().resolve()))
    return url.set(database=f"file:{path}", query={"mode": "ro", "uri": "true"})


def _sqlite_scoped_to(viewer: Viewer) -> Any:
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        # The views first: query_only refuses every CREATE, TEMP ones too.
        record.info["hstmon_scope"] = scope_sqlite(dbapi_connection, viewer)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")  # belt and braces with mode=ro
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return on_connect


def _postgres_option(name: str, value: str) -> str:
    """``-c name=value`` for libpq's options, which split on white space unless escaped."""
    escaped = "".join(f"\\{c}" if c.isspace() or c == "\\" else c for c in value)
    return f"-c {name}={escaped}"


def read_only_engine(
    url: str | None = None, *, pooled: bool = False, viewer: Viewer | None = None
) -> Engine:
    """An engine whose connections cannot write and see what ``viewer`` may see.

    ``viewer`` defaults to an anonymous one (public programs only). ``url`` is resolved like
    every hstmon command's ``--db`` (default: $HSTMON_DATABASE_URL, then the SQLite file in the
    data directory). PostgreSQL connections are pooled (a few, checked before use) only with
    ``pooled``, for a long-lived process like the dashboard: dispose of the engine when done.
    Pooled SQLite connections keep the views of their viewer's scope; they are made again after
    a minute, so a new grant or mark shows as soon as the pages' cache forgets.
    """
    viewer = viewer or Viewer()
    resolved = make_url(resolve_database_url(url))
    backend = resolved.get_backend_name()
    if backend == "sqlite":
        if pooled:  # a viewer's views are made once per connection, not once per query
            engine = create_engine(
                _sqlite_read_only_url(resolved), poolclass=QueuePool, pool_size=2,
                max_overflow=4, pool_recycle=SCOPE_RECYCLE_S,
                connect_args={"check_same_thread": False},
            )  # fmt: skip
        else:
            engine = create_engine(_sqlite_read_only_url(resolved), poolclass=NullPool)
        event.listen(engine, "connect", _sqlite_scoped_to(viewer))
        return engine
    if backend == "postgresql":
        # Every transaction of these sessions is read-only unless a statement changes the
        # default, which the SQL page's statement check refuses (and SET TRANSACTION repeats).
        # The viewer is fixed when the session starts: row-level security reads it.
        startup = " ".join(
            (
                "-c default_transaction_read_only=on",
                _postgres_option(VIEWER_SETTING, viewer.setting()),
            )
        )
        options = {"connect_args": {"options": startup}}
        if pooled:  # one engine per viewer: a small pool each
            return create_engine(
                resolved, pool_size=1, max_overflow=4, pool_pre_ping=True, pool_recycle=600,
                **options,
            )  # fmt: skip
        return create_engine(resolved, poolclass=NullPool, **options)
    msg = f"hstmon reads SQLite or PostgreSQL, not {backend}"
    raise SqlError(msg)


def _scoped_read(scope: SqliteScope, table: str, database: str, view: str | None) -> bool:
    """May a read of ``database.table``, made by ``view`` (a view or a CTE, or None for the
    query itself), happen on a connection scoped to a viewer?"""
    if database == "main":
        return table in _SQLITE_OPEN_TABLES or view in scope.sources
    if database == "temp":  # the viewer's views, and what they read
        return table in scope.views or (table in scope.sources and view in scope.views)
    return False


def _sqlite_authorizer(scope: SqliteScope) -> Any:
    def authorize(action: int, arg1: Any, arg2: Any, database: Any, view: Any) -> int:
        if action not in _SQLITE_READ_ACTIONS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _SQLITE_FORBIDDEN_FUNCTIONS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_READ and scope.views:
            allowed = _scoped_read(scope, arg1, database, view)
            return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    return authorize


def _fetch(cursor: Any, row_limit: int) -> tuple[pd.DataFrame, bool]:
    rows = cursor.fetchmany(row_limit + 1)
    columns = [d[0] for d in cursor.description or ()]
    truncated = len(rows) > row_limit
    return pd.DataFrame([tuple(r) for r in rows[:row_limit]], columns=columns), truncated


_EXPLAIN_HIDDEN = (
    "EXPLAIN is not available while programs are hidden from you: its plans and estimates are "
    "of the tables behind what you see"
)


def _run_sqlite(engine: Engine, sql: str, row_limit: int, timeout_s: float) -> SqlResult:
    started = time.perf_counter()
    deadline = started + timeout_s
    raw = engine.raw_connection()
    try:
        scope: SqliteScope = raw.info.get("hstmon_scope", SqliteScope())
        if scope.views and sql.lstrip().lower().startswith("explain"):
            raise SqlRefusedError(_EXPLAIN_HIDDEN)
        connection: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        # Returning non-zero from the progress handler interrupts the statement.
        connection.set_progress_handler(lambda: int(time.perf_counter() > deadline), 10_000)
        connection.set_authorizer(_sqlite_authorizer(scope))
        cursor = connection.cursor()
        try:
            cursor.execute(sql)
            frame, truncated = _fetch(cursor, row_limit)
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                msg = f"the query ran longer than {timeout_s:g} s and was stopped"
                raise SqlTimeoutError(msg) from exc
            raise SqlError(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise SqlError(str(exc)) from exc
        finally:
            cursor.close()
            connection.set_authorizer(None)
            connection.set_progress_handler(None, 0)
    finally:
        raw.close()
    return SqlResult(frame, truncated, time.perf_counter() - started)


def _refusal(check_problems: list[str], role: str) -> str:
    return (
        f"The SQL page does not run as {role}: " + "; ".join(check_problems) + ". " + HOW_TO_CREATE
    )


def _run_postgres(engine: Engine, sql: str, row_limit: int, timeout_s: float) -> SqlResult:
    import psycopg

    started = time.perf_counter()
    explain = sql.lstrip().lower().startswith("explain")
    with engine.connect() as connection:
        check = reader_check(connection)
        if not check.safe:
            raise SqlRoleError(_refusal(check.problems, check.role))
        if (
            explain
            and connection.exec_driver_sql(
                "SELECT EXISTS (SELECT hstmon_hidden_programs())"
            ).scalar()
        ):
            # The planner's row estimates come from statistics over every program's rows.
            raise SqlRefusedError(_EXPLAIN_HIDDEN)
        connection.rollback()  # the user's query in a transaction of its own
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        # SET, not set_config(): a reader may not execute set_config (see models.reader).
        connection.exec_driver_sql(
            f"SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}"
        )
        driver = connection.connection.driver_connection
        # A server-side cursor streams rows (only row_limit + 1 are fetched); DECLARE, like the
        # binary (extended) protocol for EXPLAIN, accepts exactly one statement.
        cursor = driver.cursor() if explain else driver.cursor(name="hstmon_sql_page")
        try:
            cursor.execute(sql, binary=True)
            frame, truncated = _fetch(cursor, row_limit)
        except psycopg.errors.QueryCanceled as exc:
            msg = f"the query ran longer than {timeout_s:g} s and was stopped"
            raise SqlTimeoutError(msg) from exc
        except psycopg.Error as exc:
            raise SqlError(str(exc).strip()) from exc
        finally:
            cursor.close()
            connection.rollback()
    return SqlResult(frame, truncated, time.perf_counter() - started)


def sql_page_refusal(url: str | None) -> str | None:
    """Why the SQL page must not run on ``url`` (a role that reaches beyond the store), or None.

    SQLite has no roles: its connections are opened read-only with an authorizer.
    """
    resolved = make_url(resolve_database_url(url))
    if resolved.get_backend_name() != "postgresql":
        return None
    engine = read_only_engine(url)
    try:
        with engine.connect() as connection:
            check = reader_check(connection)
    except DBAPIError as exc:
        raise SqlError(str(exc.orig).strip()) from exc
    finally:
        engine.dispose()
    return None if check.safe else _refusal(check.problems, check.role)


def run_readonly_sql(
    url: str | None,
    sql: str,
    row_limit: int = 1000,
    timeout_s: float = 5.0,
    *,
    check: bool = True,
    viewer: Viewer | None = None,
) -> SqlResult:
    """Run one user-written read-only statement with a row limit and a time limit, seeing what
    ``viewer`` may see (default: an anonymous viewer, public programs only).

    Parameters
    ----------
    url : str or None
        Database URL (resolved like ``--db``).
    sql : str
        One SELECT, WITH, VALUES or EXPLAIN statement; a trailing ``;`` is allowed.
    row_limit : int
        Rows returned at most; ``SqlResult.truncated`` says when more existed.
    timeout_s : float
        Seconds the query may run before it is cancelled.
    check : bool
        Refuse anything but one read-only statement before sending it (default). ``False``
        leaves the refusal to the read-only connection alone: tests use it to prove that.
    viewer : Viewer or None
        Whose programs the query sees.

    Raises
    ------
    SqlRefusedError
        The text is not one read-only statement (nothing was sent to the database).
    SqlTimeoutError
        The time limit was reached.
    SqlRoleError
        PostgreSQL: the connection's role reaches beyond the store (a superuser, the tables'
        owner, a role that reads the server's files...); nothing was run.
    SqlError
        The database refused the query (syntax, unknown column, a write attempt...).
    """
    if row_limit < 1 or timeout_s <= 0:
        msg = f"row_limit must be >= 1 and timeout_s > 0, not {row_limit} and {timeout_s}"
        raise ValueError(msg)
    statement = check_statement(sql) if check else sql
    engine = read_only_engine(url, viewer=viewer)
    try:
        if engine.dialect.name == "sqlite":
            return _run_sqlite(engine, statement, row_limit, timeout_s)
        return _run_postgres(engine, statement, row_limit, timeout_s)
    except DBAPIError as exc:  # connecting failed
        raise SqlError(str(exc.orig).strip()) from exc
    finally:
        engine.dispose()


# Ready queries for the SQL page: name -> {dialect -> SQL}; "any" works on both stores.
READY_QUERIES: dict[str, dict[str, str]] = {
    "Jitter per month and configuration": {
        "sqlite": """\
SELECT substr(window_start, 1, 7) AS month, config,
       count(*) AS exposures,
       round(avg(v2_rms_mas), 2) AS v2_rms_mean_mas,
       round(avg(v3_rms_mas), 2) AS v3_rms_mean_mas,
       round(avg(si_rms_p95_mas), 2) AS si_rms_p95_mean_mas,
       round(max(si_rms_p95_mas), 2) AS si_rms_p95_max_mas
FROM exposure
GROUP BY month, config
ORDER BY month, config""",
        "postgresql": """\
SELECT to_char(window_start AT TIME ZONE 'UTC', 'YYYY-MM') AS month, config,
       count(*) AS exposures,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY v2_rms_mas) AS v2_rms_median_mas,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY v3_rms_mas) AS v3_rms_median_mas,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY si_rms_p95_mas) AS si_rms_p95_p95_mas
FROM exposure
GROUP BY 1, 2
ORDER BY 1, 2""",
    },
    "Worst 50 exposures by SI RMS p95": {
        "any": """\
SELECT exposure_id, proposid, config, guideact, window_start,
       v2_rms_mas, v3_rms_mas, si_rms_p95_mas, drift_v2_mas, drift_v3_mas
FROM exposure
WHERE si_rms_p95_mas IS NOT NULL
ORDER BY si_rms_p95_mas DESC
LIMIT 50""",
    },
    "Jitter by guiding mode": {
        "any": """\
SELECT guideact, config, count(*) AS exposures,
       avg(v2_rms_mas) AS v2_rms_mean_mas, avg(v3_rms_mas) AS v3_rms_mean_mas,
       sum(CASE WHEN nlosses > 0 THEN 1 ELSE 0 END) AS lost_lock
FROM exposure
GROUP BY guideact, config
ORDER BY exposures DESC""",
    },
    "Per-program jitter and flags": {
        "any": """\
SELECT e.proposid, count(*) AS exposures,
       avg(e.v2_rms_mas) AS v2_rms_mean_mas, avg(e.v3_rms_mas) AS v3_rms_mean_mas,
       max(e.si_rms_p95_mas) AS si_rms_p95_max_mas,
       (SELECT count(*) FROM flag f WHERE f.exposure_id IN
            (SELECT x.exposure_id FROM exposure x WHERE x.proposid = e.proposid)) AS flags
FROM exposure e
GROUP BY e.proposid
ORDER BY flags DESC, e.proposid""",
    },
    "Jitter time series of one exposure (mas)": {
        "any": """\
SELECT sample_index, seconds,
       si_v2_avg * 1000 AS si_v2_avg_mas, si_v3_avg * 1000 AS si_v3_avg_mas,
       si_v2_rms * 1000 AS si_v2_rms_mas, si_v3_rms * 1000 AS si_v3_rms_mas,
       take_data, recenter, slew_flag
FROM jitter_sample
WHERE exposure_id = (SELECT min(exposure_id) FROM exposure)
ORDER BY sample_index""",
    },
    "Fill and take-data-down rows per exposure": {
        "any": """\
SELECT exposure_id, count(*) AS samples,
       sum(CASE WHEN si_v2_avg IS NULL THEN 1 ELSE 0 END) AS fill_rows,
       sum(CASE WHEN take_data = 1 THEN 0 ELSE 1 END) AS take_data_down_rows
FROM jitter_sample
GROUP BY exposure_id
HAVING sum(CASE WHEN take_data = 1 THEN 0 ELSE 1 END) > 0
ORDER BY take_data_down_rows DESC
LIMIT 100""",
    },
}


def ready_queries(dialect: str) -> dict[str, str]:
    """The ready queries for ``dialect`` ("sqlite" or "postgresql"), by name."""
    return {
        name: variants.get(dialect, variants.get("any", ""))
        for name, variants in READY_QUERIES.items()
        if dialect in variants or "any" in variants
    }
