"""The dashboard's reader role on PostgreSQL: SELECT on hstmon's tables and nothing else.

The SQL page runs what a person types. Row-level security (migration 0008) keeps it to the
programs its viewer may see, but only on a role that cannot step outside the store: not a
superuser, not the tables' owner, no way to read the server's files, signal other sessions or
change the viewer its session was opened for. :func:`ensure_reader_role` makes such a role;
:func:`reader_check` says what is wrong with the role a connection uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from models.tables import Base

__all__ = [
    "HOW_TO_CREATE",
    "ReaderCheck",
    "ReaderRoleError",
    "check_reader_role",
    "ensure_reader_role",
    "reader_check",
    "reader_url",
]

HOW_TO_CREATE = (
    "Create a reader role once, as a superuser: `hstmon db reader hstmon_reader --db "
    "postgresql://postgres@HOST/DATABASE`, then serve the dashboard with `--reader-db "
    "postgresql://hstmon_reader@HOST/DATABASE`."
)
# Functions PUBLIC may execute by default that a reader must not: set_config would let a query
# name another viewer (hstmon.viewer); pg_terminate_backend and pg_cancel_backend end or cancel
# sessions of its own role, which are other people's dashboards; the lo_ ones write large
# objects into the database.
PUBLIC_FUNCTIONS = (
    "set_config", "pg_terminate_backend", "pg_cancel_backend", "lo_creat", "lo_create",
    "lo_from_bytea",
)  # fmt: skip
# Functions that reach the server's files, its programs or other servers (dblink), whoever was
# granted them.
SERVER_FUNCTIONS = (
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir",
    "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "lo_import", "lo_export",
    "pg_reload_conf", "pg_rotate_logfile", "pg_file_write", "pg_file_unlink", "pg_file_rename",
)  # fmt: skip
# Predefined roles whose members reach beyond the store (files, programs, other sessions,
# server settings, every table).
OUTSIDE_ROLES = (
    "pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
    "pg_signal_backend", "pg_read_all_settings", "pg_read_all_stats", "pg_stat_scan_tables",
    "pg_monitor", "pg_read_all_data", "pg_write_all_data", "pg_checkpoint",
)  # fmt: skip
_WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ReaderRoleError(RuntimeError):
    """The reader role cannot be made or checked; the message says what to do."""


@dataclass(frozen=True)
class ReaderCheck:
    """What is wrong with a connection's role for the SQL page.

    ``problems`` make the SQL page refuse to run; ``unreadable`` are hstmon tables the role
    cannot read (the SQL page runs, and queries on them fail until the grants are renewed).
    """

    role: str
    problems: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not self.problems


def _hstmon_tables(connection: Connection) -> list[str]:
    """hstmon's tables present in the current schema, in the models' order."""
    present = set(
        connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).scalars()
    )
    return [name for name in Base.metadata.tables if name in present]


def _role_facts(connection: Connection, role: str) -> list[str]:
    facts = connection.execute(
        text(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = current_user"
        )
    ).one()
    problems = []
    if facts.rolsuper:
        problems.append(
            f"{role} is a superuser: it reads the server's files (pg_read_file), runs programs "
            "(COPY ... TO PROGRAM), ends other sessions, and row-level security does not apply "
            "to it"
        )
    elif facts.rolbypassrls:
        problems.append(f"{role} has BYPASSRLS: row-level security does not apply to it")
    if facts.rolcreaterole or facts.rolcreatedb:
        problems.append(f"{role} can create roles or databases")
    outside = connection.execute(
        text(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(:names) "
            "AND pg_has_role(current_user, oid, 'USAGE') ORDER BY rolname"
        ),
        {"names": list(OUTSIDE_ROLES)},
    ).scalars()
    outside = list(outside)
    if outside and not facts.rolsuper:
        problems.append(
            f"{role} has the privileges of {', '.join(outside)}: it reaches beyond the store "
            "(the server's files or programs, other sessions, server settings, every table)"
        )
    return problems


def _table_problems(connection: Connection, role: str, tables: list[str]) -> list[str]:
    if "program" not in tables:
        return ["the store's schema predates program access: run `hstmon db upgrade` first"]
    rows = connection.execute(
        text(
            "SELECT name, c.relrowsecurity, row_security_active(c.oid) AS applies,"
            " has_table_privilege(c.oid, :writes) AS writes"
            " FROM unnest(CAST(:tables AS text[])) AS name"
            " JOIN pg_class c ON c.oid = to_regclass(quote_ident(name))"
        ),
        {"tables": tables, "writes": _WRITE_PRIVILEGES},
    ).all()
    problems = []
    bypassed = [r.name for r in rows if r.relrowsecurity and not r.applies]
    if bypassed:
        problems.append(
            f"row-level security does not apply to {role} on {', '.join(bypassed)} "
            "(it owns them, or is a superuser)"
        )
    writable = [r.name for r in rows if r.writes]
    if writable:
        problems.append(f"{role} can write {', '.join(writable)}")
    return problems


def _create_problems(connection: Connection, role: str) -> list[str]:
    row = connection.execute(
        text(
            "SELECT has_database_privilege(current_database(), 'CREATE') AS database_create,"
            " has_database_privilege(current_database(), 'TEMPORARY') AS temporary,"
            " has_schema_privilege(current_schema(), 'CREATE') AS schema_create"
        )
    ).one()
    problems = []
    if row.database_create or row.schema_create:
        problems.append(f"{role} can create schemas or objects in the store's database")
    if row.temporary:
        problems.append(f"{role} can create temporary tables (TEMPORARY on the database)")
    return problems


def _function_problems(connection: Connection, role: str) -> list[str]:
    names = list(PUBLIC_FUNCTIONS + SERVER_FUNCTIONS)
    callable_names = connection.execute(
        text(
            "SELECT DISTINCT proname FROM pg_proc"
            " WHERE (proname = ANY(:names) OR proname LIKE 'dblink%')"
            " AND has_function_privilege(oid, 'EXECUTE') ORDER BY proname"
        ),
        {"names": names},
    ).scalars()
    found = list(callable_names)
    if not found:
        return []
    return [
        f"{role} may execute {', '.join(found)}: functions that reach the server's files, "
        "other sessions or servers, or change the viewer a session was opened for"
    ]


def reader_check(connection: Connection) -> ReaderCheck:
    """What is wrong with the role of ``connection`` for serving the SQL page.

    The role must be subject to row-level security on every hstmon table, unable to write,
    create, read the server's files, signal other sessions or change its session's viewer.
    """
    role = connection.execute(text("SELECT current_user")).scalar_one()
    tables = _hstmon_tables(connection)
    problems = _role_facts(connection, role)
    if not problems or "superuser" not in problems[0]:
        problems += _table_problems(connection, role, tables)
        problems += _create_problems(connection, role)
        problems += _function_problems(connection, role)
    unreadable = connection.execute(
        text(
            "SELECT t FROM unnest(CAST(:tables AS text[])) AS t"
            " WHERE NOT has_table_privilege(to_regclass(quote_ident(t)), 'SELECT')"
        ),
        {"tables": tables},
    ).scalars()
    return ReaderCheck(role, problems, list(unreadable))


# --- Making the role ------------------------------------------------------------------------------


def _run(connection: Connection, statement: sql.Composable) -> None:
    """A statement composed with psycopg's quoting (identifiers and literals in DDL)."""
    driver = connection.connection.driver_connection
    driver.execute(statement)  # type: ignore[union-attr]


