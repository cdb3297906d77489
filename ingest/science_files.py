"""Parser for WFC3 science files (`_flt`, `_flc`, `_ima`): header columns, image metrics, PSF.

Unlike the small jitter files, a UVIS FLC is 168 MB: plain files are memory-mapped and each chip
is read once, as the metrics need it; gzipped ones are decompressed once by astropy.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.card import Undefined
from astropy.time import Time

from ingest.fits_blocks import FileFormatError
from ingest.image_metrics import ChipMetrics, ima_read_metrics, measure_chip, preview_png
from ingest.keywords import KeywordReader, KeywordWarning, header_to_json
from ingest.psf import PsfSummary, nominal_fwhm_pix
from ingest.psf_profiles import fwhm_after_pixelation
from ingest.records import SCIENCE_RANK, FileRecord, HeaderRecord

__all__ = ["parse_science_file"]
_STARS_KEPT = 20  # brightest PSF stars stored per chip, for radial-profile plots
_PREVIEW_PIX = 192


def _mjd_utc(value: float | None) -> datetime | None:
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return Time(value, format="mjd", scale="utc").to_datetime(timezone=UTC)


def _delivery_date(primary: KeywordReader) -> date | None:
    """PROCTIME (MJD) of the science file: when the pipeline produced what MAST delivered.

    For reprocessed data this is the latest reprocessing, later than the first delivery.
    """
    moment = _mjd_utc(primary.optional_float("PROCTIME"))
    return moment.date() if moment else None


def _flag(text: str | None) -> str | None:
    return text.strip().upper() if text else None


def _header_columns(primary: KeywordReader, kind: str) -> dict[str, Any]:
    """The exposure's science keywords, as exposure columns."""
    rootname = primary.required_str("ROOTNAME").lower()
    detector = primary.required_str("DETECTOR").upper()
    asn_id = (primary.optional_str("ASN_ID") or "").lower()
    instrument = primary.required_str("INSTRUME").upper()
    return {
        "exposure_id": rootname[:8],
        "rootname": rootname,
        **({"asn_id": asn_id} if asn_id and asn_id != "none" else {}),
        "proposid": primary.optional_int("PROPOSID"),
        "config": f"{instrument}/{detector}",
        "instrument": instrument,
        "detector": detector,
        "filter": primary.optional_str("FILTER"),
        "aperture": primary.optional_str("APERTURE"),
        "subarray": primary.optional_bool("SUBARRAY"),
        "targname": primary.optional_str("TARGNAME"),
        "ra_targ": primary.optional_float("RA_TARG"),
        "dec_targ": primary.optional_float("DEC_TARG"),
        "expstart": _mjd_utc(primary.optional_float("EXPSTART")),
        "expend": _mjd_utc(primary.optional_float("EXPEND")),
        "exptime_s": primary.optional_float("EXPTIME"),
        "expflag": _flag(primary.optional_str("EXPFLAG")),
        "fgslock": _flag(primary.optional_str("FGSLOCK")),
        "gyromode": primary.optional_str("GYROMODE"),
        "quality": primary.optional_str("QUALITY"),
        "imagetyp": _flag(primary.optional_str("IMAGETYP")),
        "obsmode": _flag(primary.optional_str("OBSMODE")),
        "exptype": _flag(primary.optional_str("EXPTYPE")),
        "scan_typ": _flag(primary.optional_str("SCAN_TYP")),
        "mtflag": primary.optional_flag("MTFLAG"),
        "postarg1_arcsec": primary.optional_float("POSTARG1"),
        "postarg2_arcsec": primary.optional_float("POSTARG2"),
        "date_delivered": _delivery_date(primary),
        "cal_ver": primary.optional_str("CAL_VER"),
        "photplam_angstrom": primary.optional_float("PHOTPLAM"),
    }


def _imsets(hdul: fits.HDUList) -> list[int]:
    """EXTVERs of the SCI extensions, in file order."""
    return [hdu.ver for hdu in hdul if hdu.name == "SCI"]


def _array(hdul: fits.HDUList, name: str, extver: int) -> np.ndarray | None:
    try:
        data = hdul[name, extver].data
    except KeyError:
        return None
    return None if data is None or data.ndim != 2 else data


