"""analysis: flags, verdicts, runs; exposure proctime and updated_at

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:14:33.901355+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "analysis_run",
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
            "status", sa.String(length=16), nullable=False, comment="running | succeeded | error"
        ),
        sa.Column(
            "rules",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="rule id -> version applied, and the rules file used",
        ),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
            comment="exposures analysed, flags and verdicts written",
        ),
        sa.Column("message", sa.Text(), nullable=True, comment="why a run errored"),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_analysis_run")),
        comment="One row per hstmon analyze invocation.",
    )
    op.create_table(
        "analysis_state",
        sa.Column("exposure_id", sa.String(length=8), nullable=False, comment="exposure"),
        sa.Column(
            "analyzed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="UTC time of the analysis",
        ),
        sa.Column(
            "rules_signature",
            sa.String(length=64),
            nullable=False,
            comment="hash of the rule ids and versions applied",
        ),
        sa.Column("analysis_run_id", sa.Integer(), nullable=True, comment="the run"),
        sa.ForeignKeyConstraint(
            ["analysis_run_id"],
            ["analysis_run.run_id"],
            name=op.f("fk_analysis_state_analysis_run_id_analysis_run"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("exposure_id", name=op.f("pk_analysis_state")),
        comment="Per exposure: the last analysis and the rule versions it used.",
    )
    op.create_table(
        "flag",
        sa.Column(
            "flag_id", sa.Integer(), autoincrement=True, nullable=False, comment="flag number"
        ),
        sa.Column(
            "exposure_id", sa.String(length=8), nullable=False, comment="the flagged exposure"
        ),
        sa.Column(
            "asn_id",
            sa.String(length=9),
            nullable=True,
            comment="its association, for visit-level queries",
        ),
        sa.Column(
            "rule", sa.String(length=40), nullable=False, comment="rule id, e.g. gs_acq_failure"
        ),
        sa.Column(
            "rule_version", sa.Integer(), nullable=False, comment="version of the rule that fired"
        ),
        sa.Column("severity", sa.String(length=8), nullable=False, comment="high | medium | info"),
        sa.Column("message", sa.Text(), nullable=False, comment="what happened, in a sentence"),
        sa.Column(
            "evidence",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="the values that fired the rule and the thresholds they crossed",
        ),
        sa.Column("analysis_run_id", sa.Integer(), nullable=True, comment="the run"),
        sa.ForeignKeyConstraint(
            ["analysis_run_id"],
            ["analysis_run.run_id"],
            name=op.f("fk_flag_analysis_run_id_analysis_run"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("flag_id", name=op.f("pk_flag")),
        sa.UniqueConstraint("exposure_id", "rule", name=op.f("uq_flag_exposure_id_rule")),
        comment="Anomaly flags as rows: new rules never need a migration.",
    )
    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flag_asn_id"), ["asn_id"], unique=False)
        batch_op.create_index("ix_flag_rule_severity", ["rule", "severity"], unique=False)

    op.create_table(
        "verdict",
        sa.Column(
            "verdict_id", sa.Integer(), autoincrement=True, nullable=False, comment="verdict number"
        ),
        sa.Column(
            "exposure_id",
            sa.String(length=8),
            nullable=True,
            comment="the exposure judged (or NULL)",
        ),
        sa.Column(
            "asn_id", sa.String(length=9), nullable=True, comment="the association judged (or NULL)"
        ),
        sa.Column(
            "verdict",
            sa.String(length=16),
            nullable=False,
            comment="hopr | helpdesk | ok | not_repeatable",
        ),
        sa.Column("summary", sa.Text(), nullable=False, comment="the verdict in plain words"),
        sa.Column(
            "reasons",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="why, one sentence each",
        ),
        sa.Column(
            "delivered_on", sa.Date(), nullable=True, comment="best known delivery date of the data"
        ),
        sa.Column(
            "delivery_basis",
            sa.String(length=80),
            nullable=True,
            comment="which keyword gave delivered_on",
        ),
        sa.Column(
            "hopr_deadline",
            sa.Date(),
            nullable=True,
            comment="delivered_on + 90 days: last day to file a HOPR",
        ),
        sa.Column(
            "days_left",
            sa.Integer(),
            nullable=True,
            comment="days from the run date to hopr_deadline (negative: late)",
        ),
        sa.Column(
            "decided_on", sa.Date(), nullable=False, comment="the run date days_left counts from"
        ),
        sa.Column("analysis_run_id", sa.Integer(), nullable=True, comment="the run"),
        sa.CheckConstraint(
            "(exposure_id IS NULL) <> (asn_id IS NULL)", name=op.f("ck_verdict_one_subject")
        ),
        sa.ForeignKeyConstraint(
            ["analysis_run_id"],
            ["analysis_run.run_id"],
            name=op.f("fk_verdict_analysis_run_id_analysis_run"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("verdict_id", name=op.f("pk_verdict")),
        sa.UniqueConstraint("asn_id", name=op.f("uq_verdict_asn_id")),
        sa.UniqueConstraint("exposure_id", name=op.f("uq_verdict_exposure_id")),
        comment="Per exposure or per association: hopr | helpdesk | ok | not_repeatable.",
    )
    with op.batch_alter_table("verdict", schema=None) as batch_op:
        batch_op.create_index(
            "ix_verdict_verdict_deadline", ["verdict", "hopr_deadline"], unique=False
        )

    with op.batch_alter_table("exposure", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "drift_trend_v2_mas",
                sa.Float(),
                nullable=True,
                comment="|slope| x duration of a line fitted to SI_V2_AVG over good rows: steady drift, mas",
            )
        )
        batch_op.add_column(
            sa.Column(
                "drift_trend_v3_mas",
                sa.Float(),
                nullable=True,
                comment="|slope| x duration of a line fitted to SI_V3_AVG over good rows: steady drift, mas",
            )
        )
        batch_op.add_column(
            sa.Column(
                "proctime",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="PROCTIME of the jitter extension: when the observation was processed, UTC",
            )
        )
        batch_op.add_column(
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="UTC time an ingest last changed this row; analysis re-runs on rows newer than it saw",
            )
        )
        batch_op.create_index("ix_exposure_updated_at", ["updated_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("exposure", schema=None) as batch_op:
        batch_op.drop_index("ix_exposure_updated_at")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("proctime")
        batch_op.drop_column("drift_trend_v3_mas")
        batch_op.drop_column("drift_trend_v2_mas")

    with op.batch_alter_table("verdict", schema=None) as batch_op:
        batch_op.drop_index("ix_verdict_verdict_deadline")

    op.drop_table("verdict")
    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.drop_index("ix_flag_rule_severity")
        batch_op.drop_index(batch_op.f("ix_flag_asn_id"))

    op.drop_table("flag")
    op.drop_table("analysis_state")
    op.drop_table("analysis_run")
