"""download failures: download_failure (MAST files that failed for good reason, and their next try);
nightly_run's status and counts comments say what a run with outstanding files is

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-29 20:43:34.798683+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NIGHTLY_COMMENTS = {  # column: (before, after)
    "status": (
        "running | succeeded | failed (some downloads failed: the window is covered again) | error (stopped; message says why) | aborted (its process died)",
        "running | succeeded (files outstanding in download_failure included) | failed (a download failed for now: the window is covered again) | error (stopped; message says why) | aborted (its process died)",
    ),
    "counts": (
        "products found, downloaded, present, failed; files",
        "products found, skipped (by reason), downloaded, present, failed (permanent apart), retries due; files; files outstanding",
    ),
}
_NIGHTLY_TYPES = {
    "status": sa.String(length=16),
    "counts": sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
}


def _comment_nightly_run(after: bool) -> None:
    # SQLite keeps no column comments: only PostgreSQL has them to change.
    if op.get_bind().dialect.name != "postgresql":
        return
    for column, comments in _NIGHTLY_COMMENTS.items():
        op.alter_column(
            "nightly_run",
            column,
            existing_type=_NIGHTLY_TYPES[column],
            existing_nullable=column == "counts",
            comment=comments[after],
            existing_comment=comments[not after],
        )


def upgrade() -> None:
    _comment_nightly_run(after=True)
    op.create_table(
        "download_failure",
        sa.Column(
            "failure_id", sa.Integer(), autoincrement=True, nullable=False, comment="record number"
        ),
        sa.Column(
            "uri",
            sa.Text(),
            nullable=False,
            comment="MAST data URI, e.g. mast:HST/product/iepp01uvq_flt.fits",
        ),
        sa.Column(
            "filename", sa.String(length=255), nullable=False, comment="file name, as MAST lists it"
        ),
        sa.Column(
            "obs_id", sa.String(length=64), nullable=False, comment="observation id (lower case)"
        ),
        sa.Column(
            "proposal_id", sa.String(length=16), nullable=False, comment="program (proposal id)"
        ),
        sa.Column(
            "product_type",
            sa.String(length=16),
            nullable=False,
            comment="MAST productSubGroupDescription: FLT, FLC, IMA, JIF, JIT, ASN",
        ),
        sa.Column(
            "listed_size_bytes",
            sa.BigInteger(),
            nullable=True,
            comment="size MAST lists, bytes (may be out of date)",
        ),
        sa.Column(
            "project",
            sa.String(length=32),
            nullable=True,
            comment="MAST project: the calibration pipeline, e.g. CALWF3",
        ),
        sa.Column(
            "data_rights",
            sa.String(length=32),
            nullable=True,
            comment="MAST dataRights: PUBLIC | EXCLUSIVE_ACCESS | ...",
        ),
        sa.Column(
            "released_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="UTC public release of its observation",
        ),
        sa.Column("path", sa.Text(), nullable=False, comment="where it goes in the archive tree"),
        sa.Column("reason", sa.Text(), nullable=False, comment="why the last try failed"),
        sa.Column(
            "attempts",
            sa.Integer(),
            nullable=False,
            comment="nightly runs that tried it and failed (each with its own retries)",
        ),
        sa.Column(
            "first_failed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="UTC time of the first failed run",
        ),
        sa.Column(
            "last_failed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="UTC time of the last failed run",
        ),
        sa.Column(
            "next_try_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="UTC time from which a nightly run tries it again",
        ),
        sa.Column(
            "resolved_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="UTC time a later run fetched it or found it in place; NULL: still outstanding",
        ),
        sa.Column(
            "nightly_run_id",
            sa.Integer(),
            nullable=True,
            comment="the nightly run that last tried it",
        ),
        sa.ForeignKeyConstraint(
            ["nightly_run_id"],
            ["nightly_run.run_id"],
            name=op.f("fk_download_failure_nightly_run_id_nightly_run"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("failure_id", name=op.f("pk_download_failure")),
        sa.UniqueConstraint("uri", name=op.f("uq_download_failure_uri")),
        comment="MAST files whose download failed for good reason, and when to try again.",
    )
    op.create_index(
        "ix_download_failure_resolved_at_next_try_at",
        "download_failure",
        ["resolved_at", "next_try_at"],
        unique=False,
    )


def downgrade() -> None:
    _comment_nightly_run(after=False)
    op.drop_index("ix_download_failure_resolved_at_next_try_at", table_name="download_failure")
    op.drop_table("download_failure")
