"""nightly runs: nightly_run (MAST discovery window, downloads, digest); aborted ingest runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 18:03:40.491365+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_OLD_STATUS_COMMENT = (
    "running (or killed: no finished_at) | succeeded | failed (a file failed) | error"
)
_NEW_STATUS_COMMENT = "running | succeeded | failed (a file failed) | error | aborted (its process died; marked by a later run on the same machine)"


def _comment_ingest_status(comment: str, existing: str) -> None:
    # SQLite keeps no column comments: only PostgreSQL has one to change.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "ingest_run",
            "status",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment=comment,
            existing_comment=existing,
        )


def upgrade() -> None:
    _comment_ingest_status(_NEW_STATUS_COMMENT, _OLD_STATUS_COMMENT)
    op.create_table(
        "nightly_run",
        sa.Column("run_id", sa.Integer(), autoincrement=True, nullable=False, comment="run number"),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, comment="UTC start of the run"
        ),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="UTC end of the run; NULL while running or killed",
        ),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="running | succeeded | failed (some downloads failed: the window is covered again) | error (stopped; message says why) | aborted (its process died)",
        ),
        sa.Column(
            "stage",
            sa.String(length=16),
            nullable=False,
            comment="last stage begun: discover | download | ingest | analyze | digest",
        ),
        sa.Column(
            "date_field",
            sa.String(length=16),
            nullable=False,
            comment="release (t_obs_release) or observation (t_min): what the window bounds",
        ),
        sa.Column(
            "window_start",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="UTC start of the discovery window (inclusive); NULL: no lower bound",
        ),
        sa.Column(
            "window_end",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="UTC end of the discovery window (exclusive)",
        ),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="selection (programs, instruments, products), archive root, scheduler",
        ),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
            comment="products found, downloaded, present, failed; files",
        ),
        sa.Column("ingest_run_id", sa.Integer(), nullable=True, comment="the ingest it ran"),
        sa.Column("analysis_run_id", sa.Integer(), nullable=True, comment="the analysis it ran"),
        sa.Column(
            "digest",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
            comment="the digest as JSON: new flags, verdicts, problems",
        ),
        sa.Column("host", sa.String(length=255), nullable=False, comment="machine the run ran on"),
        sa.Column("pid", sa.Integer(), nullable=False, comment="process id of the run"),
        sa.Column(
            "message", sa.Text(), nullable=True, comment="why a run failed, errored or was aborted"
        ),
        sa.ForeignKeyConstraint(
            ["analysis_run_id"],
            ["analysis_run.run_id"],
            name=op.f("fk_nightly_run_analysis_run_id_analysis_run"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"],
            ["ingest_run.run_id"],
            name=op.f("fk_nightly_run_ingest_run_id_ingest_run"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_nightly_run")),
        comment="One row per hstmon nightly run: discovery, download, digest.",
    )


def downgrade() -> None:
    _comment_ingest_status(_OLD_STATUS_COMMENT, _NEW_STATUS_COMMENT)
    op.drop_table("nightly_run")
