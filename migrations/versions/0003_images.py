"""images: science-file columns, image_metric, psf_measurement, image_preview

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 15:44:42.259802+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "image_metric",
        sa.Column(
            "ccdchip", sa.Integer(), nullable=True, comment="CCDCHIP (UVIS: [SCI,1] is chip 2)"
        ),
        sa.Column(
            "sampnum", sa.Integer(), nullable=True, comment="IMA: read number, 0 = zeroth read"
        ),
        sa.Column(
            "samptime_s",
            sa.Float(),
            nullable=True,
            comment="IMA: time of the read since the zeroth, s",
        ),
        sa.Column("ny", sa.Integer(), nullable=True, comment="rows, pixels"),
        sa.Column("nx", sa.Integer(), nullable=True, comment="columns, pixels"),
        sa.Column(
            "finite_fraction",
            sa.Float(),
            nullable=True,
            comment="fraction of pixels that are finite",
        ),
        sa.Column(
            "sky_median",
            sa.Float(),
            nullable=True,
            comment="sigma-clipped sky, image units (UVIS e-, IR e-/s)",
        ),
        sa.Column(
            "sky_sigma", sa.Float(), nullable=True, comment="sigma-clipped sky scatter, image units"
        ),
        sa.Column(
            "frac_saturated",
            sa.Float(),
            nullable=True,
            comment="fraction of pixels flagged saturated (DQ)",
        ),
        sa.Column(
            "frac_bad",
            sa.Float(),
            nullable=True,
            comment="fraction of pixels flagged bad/hot/warm (DQ)",
        ),
        sa.Column(
            "frac_cosmic_ray",
            sa.Float(),
            nullable=True,
            comment="fraction of pixels flagged cosmic ray (DQ)",
        ),
        sa.Column(
            "frac_data_lost",
            sa.Float(),
            nullable=True,
            comment="fraction of pixels flagged data lost (DQ)",
        ),
        sa.Column(
            "n_sources",
            sa.Integer(),
            nullable=True,
            comment="star-like sources detected at 5 sigma",
        ),
        sa.Column("snr_median", sa.Float(), nullable=True, comment="median S/N of those sources"),
        sa.Column(
            "snr_p90", sa.Float(), nullable=True, comment="90th percentile S/N of those sources"
        ),
        sa.Column(
            "rate_step_sigma",
            sa.Float(),
            nullable=True,
            comment="IMA: count-rate step from the previous read, sigma",
        ),
        sa.Column(
            "outlier_sigma",
            sa.Float(),
            nullable=True,
            comment="IMA: excess outlier pixels in this read, sigma",
        ),
        sa.Column("reason", sa.Text(), nullable=True, comment="why some values are NULL"),
        sa.Column("file_id", sa.Integer(), nullable=False, comment="the science file measured"),
        sa.Column(
            "extver",
            sa.Integer(),
            autoincrement=False,
            nullable=False,
            comment="EXTVER of the SCI extension",
        ),
        sa.Column("exposure_id", sa.String(length=8), nullable=False, comment="exposure"),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="flc | flt | ima"),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["source_file.file_id"],
            name=op.f("fk_image_metric_file_id_source_file"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "extver", name=op.f("pk_image_metric")),
        comment="Per chip or IMA read: sky, DQ fractions, sources, S/N, read consistency.",
    )
    with op.batch_alter_table("image_metric", schema=None) as batch_op:
        batch_op.create_index("ix_image_metric_exposure_id", ["exposure_id"], unique=False)

    op.create_table(
        "image_preview",
        sa.Column("sci_png", sa.LargeBinary(), nullable=True, comment="SCI PNG"),
        sa.Column("err_png", sa.LargeBinary(), nullable=True, comment="ERR PNG"),
        sa.Column("dq_png", sa.LargeBinary(), nullable=True, comment="DQ PNG"),
        sa.Column("file_id", sa.Integer(), nullable=False, comment="the science file measured"),
        sa.Column(
            "extver",
            sa.Integer(),
            autoincrement=False,
            nullable=False,
            comment="EXTVER of the SCI extension",
        ),
        sa.Column("exposure_id", sa.String(length=8), nullable=False, comment="exposure"),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="flc | flt | ima"),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["source_file.file_id"],
            name=op.f("fk_image_preview_file_id_source_file"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "extver", name=op.f("pk_image_preview")),
        comment="Per chip: 192-px zscale PNG previews of SCI, ERR and DQ.",
    )
    with op.batch_alter_table("image_preview", schema=None) as batch_op:
        batch_op.create_index("ix_image_preview_exposure_id", ["exposure_id"], unique=False)

    op.create_table(
        "psf_measurement",
        sa.Column("ccdchip", sa.Integer(), nullable=True, comment="CCDCHIP"),
        sa.Column("n_psf_stars", sa.Integer(), nullable=False, comment="stars whose fit was kept"),
        sa.Column(
            "fwhm_median_pix", sa.Float(), nullable=True, comment="median Moffat FWHM, pixels"
        ),
        sa.Column(
            "fwhm_p90_pix", sa.Float(), nullable=True, comment="90th percentile FWHM, pixels"
        ),
        sa.Column(
            "fwhm_mad_pix",
            sa.Float(),
            nullable=True,
            comment="median absolute deviation of FWHM, pixels",
        ),
        sa.Column(
            "elongation_median", sa.Float(), nullable=True, comment="median major/minor axis ratio"
        ),
        sa.Column(
            "fwhm_handbook_pix",
            sa.Float(),
            nullable=True,
            comment="handbook FWHM before pixelation, pixels",
        ),
        sa.Column(
            "fwhm_nominal_pix",
            sa.Float(),
            nullable=True,
            comment="handbook FWHM after pixelation, pixels",
        ),
        sa.Column("reason", sa.Text(), nullable=True, comment="why the FWHM is NULL"),
        sa.Column(
            "stars",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="the brightest fitted stars: position, FWHM, Moffat parameters",
        ),
        sa.Column("file_id", sa.Integer(), nullable=False, comment="the science file measured"),
        sa.Column(
            "extver",
            sa.Integer(),
            autoincrement=False,
            nullable=False,
            comment="EXTVER of the SCI extension",
        ),
        sa.Column("exposure_id", sa.String(length=8), nullable=False, comment="exposure"),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="flc | flt | ima"),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["source_file.file_id"],
            name=op.f("fk_psf_measurement_file_id_source_file"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "extver", name=op.f("pk_psf_measurement")),
        comment="Per chip: PSF FWHM and elongation from isolated unsaturated stars.",
    )
    with op.batch_alter_table("psf_measurement", schema=None) as batch_op:
        batch_op.create_index("ix_psf_measurement_exposure_id", ["exposure_id"], unique=False)

    with op.batch_alter_table("exposure", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "instrument",
                sa.String(length=8),
                nullable=True,
                comment="INSTRUME of the science file, e.g. WFC3",
            )
        )
        batch_op.add_column(
            sa.Column(
                "detector", sa.String(length=8), nullable=True, comment="DETECTOR: UVIS or IR"
            )
        )
        batch_op.add_column(
            sa.Column("filter", sa.String(length=16), nullable=True, comment="FILTER, e.g. F606W")
        )
        batch_op.add_column(
            sa.Column(
                "subarray",
                sa.Boolean(),
                nullable=True,
                comment="SUBARRAY: T for a subarray readout",
            )
        )
        batch_op.add_column(
            sa.Column(
                "targname",
                sa.String(length=40),
                nullable=True,
                comment="TARGNAME of the science file",
            )
        )
        batch_op.add_column(
            sa.Column(
                "ra_targ", sa.Float(), nullable=True, comment="RA_TARG: target right ascension, deg"
            )
        )
        batch_op.add_column(
            sa.Column(
                "dec_targ", sa.Float(), nullable=True, comment="DEC_TARG: target declination, deg"
            )
        )
        batch_op.add_column(
            sa.Column(
                "expstart",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="EXPSTART (MJD) as UTC: exposure start",
            )
        )
        batch_op.add_column(
            sa.Column(
                "expend",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="EXPEND (MJD) as UTC: exposure end",
            )
        )
        batch_op.add_column(
            sa.Column("exptime_s", sa.Float(), nullable=True, comment="EXPTIME: exposure time, s")
        )
        batch_op.add_column(
            sa.Column(
                "expflag",
                sa.String(length=32),
                nullable=True,
                comment="EXPFLAG: NORMAL, INTERRUPTED, UNCERTAIN...",
            )
        )
        batch_op.add_column(
            sa.Column(
                "fgslock",
                sa.String(length=16),
                nullable=True,
                comment="FGSLOCK: FINE, COARSE, GYROS or UNKNOWN",
            )
        )
        batch_op.add_column(
            sa.Column(
                "gyromode",
                sa.String(length=8),
                nullable=True,
                comment="GYROMODE: T = 3 gyros + OBAD",
            )
        )
        batch_op.add_column(
            sa.Column(
                "quality",
                sa.String(length=80),
                nullable=True,
                comment="QUALITY: data quality comment from the pipeline",
            )
        )
        batch_op.add_column(
            sa.Column(
                "scan_typ",
                sa.String(length=4),
                nullable=True,
                comment="SCAN_TYP: C or D = spatial scan, N = none",
            )
        )
        batch_op.add_column(
            sa.Column(
                "mtflag",
                sa.String(length=4),
                nullable=True,
                comment="MTFLAG: T for a moving target",
            )
        )
        batch_op.add_column(
            sa.Column(
                "date_delivered",
                sa.Date(),
                nullable=True,
                comment="PROCTIME (MJD) of the science file as a date: when the pipeline made the delivered product (the latest reprocessing for reprocessed data)",
            )
        )
        batch_op.add_column(
            sa.Column(
                "cal_ver", sa.String(length=40), nullable=True, comment="CAL_VER: calwf3 version"
            )
        )
        batch_op.add_column(
            sa.Column(
                "photplam_angstrom",
                sa.Float(),
                nullable=True,
                comment="PHOTPLAM: pivot wavelength, Angstrom",
            )
        )
        batch_op.add_column(
            sa.Column(
                "sci_file_id",
                sa.Integer(),
                nullable=True,
                comment="the science file the image-quality columns come from",
            )
        )
        batch_op.add_column(
            sa.Column(
                "sci_rank",
                sa.Integer(),
                nullable=True,
                comment="rank of that file: 3 FLC, 2 FLT, 1 IMA",
            )
        )
        batch_op.add_column(
            sa.Column(
                "n_psf_stars",
                sa.Integer(),
                nullable=True,
                comment="isolated unsaturated stars whose PSF was fitted",
            )
        )
        batch_op.add_column(
            sa.Column(
                "fwhm_median_pix",
                sa.Float(),
                nullable=True,
                comment="median Moffat FWHM of those stars, pixels",
            )
        )
        batch_op.add_column(
            sa.Column(
                "fwhm_p90_pix",
                sa.Float(),
                nullable=True,
                comment="90th percentile FWHM (worst chip), pixels",
            )
        )
        batch_op.add_column(
            sa.Column(
                "elongation_median",
                sa.Float(),
                nullable=True,
                comment="median major/minor axis ratio of stars",
            )
        )
        batch_op.add_column(
            sa.Column(
                "fwhm_nominal_pix",
                sa.Float(),
                nullable=True,
                comment="expected FWHM for the filter after pixelation (handbook table, DOMAIN.md 7), pixels",
            )
        )
        batch_op.add_column(
            sa.Column(
                "median_snr",
                sa.Float(),
                nullable=True,
                comment="median S/N of detected star-like sources",
            )
        )
        batch_op.add_column(
            sa.Column(
                "read_outlier_sigma",
                sa.Float(),
                nullable=True,
                comment="IR IMA: worst read-to-read outlier score (a satellite or jump in one read), sigma",
            )
        )
        batch_op.create_index("ix_exposure_filter", ["filter"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_exposure_sci_file_id_source_file"),
            "source_file",
            ["sci_file_id"],
            ["file_id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:

    with op.batch_alter_table("exposure", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_exposure_sci_file_id_source_file"), type_="foreignkey"
        )
        batch_op.drop_index("ix_exposure_filter")
        batch_op.drop_column("read_outlier_sigma")
        batch_op.drop_column("median_snr")
        batch_op.drop_column("fwhm_nominal_pix")
        batch_op.drop_column("elongation_median")
        batch_op.drop_column("fwhm_p90_pix")
        batch_op.drop_column("fwhm_median_pix")
        batch_op.drop_column("n_psf_stars")
        batch_op.drop_column("sci_rank")
        batch_op.drop_column("sci_file_id")
        batch_op.drop_column("photplam_angstrom")
        batch_op.drop_column("cal_ver")
        batch_op.drop_column("date_delivered")
        batch_op.drop_column("mtflag")
        batch_op.drop_column("scan_typ")
        batch_op.drop_column("quality")
        batch_op.drop_column("gyromode")
        batch_op.drop_column("fgslock")
        batch_op.drop_column("expflag")
        batch_op.drop_column("exptime_s")
        batch_op.drop_column("expend")
        batch_op.drop_column("expstart")
        batch_op.drop_column("dec_targ")
        batch_op.drop_column("ra_targ")
        batch_op.drop_column("targname")
        batch_op.drop_column("subarray")
        batch_op.drop_column("filter")
        batch_op.drop_column("detector")
        batch_op.drop_column("instrument")

    with op.batch_alter_table("psf_measurement", schema=None) as batch_op:
        batch_op.drop_index("ix_psf_measurement_exposure_id")

    op.drop_table("psf_measurement")
    with op.batch_alter_table("image_preview", schema=None) as batch_op:
        batch_op.drop_index("ix_image_preview_exposure_id")

    op.drop_table("image_preview")
    with op.batch_alter_table("image_metric", schema=None) as batch_op:
        batch_op.drop_index("ix_image_metric_exposure_id")

    op.drop_table("image_metric")