def _star_rows(psf: PsfSummary) -> list[dict[str, Any]]:
    brightest = sorted(psf.stars, key=lambda s: -(s.flux or 0))[:_STARS_KEPT]
    return [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(star).items()}
        for star in brightest
    ]


def _nominal(detector: str, photplam: float | None) -> tuple[float | None, float | None]:
    """Handbook FWHM (before pixelation) and what a fit on real pixels should find."""
    handbook = nominal_fwhm_pix(detector, photplam)
    return handbook, (fwhm_after_pixelation(handbook) if handbook else None)


def _chip_rows(
    exposure_id: str, kind: str, extver: int, chip: int | None, metrics: ChipMetrics
) -> dict[str, Any]:
    return {
        "exposure_id": exposure_id, "kind": kind, "extver": extver, "ccdchip": chip,
        "sampnum": None, "samptime_s": None, "ny": metrics.ny, "nx": metrics.nx,
        "finite_fraction": metrics.finite_fraction, "sky_median": metrics.sky_median,
        "sky_sigma": metrics.sky_sigma, "frac_saturated": metrics.frac_saturated,
        "frac_bad": metrics.frac_bad, "frac_cosmic_ray": metrics.frac_cosmic_ray,
        "frac_data_lost": metrics.frac_data_lost, "n_sources": metrics.n_sources,
        "snr_median": metrics.snr_median, "snr_p90": metrics.snr_p90,
        "rate_step_sigma": None, "outlier_sigma": None, "reason": metrics.reason,
    }  # fmt: skip


def _preview(hdul: fits.HDUList, extver: int, exposure_id: str, kind: str) -> dict[str, Any]:
    images = {name: _array(hdul, name, extver) for name in ("SCI", "ERR", "DQ")}
    return {
        "exposure_id": exposure_id,
        "kind": kind,
        "extver": extver,
        **{
            f"{name.lower()}_png": preview_png(np.asarray(a, dtype=np.float32), _PREVIEW_PIX)
            if a is not None and min(a.shape) >= 2
            else None
            for name, a in images.items()
        },
    }


def _measure_chips(
    hdul: fits.HDUList, record: FileRecord, columns: dict[str, Any]
) -> list[PsfSummary]:
    """Metrics, PSF and previews of every SCI chip of an FLT/FLC."""
    exposure_id, kind, detector = columns["exposure_id"], record.kind, columns["detector"]
    handbook, expected = _nominal(detector, columns["photplam_angstrom"])
    summaries = []
    for extver in _imsets(hdul):
        sci = _array(hdul, "SCI", extver)
        if sci is None:
            continue
        chip = hdul["SCI", extver].header.get("CCDCHIP")
        metrics, psf = measure_chip(
            sci, _array(hdul, "ERR", extver), _array(hdul, "DQ", extver), detector=detector
        )
        record.image_metrics.append(_chip_rows(exposure_id, kind, extver, chip, metrics))
        record.psf.append({
            "exposure_id": exposure_id, "kind": kind, "extver": extver, "ccdchip": chip,
            "n_psf_stars": psf.n_psf_stars, "fwhm_median_pix": psf.fwhm_median_pix,
            "fwhm_p90_pix": psf.fwhm_p90_pix, "fwhm_mad_pix": psf.fwhm_mad_pix,
            "elongation_median": psf.elongation_median, "fwhm_handbook_pix": handbook,
            "fwhm_nominal_pix": expected, "reason": psf.reason, "stars": _star_rows(psf),
        })  # fmt: skip
        record.previews.append(_preview(hdul, extver, exposure_id, kind))
        summaries.append((psf, metrics))
    return summaries


