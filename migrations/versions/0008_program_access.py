"""program access: proprietary programs, grants, and row-level security on PostgreSQL

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-27 10:12:05.118230+00:00

On PostgreSQL every table that holds a program's data gets a row-level security policy: a role
that does not own the tables (the dashboard's reader, ``hstmon db reader``) sees a row only when
its program is not hidden from the *viewer* its session names in the ``hstmon.viewer`` setting
(JSON ``{"user": ..., "groups": [...]}``, or ``{"all": true}``; none is an anonymous viewer). A
row's program is its own proposid, or the program code its exposure or visit name carries
(``ipppssoo``), so no policy joins another table on every row. The owner of the tables, which
ingests and analyses, is not subject to the policies.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The viewer of this session, as the dashboard set it when it connected.
_VIEWER = """
CREATE FUNCTION hstmon_viewer() RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(current_setting('hstmon.viewer', true), ''), '{}')::jsonb
$$
"""
# The grants that name the viewer: their user, or one of their groups.
_VIEWER_GRANT = """
CREATE FUNCTION hstmon_names_viewer(grantee_kind text, grantee text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE grantee_kind
        WHEN 'user' THEN grantee = hstmon_viewer() ->> 'user'
        WHEN 'group' THEN grantee IN (
            SELECT jsonb_array_elements_text(coalesce(hstmon_viewer() -> 'groups', '[]')))
        ELSE false
    END
$$
"""
# Programs hidden from the viewer: proprietary now, and granted neither to them nor to a group
# of theirs. The same rule as models.access.hidden_programs (SQLite and the digest use that one).
_HIDDEN_PROGRAMS = """
CREATE FUNCTION hstmon_hidden_programs() RETURNS SETOF integer
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT p.proposid FROM program p
    WHERE p.proprietary
      AND (p.exclusive_until IS NULL OR p.exclusive_until > now())
      AND NOT coalesce((hstmon_viewer() ->> 'all')::boolean, false)
      AND NOT EXISTS (
          SELECT 1 FROM program_access a
          WHERE a.proposid = p.proposid AND hstmon_names_viewer(a.grantee_kind, a.grantee))
$$
"""
# The program codes of hidden programs: an HST name (ipppssoo) carries its program's code,
# ppp, one to one with the proposal id, so every row named after an exposure or a visit of a
# hidden program is told by its name alone, without a join. It must read the rows the viewer
# cannot see, so it runs as the tables' owner; it returns the codes only (no more secret than
# the program numbers of the program table).
_HIDDEN_CODES = """
CREATE FUNCTION hstmon_hidden_codes() RETURNS SETOF text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT substr(exposure_id, 2, 3) FROM exposure
    WHERE proposid IN (SELECT hstmon_hidden_programs())
    UNION SELECT substr(asn_id, 2, 3) FROM association
    WHERE proposid IN (SELECT hstmon_hidden_programs())
$$
"""
# Files of hidden programs that their names do not tell: the files of their exposures and
# visits (science files may be named anything). File numbers only, never a path.
_HIDDEN_FILES = """
CREATE FUNCTION hstmon_hidden_files() RETURNS SETOF integer
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    WITH exposures AS (
        SELECT exposure_id, jif_file_id, jit_file_id, sci_file_id FROM exposure
        WHERE proposid IN (SELECT hstmon_hidden_programs())),
    associations AS (
        SELECT jif_file_id, jit_file_id FROM association
        WHERE proposid IN (SELECT hstmon_hidden_programs()))
    SELECT file_id FROM (
        SELECT unnest(ARRAY[jif_file_id, jit_file_id, sci_file_id]) FROM exposures
        UNION SELECT unnest(ARRAY[jif_file_id, jit_file_id]) FROM associations
        UNION SELECT file_id FROM fits_header
            WHERE exposure_id IN (SELECT exposure_id FROM exposures)
    ) AS linked(file_id)
    WHERE file_id IS NOT NULL  -- a NULL would make every NOT IN test unknown: all hidden
$$
"""
# The program code of a file: characters 2-4 of its name (after the last '/').
_FILE_CODE = r"""
CREATE FUNCTION hstmon_file_code(path text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(substr(reverse(split_part(reverse(path), '/', 1)), 2, 3))
$$
"""
_CODES = "(SELECT hstmon_hidden_codes())"


def _named(column: str) -> str:
    """Rows named after an exposure or visit of a program that is not hidden."""
    return f"substr({column}, 2, 3) NOT IN {_CODES}"


_OWN_PROGRAM = "(proposid IS NULL OR proposid NOT IN (SELECT hstmon_hidden_programs()))"

# table -> which of its rows a viewer sees. One rule, on program, decides everything: a row
# belongs to a program by its own proposid, by the name it carries, or by its file's links.
POLICIES: dict[str, str] = {
    "association": f"{_OWN_PROGRAM} AND {_named('asn_id')}",
    "exposure": f"{_OWN_PROGRAM} AND {_named('exposure_id')}",
    "jitter_sample": _named("exposure_id"),
    "flag": _named("exposure_id"),
    "analysis_state": _named("exposure_id"),
    "image_metric": _named("exposure_id"),
    "psf_measurement": _named("exposure_id"),
    "image_preview": _named("exposure_id"),
    "verdict": _named("coalesce(exposure_id, asn_id)"),
    "source_file": (
        f"hstmon_file_code(path) NOT IN {_CODES}"
        " AND file_id NOT IN (SELECT hstmon_hidden_files())"
        " AND (status = 'ingested' OR NOT EXISTS (SELECT 1 FROM hstmon_hidden_programs() p"
        " WHERE path LIKE '%/' || p || '/%'))"  # a failed file, in a hidden program's folder
    ),
    "fits_header": (
        f"(exposure_id IS NULL OR {_named('exposure_id')})"
        " AND file_id NOT IN (SELECT hstmon_hidden_files())"
        " AND (NOT EXISTS (SELECT hstmon_hidden_programs())"
        " OR EXISTS (SELECT 1 FROM source_file f WHERE f.file_id = fits_header.file_id))"
    ),
    # A viewer sees the grants that name them (the rule above relies on it), not others'.
    "program_access": "coalesce((hstmon_viewer() ->> 'all')::boolean, false)"
    " OR hstmon_names_viewer(grantee_kind, grantee)",
}
_POLICY_NAME = "hstmon_viewer_sees"
_FUNCTIONS = ("hstmon_file_code(text)", "hstmon_hidden_files()", "hstmon_hidden_codes()",
              "hstmon_hidden_programs()", "hstmon_names_viewer(text, text)",
              "hstmon_viewer()")  # fmt: skip


def _create_tables() -> None:
    op.create_table(
        "program",
        sa.Column(
            "proposid",
            sa.Integer(),
            autoincrement=False,
            nullable=False,
            comment="program (proposal) id",
        ),
        sa.Column(
            "proprietary",
            sa.Boolean(),
            nullable=False,
            comment="T while its data are under exclusive access: hidden from dashboard viewers without a grant in program_access",
        ),
        sa.Column(
            "exclusive_until",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="UTC end of exclusive access (MAST t_obs_release of its latest exclusive data); after it the program is public; NULL: proprietary until marked public",
        ),
        sa.Column(
            "data_rights",
            sa.String(length=32),
            nullable=True,
            comment="MAST dataRights last seen by hstmon nightly: PUBLIC, EXCLUSIVE_ACCESS or RESTRICTED",
        ),
        sa.Column(
            "source",
            sa.String(length=8),
            nullable=False,
            comment="mast (hstmon nightly read MAST's data rights) | hand (hstmon access mark; nightly leaves it alone)",
        ),
        sa.Column(
            "marked_by", sa.String(length=255), nullable=True, comment="who marked it by hand"
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="UTC time of the last change",
        ),
        sa.CheckConstraint("source IN ('mast', 'hand')", name=op.f("ck_program_source")),
        sa.PrimaryKeyConstraint("proposid", name=op.f("pk_program")),
        comment="Per program: proprietary or public, from MAST's data rights or by hand.",
    )
    op.create_table(
        "program_access",
        sa.Column(
            "access_id", sa.Integer(), autoincrement=True, nullable=False, comment="grant number"
        ),
        sa.Column(
            "proposid",
            sa.Integer(),
            nullable=False,
            comment="program (proposal) id the grant opens",
        ),
        sa.Column(
            "grantee",
            sa.String(length=255),
            nullable=False,
            comment="a user's e-mail (lower case) as the login gives it, or a group name",
        ),
        sa.Column("grantee_kind", sa.String(length=8), nullable=False, comment="user | group"),
        sa.Column("granted_by", sa.String(length=255), nullable=False, comment="who granted it"),
        sa.Column(
            "granted_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="UTC time of the grant",
        ),
        sa.CheckConstraint(
            "grantee_kind IN ('user', 'group')", name=op.f("ck_program_access_grantee_kind")
        ),
        sa.PrimaryKeyConstraint("access_id", name=op.f("pk_program_access")),
        sa.UniqueConstraint(
            "proposid",
            "grantee_kind",
            "grantee",
            name=op.f("uq_program_access_proposid_grantee_kind_grantee"),
        ),
        comment="Who may see which proprietary program: users (login e-mail) or groups.",
    )


def upgrade() -> None:
    _create_tables()
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no roles: the dashboard scopes its own connections (dashboard/)
    for statement in (_VIEWER, _VIEWER_GRANT, _HIDDEN_PROGRAMS, _HIDDEN_CODES, _HIDDEN_FILES,
                      _FILE_CODE):  # fmt: skip
        op.execute(statement)
    for table, visible in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {_POLICY_NAME} ON {table} FOR SELECT USING ({visible})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in POLICIES:
            op.execute(f"DROP POLICY {_POLICY_NAME} ON {table}")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        for function in _FUNCTIONS:
            op.execute(f"DROP FUNCTION {function}")
    op.drop_table("program_access")
    op.drop_table("program")
