"""Parsers for HST observing logs: `_jif.fits` (JIM), `_jit.fits` (JTB) and `_asn.fits` tables.

The format is shared by every HST instrument (INSTRUME='FGS'; CONFIG names the science
instrument). See DOMAIN.md sections 2-4 for the keywords and sentinels read here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.fits_blocks import FileFormatError, FitsHDU
from ingest.keywords import KeywordReader, KeywordWarning, header_to_json
from ingest.records import JIT_STATISTIC_COLUMNS, FileRecord, HeaderRecord, SampleBlock
from models.jif_keywords import JIF_KEYWORDS
from models.tables import JIT_COLUMNS

__all__ = ["JIT_FILL_THRESHOLD", "parse_asn", "parse_jif", "parse_jit"]

# JIT fill is 1.6e38 (not guiding); TermAng uses 1.6e36 for "not applicable". Anything this
# large is not a measurement: both become NULL, but only 1.6e38 marks a row as fill.
JIT_NULL_THRESHOLD = 1e30
JIT_FILL_THRESHOLD = 1e37
_ARCSEC_TO_MAS = 1000.0
# A straight line fitted to less than this much guided time measures the noise of the 3-s
# averages, not a drift (a 1-s acquisition's rows scatter by ~2 mas: "12 mas/s").
_MIN_DRIFT_SPAN_S = 10.0
_FLOAT_FORMATS = ("E", "D")
# A row is fill (no guiding data) when the dominant guide star's position or the SI jitter holds
# 1.6e38. Geometry (LimbAng, TermAng...) and the magnetometer are measured whatever the guiding,
# and the roll FGS columns are at fill by design when a single guide star is commanded (FINE
# LOCK/GYRO): none of them says the guide star was lost.
_POSITIONAL_COLUMNS = (
    "V2_dom", "V3_dom", "SI_V2_AVG", "SI_V2_RMS", "SI_V2_P2P", "SI_V3_AVG", "SI_V3_RMS",
    "SI_V3_P2P",
)  # fmt: skip


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
    hdus: list[FitsHDU], file_name: str, xtension: str, warnings: list[KeywordWarning]
) -> list[tuple[FitsHDU, KeywordReader]]:
    """The 'jit' extensions in order, each checked for type, EXTNAME and EXPNAME."""
    extensions = []
    for hdu in hdus[1:]:
        index = hdu.index
        reader = KeywordReader(hdu.keywords, file_name, index, warnings)
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


def _jif_values(reader: KeywordReader, table: str) -> dict[str, Any]:
    """Every keyword of the JIF keyword map that lives on ``table``, typed, by column."""
    return {
        k.column: reader.value(k.keyword, k.type, k.absent)
        for k in JIF_KEYWORDS
        if k.table == table
    }


def _warning_rows(
    warnings: list[KeywordWarning], exposure_ids: dict[int, str]
) -> list[dict[str, Any]]:
    return [
        {
            "hdu_index": w.hdu_index,
            "keyword": w.keyword,
            "raw_value": w.raw_value,
            "message": w.message,
            "exposure_id": exposure_ids.get(w.hdu_index),
        }
        for w in warnings
    ]


def parse_jif(hdus: list[FitsHDU], file_name: str) -> FileRecord:
    """A `_jif.fits` (FILETYPE='JIM'): association flags and per-exposure guiding keywords.

    A keyword value that cannot be read is NULL with a warning row; the file is kept.
    """
    warnings: list[KeywordWarning] = []
    primary = KeywordReader(hdus[0].keywords, file_name, 0, warnings)
    asn = _primary_identity(primary, "JIM")
    record = FileRecord(kind="jif", associations=[asn | _jif_values(primary, "association")])
    exposure_ids = {}
    for hdu, ext in _jitter_extensions(hdus, file_name, "IMAGE", warnings):
        exposure = _exposure_identity(ext, asn, hdu.index) | _jif_values(ext, "exposure")
        exposure_ids[hdu.index] = exposure["exposure_id"]
        record.exposures.append(exposure)
    record.headers = _headers(hdus, exposure_ids)
    record.warnings = _warning_rows(warnings, exposure_ids)
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
    slewing = columns["slew_flag"] == 1
    stats: dict[str, Any] = {
        "jit_n_samples": n_rows,
        "jit_n_fill": int(fill.sum()),
        "jit_takedata_frac": float(np.mean(columns["take_data"] == 1)) if n_rows else None,
        "jit_duration_s": float(columns["seconds"][-1]) if n_rows else None,
        "jit_n_slew": int(slewing.sum()),
        "jit_n_slew_guided": int((slewing & (columns["take_data"] == 1)).sum()),
        "jit_n_recenter": int((columns["recenter"] == 1).sum()),
    }
    if not good.any():
        return dict.fromkeys(JIT_STATISTIC_COLUMNS) | stats
    v2_avg, v3_avg = _mas(columns["si_v2_avg"][good]), _mas(columns["si_v3_avg"][good])
    v2_rms, v3_rms = _mas(columns["si_v2_rms"][good]), _mas(columns["si_v3_rms"][good])
    seconds = columns["seconds"][good]
    slopes = (_slope(seconds, v2_avg), _slope(seconds, v3_avg))
    span = float(np.ptp(seconds))
    rate = None if None in slopes or span < _MIN_DRIFT_SPAN_S else float(np.hypot(*slopes))
    return stats | {
        "si_v2_avg_std_mas": float(np.std(v2_avg)),
        "si_v3_avg_std_mas": float(np.std(v3_avg)),
        "si_v2_rms_median_mas": float(np.median(v2_rms)),
        "si_v3_rms_median_mas": float(np.median(v3_rms)),
        "si_rms_p95_mas": float(np.percentile(np.hypot(v2_rms, v3_rms), 95)),
        "drift_v2_mas": float(np.ptp(v2_avg)),
        "drift_v3_mas": float(np.ptp(v3_avg)),
        "drift_trend_v2_mas": None if slopes[0] is None else abs(slopes[0]) * span,
        "drift_trend_v3_mas": None if slopes[1] is None else abs(slopes[1]) * span,
        "drift_rate_mas_s": rate,
    }


def _slope(seconds: np.ndarray, values: np.ndarray) -> float | None:
    """Slope of a straight line fitted to the values, in their unit per second.

    The raw range of the 3-s averages is dominated by noise (49 mas in a nominal real COS
    exposure); a drift on gyros is a steady trend, which the slope measures.
    """
    if len(seconds) < 3 or np.ptp(seconds) == 0:
        return None
    return float(np.polyfit(seconds, values, 1)[0])


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
    warnings: list[KeywordWarning] = []
    primary = KeywordReader(hdus[0].keywords, file_name, 0, warnings)
    asn = _primary_identity(primary, "JTB")
    record = FileRecord(kind="jit", associations=[asn])
    exposure_ids = {}
    for hdu, ext in _jitter_extensions(hdus, file_name, "BINTABLE", warnings):
        _check_table_formats(hdu, file_name)
        exposure = _exposure_identity(ext, asn, hdu.index)
        columns = _table_columns(hdu)
        exposure |= jit_statistics(columns, _fill_rows(hdu))
        exposure_ids[hdu.index] = exposure["exposure_id"]
        record.exposures.append(exposure)
        record.samples.append(SampleBlock(exposure["exposure_id"], columns))
    record.headers = _headers(hdus, exposure_ids)
    record.warnings = _warning_rows(warnings, exposure_ids)
    return record


def parse_asn(hdus: list[FitsHDU], file_name: str) -> FileRecord:
    """An `_asn.fits` table: the 9-char science rootname of each member exposure, and whether
    its data are present (MEMPRSNT)."""
    warnings: list[KeywordWarning] = []
    primary = KeywordReader(hdus[0].keywords, file_name, 0, warnings)
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
    present = table.get("MEMPRSNT", [None] * len(table["MEMNAME"]))
    members = [
        (str(name).strip().lower(), str(memtype).strip(), None if flag is None else bool(flag))
        for name, memtype, flag in zip(table["MEMNAME"], table["MEMTYPE"], present, strict=True)
    ]
    for member_index, (memname, _, memprsnt) in enumerate(
        (m for m in members if m[1].startswith("EXP")), start=1
    ):
        exposure_ids[member_index] = memname[:8]
        record.exposures.append(
            {
                "exposure_id": memname[:8],
                "rootname": memname,
                "asn_id": asn_id,
                "asn_member_index": member_index,
                "asn_memprsnt": memprsnt,
                "proposid": proposid,
            }
        )
    record.headers = _headers(hdus, {})
    record.warnings = _warning_rows(warnings, {})
    return record
