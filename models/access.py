"""Who may see which program: proprietary programs, grants, and connections scoped to a viewer.

A program is *hidden* from a viewer while it is proprietary (MAST's exclusive access, or marked
by hand) and no grant in ``program_access`` names the viewer or one of their groups. PostgreSQL
applies that rule itself, with row-level security on each session's ``hstmon.viewer`` setting
(migration 0008); SQLite, which has no such thing, gets the same rule from :func:`scope_sqlite`:
TEMP views that shadow the tables on a read-only connection.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    delete,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from models.tables import Program, ProgramAccess

__all__ = [
    "PROPRIETARY_RIGHTS",
    "SCOPED_TABLES",
    "VIEWER_SETTING",
    "AccessError",
    "Grant",
    "ProgramRights",
    "ProgramStatus",
    "SqliteScope",
    "Viewer",
    "access_report",
    "grant_access",
    "hidden_programs",
    "mark_program",
    "normalise_user",
    "record_data_rights",
    "revoke_access",
    "scope_sqlite",
    "summarize_rights",
]

VIEWER_SETTING = "hstmon.viewer"  # the PostgreSQL session setting the policies read
# MAST dataRights values under which a program's data are not public.
PROPRIETARY_RIGHTS = frozenset({"EXCLUSIVE_ACCESS", "RESTRICTED"})
GRANTEE_KINDS = ("user", "group")


class AccessError(ValueError):
    """An access command cannot do what it was asked; the message says why."""


@dataclass(frozen=True)
class Viewer:
    """Who looks at the store through the dashboard.

    ``user`` is the e-mail (lower case) or subject the login gives, ``groups`` the groups it
    lists; ``everything`` is the store's own operator (the dashboard on 127.0.0.1 without a
    login), from whom nothing is hidden. The default viewer is anonymous: public programs only.
    """

    user: str | None = None
    groups: tuple[str, ...] = ()
    everything: bool = False

    @classmethod
    def person(cls, user: str, groups: Iterable[str] = ()) -> Viewer:
        """A logged-in person: ``user`` as grants name it (trimmed, lower case)."""
        return cls(user=normalise_user(user), groups=tuple(sorted({g.strip() for g in groups})))

    @classmethod
    def operator(cls) -> Viewer:
        return cls(everything=True)

    def setting(self) -> str:
        """The ``hstmon.viewer`` value (JSON) PostgreSQL's policies read for this viewer."""
        if self.everything:
            return json.dumps({"all": True}, separators=(",", ":"))
        return json.dumps({"user": self.user, "groups": list(self.groups)}, separators=(",", ":"))

    def describe(self) -> str:
        if self.everything:
            return "the store's operator (everything)"
        if self.user is None:
            return "anonymous (public programs only)"
        return self.user + (f" (groups: {', '.join(self.groups)})" if self.groups else "")


def normalise_user(user: str) -> str:
    """A user as grants name them: e-mail addresses are case-insensitive, so lower case."""
    return user.strip().lower()


def _names_viewer(viewer: Viewer) -> ColumnElement[bool]:
    """The grants that name ``viewer``: their user, or one of their groups."""
    by_group = and_(
        ProgramAccess.grantee_kind == "group", ProgramAccess.grantee.in_(list(viewer.groups))
    )
    if viewer.user is None:
        return by_group
    by_user = and_(ProgramAccess.grantee_kind == "user", ProgramAccess.grantee == viewer.user)
    return or_(by_user, by_group)


def _hidden_query(viewer: Viewer, moment: datetime) -> Select[tuple[int]]:
    return select(Program.proposid).where(
        Program.proprietary,
        or_(Program.exclusive_until.is_(None), Program.exclusive_until > moment),
        Program.proposid.not_in(select(ProgramAccess.proposid).where(_names_viewer(viewer))),
    )


def hidden_programs(
    connection: Connection, viewer: Viewer, now: datetime | None = None
) -> frozenset[int]:
    """The programs hidden from ``viewer``: proprietary ``now`` (default: the present) and
    granted neither to them nor to a group of theirs.

    The same rule as PostgreSQL's ``hstmon_hidden_programs()`` (migration 0008).
    """
    if viewer.everything:
        return frozenset()
    query = _hidden_query(viewer, now or datetime.now(UTC))
    return frozenset(int(p) for p in connection.execute(query).scalars())


# --- MAST's data rights, as the nightly job sees them ---------------------------------------------


@dataclass(frozen=True)
class ProgramRights:
    """What MAST said of one program's products in one discovery: its most restrictive data
    rights, and when its exclusive data become public (None: MAST gave no date)."""

    proposid: int
    data_rights: str
    exclusive_until: datetime | None


