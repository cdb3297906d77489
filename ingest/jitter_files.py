"""Parsers for HST observing logs: `_jif.fits` (JIM), `_jit.fits` (JTB) and `_asn.fits` tables.

The format is shared by every HST instrument (INSTRUME='FGS'; CONFIG names the science
instrument). See DOMAIN.md sections 2-4 for the keywords and sentinels read here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.fits_blocks import FileFormatError, FitsHDU
from ingest.keywords import KeywordReader, header_to_json
from ingest.records import FileRecord, HeaderRecord, SampleBlock
from models.tables import JIT_COLUMNS

__all__ = ["JIT_FILL_THRESHOLD", "parse_asn", "parse_jif", "parse_jit"]

# JIT fill is 1.6e38 (not guiding); TermAng uses 1.6e36 for "not applicable". Anything this
# large is not a measurement: both become NULL, but only 1.6e38 marks a row as fill.
JIT_NULL_THRESHOLD = 1e30
JIT_FILL_THRESHOLD = 1e37
_ARCSEC_TO_MAS = 1000.0
_FLOAT_FORMATS = ("E", "D")
_POSITIONAL_COLUMNS = tuple(
    fits_name for fits_name, _, _, sql_type in JIT_COLUMNS if sql_type in ("float", "double")
)


def _primary_identity(primary: KeywordReader, expected_filetype: str) -> dict[str, Any]:
    """The association identity every jitter file's primary header gives."""
    filetype = primary.required_str("FILETYPE")
    if filetype != expected_filetype:
        msg = (
            f"{primary.where}: FILETYPE = {filetype!r}, expected {expected_filetype!r}: "
            "a foreign product under a jitter file's name"
        )
        raise FileFormatError(msg)
    rootname = primary.required_str("ROOTNAME").lower()
    asn_id = (primary.optional_str("ASN_ID") or "NONE").lower()
    if asn_id == "none":
        asn_id = rootname  # a lone exposure's set is named by its own 9-char jitter name
    config = primary.required_str("CONFIG")
    return {
        "asn_id": asn_id,
        "proposid": primary.required_int("PROPOSID"),
        "config": config,
        "instrument": config.split("/")[0],
        "targname": primary.optional_str("TARGNAME"),
    }


def _jitter_extensions(
    hdus: list[FitsHDU], file_name: str, xtension: str
) -> list[tuple[FitsHDU, KeywordReader]]:
    """The 'jit' extensions in order, each checked for type, EXTNAME and EXPNAME."""
    extensions = []
    for hdu in hdus[1:]:
        index = hdu.index
        reader = KeywordReader(hdu.keywords, file_name, index)
        extname = reader.optional_str("EXTNAME")
        if extname is None:
            msg = f"{file_name} HDU {index}: no EXTNAME; every jitter extension has EXTNAME='jit'"
            raise FileFormatError(msg)
        if extname.lower() != "jit":
            msg = f"{file_name} HDU {index}: EXTNAME = {extname!r}, expected 'jit'"
            raise FileFormatError(msg)
        if hdu.xtension != xtension:
            msg = f"{file_name} HDU {index}: XTENSION = {hdu.xtension!r}, expected {xtension!r}"
            raise FileFormatError(msg)
        reader.required_str("EXPNAME")
        extensions.append((hdu, reader))
    if not extensions:
        msg = f"{file_name}: no 'jit' extension: the file describes no exposure"
        raise FileFormatError(msg)
    return extensions


def _exposure_identity(ext: KeywordReader, asn: dict[str, Any], index: int) -> dict[str, Any]:
    jitter_name = ext.required_str("EXPNAME").lower()
    return {
        "exposure_id": jitter_name[:8],
        "jitter_name": jitter_name,
        "asn_id": asn["asn_id"],
        "asn_member_index": index,
        "proposid": asn["proposid"],
        "config": asn["config"],
        "proctime": ext.optional_time("PROCTIME"),
    }


