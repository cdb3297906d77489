"""verdicts per visit (ipppss) and incomplete; file_warning; exposure kind and JIT status columns

Revision ID: 0005
Revises: 0008
Create Date: 2026-11-29 20:40:47.257134+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_CHECK = "(exposure_id IS NULL) <> (asn_id IS NULL)"
_NEW_CHECK = (
    "(CASE WHEN exposure_id IS NULL THEN 0 ELSE 1 END"
    " + CASE WHEN asn_id IS NULL THEN 0 ELSE 1 END"
    " + CASE WHEN visit_id IS NULL THEN 0 ELSE 1 END) = 1"
)
# (table, column, type, old comment, new comment): SQLite keeps no comments, PostgreSQL does.
_COMMENTS = (
    ("image_metric", "frac_cosmic_ray", sa.Float(), "fraction of pixels flagged cosmic ray (DQ)",
     "fraction of pixels flagged cosmic ray (DQ 4096 AstroDrizzle, 8192; IR also 1024)"),
    ("verdict", "asn_id", sa.String(length=9), "the association judged (or NULL)",
     "the association judged, in stores analysed before visits were judged as ipppss (the next "
     "analysis replaces such rows by visit rows)"),
    ("verdict", "verdict", sa.String(length=16), "hopr | helpdesk | ok | not_repeatable",
     "hopr | helpdesk | ok | not_repeatable | incomplete (the observing logs needed to judge are "
     "not in the store)"),
    ("verdict", "delivered_on", sa.Date(), "best known delivery date of the data",
     "first delivery of the data: the earliest date the store knows (a later reprocessing never "
     "moves it)"),
    ("verdict", "delivery_basis", sa.String(length=80), "which keyword gave delivered_on",
     "which date gave delivered_on"),
)  # fmt: skip
_OLD_TABLE_COMMENT = "Per exposure or per association: hopr | helpdesk | ok | not_repeatable."
_NEW_TABLE_COMMENT = (
    "Per exposure or per visit (ipppss): hopr | helpdesk | ok | not_repeatable | incomplete."
)
_EXPOSURE_COLUMNS = (
    ("asn_memprsnt", sa.Boolean(),
     "MEMPRSNT of the association table: F = the member's data are not present"),
    ("drift_rate_mas_s", sa.Float(),
     "combined V2/V3 drift rate: hypot of the slopes of lines fitted to SI_V2_AVG and SI_V3_AVG "
     "over good rows, mas/s"),
    ("jit_n_slew", sa.Integer(), "JIT rows with SlewFlag=1 (slewing)"),
    ("jit_n_slew_guided", sa.Integer(),
     "JIT rows with SlewFlag=1 and TakeData=1: slewing while data were taken"),
    ("jit_n_recenter", sa.Integer(), "JIT rows with Recenter=1 (recentering)"),
    ("imagetyp", sa.String(length=32), "IMAGETYP: EXT for external targets, else BIAS, DARK..."),
    ("obsmode", sa.String(length=32),
     "OBSMODE: ACCUM, MULTIACCUM; ACQ... for COS/STIS acquisitions"),
    ("exptype", sa.String(length=32), "EXPTYPE (COS): ACQ/SEARCH... for acquisitions"),
    ("postarg1_arcsec", sa.Float(), "POSTARG1: POS TARG offset, axis 1, arcsec"),
    ("postarg2_arcsec", sa.Float(), "POSTARG2: POS TARG offset, axis 2, arcsec"),
    ("first_ingested_at", sa.DateTime(timezone=True),
     "UTC time an ingest first wrote this row: the data had been delivered by then"),
)  # fmt: skip
_MTFLAG_COMMENT = "MTFLAG: T for a moving target"


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _comments(new: bool) -> None:
    if not _postgresql():
        return
    for table, column, type_, old_comment, new_comment in _COMMENTS:
        op.alter_column(
            table,
            column,
            existing_type=type_,
            comment=new_comment if new else old_comment,
            existing_comment=old_comment if new else new_comment,
        )
    op.create_table_comment(
        "verdict",
        _NEW_TABLE_COMMENT if new else _OLD_TABLE_COMMENT,
        existing_comment=_OLD_TABLE_COMMENT if new else _NEW_TABLE_COMMENT,
    )


def _mtflag_to_boolean() -> None:
    text_to_bool = (
        "CASE WHEN upper(trim(mtflag)) = 'T' THEN {true} "
        "WHEN upper(trim(mtflag)) = 'F' THEN {false} END"
    )
    if _postgresql():
        op.alter_column(
            "exposure",
            "mtflag",
            existing_type=sa.String(length=4),
            type_=sa.Boolean(),
            existing_comment=_MTFLAG_COMMENT,
            postgresql_using=text_to_bool.format(true="true", false="false"),
        )
        return
    # SQLite keeps any value in any column: turn 'T'/'F' into 1/0 before the type changes.
    op.execute(f"UPDATE exposure SET mtflag = {text_to_bool.format(true='1', false='0')}")
    with op.batch_alter_table("exposure") as batch_op:
        batch_op.alter_column("mtflag", existing_type=sa.String(length=4), type_=sa.Boolean())


def _mtflag_to_text() -> None:
    bool_to_text = "CASE WHEN mtflag THEN 'T' WHEN NOT mtflag THEN 'F' END"
    if _postgresql():
        op.alter_column(
            "exposure",
            "mtflag",
            existing_type=sa.Boolean(),
            type_=sa.String(length=4),
            existing_comment=_MTFLAG_COMMENT,
            postgresql_using=bool_to_text,
        )
        return
    with op.batch_alter_table("exposure") as batch_op:
        batch_op.alter_column("mtflag", existing_type=sa.Boolean(), type_=sa.String(length=4))
    op.execute(f"UPDATE exposure SET mtflag = {bool_to_text}")


def upgrade() -> None:
    op.create_table(
        "file_warning",
        sa.Column("file_id", sa.Integer(), nullable=False, comment="the file that holds the value"),
        sa.Column(
            "hdu_index",
            sa.Integer(),
            autoincrement=False,
            nullable=False,
            comment="0 = primary HDU",
        ),
        sa.Column("keyword", sa.String(length=16), nullable=False, comment="FITS keyword"),
        sa.Column(
            "exposure_id",
            sa.String(length=8),
            nullable=True,
            comment="the exposure the HDU describes (NULL: the whole file)",
        ),
        sa.Column("raw_value", sa.Text(), nullable=True, comment="the value as the file wrote it"),
        sa.Column(
            "message",
            sa.Text(),
            nullable=False,
            comment="file, HDU, keyword and what was expected, in a sentence",
        ),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["source_file.file_id"],
            name=op.f("fk_file_warning_file_id_source_file"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "hdu_index", "keyword", name=op.f("pk_file_warning")),
        comment="Keyword values that could not be read; the rest of each file was ingested.",
    )
    with op.batch_alter_table("file_warning") as batch_op:
        batch_op.create_index("ix_file_warning_exposure_id", ["exposure_id"], unique=False)

    with op.batch_alter_table("exposure") as batch_op:
        for name, type_, comment in _EXPOSURE_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True, comment=comment))
    _mtflag_to_boolean()

    with op.batch_alter_table("verdict") as batch_op:
        batch_op.add_column(
            sa.Column(
                "visit_id",
                sa.String(length=6),
                nullable=True,
                comment="the visit judged: ipppss, the first 6 characters of its exposures "
                "(or NULL)",
            )
        )
        batch_op.create_unique_constraint(batch_op.f("uq_verdict_visit_id"), ["visit_id"])
        batch_op.drop_constraint(batch_op.f("ck_verdict_one_subject"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_verdict_one_subject"), _NEW_CHECK)
    _comments(new=True)


def downgrade() -> None:
    _comments(new=False)
    # Visit rows have no place in the older schema: the next analysis by an older hstmon
    # writes association rows again.
    op.execute("DELETE FROM verdict WHERE visit_id IS NOT NULL")
    with op.batch_alter_table("verdict") as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_verdict_one_subject"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_verdict_one_subject"), _OLD_CHECK)
        batch_op.drop_constraint(batch_op.f("uq_verdict_visit_id"), type_="unique")
        batch_op.drop_column("visit_id")

    _mtflag_to_text()
    with op.batch_alter_table("exposure") as batch_op:
        for name, _, _ in reversed(_EXPOSURE_COLUMNS):
            batch_op.drop_column(name)

    with op.batch_alter_table("file_warning") as batch_op:
        batch_op.drop_index("ix_file_warning_exposure_id")
    op.drop_table("file_warning")
