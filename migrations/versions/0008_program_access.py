"""program access: proprietary programs, grants, and row-level security on PostgreSQL

Revision ID: 0008
Revises: 0004
Create Date: 2026-11-27 10:12:05.118230+00:00

On PostgreSQL every table that holds a program's data gets a row-level security policy: a role
that does not own the tables (the dashboard's reader, ``hstmon db reader``) sees a row only when
its program is not hidden from the *viewer* its session names in the ``hstmon.viewer`` setting
(JSON ``{"user": ..., "groups": [...]}``, or ``{"all": true}``; none is an anonymous viewer). The
owner of the tables, which ingests and analyses, is not subject to the policies.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The viewer of this session, as the dashboard set it when it connected.
_VIEWER = """
CREATE FUNCTION hstmon_viewer() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('hstmon.viewer', true), ''), '{}')::jsonb
$$
"""
# The grants that name the viewer: their user, or one of their groups.
_VIEWER_GRANT = """
CREATE FUNCTION hstmon_names_viewer(grantee_kind text, grantee text) RETURNS boolean
LANGUAGE sql STABLE AS $$
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
CREATE FUNCTION hstmon_hidden_programs() RETURNS SETOF integer LANGUAGE sql STABLE AS $$
    SELECT p.proposid FROM program p
    WHERE p.proprietary
      AND (p.exclusive_until IS NULL OR p.exclusive_until > now())
      AND NOT coalesce((hstmon_viewer() ->> 'all')::boolean, false)
      AND NOT EXISTS (
          SELECT 1 FROM program_access a
          WHERE a.proposid = p.proposid AND hstmon_names_viewer(a.grantee_kind, a.grantee))
$$
"""
# Files of hidden programs: named after (or linked to) a hidden exposure or association, or,
# not ingested, lying in a hidden program's folder. It must see the rows the viewer cannot, so it
# runs as the owner of the tables; it returns file numbers only, never a path.
_HIDDEN_FILES = r"""
CREATE FUNCTION hstmon_hidden_files() RETURNS SETOF integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    WITH programs AS (SELECT hstmon_hidden_programs() AS proposid),
    exposures AS (
        SELECT exposure_id, jif_file_id, jit_file_id, sci_file_id FROM exposure
        WHERE proposid IN (SELECT proposid FROM programs)),
    associations AS (
        SELECT asn_id, jif_file_id, jit_file_id FROM association
        WHERE proposid IN (SELECT proposid FROM programs)),
    named AS (
        SELECT file_id, status, path, lower(substring(path from '[^/\\]*$')) AS name
        FROM source_file WHERE EXISTS (SELECT 1 FROM programs))
    SELECT file_id FROM (
        SELECT unnest(ARRAY[jif_file_id, jit_file_id, sci_file_id]) FROM exposures
        UNION SELECT unnest(ARRAY[jif_file_id, jit_file_id]) FROM associations
        UNION SELECT file_id FROM fits_header
            WHERE exposure_id IN (SELECT exposure_id FROM exposures)
        UNION SELECT file_id FROM named
            WHERE left(name, 8) IN (SELECT exposure_id FROM exposures)
               OR left(name, 9) IN (SELECT asn_id FROM associations)
               OR (status <> 'ingested' AND EXISTS (
                    SELECT 1 FROM programs WHERE named.path LIKE '%/' || proposid || '/%'))
    ) AS linked(file_id)
    WHERE file_id IS NOT NULL  -- a NULL would make every NOT IN test unknown: all hidden
$$
"""
_NOTHING_HIDDEN = "NOT EXISTS (SELECT hstmon_hidden_programs())"
_OWN_PROGRAM = "proposid IS NULL OR proposid NOT IN (SELECT hstmon_hidden_programs())"


def _of_exposure(table: str) -> str:
    """Rows of a visible exposure; the exposure table's own policy decides which are."""
    return (
        f"{_NOTHING_HIDDEN} OR EXISTS "
        f"(SELECT 1 FROM exposure e WHERE e.exposure_id = {table}.exposure_id)"
    )


# table -> which of its rows a viewer sees. Child tables test their exposure (or association,
# or file) under that table's policy, so one rule, on program, decides everything.
POLICIES: dict[str, str] = {
    "association": _OWN_PROGRAM,
    "exposure": _OWN_PROGRAM,
    "jitter_sample": _of_exposure("jitter_sample"),
    "flag": _of_exposure("flag"),
    "analysis_state": _of_exposure("analysis_state"),
    "image_metric": _of_exposure("image_metric"),
    "psf_measurement": _of_exposure("psf_measurement"),
    "image_preview": _of_exposure("image_preview"),
    "verdict": (
        f"{_NOTHING_HIDDEN} OR CASE WHEN exposure_id IS NOT NULL"
        " THEN EXISTS (SELECT 1 FROM exposure e WHERE e.exposure_id = verdict.exposure_id)"
        " ELSE EXISTS (SELECT 1 FROM association a WHERE a.asn_id = verdict.asn_id) END"
    ),
    "source_file": f"{_NOTHING_HIDDEN} OR file_id NOT IN (SELECT hstmon_hidden_files())",
    "fits_header": (
        f"{_NOTHING_HIDDEN} OR ("
        "EXISTS (SELECT 1 FROM source_file f WHERE f.file_id = fits_header.file_id)"
        " AND (exposure_id IS NULL OR EXISTS"
        " (SELECT 1 FROM exposure e WHERE e.exposure_id = fits_header.exposure_id)))"
    ),
    # A viewer sees the grants that name them (the policies above rely on it), not others'.
    "program_access": "coalesce((hstmon_viewer() ->> 'all')::boolean, false)"
    " OR hstmon_names_viewer(grantee_kind, grantee)",
}
_POLICY_NAME = "hstmon_viewer_sees"
_FUNCTIONS = ("hstmon_hidden_files()", "hstmon_hidden_programs()",
              "hstmon_names_viewer(text, text)", "hstmon_viewer()")  # fmt: skip


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
    for statement in (_VIEWER, _VIEWER_GRANT, _HIDDEN_PROGRAMS, _HIDDEN_FILES):
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