def _headers(hdus: list[FitsHDU], exposure_ids: dict[int, str]) -> list[HeaderRecord]:
    return [
        HeaderRecord(
            hdu_index=hdu.index,
            extname=(hdu.keywords.get("EXTNAME") or None) if hdu.index else None,
            exposure_id=exposure_ids.get(hdu.index),
            header=header_to_json(hdu.cards),
        )
        for hdu in hdus
    ]


def _jif_association(primary: KeywordReader) -> dict[str, Any]:
    return {
        "asn_stat": primary.optional_str("ASN_STAT"),
        "opus_ver": primary.optional_str("OPUS_VER"),
        "window_start": primary.optional_time("TSTRTIME"),
        "window_end": primary.optional_time("TENDTIME"),
        "guidecmd": primary.optional_str("GUIDECMD"),
        "gsd_id": primary.optional_str("GSD_ID"),
        "gsr_id": primary.optional_str("GSR_ID"),
        "gs_prim": primary.optional_str("GS_PRIM"),
        "predgsep_arcsec": primary.optional_float("PREDGSEP"),
        "mgssprms_mas": primary.optional_float("MGSSPRMS"),
        "tnlosses": primary.optional_int("TNLOSSES"),
        "tlocklos_s": primary.optional_float("TLOCKLOS"),
        "tnrecent": primary.optional_int("TNRECENT"),
        "trecentr_s": primary.optional_float("TRECENTR"),
        "tv2_rms_mas": primary.optional_float("TV2_RMS"),
        "tv3_rms_mas": primary.optional_float("TV3_RMS"),
        "mv2_p2p_mas": primary.optional_float("MV2_P2P"),
        "mv3_p2p_mas": primary.optional_float("MV3_P2P"),
        "tra_avg": primary.optional_float("TRA_AVG"),
        "tdec_avg": primary.optional_float("TDEC_AVG"),
        "trollavg": primary.optional_float("TROLLAVG"),
        "t_gdact": primary.optional_bool("T_GDACT"),
        "t_actgsp": primary.optional_bool("T_ACTGSP"),
        "t_gsfail": primary.optional_bool("T_GSFAIL"),
        "t_sgstar": primary.optional_bool("T_SGSTAR"),
        "t_tlmprb": primary.optional_bool("T_TLMPRB"),
        "t_notlm": primary.optional_bool("T_NOTLM"),
        "t_ntmgap": primary.optional_int("T_NTMGAP"),
        "t_tmgap": primary.optional_float("T_TMGAP"),
        "t_gsgap": primary.optional_bool("T_GSGAP"),
        "t_slewng": primary.optional_bool("T_SLEWNG"),
        "t_tdfdwn": primary.optional_bool("T_TDFDWN"),
    }


def _jif_exposure(ext: KeywordReader) -> dict[str, Any]:
    return {
        "asn_mtyp": ext.optional_str("ASN_MTYP"),
        "window_start": ext.optional_time("STARTIME"),
        "window_end": ext.optional_time("ENDTIME"),
        "aperture": ext.optional_str("APERTURE"),
        "guideact": ext.optional_str("GUIDEACT"),
        "gsacq": ext.optional_time("GSACQ"),
        "gsfail": ext.optional_str("GSFAIL"),
        # TDF-DOWN is written only when the problem exists: a JIF without it says "not down".
        "tdf_down": bool(ext.optional_bool("TDF-DOWN")),
        "actgssep_arcsec": ext.optional_float("ACTGSSEP"),
        "gsseprms_mas": ext.optional_float("GSSEPRMS"),
        "nlosses": ext.optional_int("NLOSSES"),
        "lockloss_s": ext.optional_float("LOCKLOSS"),
        "nrecent": ext.optional_int("NRECENT"),
        "recentr_s": ext.optional_float("RECENTR"),
        "v2_rms_mas": ext.optional_float("V2_RMS"),
        "v3_rms_mas": ext.optional_float("V3_RMS"),
        "v2_p2p_mas": ext.optional_float("V2_P2P"),
        "v3_p2p_mas": ext.optional_float("V3_P2P"),
        "ra_avg": ext.optional_float("RA_AVG"),
        "dec_avg": ext.optional_float("DEC_AVG"),
        "roll_avg": ext.optional_float("ROLL_AVG"),
    }


