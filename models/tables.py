"""The SQL schema of hstmon: typed SQLAlchemy 2 models, a public interface users query directly.

Units are in column names (``_mas``, ``_arcsec``, ``_s``) and in every column comment. Sentinel
values of the files (-32767 in JIF headers, 1.6e38 / 1.6e36 in JIT tables) are NULL here; the raw
values stay in ``fits_header``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "JIT_COLUMNS",
    "AnalysisRun",
    "AnalysisState",
    "Association",
    "Base",
    "DownloadFailure",
    "Exposure",
    "FileWarning",
    "FitsHeader",
    "Flag",
    "ImageMetric",
    "ImagePreview",
    "IngestRun",
    "JitterSample",
    "NightlyRun",
    "Program",
    "ProgramAccess",
    "PsfMeasurement",
    "SourceFile",
    "Verdict",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON everywhere, JSONB on PostgreSQL so users can index and query headers with ->> and @>.
HeaderJSON = JSON().with_variant(JSONB(), "postgresql")
UTCDateTime = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _float(comment: str) -> Mapped[float | None]:
    return mapped_column(Float, nullable=True, comment=comment)


def _int(comment: str) -> Mapped[int | None]:
    return mapped_column(Integer, nullable=True, comment=comment)


def _bool(comment: str) -> Mapped[bool | None]:
    return mapped_column(Boolean, nullable=True, comment=comment)


def _text(comment: str, length: int = 32) -> Mapped[str | None]:
    return mapped_column(String(length), nullable=True, comment=comment)


def _time(comment: str) -> Mapped[datetime | None]:
    return mapped_column(UTCDateTime, nullable=True, comment=comment)


class IngestRun(Base):
    """One invocation of ``hstmon ingest``: what it was asked, what it did, how it ended."""

    __tablename__ = "ingest_run"
    __table_args__ = {"comment": "One row per hstmon ingest invocation."}

    run_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True, comment="run number"
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, comment="UTC start of the run")
    finished_at: Mapped[datetime | None] = _time(
        "UTC end of the run; NULL while running or if killed"
    )
    status: Mapped[str] = mapped_column(
        String(16),
        comment="running | succeeded | failed (a file failed) | error | aborted (its process "
        "died; marked by a later run on the same machine)",
    )
    parameters: Mapped[dict[str, Any]] = mapped_column(
        HeaderJSON, comment="paths, scheduler, workers and options the run was given"
    )
    counts: Mapped[dict[str, Any] | None] = mapped_column(
        HeaderJSON, nullable=True, comment="files seen/ingested/unchanged/failed/skipped, rows"
    )
    message: Mapped[str | None] = mapped_column(Text, nullable=True, comment="why a run errored")


class SourceFile(Base):
    """Every file an ingest looked at, with its outcome: nothing is silently dropped."""

    __tablename__ = "source_file"
    __table_args__ = (
        Index("ix_source_file_status", "status"),
        {"comment": "Every file seen by an ingest, its content hash and outcome."},
    )

    file_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True, comment="file number"
    )
    path: Mapped[str] = mapped_column(Text, unique=True, comment="absolute path of the file")
    kind: Mapped[str] = mapped_column(String(8), comment="jif | jit | asn | other")
    size_bytes: Mapped[int] = mapped_column(BigInteger, comment="file size in bytes")
    mtime_ns: Mapped[int] = mapped_column(BigInteger, comment="modification time, ns since epoch")
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, comment="content hash")
    status: Mapped[str] = mapped_column(String(16), comment="ingested | failed | skipped")
    error: Mapped[str | None] = mapped_column(
        Text, nullable=True, comment="the reason, when failed or skipped"
    )
    n_exposures: Mapped[int | None] = _int("exposures the file described")
    ingest_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("ingest_run.run_id", ondelete="SET NULL"),
        nullable=True,
        comment="the run that last wrote this row",
    )
    ingested_at: Mapped[datetime | None] = _time("UTC time this row was last written")


class FileWarning(Base):
    """A keyword value a parser could not read: it is NULL in its column, the file is kept."""

    __tablename__ = "file_warning"
    __table_args__ = (
        Index("ix_file_warning_exposure_id", "exposure_id"),
        {"comment": "Keyword values that could not be read; the rest of each file was ingested."},
    )

    file_id: Mapped[int] = mapped_column(
        ForeignKey("source_file.file_id", ondelete="CASCADE"),
        primary_key=True,
        comment="the file that holds the value",
    )
    hdu_index: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0 = primary HDU"
    )
    keyword: Mapped[str] = mapped_column(String(16), primary_key=True, comment="FITS keyword")
    exposure_id: Mapped[str | None] = mapped_column(
        String(8), nullable=True, comment="the exposure the HDU describes (NULL: the whole file)"
    )
    raw_value: Mapped[str | None] = mapped_column(
        Text, nullable=True, comment="the value as the file wrote it"
    )
    message: Mapped[str] = mapped_column(
        Text, comment="file, HDU, keyword and what was expected, in a sentence"
    )


class Association(Base):
    """One jitter file set (``<asn_id>_jif/_jit.fits``): the association-level guiding summary."""

    __tablename__ = "association"
    __table_args__ = (
        Index("ix_association_proposid", "proposid"),
        Index("ix_association_window_start", "window_start"),
        {"comment": "One row per jitter file set; a lone exposure's set uses its 9-char name."},
    )

    asn_id: Mapped[str] = mapped_column(
        String(9), primary_key=True, comment="association id, lowercase (e.g. ldfd01010)"
    )
    proposid: Mapped[int | None] = _int("program (proposal) id")
    config: Mapped[str | None] = _text("instrument configuration, e.g. WFC3/UVIS, COS/FUV")
    instrument: Mapped[str | None] = _text("science instrument: CONFIG before the '/'", 8)
    targname: Mapped[str | None] = _text("proposer's target name", 40)
    asn_stat: Mapped[str | None] = _text("ASN_STAT: COMPLETE or INCOMPLETE", 16)
    opus_ver: Mapped[str | None] = _text("OPUS_VER: processing system version")
    window_start: Mapped[datetime | None] = _time(
        "TSTRTIME: predicted association window start, UTC"
    )
    window_end: Mapped[datetime | None] = _time("TENDTIME: predicted association window end, UTC")
    guidecmd: Mapped[str | None] = _text("GUIDECMD: commanded guiding mode (FINE LOCK, GYRO...)")
    gsd_id: Mapped[str | None] = _text("GSD_ID: dominant guide star id", 16)
    gsr_id: Mapped[str | None] = _text("GSR_ID: roll guide star id", 16)
    gs_prim: Mapped[str | None] = _text("GS_PRIM: primary guide star (DOMINANT or ROLL)", 16)
    predgsep_arcsec: Mapped[float | None] = _float(
        "PREDGSEP: predicted guide star separation, arcsec"
    )
    mgssprms_mas: Mapped[float | None] = _float("MGSSPRMS: max guide star separation RMS, mas")
    tnlosses: Mapped[int | None] = _int("TNLOSSES: number of loss-of-lock events")
    tlocklos_s: Mapped[float | None] = _float("TLOCKLOS: total loss-of-lock time, s")
    tnrecent: Mapped[int | None] = _int("TNRECENT: number of recentering events")
    trecentr_s: Mapped[float | None] = _float("TRECENTR: total recentering time, s")
    tv2_rms_mas: Mapped[float | None] = _float("TV2_RMS: total association V2 RMS jitter, mas")
    tv3_rms_mas: Mapped[float | None] = _float("TV3_RMS: total association V3 RMS jitter, mas")
    mv2_p2p_mas: Mapped[float | None] = _float("MV2_P2P: max association V2 peak-to-peak, mas")
    mv3_p2p_mas: Mapped[float | None] = _float("MV3_P2P: max association V3 peak-to-peak, mas")
    tra_avg: Mapped[float | None] = _float("TRA_AVG: association average RA, deg")
    tdec_avg: Mapped[float | None] = _float("TDEC_AVG: association average Dec, deg")
    trollavg: Mapped[float | None] = _float("TROLLAVG: association average roll, deg")
    t_gdact: Mapped[bool | None] = _bool("T_GDACT: actual guide mode same for all exposures (OK=T)")
    t_actgsp: Mapped[bool | None] = _bool("T_ACTGSP: actual GS separation same in all exps (OK=T)")
    t_gsfail: Mapped[bool | None] = _bool("T_GSFAIL: GS acquisition failure in any exposure (OK=F)")
    t_sgstar: Mapped[bool | None] = _bool("T_SGSTAR: failed to single-star fine lock (OK=F)")
    t_tlmprb: Mapped[bool | None] = _bool("T_TLMPRB: engineering-telemetry problem (OK=F)")
    t_notlm: Mapped[bool | None] = _bool("T_NOTLM: no telemetry in any exposure (OK=F)")
    t_ntmgap: Mapped[int | None] = _int("T_NTMGAP: number of telemetry gaps (OK=0)")
    t_tmgap: Mapped[float | None] = _float("T_TMGAP: total missing-telemetry time, s (OK=0)")
    t_gsgap: Mapped[bool | None] = _bool("T_GSGAP: telemetry missing during GS acquisition (OK=F)")
    t_slewng: Mapped[bool | None] = _bool("T_SLEWNG: slewing occurred (OK=F)")
    t_tdfdwn: Mapped[bool | None] = _bool("T_TDFDWN: take-data flag not on throughout (OK=F)")
    jif_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("source_file.file_id", ondelete="SET NULL"),
        nullable=True,
        comment="the JIF file that filled the JIF columns",
    )
    jit_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("source_file.file_id", ondelete="SET NULL"),
        nullable=True,
        comment="the JIT file that filled the JIT columns",
    )


class Exposure(Base):
    """One exposure: its JIF guiding keywords and statistics computed from its JIT time series."""

    __tablename__ = "exposure"
    __table_args__ = (
        Index("ix_exposure_asn_id", "asn_id"),
        Index("ix_exposure_proposid", "proposid"),
        Index("ix_exposure_window_start", "window_start"),
        Index("ix_exposure_jif_file_id", "jif_file_id"),
        Index("ix_exposure_jit_file_id", "jit_file_id"),
        Index("ix_exposure_updated_at", "updated_at"),
        Index("ix_exposure_filter", "filter"),
        {"comment": "One row per exposure, keyed by the first 8 characters of its name."},
    )

    exposure_id: Mapped[str] = mapped_column(
        String(8), primary_key=True, comment="first 8 chars of the exposure name, lowercase"
    )
    rootname: Mapped[str | None] = _text("9-char science rootname when a file names it", 9)
    jitter_name: Mapped[str | None] = _text("EXPNAME in the JIF/JIT extension (ends in j)", 9)
    asn_id: Mapped[str | None] = mapped_column(
        String(9), nullable=True, comment="the jitter file set (association) it belongs to"
    )
    asn_member_index: Mapped[int | None] = _int("1-based extension number in its jitter files")
    asn_memprsnt: Mapped[bool | None] = _bool(
        "MEMPRSNT of the association table: F = the member's data are not present"
    )
    asn_mtyp: Mapped[str | None] = _text("ASN_MTYP: member role (EXP-FP, EXP-DTH...)", 16)
    proposid: Mapped[int | None] = _int("program (proposal) id")
    config: Mapped[str | None] = _text("instrument configuration, e.g. WFC3/UVIS")
    window_start: Mapped[datetime | None] = _time(
        "STARTIME: predicted observation window start, UTC (not EXPSTART)"
    )
    window_end: Mapped[datetime | None] = _time("ENDTIME: predicted observation window end, UTC")
    aperture: Mapped[str | None] = _text("APERTURE in the JIF extension")
    guideact: Mapped[str | None] = _text("GUIDEACT: actual guiding mode at end of GS acquisition")
    gsacq: Mapped[datetime | None] = _time("GSACQ: GS acquisition completed, UTC; NULL when blank")
    gsfail: Mapped[str | None] = _text("GSFAIL: failure code (e.g. NOLOCK); NULL when absent")
    tdf_down: Mapped[bool | None] = _bool(
        "TDF-DOWN: take-data flag not up during entire exposure; NULL without a JIF"
    )
    actgssep_arcsec: Mapped[float | None] = _float("ACTGSSEP: actual guide star separation, arcsec")
    gsseprms_mas: Mapped[float | None] = _float("GSSEPRMS: RMS of guide star separation, mas")
    nlosses: Mapped[int | None] = _int("NLOSSES: number of loss-of-lock events")
    lockloss_s: Mapped[float | None] = _float("LOCKLOSS: total loss-of-lock time, s")
    nrecent: Mapped[int | None] = _int("NRECENT: number of recentering events")
    recentr_s: Mapped[float | None] = _float("RECENTR: total recentering time, s")
    v2_rms_mas: Mapped[float | None] = _float("V2_RMS: dominant guide star V2 RMS jitter, mas")
    v3_rms_mas: Mapped[float | None] = _float("V3_RMS: dominant guide star V3 RMS jitter, mas")
    v2_p2p_mas: Mapped[float | None] = _float("V2_P2P: dominant GS V2 peak-to-peak, mas")
    v3_p2p_mas: Mapped[float | None] = _float("V3_P2P: dominant GS V3 peak-to-peak, mas")
    ra_avg: Mapped[float | None] = _float("RA_AVG: average RA, deg")
    dec_avg: Mapped[float | None] = _float("DEC_AVG: average Dec, deg")
    roll_avg: Mapped[float | None] = _float("ROLL_AVG: average roll, deg")
    jit_n_samples: Mapped[int | None] = _int("rows in the JIT table")
    jit_n_fill: Mapped[int | None] = _int("JIT rows holding the 1.6e38 fill (not guiding)")
    jit_takedata_frac: Mapped[float | None] = _float("fraction of JIT rows with TakeData=1")
    jit_duration_s: Mapped[float | None] = _float("last JIT Seconds value, s from window start")
    si_v2_avg_std_mas: Mapped[float | None] = _float("std of SI_V2_AVG over good rows, mas")
    si_v3_avg_std_mas: Mapped[float | None] = _float("std of SI_V3_AVG over good rows, mas")
    si_v2_rms_median_mas: Mapped[float | None] = _float("median SI_V2_RMS over good rows, mas")
    si_v3_rms_median_mas: Mapped[float | None] = _float("median SI_V3_RMS over good rows, mas")
    si_rms_p95_mas: Mapped[float | None] = _float(
        "95th percentile of sqrt(SI_V2_RMS^2 + SI_V3_RMS^2) over good rows, mas"
    )
    drift_v2_mas: Mapped[float | None] = _float("max - min of SI_V2_AVG over good rows, mas")
    drift_v3_mas: Mapped[float | None] = _float("max - min of SI_V3_AVG over good rows, mas")
    drift_trend_v2_mas: Mapped[float | None] = _float(
        "|slope| x duration of a line fitted to SI_V2_AVG over good rows: steady drift, mas"
    )
    drift_trend_v3_mas: Mapped[float | None] = _float(
        "|slope| x duration of a line fitted to SI_V3_AVG over good rows: steady drift, mas"
    )
    drift_rate_mas_s: Mapped[float | None] = _float(
        "combined V2/V3 drift rate: hypot of the slopes of lines fitted to SI_V2_AVG and "
        "SI_V3_AVG over good rows, mas/s"
    )
    jit_n_slew: Mapped[int | None] = _int("JIT rows with SlewFlag=1 (slewing)")
    jit_n_slew_guided: Mapped[int | None] = _int(
        "JIT rows with SlewFlag=1 and TakeData=1: slewing while data were taken"
    )
    jit_n_recenter: Mapped[int | None] = _int("JIT rows with Recenter=1 (recentering)")
    proctime: Mapped[datetime | None] = _time(
        "PROCTIME of the jitter extension: when the observation was processed, UTC"
    )
    # Science-file (FLT/FLC/IMA primary header) columns.
    instrument: Mapped[str | None] = _text("INSTRUME of the science file, e.g. WFC3", 8)
    detector: Mapped[str | None] = _text("DETECTOR: UVIS or IR", 8)
    filter: Mapped[str | None] = _text("FILTER, e.g. F606W", 16)
    subarray: Mapped[bool | None] = _bool("SUBARRAY: T for a subarray readout")
    targname: Mapped[str | None] = _text("TARGNAME of the science file", 40)
    ra_targ: Mapped[float | None] = _float("RA_TARG: target right ascension, deg")
    dec_targ: Mapped[float | None] = _float("DEC_TARG: target declination, deg")
    expstart: Mapped[datetime | None] = _time("EXPSTART (MJD) as UTC: exposure start")
    expend: Mapped[datetime | None] = _time("EXPEND (MJD) as UTC: exposure end")
    exptime_s: Mapped[float | None] = _float("EXPTIME: exposure time, s")
    expflag: Mapped[str | None] = _text("EXPFLAG: NORMAL, INTERRUPTED, UNCERTAIN...")
    fgslock: Mapped[str | None] = _text("FGSLOCK: FINE, COARSE, GYROS or UNKNOWN", 16)
    gyromode: Mapped[str | None] = _text("GYROMODE: T = 3 gyros + OBAD", 8)
    quality: Mapped[str | None] = _text("QUALITY: data quality comment from the pipeline", 80)
    imagetyp: Mapped[str | None] = _text("IMAGETYP: EXT for external targets, else BIAS, DARK...")
    obsmode: Mapped[str | None] = _text(
        "OBSMODE: ACCUM, MULTIACCUM; ACQ... for COS/STIS acquisitions"
    )
    exptype: Mapped[str | None] = _text("EXPTYPE (COS): ACQ/SEARCH... for acquisitions")
    scan_typ: Mapped[str | None] = _text("SCAN_TYP: C or D = spatial scan, N = none", 4)
    mtflag: Mapped[bool | None] = _bool("MTFLAG: T for a moving target")
    postarg1_arcsec: Mapped[float | None] = _float("POSTARG1: POS TARG offset, axis 1, arcsec")
    postarg2_arcsec: Mapped[float | None] = _float("POSTARG2: POS TARG offset, axis 2, arcsec")
    date_delivered: Mapped[date | None] = mapped_column(
        Date,
        nullable=True,
        comment="PROCTIME (MJD) of the science file as a date: when the pipeline made the "
        "delivered product (the latest reprocessing for reprocessed data)",
    )
    cal_ver: Mapped[str | None] = _text("CAL_VER: calwf3 version", 40)
    photplam_angstrom: Mapped[float | None] = _float("PHOTPLAM: pivot wavelength, Angstrom")
    # Exposure-level image quality, from the best science file (FLC, else FLT, else IMA).
    sci_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("source_file.file_id", ondelete="SET NULL"),
        nullable=True,
        comment="the science file the image-quality columns come from",
    )
    sci_rank: Mapped[int | None] = _int("rank of that file: 3 FLC, 2 FLT, 1 IMA")
    n_psf_stars: Mapped[int | None] = _int("isolated unsaturated stars whose PSF was fitted")
    fwhm_median_pix: Mapped[float | None] = _float("median Moffat FWHM of those stars, pixels")
    fwhm_p90_pix: Mapped[float | None] = _float("90th percentile FWHM (worst chip), pixels")
    elongation_median: Mapped[float | None] = _float("median major/minor axis ratio of stars")
    fwhm_nominal_pix: Mapped[float | None] = _float(
        "expected FWHM for the filter after pixelation (handbook table, DOMAIN.md 7), pixels"
    )
    median_snr: Mapped[float | None] = _float("median S/N of detected star-like sources")
    read_outlier_sigma: Mapped[float | None] = _float(
        "IR IMA: worst read-to-read outlier score (a satellite or jump in one read), sigma"
    )
    jif_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("source_file.file_id", ondelete="SET NULL"),
        nullable=True,
        comment="the JIF file that filled the JIF columns",
    )
    jit_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("source_file.file_id", ondelete="SET NULL"),
        nullable=True,
        comment="the JIT file that filled the JIT columns and samples",
    )
    updated_at: Mapped[datetime | None] = _time(
        "UTC time an ingest last changed this row; analysis re-runs on rows newer than it saw"
    )
    first_ingested_at: Mapped[datetime | None] = _time(
        "UTC time an ingest first wrote this row: the data had been delivered by then"
    )


# The 28 JIT columns: (FITS name, SQL column, unit, SQL type). SQL names are the snake_case FITS
# names; the values keep the file's units (arcsec, deg, Gauss) so a row reads like the file.
JIT_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("Seconds", "seconds", "s from observation window start", "float"),
    ("V2_dom", "v2_dom", "arcsec", "float"),
    ("V3_dom", "v3_dom", "arcsec", "float"),
    ("V2_roll", "v2_roll", "arcsec", "float"),
    ("V3_roll", "v3_roll", "arcsec", "float"),
    ("SI_V2_AVG", "si_v2_avg", "arcsec", "float"),
    ("SI_V2_RMS", "si_v2_rms", "arcsec", "float"),
    ("SI_V2_P2P", "si_v2_p2p", "arcsec", "float"),
    ("SI_V3_AVG", "si_v3_avg", "arcsec", "float"),
    ("SI_V3_RMS", "si_v3_rms", "arcsec", "float"),
    ("SI_V3_P2P", "si_v3_p2p", "arcsec", "float"),
    ("RA", "ra", "deg", "double"),
    ("DEC", "dec", "deg", "double"),
    ("Roll", "roll", "deg", "double"),
    ("LimbAng", "limb_ang", "deg", "float"),
    ("TermAng", "term_ang", "deg (1.6e36 'not applicable' is NULL)", "float"),
    ("LOS_Zenith", "los_zenith", "deg", "float"),
    ("Latitude", "latitude", "deg", "float"),
    ("Longitude", "longitude", "deg", "float"),
    ("Mag_V1", "mag_v1", "Gauss", "float"),
    ("Mag_V2", "mag_v2", "Gauss", "float"),
    ("Mag_V3", "mag_v3", "Gauss", "float"),
    ("BrightLimb", "bright_limb", "1 = limb of LimbAng is bright", "int"),
    ("FGS_flags", "fgs_flags", "FGS status flags", "float"),
    ("DayNight", "day_night", "1 = day, 0 = night", "int"),
    ("Recenter", "recenter", "1 = recentering in progress", "int"),
    ("TakeData", "take_data", "1 = nominal guide star tracking", "int"),
    ("SlewFlag", "slew_flag", "1 = slewing", "int"),
)


class JitterSample(Base):
    """Every JIT row: the 3-s jitter time series of each exposure, fill values as NULL."""

    __tablename__ = "jitter_sample"
    # SQLite: store rows in the primary-key B-tree itself (one tree to insert into, not two).
    __table_args__ = {
        "comment": "Every JIT table row; 1.6e38 / 1.6e36 fill values are NULL.",
        "sqlite_with_rowid": False,
    }

    exposure_id: Mapped[str] = mapped_column(
        String(8), primary_key=True, comment="exposure (first 8 chars of EXPNAME)"
    )
    sample_index: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based row number in the table"
    )
    seconds: Mapped[float] = mapped_column(Float, comment="s from observation window start")
    v2_dom: Mapped[float | None] = _float("dominant FGS V2 coordinate, arcsec")
    v3_dom: Mapped[float | None] = _float("dominant FGS V3 coordinate, arcsec")
    v2_roll: Mapped[float | None] = _float("roll FGS V2 coordinate, arcsec")
    v3_roll: Mapped[float | None] = _float("roll FGS V3 coordinate, arcsec")
    si_v2_avg: Mapped[float | None] = _float("mean jitter in V2 over 3 s, arcsec")
    si_v2_rms: Mapped[float | None] = _float("rms jitter in V2 over 3 s, arcsec")
    si_v2_p2p: Mapped[float | None] = _float("peak jitter in V2 over 3 s, arcsec")
    si_v3_avg: Mapped[float | None] = _float("mean jitter in V3 over 3 s, arcsec")
    si_v3_rms: Mapped[float | None] = _float("rms jitter in V3 over 3 s, arcsec")
    si_v3_p2p: Mapped[float | None] = _float("peak jitter in V3 over 3 s, arcsec")
    ra: Mapped[float | None] = _float("RA of aperture reference, deg")
    dec: Mapped[float | None] = _float("Dec of aperture reference, deg")
    roll: Mapped[float | None] = _float("position angle between north and +V3, deg")
    limb_ang: Mapped[float | None] = _float("angle between V1 and Earth limb, deg")
    term_ang: Mapped[float | None] = _float("angle between V1 and terminator, deg; 1.6e36 is NULL")
    los_zenith: Mapped[float | None] = _float("angle between HST zenith and target, deg")
    latitude: Mapped[float | None] = _float("HST subpoint latitude, deg")
    longitude: Mapped[float | None] = _float("HST subpoint longitude, deg")
    mag_v1: Mapped[float | None] = _float("magnetic field along V1, Gauss")
    mag_v2: Mapped[float | None] = _float("magnetic field along V2, Gauss")
    mag_v3: Mapped[float | None] = _float("magnetic field along V3, Gauss")
    bright_limb: Mapped[int | None] = mapped_column(
        SmallInteger, nullable=True, comment="1 = Earth limb of LimbAng is bright"
    )
    fgs_flags: Mapped[float | None] = _float("FGS status flags")
    day_night: Mapped[int | None] = mapped_column(
        SmallInteger, nullable=True, comment="1 = day, 0 = night"
    )
    recenter: Mapped[int | None] = mapped_column(
        SmallInteger, nullable=True, comment="1 = recentering in progress"
    )
    take_data: Mapped[int | None] = mapped_column(
        SmallInteger, nullable=True, comment="1 = nominal guide star tracking"
    )
    slew_flag: Mapped[int | None] = mapped_column(
        SmallInteger, nullable=True, comment="1 = slewing"
    )


class FitsHeader(Base):
    """The full header of every HDU ingested, so no keyword is ever lost."""

    __tablename__ = "fits_header"
    __table_args__ = (
        Index("ix_fits_header_exposure_id", "exposure_id"),
        {"comment": "Every ingested HDU header as JSON {KEYWORD: value}, raw sentinels kept."},
    )

    file_id: Mapped[int] = mapped_column(
        ForeignKey("source_file.file_id", ondelete="CASCADE"),
        primary_key=True,
        comment="the file the header came from",
    )
    hdu_index: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0 = primary HDU"
    )
    extname: Mapped[str | None] = _text("EXTNAME of the HDU (NULL for the primary)", 16)
    exposure_id: Mapped[str | None] = mapped_column(
        String(8), nullable=True, comment="the exposure an extension describes"
    )
    header: Mapped[dict[str, Any]] = mapped_column(
        HeaderJSON,
        comment="keyword -> value; COMMENT/HISTORY as lists; blank values as empty strings",
    )


class AnalysisRun(Base):
    """One invocation of ``hstmon analyze``: the rules it applied and what it found."""

    __tablename__ = "analysis_run"
    __table_args__ = {"comment": "One row per hstmon analyze invocation."}

    run_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True, comment="run number"
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, comment="UTC start of the run")
    finished_at: Mapped[datetime | None] = _time("UTC end of the run; NULL while running or killed")
    status: Mapped[str] = mapped_column(String(16), comment="running | succeeded | error")
    rules: Mapped[dict[str, Any]] = mapped_column(
        HeaderJSON, comment="rule id -> version applied, and the rules file used"
    )
    counts: Mapped[dict[str, Any] | None] = mapped_column(
        HeaderJSON, nullable=True, comment="exposures analysed, flags and verdicts written"
    )
    message: Mapped[str | None] = mapped_column(Text, nullable=True, comment="why a run errored")


class NightlyRun(Base):
    """One ``hstmon nightly``: the MAST window it covered, what it fetched, and how it ended.

    The next run's window starts where the last *succeeded* run's ended, so a failed, errored or
    killed run is covered again by the next one.
    """

    __tablename__ = "nightly_run"
    __table_args__ = {"comment": "One row per hstmon nightly run: discovery, download, digest."}

    run_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True, comment="run number"
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, comment="UTC start of the run")
    finished_at: Mapped[datetime | None] = _time("UTC end of the run; NULL while running or killed")
    status: Mapped[str] = mapped_column(
        String(16),
        comment="running | succeeded (files outstanding in download_failure included) | failed "
        "(a download failed for now: the window is covered again) | error (stopped; message "
        "says why) | aborted (its process died)",
    )
    stage: Mapped[str] = mapped_column(
        String(16), comment="last stage begun: discover | download | ingest | analyze | digest"
    )
    date_field: Mapped[str] = mapped_column(
        String(16), comment="release (t_obs_release) or observation (t_min): what the window bounds"
    )
    window_start: Mapped[datetime | None] = _time(
        "UTC start of the discovery window (inclusive); NULL: no lower bound"
    )
    window_end: Mapped[datetime] = mapped_column(
        UTCDateTime, comment="UTC end of the discovery window (exclusive)"
    )
    parameters: Mapped[dict[str, Any]] = mapped_column(
        HeaderJSON, comment="selection (programs, instruments, products), archive root, scheduler"
    )
    counts: Mapped[dict[str, Any] | None] = mapped_column(
        HeaderJSON,
        nullable=True,
        comment="products found, skipped (by reason), downloaded, present, failed (permanent "
        "apart), retries due; files; files outstanding",
    )
    ingest_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("ingest_run.run_id", ondelete="SET NULL"),
        nullable=True,
        comment="the ingest it ran",
    )
    analysis_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("analysis_run.run_id", ondelete="SET NULL"),
        nullable=True,
        comment="the analysis it ran",
    )
    digest: Mapped[dict[str, Any] | None] = mapped_column(
        HeaderJSON, nullable=True, comment="the digest as JSON: new flags, verdicts, problems"
    )
    host: Mapped[str] = mapped_column(String(255), comment="machine the run ran on")
    pid: Mapped[int] = mapped_column(Integer, comment="process id of the run")
    message: Mapped[str | None] = mapped_column(
        Text, nullable=True, comment="why a run failed, errored or was aborted"
    )


class DownloadFailure(Base):
    """A MAST file whose download failed for good reason (4xx, or not whole FITS after its
    retries): tried again on a slower schedule, without holding back the nightly window.

    It keeps what MAST listed of the file, so a later run can try it again after the window
    has moved past its release. ``resolved_at`` is set once a try succeeds (or the file is
    found in place); until then the file is outstanding.
    """

    __tablename__ = "download_failure"
    __table_args__ = (
        Index("ix_download_failure_resolved_at_next_try_at", "resolved_at", "next_try_at"),
        {"comment": "MAST files whose download failed for good reason, and when to try again."},
    )

    failure_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True, comment="record number"
    )
    uri: Mapped[str] = mapped_column(
        Text, unique=True, comment="MAST data URI, e.g. mast:HST/product/iepp01uvq_flt.fits"
    )
    filename: Mapped[str] = mapped_column(String(255), comment="file name, as MAST lists it")
    obs_id: Mapped[str] = mapped_column(String(64), comment="observation id (lower case)")
    proposal_id: Mapped[str] = mapped_column(String(16), comment="program (proposal id)")
    product_type: Mapped[str] = mapped_column(
        String(16), comment="MAST productSubGroupDescription: FLT, FLC, IMA, JIF, JIT, ASN"
    )
    listed_size_bytes: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True, comment="size MAST lists, bytes (may be out of date)"
    )
    project: Mapped[str | None] = _text("MAST project: the calibration pipeline, e.g. CALWF3")
    data_rights: Mapped[str | None] = _text("MAST dataRights: PUBLIC | EXCLUSIVE_ACCESS | ...")
    released_at: Mapped[datetime | None] = _time("UTC public release of its observation")
    path: Mapped[str] = mapped_column(Text, comment="where it goes in the archive tree")
    reason: Mapped[str] = mapped_column(Text, comment="why the last try failed")
    attempts: Mapped[int] = mapped_column(
        Integer, comment="nightly runs that tried it and failed (each with its own retries)"
    )
    first_failed_at: Mapped[datetime] = mapped_column(
        UTCDateTime, comment="UTC time of the first failed run"
    )
    last_failed_at: Mapped[datetime] = mapped_column(
        UTCDateTime, comment="UTC time of the last failed run"
    )
    next_try_at: Mapped[datetime] = mapped_column(
        UTCDateTime, comment="UTC time from which a nightly run tries it again"
    )
    resolved_at: Mapped[datetime | None] = _time(
        "UTC time a later run fetched it or found it in place; NULL: still outstanding"
    )
    nightly_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("nightly_run.run_id", ondelete="SET NULL"),
        nullable=True,
        comment="the nightly run that last tried it",
    )


class AnalysisState(Base):
    """When each exposure was last analysed and under which rule versions (for incremental runs)."""

    __tablename__ = "analysis_state"
    __table_args__ = {"comment": "Per exposure: the last analysis and the rule versions it used."}

    exposure_id: Mapped[str] = mapped_column(String(8), primary_key=True, comment="exposure")
    analyzed_at: Mapped[datetime] = mapped_column(UTCDateTime, comment="UTC time of the analysis")
    rules_signature: Mapped[str] = mapped_column(
        String(64), comment="hash of the rule ids and versions applied"
    )
    analysis_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("analysis_run.run_id", ondelete="SET NULL"), nullable=True, comment="the run"
    )


class Flag(Base):
    """One anomaly rule that fired on one exposure, with the evidence a person can check."""

    __tablename__ = "flag"
    __table_args__ = (
        UniqueConstraint("exposure_id", "rule"),
        Index("ix_flag_rule_severity", "rule", "severity"),
        {"comment": "Anomaly flags as rows: new rules never need a migration."},
    )

    flag_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True, comment="flag number"
    )
    exposure_id: Mapped[str] = mapped_column(String(8), comment="the flagged exposure")
    asn_id: Mapped[str | None] = mapped_column(
        String(9), nullable=True, index=True, comment="its association, for visit-level queries"
    )
    rule: Mapped[str] = mapped_column(String(40), comment="rule id, e.g. gs_acq_failure")
    rule_version: Mapped[int] = mapped_column(Integer, comment="version of the rule that fired")
    severity: Mapped[str] = mapped_column(String(8), comment="high | medium | info")
    message: Mapped[str] = mapped_column(Text, comment="what happened, in a sentence")
    evidence: Mapped[dict[str, Any]] = mapped_column(
        HeaderJSON, comment="the values that fired the rule and the thresholds they crossed"
    )
    analysis_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("analysis_run.run_id", ondelete="SET NULL"), nullable=True, comment="the run"
    )


class Verdict(Base):
    """What to do about an exposure or a visit: file a HOPR, ask the help desk, or not.

    A visit is ``ipppss`` (the first 6 characters of its exposures' names): its associations and
    lone exposures are judged together, so the repeat policy sees the whole visit.
    """

    __tablename__ = "verdict"
    __table_args__ = (
        CheckConstraint(
            "(CASE WHEN exposure_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN asn_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN visit_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_subject",
        ),
        Index("ix_verdict_verdict_deadline", "verdict", "hopr_deadline"),
        {
            "comment": "Per exposure or per visit (ipppss): hopr | helpdesk | ok | "
            "not_repeatable | incomplete."
        },
    )

    verdict_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True, comment="verdict number"
    )
    exposure_id: Mapped[str | None] = mapped_column(
        String(8), nullable=True, unique=True, comment="the exposure judged (or NULL)"
    )
    asn_id: Mapped[str | None] = mapped_column(
        String(9),
        nullable=True,
        unique=True,
        comment="the association judged, in stores analysed before visits were judged as "
        "ipppss (the next analysis replaces such rows by visit rows)",
    )
    visit_id: Mapped[str | None] = mapped_column(
        String(6),
        nullable=True,
        unique=True,
        comment="the visit judged: ipppss, the first 6 characters of its exposures (or NULL)",
    )
    verdict: Mapped[str] = mapped_column(
        String(16),
        comment="hopr | helpdesk | ok | not_repeatable | incomplete (the observing logs "
        "needed to judge are not in the store)",
    )
    summary: Mapped[str] = mapped_column(Text, comment="the verdict in plain words")
    reasons: Mapped[list[str]] = mapped_column(HeaderJSON, comment="why, one sentence each")
    delivered_on: Mapped[date | None] = mapped_column(
        Date,
        nullable=True,
        comment="first delivery of the data: the earliest date the store knows (a later "
        "reprocessing never moves it)",
    )
    delivery_basis: Mapped[str | None] = mapped_column(
        String(80), nullable=True, comment="which date gave delivered_on"
    )
    hopr_deadline: Mapped[date | None] = mapped_column(
        Date, nullable=True, comment="delivered_on + 90 days: last day to file a HOPR"
    )
    days_left: Mapped[int | None] = _int("days from the run date to hopr_deadline (negative: late)")
    decided_on: Mapped[date] = mapped_column(Date, comment="the run date days_left counts from")
    analysis_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("analysis_run.run_id", ondelete="SET NULL"), nullable=True, comment="the run"
    )


class _PerImage:
    """The key every per-chip (or per-read) science table shares."""

    file_id: Mapped[int] = mapped_column(
        ForeignKey("source_file.file_id", ondelete="CASCADE"),
        primary_key=True,
        comment="the science file measured",
    )
    extver: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="EXTVER of the SCI extension"
    )
    exposure_id: Mapped[str] = mapped_column(String(8), comment="exposure")
    kind: Mapped[str] = mapped_column(String(8), comment="flc | flt | ima")


class ImageMetric(_PerImage, Base):
    """Statistics of one chip (FLT/FLC) or one read (IMA) of a science file."""

    __tablename__ = "image_metric"
    __table_args__ = (
        Index("ix_image_metric_exposure_id", "exposure_id"),
        {"comment": "Per chip or IMA read: sky, DQ fractions, sources, S/N, read consistency."},
    )

    ccdchip: Mapped[int | None] = _int("CCDCHIP (UVIS: [SCI,1] is chip 2)")
    sampnum: Mapped[int | None] = _int("IMA: read number, 0 = zeroth read")
    samptime_s: Mapped[float | None] = _float("IMA: time of the read since the zeroth, s")
    ny: Mapped[int | None] = _int("rows, pixels")
    nx: Mapped[int | None] = _int("columns, pixels")
    finite_fraction: Mapped[float | None] = _float("fraction of pixels that are finite")
    sky_median: Mapped[float | None] = _float("sigma-clipped sky, image units (UVIS e-, IR e-/s)")
    sky_sigma: Mapped[float | None] = _float("sigma-clipped sky scatter, image units")
    frac_saturated: Mapped[float | None] = _float("fraction of pixels flagged saturated (DQ)")
    frac_bad: Mapped[float | None] = _float("fraction of pixels flagged bad/hot/warm (DQ)")
    frac_cosmic_ray: Mapped[float | None] = _float(
        "fraction of pixels flagged cosmic ray (DQ 4096 AstroDrizzle, 8192; IR also 1024)"
    )
    frac_data_lost: Mapped[float | None] = _float("fraction of pixels flagged data lost (DQ)")
    n_sources: Mapped[int | None] = _int("star-like sources detected at 5 sigma")
    snr_median: Mapped[float | None] = _float("median S/N of those sources")
    snr_p90: Mapped[float | None] = _float("90th percentile S/N of those sources")
    rate_step_sigma: Mapped[float | None] = _float(
        "IMA: count-rate step from the previous read, sigma"
    )
    outlier_sigma: Mapped[float | None] = _float("IMA: excess outlier pixels in this read, sigma")
    reason: Mapped[str | None] = mapped_column(
        Text, nullable=True, comment="why some values are NULL"
    )


class PsfMeasurement(_PerImage, Base):
    """The PSF of one chip of an FLT/FLC: Moffat FWHM and elongation of its isolated stars."""

    __tablename__ = "psf_measurement"
    __table_args__ = (
        Index("ix_psf_measurement_exposure_id", "exposure_id"),
        {"comment": "Per chip: PSF FWHM and elongation from isolated unsaturated stars."},
    )

    ccdchip: Mapped[int | None] = _int("CCDCHIP")
    n_psf_stars: Mapped[int] = mapped_column(Integer, comment="stars whose fit was kept")
    fwhm_median_pix: Mapped[float | None] = _float("median Moffat FWHM, pixels")
    fwhm_p90_pix: Mapped[float | None] = _float("90th percentile FWHM, pixels")
    fwhm_mad_pix: Mapped[float | None] = _float("median absolute deviation of FWHM, pixels")
    elongation_median: Mapped[float | None] = _float("median major/minor axis ratio")
    fwhm_handbook_pix: Mapped[float | None] = _float("handbook FWHM before pixelation, pixels")
    fwhm_nominal_pix: Mapped[float | None] = _float("handbook FWHM after pixelation, pixels")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True, comment="why the FWHM is NULL")
    stars: Mapped[list[dict[str, Any]]] = mapped_column(
        HeaderJSON, comment="the brightest fitted stars: position, FWHM, Moffat parameters"
    )


class ImagePreview(_PerImage, Base):
    """Small zscale-stretched PNGs of a chip (SCI, ERR, DQ) so views need not open the file."""

    __tablename__ = "image_preview"
    __table_args__ = (
        Index("ix_image_preview_exposure_id", "exposure_id"),
        {"comment": "Per chip: 192-px zscale PNG previews of SCI, ERR and DQ."},
    )

    sci_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, comment="SCI PNG")
    err_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, comment="ERR PNG")
    dq_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, comment="DQ PNG")


class Program(Base):
    """Whether a program's data are proprietary (under exclusive access), and who said so.

    Programs without a row are public: hstmon knows nothing that would hide them.
    """

    __tablename__ = "program"
    __table_args__ = (
        CheckConstraint("source IN ('mast', 'hand')", name="source"),
        {"comment": "Per program: proprietary or public, from MAST's data rights or by hand."},
    )

    proposid: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="program (proposal) id"
    )
    proprietary: Mapped[bool] = mapped_column(
        Boolean,
        comment="T while its data are under exclusive access: hidden from dashboard viewers "
        "without a grant in program_access",
    )
    exclusive_until: Mapped[datetime | None] = _time(
        "UTC end of exclusive access (MAST t_obs_release of its latest exclusive data); after "
        "it the program is public; NULL: proprietary until marked public"
    )
    data_rights: Mapped[str | None] = _text(
        "MAST dataRights last seen by hstmon nightly: PUBLIC, EXCLUSIVE_ACCESS or RESTRICTED"
    )
    source: Mapped[str] = mapped_column(
        String(8),
        comment="mast (hstmon nightly read MAST's data rights) | hand (hstmon access mark; "
        "nightly leaves it alone)",
    )
    marked_by: Mapped[str | None] = _text("who marked it by hand", 255)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, comment="UTC time of the last change")


class ProgramAccess(Base):
    """A grant: one user or group may see one proprietary program in the dashboard."""

    __tablename__ = "program_access"
    __table_args__ = (
        UniqueConstraint("proposid", "grantee_kind", "grantee"),
        CheckConstraint("grantee_kind IN ('user', 'group')", name="grantee_kind"),
        {"comment": "Who may see which proprietary program: users (login e-mail) or groups."},
    )

    access_id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=True, comment="grant number"
    )
    proposid: Mapped[int] = mapped_column(Integer, comment="program (proposal) id the grant opens")
    grantee: Mapped[str] = mapped_column(
        String(255), comment="a user's e-mail (lower case) as the login gives it, or a group name"
    )
    grantee_kind: Mapped[str] = mapped_column(String(8), comment="user | group")
    granted_by: Mapped[str] = mapped_column(String(255), comment="who granted it")
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, comment="UTC time of the grant")