def _owner(connection: Connection) -> str | None:
    """The owner of hstmon's tables when it is not a superuser (a superuser needs no grant)."""
    return connection.execute(
        text(
            "SELECT t.tableowner FROM pg_tables t JOIN pg_roles r ON r.rolname = t.tableowner"
            " WHERE t.schemaname = current_schema() AND t.tablename = 'exposure'"
            " AND NOT r.rolsuper"
        )
    ).scalar()


def _create_or_reset_role(connection: Connection, role: str, password: str | None) -> str:
    existing = connection.execute(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    if existing is not None and existing.rolsuper:
        msg = f"{role} is a superuser; a reader must not be one: choose another role name"
        raise ReaderRoleError(msg)
    verb = "ALTER" if existing is not None else "CREATE"
    attributes = sql.SQL(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
    )
    if password is not None:
        attributes = sql.SQL("{} PASSWORD {}").format(attributes, sql.Literal(password))
    _run(connection, sql.SQL(verb + " ROLE {} {}").format(sql.Identifier(role), attributes))
    # A reader is nobody's member: it has no privileges but the ones granted below.
    memberships = connection.execute(
        text(
            "SELECT m.roleid::regrole::text FROM pg_auth_members m"
            " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = :role"
        ),
        {"role": role},
    ).scalars()
    for granted in list(memberships):
        _run(connection, sql.SQL("REVOKE {} FROM {}").format(
            sql.Identifier(granted), sql.Identifier(role)))  # fmt: skip
    return f"{'updated' if existing is not None else 'created'} role {role}"


def _grant_reading(connection: Connection, role: str, tables: list[str]) -> None:
    who = sql.Identifier(role)
    database = connection.execute(text("SELECT current_database()")).scalar_one()
    schema = connection.execute(text("SELECT current_schema()")).scalar_one()
    _run(connection, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
        sql.Identifier(database), who))  # fmt: skip
    _run(connection, sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who))
    for table in tables:
        name = sql.Identifier(table)
        _run(connection, sql.SQL("REVOKE ALL ON {} FROM {}").format(name, who))
        _run(connection, sql.SQL("GRANT SELECT ON {} TO {}").format(name, who))