def parse_jif(hdus: list[FitsHDU], file_name: str) -> FileRecord:
    """A `_jif.fits` (FILETYPE='JIM'): association flags and per-exposure guiding keywords."""
    primary = KeywordReader(hdus[0].keywords, file_name, 0)
    asn = _primary_identity(primary, "JIM")
    record = FileRecord(kind="jif", associations=[asn | _jif_association(primary)])
    exposure_ids = {}
    for hdu, ext in _jitter_extensions(hdus, file_name, "IMAGE"):
        exposure = _exposure_identity(ext, asn, hdu.index) | _jif_exposure(ext)
        exposure_ids[hdu.index] = exposure["exposure_id"]
        record.exposures.append(exposure)
    record.headers = _headers(hdus, exposure_ids)
    return record


def _table_columns(hdu: FitsHDU) -> dict[str, np.ndarray]:
    """The 28 JIT columns as native arrays, renamed to SQL names, fill values as NaN."""
    assert hdu.table is not None
    columns: dict[str, np.ndarray] = {}
    for fits_name, sql_name, _, sql_type in JIT_COLUMNS:
        raw = hdu.table[fits_name]
        if sql_type in ("float", "double"):
            values = raw.astype(np.float64)
            values[np.abs(values) > JIT_NULL_THRESHOLD] = np.nan
        else:
            values = raw.astype(np.int16)
        columns[sql_name] = values
    return columns


def _fill_rows(hdu: FitsHDU) -> np.ndarray:
    """Rows where any positional/SI value is the 1.6e38 fill (TermAng's 1.6e36 does not count)."""
    assert hdu.table is not None
    fill = np.zeros(len(hdu.table["Seconds"]), dtype=bool)
    for name in _POSITIONAL_COLUMNS:
        fill |= np.abs(hdu.table[name]) > JIT_FILL_THRESHOLD
    return fill


def _mas(values: np.ndarray) -> np.ndarray:
    return values * _ARCSEC_TO_MAS


def jit_statistics(columns: dict[str, np.ndarray], fill: np.ndarray) -> dict[str, Any]:
    """Per-exposure jitter statistics over the rows that are not fill (mas, s, fractions)."""
    n_rows = len(fill)
    good = ~fill
    stats: dict[str, Any] = {
        "jit_n_samples": n_rows,
        "jit_n_fill": int(fill.sum()),
        "jit_takedata_frac": float(np.mean(columns["take_data"] == 1)) if n_rows else None,
        "jit_duration_s": float(columns["seconds"][-1]) if n_rows else None,
    }
    v2_avg, v3_avg = _mas(columns["si_v2_avg"][good]), _mas(columns["si_v3_avg"][good])
    v2_rms, v3_rms = _mas(columns["si_v2_rms"][good]), _mas(columns["si_v3_rms"][good])
    if not good.any():
        return stats | dict.fromkeys(
            (
                "si_v2_avg_std_mas",
                "si_v3_avg_std_mas",
                "si_v2_rms_median_mas",
                "si_v3_rms_median_mas",
                "si_rms_p95_mas",
                "drift_v2_mas",
                "drift_v3_mas",
                "drift_trend_v2_mas",
                "drift_trend_v3_mas",
            )
        )
    seconds = columns["seconds"][good]
    return stats | {
        "si_v2_avg_std_mas": float(np.std(v2_avg)),
        "si_v3_avg_std_mas": float(np.std(v3_avg)),
        "si_v2_rms_median_mas": float(np.median(v2_rms)),
        "si_v3_rms_median_mas": float(np.median(v3_rms)),
        "si_rms_p95_mas": float(np.percentile(np.hypot(v2_rms, v3_rms), 95)),
        "drift_v2_mas": float(np.ptp(v2_avg)),
        "drift_v3_mas": float(np.ptp(v3_avg)),
        "drift_trend_v2_mas": _linear_trend(seconds, v2_avg),
        "drift_trend_v3_mas": _linear_trend(seconds, v3_avg),
    }