def _exposure_summary(summaries: list, expected: float | None) -> dict[str, Any]:
    """One number per exposure from its chips: the star-weighted view the rules read."""
    fwhm = [p.fwhm_median_pix for p, _ in summaries if p.fwhm_median_pix is not None]
    p90 = [p.fwhm_p90_pix for p, _ in summaries if p.fwhm_p90_pix is not None]
    elongation = [p.elongation_median for p, _ in summaries if p.elongation_median is not None]
    snr = [m.snr_median for _, m in summaries if m.snr_median is not None]
    return {
        "n_psf_stars": sum(p.n_psf_stars for p, _ in summaries),
        "fwhm_median_pix": float(np.median(fwhm)) if fwhm else None,
        "fwhm_p90_pix": float(np.max(p90)) if p90 else None,
        "elongation_median": float(np.median(elongation)) if elongation else None,
        "fwhm_nominal_pix": expected,
        "median_snr": float(np.median(snr)) if snr else None,
    }


def _measure_ima(hdul: fits.HDUList, record: FileRecord, columns: dict[str, Any]) -> dict[str, Any]:
    """Per-read rows of an IR IMA and the read-consistency score of the exposure."""
    extvers = _imsets(hdul)
    reads = [_array(hdul, "SCI", v) for v in extvers]
    if any(r is None for r in reads) or len(reads) < 1:
        return {"read_outlier_sigma": None}
    samptimes = [float(hdul["SCI", v].header.get("SAMPTIME", math.nan)) for v in extvers]
    metrics = ima_read_metrics(reads, samptimes)
    for read in metrics.reads:
        record.image_metrics.append({
            "exposure_id": columns["exposure_id"], "kind": "ima", "extver": read.extver,
            "ccdchip": None, "sampnum": read.sampnum, "samptime_s": read.samptime_s,
            "ny": reads[0].shape[0], "nx": reads[0].shape[1], "finite_fraction": None,
            "sky_median": read.sky_rate_median, "sky_sigma": read.sky_rate_sigma,
            "frac_saturated": None, "frac_bad": None, "frac_cosmic_ray": None,
            "frac_data_lost": None, "n_sources": None, "snr_median": None, "snr_p90": None,
            "rate_step_sigma": read.rate_step_sigma, "outlier_sigma": read.outlier_sigma,
            "reason": read.reason or metrics.reason,
        })  # fmt: skip
    record.previews.append(_preview(hdul, extvers[0], columns["exposure_id"], "ima"))
    return {"read_outlier_sigma": metrics.read_outlier_sigma}


def parse_science_file(path: Path, kind: str) -> FileRecord:
    """An FLT, FLC or IMA: science columns, per-chip (per-read) metrics, PSF and previews."""
    name = path.name
    warnings: list[KeywordWarning] = []
    with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
        primary = KeywordReader(hdul[0].header, name, 0, warnings)
        filetype = primary.required_str("FILETYPE")
        if filetype != "SCI":
            msg = f"{name} HDU 0: FILETYPE = {filetype!r}, expected 'SCI' for a {kind} file"
            raise FileFormatError(msg)
        columns = _header_columns(primary, kind)
        if columns["photplam_angstrom"] is None and _imsets(hdul):
            # UVIS files carry PHOTPLAM per chip, IR files in the primary header.
            chip = KeywordReader(hdul["SCI", _imsets(hdul)[0]].header, name, 1, warnings)
            columns["photplam_angstrom"] = chip.optional_float("PHOTPLAM")
        record = FileRecord(kind=kind)
        if kind == "ima":
            columns |= _measure_ima(hdul, record, columns)
        else:
            _, expected = _nominal(columns["detector"], columns["photplam_angstrom"])
            columns |= _exposure_summary(_measure_chips(hdul, record, columns), expected)
        columns["sci_rank"] = SCIENCE_RANK[kind]
        record.exposures.append(columns)
        record.headers = [
            HeaderRecord(
                hdu_index=index,
                extname=(hdu.name if index else None),
                exposure_id=columns["exposure_id"],
                header=header_to_json(
                    (c.keyword, None if isinstance(c.value, Undefined) else c.value)
                    for c in hdu.header.cards
                ),
            )
            for index, hdu in enumerate(hdul)
        ]
    record.warnings = [
        {"hdu_index": w.hdu_index, "keyword": w.keyword, "raw_value": w.raw_value,
         "message": w.message, "exposure_id": columns["exposure_id"]}
        for w in warnings
    ]  # fmt: skip
    return record