def _take_from_public(connection: Connection, role: str, owner: str | None) -> list[str]:
    """Take from PUBLIC, in this database, what a SELECT-only role must not inherit from it;
    the tables' owner keeps it by a grant of its own."""
    taken = []
    database = connection.execute(text("SELECT current_database()")).scalar_one()
    schema = connection.execute(text("SELECT current_schema()")).scalar_one()
    functions = connection.execute(
        text(
            "SELECT oid::regprocedure::text FROM pg_proc"
            " WHERE (proname = ANY(:names) OR proname LIKE 'dblink%')"
            " AND has_function_privilege(:role, oid, 'EXECUTE') ORDER BY 1"
        ),
        {"names": list(PUBLIC_FUNCTIONS + SERVER_FUNCTIONS), "role": role},
    ).scalars()
    names: dict[str, int] = {}
    for function in list(functions):
        signature = sql.SQL(function)  # a regprocedure text: a quoted, typed signature
        _run(connection, sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(signature))
        _run(connection, sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM {}").format(
            signature, sql.Identifier(role)))  # fmt: skip
        if owner:
            _run(connection, sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                signature, sql.Identifier(owner)))  # fmt: skip
        name = function.split("(")[0]
        names[name] = names.get(name, 0) + 1
    if names:
        listed = ", ".join(f"{n} ({k} forms)" if k > 1 else n for n, k in names.items())
        taken.append(f"EXECUTE on {listed}")
    checks = (
        ("TEMPORARY", "DATABASE", database, "has_database_privilege"),
        ("CREATE", "SCHEMA", schema, "has_schema_privilege"),
    )
    for privilege, kind, name, test in checks:
        held = connection.execute(
            text(f"SELECT {test}(:role, :name, :privilege)"),
            {"role": role, "name": name, "privilege": privilege},
        ).scalar_one()
        if not held:
            continue
        on = sql.SQL(f"{privilege} ON {kind} {{}}").format(sql.Identifier(name))
        _run(connection, sql.SQL("REVOKE {} FROM PUBLIC").format(on))
        _run(connection, sql.SQL("REVOKE {} FROM {}").format(on, sql.Identifier(role)))
        if owner:
            _run(connection, sql.SQL("GRANT {} TO {}").format(on, sql.Identifier(owner)))
        taken.append(f"{privilege} on {kind.lower()} {name}")
    return taken


def ensure_reader_role(engine: Engine, role: str, password: str | None = None) -> list[str]:
    """Create (or bring back in line) a login role that can only SELECT hstmon's tables.

    Run as a superuser on the store's database: besides the role and its grants, it takes from
    PUBLIC (in this database only) what the role would inherit from it, EXECUTE on
    ``set_config``, ``pg_terminate_backend``, ``pg_cancel_backend``, the ``lo_`` writers (and
    dblink's functions), TEMPORARY and CREATE, and gives them back to the tables' owner. Returns
    what it did.

    Raises
    ------
    ReaderRoleError
        Not PostgreSQL, not a superuser, a bad role name, or the role still unsafe after all.
    """
    if engine.dialect.name != "postgresql":
        msg = "SQLite has no roles: the SQL page opens the file read-only with an authorizer"
        raise ReaderRoleError(msg)
    if not _ROLE_NAME.fullmatch(role):
        msg = f"{role!r} is not a plain role name (lower-case letters, digits and _)"
        raise ReaderRoleError(msg)
    with engine.begin() as connection:
        superuser = connection.execute(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        ).scalar_one()
        if not superuser:
            msg = (
                "making a reader role changes who may run built-in functions in this database, "
                "which only a superuser may do: give --db a superuser's URL "
                "(e.g. postgresql://postgres@HOST/DATABASE)"
            )
            raise ReaderRoleError(msg)
        tables = _hstmon_tables(connection)
        if "program" not in tables:
            msg = "the store's schema predates program access: run `hstmon db upgrade` first"
            raise ReaderRoleError(msg)
        done = [_create_or_reset_role(connection, role, password)]
        _grant_reading(connection, role, tables)
        done.append(f"granted SELECT on {len(tables)} tables")
        taken = _take_from_public(connection, role, _owner(connection))
        if taken:
            done.append("took from PUBLIC in this database: " + "; ".join(taken))
        check = _check_as(connection, role)
    if not check.safe:
        raise ReaderRoleError(f"{role} is still unsafe: " + "; ".join(check.problems))
    return done


def _check_as(connection: Connection, role: str) -> ReaderCheck:
    _run(connection, sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
    try:
        return reader_check(connection)
    finally:
        connection.execute(text("RESET ROLE"))


def check_reader_role(engine: Engine, role: str) -> ReaderCheck:
    """:func:`reader_check` of ``role``, from a connection as that role or as one that may
    become it (a superuser)."""
    with engine.begin() as connection:
        current = connection.execute(text("SELECT current_user")).scalar_one()
        if current == role:
            return reader_check(connection)
        exists = connection.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
        ).first()
        if exists is None:
            msg = f"there is no role {role}: create it with `hstmon db reader {role}`"
            raise ReaderRoleError(msg)
        return _check_as(connection, role)


def reader_url(url: str, role: str) -> str:
    """``url`` with ``role`` as its user and no password (give it in ~/.pgpass or the URL)."""
    parsed = make_url(url).set(username=role, password=None)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=False)