def _linear_trend(seconds: np.ndarray, values: np.ndarray) -> float | None:
    """How far a straight-line fit moves over the exposure (slope x duration), in the values' unit.

    The raw range of the 3-s averages is dominated by noise (49 mas in a nominal real COS
    exposure); a drift on gyros is a steady trend, which this measures.
    """
    if len(seconds) < 3 or np.ptp(seconds) == 0:
        return None
    slope = np.polyfit(seconds, values, 1)[0]
    return float(abs(slope) * np.ptp(seconds))


def _check_table_formats(hdu: FitsHDU, file_name: str) -> None:
    for fits_name, _, _, sql_type in JIT_COLUMNS:
        tform = hdu.tforms.get(fits_name)
        if tform is None:
            msg = f"{file_name} HDU {hdu.index}: JIT column {fits_name!r} is missing"
            raise FileFormatError(msg)
        if (tform[-1] in _FLOAT_FORMATS) != (sql_type in ("float", "double")):
            msg = f"{file_name} HDU {hdu.index}: JIT column {fits_name!r} has TFORM {tform!r}"
            raise FileFormatError(msg)


def parse_jit(hdus: list[FitsHDU], file_name: str) -> FileRecord:
    """A `_jit.fits` (FILETYPE='JTB'): every 3-s sample of every exposure, and its statistics."""
    primary = KeywordReader(hdus[0].keywords, file_name, 0)
    asn = _primary_identity(primary, "JTB")
    record = FileRecord(kind="jit", associations=[asn])
    exposure_ids = {}
    for hdu, ext in _jitter_extensions(hdus, file_name, "BINTABLE"):
        _check_table_formats(hdu, file_name)
        exposure = _exposure_identity(ext, asn, hdu.index)
        columns = _table_columns(hdu)
        exposure |= jit_statistics(columns, _fill_rows(hdu))
        exposure_ids[hdu.index] = exposure["exposure_id"]
        record.exposures.append(exposure)
        record.samples.append(SampleBlock(exposure["exposure_id"], columns))
    record.headers = _headers(hdus, exposure_ids)
    return record


def parse_asn(hdus: list[FitsHDU], file_name: str) -> FileRecord:
    """An `_asn.fits` table: names the 9-char science rootname of each member exposure."""
    primary = KeywordReader(hdus[0].keywords, file_name, 0)
    filetype = primary.required_str("FILETYPE")
    if filetype != "ASN_TABLE":
        msg = f"{file_name} HDU 0: FILETYPE = {filetype!r}, expected 'ASN_TABLE'"
        raise FileFormatError(msg)
    asn_id = primary.required_str("ROOTNAME").lower()
    if len(hdus) < 2 or hdus[1].table is None:
        msg = f"{file_name}: no ASN table extension"
        raise FileFormatError(msg)
    table = hdus[1].table
    for column in ("MEMNAME", "MEMTYPE"):
        if column not in hdus[1].tforms:
            msg = f"{file_name} HDU 1: ASN column {column!r} is missing"
            raise FileFormatError(msg)
    proposid = primary.optional_int("PROPOSID")
    association = {"asn_id": asn_id, "proposid": proposid}
    if primary.optional_str("TARGNAME"):
        association["targname"] = primary.optional_str("TARGNAME")
    record = FileRecord(kind="asn", associations=[association])
    exposure_ids = {}
    members = [
        (str(name).strip().lower(), str(memtype).strip())
        for name, memtype in zip(table["MEMNAME"], table["MEMTYPE"], strict=True)
    ]
    for member_index, (memname, _) in enumerate(
        (m for m in members if m[1].startswith("EXP")), start=1
    ):
        exposure_ids[member_index] = memname[:8]
        record.exposures.append(
            {
                "exposure_id": memname[:8],
                "rootname": memname,
                "asn_id": asn_id,
                "asn_member_index": member_index,
                "proposid": proposid,
            }
        )
    record.headers = _headers(hdus, {})
    return record
