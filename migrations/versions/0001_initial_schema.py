"""initial schema: jitter files, exposures, samples, headers

Revision ID: 0001
Revises:
Create Date: 2026-11-26 14:56:41.914951+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "ingest_run",
        sa.Column("run_id", sa.Integer(), autoincrement=True, nullable=False, comment="run number"),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, comment="UTC start of the run"
        ),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="UTC end of the run; NULL while running or if killed",
        ),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="running (or killed: no finished_at) | succeeded | failed (a file failed) | error",
        ),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="paths, scheduler, workers and options the run was given",
        ),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
            comment="files seen/ingested/unchanged/failed/skipped, rows",
        ),
        sa.Column("message", sa.Text(), nullable=True, comment="why a run errored"),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_ingest_run")),
        comment="One row per hstmon ingest invocation.",
    )
    op.create_table(
        "jitter_sample",
        sa.Column(
            "exposure_id",
            sa.String(length=8),
            nullable=False,
            comment="exposure (first 8 chars of EXPNAME)",
        ),
        sa.Column(
            "sample_index",
            sa.Integer(),
            autoincrement=False,
            nullable=False,
            comment="0-based row number in the table",
        ),
        sa.Column("seconds", sa.Float(), nullable=False, comment="s from observation window start"),
        sa.Column(
            "v2_dom", sa.Float(), nullable=True, comment="dominant FGS V2 coordinate, arcsec"
        ),
        sa.Column(
            "v3_dom", sa.Float(), nullable=True, comment="dominant FGS V3 coordinate, arcsec"
        ),
        sa.Column("v2_roll", sa.Float(), nullable=True, comment="roll FGS V2 coordinate, arcsec"),
        sa.Column("v3_roll", sa.Float(), nullable=True, comment="roll FGS V3 coordinate, arcsec"),
        sa.Column(
            "si_v2_avg", sa.Float(), nullable=True, comment="mean jitter in V2 over 3 s, arcsec"
        ),
        sa.Column(
            "si_v2_rms", sa.Float(), nullable=True, comment="rms jitter in V2 over 3 s, arcsec"
        ),
        sa.Column(
            "si_v2_p2p", sa.Float(), nullable=True, comment="peak jitter in V2 over 3 s, arcsec"
        ),
        sa.Column(
            "si_v3_avg", sa.Float(), nullable=True, comment="mean jitter in V3 over 3 s, arcsec"
        ),
        sa.Column(
            "si_v3_rms", sa.Float(), nullable=True, comment="rms jitter in V3 over 3 s, arcsec"
        ),
        sa.Column(
            "si_v3_p2p", sa.Float(), nullable=True, comment="peak jitter in V3 over 3 s, arcsec"
        ),
        sa.Column("ra", sa.Float(), nullable=True, comment="RA of aperture reference, deg"),
        sa.Column("dec", sa.Float(), nullable=True, comment="Dec of aperture reference, deg"),
        sa.Column(
            "roll", sa.Float(), nullable=True, comment="position angle between north and +V3, deg"
        ),
        sa.Column(
            "limb_ang", sa.Float(), nullable=True, comment="angle between V1 and Earth limb, deg"
        ),
        sa.Column(
            "term_ang",
            sa.Float(),
            nullable=True,
            comment="angle between V1 and terminator, deg; 1.6e36 is NULL",
        ),
        sa.Column(
            "los_zenith",
            sa.Float(),
            nullable=True,
            comment="angle between HST zenith and target, deg",
        ),
        sa.Column("latitude", sa.Float(), nullable=True, comment="HST subpoint latitude, deg"),
        sa.Column("longitude", sa.Float(), nullable=True, comment="HST subpoint longitude, deg"),
        sa.Column("mag_v1", sa.Float(), nullable=True, comment="magnetic field along V1, Gauss"),
        sa.Column("mag_v2", sa.Float(), nullable=True, comment="magnetic field along V2, Gauss"),
        sa.Column("mag_v3", sa.Float(), nullable=True, comment="magnetic field along V3, Gauss"),
        sa.Column(
            "bright_limb",
            sa.SmallInteger(),
            nullable=True,
            comment="1 = Earth limb of LimbAng is bright",
        ),
        sa.Column("fgs_flags", sa.Float(), nullable=True, comment="FGS status flags"),
        sa.Column("day_night", sa.SmallInteger(), nullable=True, comment="1 = day, 0 = night"),
        sa.Column(
            "recenter", sa.SmallInteger(), nullable=True, comment="1 = recentering in progress"
        ),
        sa.Column(
            "take_data", sa.SmallInteger(), nullable=True, comment="1 = nominal guide star tracking"
        ),
        sa.Column("slew_flag", sa.SmallInteger(), nullable=True, comment="1 = slewing"),
        sa.PrimaryKeyConstraint("exposure_id", "sample_index", name=op.f("pk_jitter_sample")),
        comment="Every JIT table row; 1.6e38 / 1.6e36 fill values are NULL.",
        sqlite_with_rowid=False,
    )
    op.create_table(
        "source_file",
        sa.Column(
            "file_id", sa.Integer(), autoincrement=True, nullable=False, comment="file number"
        ),
        sa.Column("path", sa.Text(), nullable=False, comment="absolute path of the file"),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="jif | jit | asn | other"),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False, comment="file size in bytes"),
        sa.Column(
            "mtime_ns", sa.BigInteger(), nullable=False, comment="modification time, ns since epoch"
        ),
        sa.Column("sha256", sa.String(length=64), nullable=True, comment="content hash"),
        sa.Column(
            "status", sa.String(length=16), nullable=False, comment="ingested | failed | skipped"
        ),
        sa.Column("error", sa.Text(), nullable=True, comment="the reason, when failed or skipped"),
        sa.Column(
            "n_exposures", sa.Integer(), nullable=True, comment="exposures the file described"
        ),
        sa.Column(
            "ingest_run_id", sa.Integer(), nullable=True, comment="the run that last wrote this row"
        ),
        sa.Column(
            "ingested_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="UTC time this row was last written",
        ),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"],
            ["ingest_run.run_id"],
            name=op.f("fk_source_file_ingest_run_id_ingest_run"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("file_id", name=op.f("pk_source_file")),
        sa.UniqueConstraint("path", name=op.f("uq_source_file_path")),
        comment="Every file seen by an ingest, its content hash and outcome.",
    )
    with op.batch_alter_table("source_file", schema=None) as batch_op:
        batch_op.create_index("ix_source_file_status", ["status"], unique=False)

    op.create_table(
        "association",
        sa.Column(
            "asn_id",
            sa.String(length=9),
            nullable=False,
            comment="association id, lowercase (e.g. ldfd01010)",
        ),
        sa.Column("proposid", sa.Integer(), nullable=True, comment="program (proposal) id"),
        sa.Column(
            "config",
            sa.String(length=32),
            nullable=True,
            comment="instrument configuration, e.g. WFC3/UVIS, COS/FUV",
        ),
        sa.Column(
            "instrument",
            sa.String(length=8),
            nullable=True,
            comment="science instrument: CONFIG before the '/'",
        ),
        sa.Column(
            "targname", sa.String(length=40), nullable=True, comment="proposer's target name"
        ),
        sa.Column(
            "asn_stat",
            sa.String(length=16),
            nullable=True,
            comment="ASN_STAT: COMPLETE or INCOMPLETE",
        ),
        sa.Column(
            "opus_ver",
            sa.String(length=32),
            nullable=True,
            comment="OPUS_VER: processing system version",
        ),
        sa.Column(
            "window_start",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="TSTRTIME: predicted association window start, UTC",
        ),
        sa.Column(
            "window_end",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="TENDTIME: predicted association window end, UTC",
        ),
        sa.Column(
            "guidecmd",
            sa.String(length=32),
            nullable=True,
            comment="GUIDECMD: commanded guiding mode (FINE LOCK, GYRO...)",
        ),
        sa.Column(
            "gsd_id", sa.String(length=16), nullable=True, comment="GSD_ID: dominant guide star id"
        ),
        sa.Column(
            "gsr_id", sa.String(length=16), nullable=True, comment="GSR_ID: roll guide star id"
        ),
        sa.Column(
            "gs_prim",
            sa.String(length=16),
            nullable=True,
            comment="GS_PRIM: primary guide star (DOMINANT or ROLL)",
        ),
        sa.Column(
            "predgsep_arcsec",
            sa.Float(),
            nullable=True,
            comment="PREDGSEP: predicted guide star separation, arcsec",
        ),
        sa.Column(
            "mgssprms_mas",
            sa.Float(),
            nullable=True,
            comment="MGSSPRMS: max guide star separation RMS, mas",
        ),
        sa.Column(
            "tnlosses",
            sa.Integer(),
            nullable=True,
            comment="TNLOSSES: number of loss-of-lock events",
        ),
        sa.Column(
            "tlocklos_s", sa.Float(), nullable=True, comment="TLOCKLOS: total loss-of-lock time, s"
        ),
        sa.Column(
            "tnrecent",
            sa.Integer(),
            nullable=True,
            comment="TNRECENT: number of recentering events",
        ),
        sa.Column(
            "trecentr_s", sa.Float(), nullable=True, comment="TRECENTR: total recentering time, s"
        ),
        sa.Column(
            "tv2_rms_mas",
            sa.Float(),
            nullable=True,
            comment="TV2_RMS: total association V2 RMS jitter, mas",
        ),
        sa.Column(
            "tv3_rms_mas",
            sa.Float(),
            nullable=True,
            comment="TV3_RMS: total association V3 RMS jitter, mas",
        ),
        sa.Column(
            "mv2_p2p_mas",
            sa.Float(),
            nullable=True,
            comment="MV2_P2P: max association V2 peak-to-peak, mas",
        ),
        sa.Column(
            "mv3_p2p_mas",
            sa.Float(),
            nullable=True,
            comment="MV3_P2P: max association V3 peak-to-peak, mas",
        ),
        sa.Column(
            "tra_avg", sa.Float(), nullable=True, comment="TRA_AVG: association average RA, deg"
        ),
        sa.Column(
            "tdec_avg", sa.Float(), nullable=True, comment="TDEC_AVG: association average Dec, deg"
        ),
        sa.Column(
            "trollavg", sa.Float(), nullable=True, comment="TROLLAVG: association average roll, deg"
        ),
        sa.Column(
            "t_gdact",
            sa.Boolean(),
            nullable=True,
            comment="T_GDACT: actual guide mode same for all exposures (OK=T)",
        ),
        sa.Column(
            "t_actgsp",
            sa.Boolean(),
            nullable=True,
            comment="T_ACTGSP: actual GS separation same in all exps (OK=T)",
        ),
        sa.Column(
            "t_gsfail",
            sa.Boolean(),
            nullable=True,
            comment="T_GSFAIL: GS acquisition failure in any exposure (OK=F)",
        ),
        sa.Column(
            "t_sgstar",
            sa.Boolean(),
            nullable=True,
            comment="T_SGSTAR: failed to single-star fine lock (OK=F)",
        ),
        sa.Column(
            "t_tlmprb",
            sa.Boolean(),
            nullable=True,
            comment="T_TLMPRB: engineering-telemetry problem (OK=F)",
        ),
        sa.Column(
            "t_notlm",
            sa.Boolean(),
            nullable=True,
            comment="T_NOTLM: no telemetry in any exposure (OK=F)",
        ),
        sa.Column(
            "t_ntmgap",
            sa.Integer(),
            nullable=True,
            comment="T_NTMGAP: number of telemetry gaps (OK=0)",
        ),
        sa.Column(
            "t_tmgap",
            sa.Float(),
            nullable=True,
            comment="T_TMGAP: total missing-telemetry time, s (OK=0)",
        ),
        sa.Column(
            "t_gsgap",
            sa.Boolean(),
            nullable=True,
            comment="T_GSGAP: telemetry missing during GS acquisition (OK=F)",
        ),
        sa.Column(
            "t_slewng", sa.Boolean(), nullable=True, comment="T_SLEWNG: slewing occurred (OK=F)"
        ),
        sa.Column(
            "t_tdfdwn",
            sa.Boolean(),
            nullable=True,
            comment="T_TDFDWN: take-data flag not on throughout (OK=F)",
        ),
        sa.Column(
            "jif_file_id",
            sa.Integer(),
            nullable=True,
            comment="the JIF file that filled the JIF columns",
        ),
        sa.Column(
            "jit_file_id",
            sa.Integer(),
            nullable=True,
            comment="the JIT file that filled the JIT columns",
        ),
        sa.ForeignKeyConstraint(
            ["jif_file_id"],
            ["source_file.file_id"],
            name=op.f("fk_association_jif_file_id_source_file"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["jit_file_id"],
            ["source_file.file_id"],
            name=op.f("fk_association_jit_file_id_source_file"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("asn_id", name=op.f("pk_association")),
        comment="One row per jitter file set; a lone exposure's set uses its 9-char name.",
    )
    with op.batch_alter_table("association", schema=None) as batch_op:
        batch_op.create_index("ix_association_proposid", ["proposid"], unique=False)
        batch_op.create_index("ix_association_window_start", ["window_start"], unique=False)

    op.create_table(
        "exposure",
        sa.Column(
            "exposure_id",
            sa.String(length=8),
            nullable=False,
            comment="first 8 chars of the exposure name, lowercase",
        ),
        sa.Column(
            "rootname",
            sa.String(length=9),
            nullable=True,
            comment="9-char science rootname when a file names it",
        ),
        sa.Column(
            "jitter_name",
            sa.String(length=9),
            nullable=True,
            comment="EXPNAME in the JIF/JIT extension (ends in j)",
        ),
        sa.Column(
            "asn_id",
            sa.String(length=9),
            nullable=True,
            comment="the jitter file set (association) it belongs to",
        ),
        sa.Column(
            "asn_member_index",
            sa.Integer(),
            nullable=True,
            comment="1-based extension number in its jitter files",
        ),
        sa.Column(
            "asn_mtyp",
            sa.String(length=16),
            nullable=True,
            comment="ASN_MTYP: member role (EXP-FP, EXP-DTH...)",
        ),
        sa.Column("proposid", sa.Integer(), nullable=True, comment="program (proposal) id"),
        sa.Column(
            "config",
            sa.String(length=32),
            nullable=True,
            comment="instrument configuration, e.g. WFC3/UVIS",
        ),
        sa.Column(
            "window_start",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="STARTIME: predicted observation window start, UTC (not EXPSTART)",
        ),
        sa.Column(
            "window_end",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="ENDTIME: predicted observation window end, UTC",
        ),
        sa.Column(
            "aperture", sa.String(length=32), nullable=True, comment="APERTURE in the JIF extension"
        ),
        sa.Column(
            "guideact",
            sa.String(length=32),
            nullable=True,
            comment="GUIDEACT: actual guiding mode at end of GS acquisition",
        ),
        sa.Column(
            "gsacq",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="GSACQ: GS acquisition completed, UTC; NULL when blank",
        ),
        sa.Column(
            "gsfail",
            sa.String(length=32),
            nullable=True,
            comment="GSFAIL: failure code (e.g. NOLOCK); NULL when absent",
        ),
        sa.Column(
            "tdf_down",
            sa.Boolean(),
            nullable=True,
            comment="TDF-DOWN: take-data flag not up during entire exposure; NULL without a JIF",
        ),
        sa.Column(
            "actgssep_arcsec",
            sa.Float(),
            nullable=True,
            comment="ACTGSSEP: actual guide star separation, arcsec",
        ),
        sa.Column(
            "gsseprms_mas",
            sa.Float(),
            nullable=True,
            comment="GSSEPRMS: RMS of guide star separation, mas",
        ),
        sa.Column(
            "nlosses", sa.Integer(), nullable=True, comment="NLOSSES: number of loss-of-lock events"
        ),
        sa.Column(
            "lockloss_s", sa.Float(), nullable=True, comment="LOCKLOSS: total loss-of-lock time, s"
        ),
        sa.Column(
            "nrecent", sa.Integer(), nullable=True, comment="NRECENT: number of recentering events"
        ),
        sa.Column(
            "recentr_s", sa.Float(), nullable=True, comment="RECENTR: total recentering time, s"
        ),
        sa.Column(
            "v2_rms_mas",
            sa.Float(),
            nullable=True,
            comment="V2_RMS: dominant guide star V2 RMS jitter, mas",
        ),
        sa.Column(
            "v3_rms_mas",
            sa.Float(),
            nullable=True,
            comment="V3_RMS: dominant guide star V3 RMS jitter, mas",
        ),
        sa.Column(
            "v2_p2p_mas",
            sa.Float(),
            nullable=True,
            comment="V2_P2P: dominant GS V2 peak-to-peak, mas",
        ),
        sa.Column(
            "v3_p2p_mas",
            sa.Float(),
            nullable=True,
            comment="V3_P2P: dominant GS V3 peak-to-peak, mas",
        ),
        sa.Column("ra_avg", sa.Float(), nullable=True, comment="RA_AVG: average RA, deg"),
        sa.Column("dec_avg", sa.Float(), nullable=True, comment="DEC_AVG: average Dec, deg"),
        sa.Column("roll_avg", sa.Float(), nullable=True, comment="ROLL_AVG: average roll, deg"),
        sa.Column("jit_n_samples", sa.Integer(), nullable=True, comment="rows in the JIT table"),
        sa.Column(
            "jit_n_fill",
            sa.Integer(),
            nullable=True,
            comment="JIT rows holding the 1.6e38 fill (not guiding)",
        ),
        sa.Column(
            "jit_takedata_frac",
            sa.Float(),
            nullable=True,
            comment="fraction of JIT rows with TakeData=1",
        ),
        sa.Column(
            "jit_duration_s",
            sa.Float(),
            nullable=True,
            comment="last JIT Seconds value, s from window start",
        ),
        sa.Column(
            "si_v2_avg_std_mas",
            sa.Float(),
            nullable=True,
            comment="std of SI_V2_AVG over good rows, mas",
        ),
        sa.Column(
            "si_v3_avg_std_mas",
            sa.Float(),
            nullable=True,
            comment="std of SI_V3_AVG over good rows, mas",
        ),
        sa.Column(
            "si_v2_rms_median_mas",
            sa.Float(),
            nullable=True,
            comment="median SI_V2_RMS over good rows, mas",
        ),
        sa.Column(
            "si_v3_rms_median_mas",
            sa.Float(),
            nullable=True,
            comment="median SI_V3_RMS over good rows, mas",
        ),
        sa.Column(
            "si_rms_p95_mas",
            sa.Float(),
            nullable=True,
            comment="95th percentile of sqrt(SI_V2_RMS^2 + SI_V3_RMS^2) over good rows, mas",
        ),
        sa.Column(
            "drift_v2_mas",
            sa.Float(),
            nullable=True,
            comment="max - min of SI_V2_AVG over good rows, mas",
        ),
        sa.Column(
            "drift_v3_mas",
            sa.Float(),
            nullable=True,
            comment="max - min of SI_V3_AVG over good rows, mas",
        ),
        sa.Column(
            "jif_file_id",
            sa.Integer(),
            nullable=True,
            comment="the JIF file that filled the JIF columns",
        ),
        sa.Column(
            "jit_file_id",
            sa.Integer(),
            nullable=True,
            comment="the JIT file that filled the JIT columns and samples",
        ),
        sa.ForeignKeyConstraint(
            ["jif_file_id"],
            ["source_file.file_id"],
            name=op.f("fk_exposure_jif_file_id_source_file"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["jit_file_id"],
            ["source_file.file_id"],
            name=op.f("fk_exposure_jit_file_id_source_file"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("exposure_id", name=op.f("pk_exposure")),
        comment="One row per exposure, keyed by the first 8 characters of its name.",
    )
    with op.batch_alter_table("exposure", schema=None) as batch_op:
        batch_op.create_index("ix_exposure_asn_id", ["asn_id"], unique=False)
        batch_op.create_index("ix_exposure_jif_file_id", ["jif_file_id"], unique=False)
        batch_op.create_index("ix_exposure_jit_file_id", ["jit_file_id"], unique=False)
        batch_op.create_index("ix_exposure_proposid", ["proposid"], unique=False)
        batch_op.create_index("ix_exposure_window_start", ["window_start"], unique=False)

    op.create_table(
        "fits_header",
        sa.Column("file_id", sa.Integer(), nullable=False, comment="the file the header came from"),
        sa.Column(
            "hdu_index",
            sa.Integer(),
            autoincrement=False,
            nullable=False,
            comment="0 = primary HDU",
        ),
        sa.Column(
            "extname",
            sa.String(length=16),
            nullable=True,
            comment="EXTNAME of the HDU (NULL for the primary)",
        ),
        sa.Column(
            "exposure_id",
            sa.String(length=8),
            nullable=True,
            comment="the exposure an extension describes",
        ),
        sa.Column(
            "header",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="keyword -> value; COMMENT/HISTORY as lists; blank values as empty strings",
        ),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["source_file.file_id"],
            name=op.f("fk_fits_header_file_id_source_file"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "hdu_index", name=op.f("pk_fits_header")),
        comment="Every ingested HDU header as JSON {KEYWORD: value}, raw sentinels kept.",
    )
    with op.batch_alter_table("fits_header", schema=None) as batch_op:
        batch_op.create_index("ix_fits_header_exposure_id", ["exposure_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("fits_header", schema=None) as batch_op:
        batch_op.drop_index("ix_fits_header_exposure_id")

    op.drop_table("fits_header")
    with op.batch_alter_table("exposure", schema=None) as batch_op:
        batch_op.drop_index("ix_exposure_window_start")
        batch_op.drop_index("ix_exposure_proposid")
        batch_op.drop_index("ix_exposure_jit_file_id")
        batch_op.drop_index("ix_exposure_jif_file_id")
        batch_op.drop_index("ix_exposure_asn_id")

    op.drop_table("exposure")
    with op.batch_alter_table("association", schema=None) as batch_op:
        batch_op.drop_index("ix_association_window_start")
        batch_op.drop_index("ix_association_proposid")

    op.drop_table("association")
    with op.batch_alter_table("source_file", schema=None) as batch_op:
        batch_op.drop_index("ix_source_file_status")

    op.drop_table("source_file")
    op.drop_table("jitter_sample")
    op.drop_table("ingest_run")