def summarize_rights(
    products: Iterable[tuple[str | int, str | None, datetime | None]],
) -> list[ProgramRights]:
    """Per program, from (proposal id, MAST dataRights, release date) of each product.

    A program is proprietary if any product is; its exclusive access ends with the latest
    release date among those products. Products without rights tell nothing and are skipped.
    """
    found: dict[int, tuple[str, datetime | None]] = {}
    for proposal_id, rights, released in products:
        if not rights or not str(proposal_id).strip().isdigit():
            continue
        proposid, rights = int(proposal_id), rights.strip().upper()
        before = found.get(proposid)
        if rights in PROPRIETARY_RIGHTS:
            if before is None or before[0] not in PROPRIETARY_RIGHTS:
                found[proposid] = (rights, released)
            else:
                found[proposid] = (before[0], _later(before[1], released))
        elif before is None:
            found[proposid] = (rights, None)
    return [ProgramRights(p, r, until) for p, (r, until) in sorted(found.items())]


def _later(first: datetime | None, second: datetime | None) -> datetime | None:
    """The later of two end dates, where None (no date known) is the latest of all."""
    if first is None or second is None:
        return None
    return max(first, second)


def _as_utc(moment: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes back for timezone-aware columns; they are UTC.
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record_data_rights(engine: Engine, rights: Sequence[ProgramRights]) -> list[int]:
    """Record what MAST said of each program's data rights; returns the programs newly hidden.

    MAST only ever makes a program more private here: exclusive data mark it proprietary
    (extending its exclusive period), public data do not unmark it while that period runs, since
    its other data may still be exclusive; the period's end makes it public by itself. Programs
    marked by hand (``hstmon access mark``) are left alone.
    """
    if not rights:
        return []
    now = datetime.now(UTC)
    newly_hidden = []
    with engine.begin() as connection:
        ids = [r.proposid for r in rights]
        rows = connection.execute(select(Program).where(Program.proposid.in_(ids))).mappings()
        known = {row["proposid"]: row for row in rows}
        for right in rights:
            values = _merged(known.get(right.proposid), right, now)
            if values is None:
                continue
            if right.proposid in known:
                statement = update(Program).where(Program.proposid == right.proposid)
                connection.execute(statement.values(**values))
            else:
                connection.execute(insert(Program).values(proposid=right.proposid, **values))
            was_hidden = _is_proprietary(known.get(right.proposid), now)
            if values["proprietary"] and not was_hidden and _is_proprietary(values, now):
                newly_hidden.append(right.proposid)
    return newly_hidden


def _is_proprietary(row: Any, now: datetime) -> bool:
    if row is None or not row["proprietary"]:
        return False
    until = _as_utc(row["exclusive_until"])
    return until is None or until > now


def _merged(row: Any, right: ProgramRights, now: datetime) -> dict[str, Any] | None:
    """The program row's new values after MAST's word, or None to leave it as it is."""
    if row is not None and row["source"] == "hand":
        return None
    exclusive = right.data_rights in PROPRIETARY_RIGHTS
    values: dict[str, Any] = {"data_rights": right.data_rights, "source": "mast",
                              "marked_by": None, "updated_at": now}  # fmt: skip
    if exclusive:
        until = _as_utc(right.exclusive_until)
        if _is_proprietary(row, now):
            until = _later(_as_utc(row["exclusive_until"]), until)
        return values | {"proprietary": True, "exclusive_until": until}
    if _is_proprietary(row, now):
        return None  # still exclusive until its recorded end
    return values | {"proprietary": False, "exclusive_until": None}


# --- Administration: marks and grants -------------------------------------------------------------


def mark_program(
    engine: Engine,
    proposid: int,
    *,
    proprietary: bool,
    until: datetime | None,
    marked_by: str,
) -> None:
    """Mark a program proprietary (until ``until``, or until marked public) or public, by hand.

    A hand mark stands until the next hand mark: the nightly job's MAST rights do not change it.
    """
    if until is not None and not proprietary:
        raise AccessError("--until applies to a proprietary program only")
    values = {"proprietary": proprietary, "exclusive_until": _as_utc(until), "source": "hand",
              "marked_by": marked_by, "updated_at": datetime.now(UTC)}  # fmt: skip
    with engine.begin() as connection:
        known = connection.execute(
            select(Program.data_rights).where(Program.proposid == proposid)
        ).first()
        if known is None:
            connection.execute(insert(Program).values(proposid=proposid, **values))
        else:
            connection.execute(update(Program).where(Program.proposid == proposid).values(**values))


def _grantee(grantee: str, kind: str) -> str:
    if kind not in GRANTEE_KINDS:
        raise AccessError(f"a grant names a user or a group, not a {kind!r}")
    name = normalise_user(grantee) if kind == "user" else grantee.strip()
    if not name:
        raise AccessError(f"the {kind} name is empty")
    return name


def grant_access(engine: Engine, proposid: int, grantee: str, kind: str, granted_by: str) -> bool:
    """Let a user or group see program ``proposid``; False if the grant existed already."""
    name = _grantee(grantee, kind)
    with engine.begin() as connection:
        exists = connection.execute(
            select(ProgramAccess.access_id).where(
                ProgramAccess.proposid == proposid,
                ProgramAccess.grantee_kind == kind,
                ProgramAccess.grantee == name,
            )
        ).first()
        if exists is not None:
            return False
        connection.execute(
            insert(ProgramAccess).values(
                proposid=proposid, grantee=name, grantee_kind=kind, granted_by=granted_by,
                granted_at=datetime.now(UTC),
            )
        )  # fmt: skip
    return True


def revoke_access(engine: Engine, proposid: int, grantee: str, kind: str) -> bool:
    """Take back a grant; False if there was none."""
    name = _grantee(grantee, kind)
    with engine.begin() as connection:
        result = connection.execute(
            delete(ProgramAccess).where(
                ProgramAccess.proposid == proposid,
                ProgramAccess.grantee_kind == kind,
                ProgramAccess.grantee == name,
            )
        )
    return bool(result.rowcount)


@dataclass(frozen=True)
class Grant:
    """One row of ``program_access``, for listing."""

    grantee: str
    kind: str
    granted_by: str
    granted_at: datetime


@dataclass(frozen=True)
class ProgramStatus:
    """A program known to ``program`` or ``program_access``, with who may see it."""

    proposid: int
    proprietary: bool  # hidden from viewers without a grant, now
    exclusive_until: datetime | None
    data_rights: str | None
    source: str | None  # mast | hand | None (no row: public)
    marked_by: str | None
    grants: tuple[Grant, ...]


def access_report(engine: Engine, proposids: Sequence[int] = ()) -> list[ProgramStatus]:
    """Every program marked or granted (or just ``proposids``), with its grants."""
    now = datetime.now(UTC)
    programs = select(Program)
    grants = select(ProgramAccess).order_by(ProgramAccess.grantee_kind, ProgramAccess.grantee)
    if proposids:
        programs = programs.where(Program.proposid.in_(list(proposids)))
        grants = grants.where(ProgramAccess.proposid.in_(list(proposids)))
    with engine.connect() as connection:
        rows = {row["proposid"]: row for row in connection.execute(programs).mappings()}
        by_program: dict[int, list[Grant]] = {}
        for g in connection.execute(grants).mappings():
            by_program.setdefault(g["proposid"], []).append(
                Grant(g["grantee"], g["grantee_kind"], g["granted_by"], _as_utc(g["granted_at"]))
            )
    report = []
    for proposid in sorted(set(rows) | set(by_program) | set(proposids)):
        row = rows.get(proposid)
        report.append(
            ProgramStatus(
                proposid=proposid,
                proprietary=_is_proprietary(row, now),
                exclusive_until=_as_utc(row["exclusive_until"]) if row else None,
                data_rights=row["data_rights"] if row else None,
                source=row["source"] if row else None,
                marked_by=row["marked_by"] if row else None,
                grants=tuple(by_program.get(proposid, ())),
            )
        )
    return report


# --- SQLite: a read-only connection scoped to a viewer --------------------------------------------

# An HST name (ipppssoo) carries its program's code, ppp, one to one with the proposal id: the
# codes of the hidden programs' exposures and visits tell every row named after them.
_HIDDEN_CODES = """
SELECT substr(exposure_id, 2, 3) FROM main.exposure WHERE proposid IN ({programs})
UNION SELECT substr(asn_id, 2, 3) FROM main.association WHERE proposid IN ({programs})
"""
# A file's name: what follows the last '/' (rtrim removes every character but '/' from the end).
_FILE_NAME = "lower(substr(path, length(rtrim(path, replace(path, '/', ''))) + 1))"
# Files of hidden programs their names do not tell (science files may be named anything).
_LINKED_FILES = """
SELECT file_id FROM (
    SELECT jif_file_id AS file_id FROM main.exposure WHERE proposid IN ({programs})
    UNION SELECT jit_file_id FROM main.exposure WHERE proposid IN ({programs})
    UNION SELECT sci_file_id FROM main.exposure WHERE proposid IN ({programs})
    UNION SELECT jif_file_id FROM main.association WHERE proposid IN ({programs})
    UNION SELECT jit_file_id FROM main.association WHERE proposid IN ({programs})
    UNION SELECT file_id FROM main.fits_header WHERE exposure_id IN
        (SELECT exposure_id FROM main.exposure WHERE proposid IN ({programs}))
) WHERE file_id IS NOT NULL
"""
_FILE_VISIBLE = (
    f"substr({_FILE_NAME}, 2, 3) NOT IN ({{codes}}) AND file_id NOT IN ({_LINKED_FILES})"
    " AND (status = 'ingested' OR NOT ({folders}))"
)


def _named(column: str) -> str:
    return f"substr({column}, 2, 3) NOT IN ({{codes}})"


_OWN_PROGRAM = "(proposid IS NULL OR proposid NOT IN ({programs}))"
# table -> which rows a viewer sees: the same rule as PostgreSQL's policies (migrations 0008,
# 0009). Every table that holds a program's data is here; the others hold none.
SCOPED_TABLES: dict[str, str] = {
    "association": f"{_OWN_PROGRAM} AND {_named('asn_id')}",
    "exposure": f"{_OWN_PROGRAM} AND {_named('exposure_id')}",
    "jitter_sample": _named("exposure_id"),
    "flag": _named("exposure_id"),
    "analysis_state": _named("exposure_id"),
    "image_metric": _named("exposure_id"),
    "psf_measurement": _named("exposure_id"),
    "image_preview": _named("exposure_id"),
    "verdict": _named("coalesce(exposure_id, visit_id, asn_id)"),
    "source_file": _FILE_VISIBLE,
    "fits_header": f"(exposure_id IS NULL OR {_named('exposure_id')})"
    f" AND file_id IN (SELECT file_id FROM main.source_file WHERE {_FILE_VISIBLE})",
    "file_warning": f"(exposure_id IS NULL OR {_named('exposure_id')})"
    f" AND file_id IN (SELECT file_id FROM main.source_file WHERE {_FILE_VISIBLE})",
    "download_failure": f"CAST(proposal_id AS INTEGER) NOT IN ({{programs}})"
    f" AND {_named('obs_id')}",
    "program_access": "{names_viewer}",
}


def _sqlite_text(clause: ClauseElement) -> str:
    """A SQLAlchemy clause as SQLite SQL with its values inlined (a view takes no parameters)."""
    compiled = clause.compile(dialect=sqlite_dialect(), compile_kwargs={"literal_binds": True})
    return str(compiled)


@dataclass(frozen=True)
class SqliteScope:
    """The TEMP views of a connection scoped to a viewer.

    ``views`` are named as the tables they shadow; each reads a ``sources`` view, named with a
    secret of this connection, which alone reads the table from main. A query's own reads can
    name a view (or a CTE) ``exposure``, never a name it cannot know: an authorizer lets only the
    ``sources`` views read the scoped tables of main.
    """

    views: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()


def scope_sqlite(connection: sqlite3.Connection, viewer: Viewer) -> SqliteScope:
    """Shadow the tables that hold programs' data with TEMP views leaving out the programs hidden
    from ``viewer``; an empty scope when nothing is hidden from them.

    Statements that name a table without a schema read the TEMP view: call this on a fresh
    connection, before it is made read-only (``PRAGMA query_only``).
    """
    try:
        hidden = _sqlite_hidden_programs(connection, viewer)
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):  # a store older than program access hides nothing
            return SqliteScope()
        raise
    if not hidden:
        return SqliteScope()
    programs = ", ".join(str(int(p)) for p in sorted(hidden))
    folders = " OR ".join(f"path LIKE '%/{int(p)}/%'" for p in sorted(hidden))
    found = connection.execute(_HIDDEN_CODES.format(programs=programs)).fetchall()
    # No code at all (a hidden program without data here): one no name holds, not NULL (which
    # would make every NOT IN unknown, and hide everything).
    codes = ", ".join(_sqlite_text(literal(str(code))) for (code,) in found) or "'/'"
    secret = f"hstmon_{secrets.token_hex(16)}"
    for table, visible in SCOPED_TABLES.items():
        condition = visible.format(
            programs=programs, folders=folders, codes=codes,
            names_viewer=_sqlite_text(_names_viewer(viewer)),
        )  # fmt: skip
        connection.execute(
            f"CREATE TEMP VIEW {secret}_{table} AS SELECT * FROM main.{table} WHERE {condition}"
        )
        connection.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM temp.{secret}_{table}")
    return SqliteScope(
        views=frozenset(SCOPED_TABLES), sources=frozenset(f"{secret}_{t}" for t in SCOPED_TABLES)
    )


def _sqlite_hidden_programs(connection: sqlite3.Connection, viewer: Viewer) -> set[int]:
    if viewer.everything:
        return set()
    # Run before the views exist: unqualified names are the tables of main.
    query = _sqlite_text(_hidden_query(viewer, datetime.now(UTC)))
    return {int(row[0]) for row in connection.execute(query)}
