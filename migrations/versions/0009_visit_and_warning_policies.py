"""row-level security for visit verdicts, file warnings and outstanding downloads

Revision ID: 0009
Revises: 0005
Create Date: 2026-11-29 23:00:00.000000+00:00

A visit's verdict names its visit (``ipppss``) and no exposure, so the verdict policy reads the
program code from the visit too. ``file_warning`` rows name their exposure and file, and
``download_failure`` rows their program and observation: both hold a program's data and get a
policy like every other such table (PostgreSQL only; SQLite's scoped views say the same).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POLICY_NAME = "hstmon_viewer_sees"
_CODES = "(SELECT hstmon_hidden_codes())"


def _named(column: str) -> str:
    return f"substr({column}, 2, 3) NOT IN {_CODES}"


_VERDICT_BEFORE = _named("coalesce(exposure_id, asn_id)")
_VERDICT = _named("coalesce(exposure_id, visit_id, asn_id)")
NEW_POLICIES: dict[str, str] = {
    "file_warning": (
        f"(exposure_id IS NULL OR {_named('exposure_id')})"
        " AND file_id NOT IN (SELECT hstmon_hidden_files())"
    ),
    "download_failure": (
        "proposal_id NOT IN (SELECT p::text FROM hstmon_hidden_programs() AS p)"
        f" AND {_named('obs_id')}"
    ),
}


def _replace_verdict_policy(visible: str) -> None:
    op.execute(f"DROP POLICY {_POLICY_NAME} ON verdict")
    op.execute(f"CREATE POLICY {_POLICY_NAME} ON verdict FOR SELECT USING ({visible})")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _replace_verdict_policy(_VERDICT)
    for table, visible in NEW_POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {_POLICY_NAME} ON {table} FOR SELECT USING ({visible})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in NEW_POLICIES:
        op.execute(f"DROP POLICY {_POLICY_NAME} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    _replace_verdict_policy(_VERDICT_BEFORE)
