"""Image-quality statistics per WFC3 chip and IR read: sky, DQ fractions, sources, S/N, previews."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std
from astropy.visualization import ZScaleInterval
from matplotlib import image as mpl_image
from numpy.typing import NDArray
from photutils.aperture import CircularAperture, aperture_photometry

from ingest.psf import (
    PsfSummary,
    SourceList,
    detect_sources,
    measure_psf,
    sky_statistics,
    too_small_reason,
)

__all__ = [
    "DQ_GROUPS",
    "IR_DQ",
    "UVIS_DQ",
    "ChipMetrics",
    "DqGroups",
    "ImaMetrics",
    "ReadMetrics",
    "chip_metrics",
    "ima_read_metrics",
    "measure_chip",
    "preview_png",
]


@dataclass(frozen=True)
class DqGroups:
    """DQ bits (hstcal wf3dq.h, DOMAIN §5) grouped into the classes image metrics report."""

    saturated: int
    bad: int  # unusable detector pixels: dead, hot, warm, bad flat, ...
    cosmic_ray: int
    data_lost: int

    @property
    def unusable(self) -> int:
        """Pixels left out of sky statistics: lost, bad or saturated (cosmic rays stay in)."""
        return self.saturated | self.bad | self.data_lost


# UVIS: 256 full-well and 2048 A/D saturation; bad = 4 detector, 8 occulting mask, 16 hot,
# 64 warm, 128 bad bias, 512 bad flat, 1024 charge trap (sink); cosmic rays = 4096 (found by
# the pipeline's AstroDrizzle step and set in MAST's FLT/FLC) and 8192 (rejected in
# combination); 1 Reed-Solomon and 2 fill = data lost.  32 (CTE tail) is not counted as bad.
UVIS_DQ = DqGroups(
    saturated=256 | 2048,
    bad=4 | 8 | 16 | 64 | 128 | 512 | 1024,
    cosmic_ray=4096 | 8192,
    data_lost=1 | 2,
)
# IR: 2048 is the zero-read signal correction (bright pixels), not saturation; cosmic rays =
# 1024 (CR spike), 4096 (AstroDrizzle, as on UVIS) and 8192 (found in the ramp); bad =
# 4 detector, 8 bad zero read, 16 hot, 32 unstable, 64 warm, 128 bad bias (reference), 512 bad
# flat.
IR_DQ = DqGroups(
    saturated=256,
    bad=4 | 8 | 16 | 32 | 64 | 128 | 512,
    cosmic_ray=1024 | 4096 | 8192,
    data_lost=1 | 2,
)
DQ_GROUPS: dict[str, DqGroups] = {"UVIS": UVIS_DQ, "IR": IR_DQ}
_MIN_SKY_PIXELS = 50  # fewer usable pixels than this give no sky statistics
_IR_BORDER_PIX = 5  # IMA reads keep the reference-pixel border; it holds no sky


def _groups(detector: str) -> tuple[str, DqGroups]:
    key = detector.strip().upper()
    if key not in DQ_GROUPS:
        msg = f"detector must be 'UVIS' or 'IR', got {detector!r}"
        raise ValueError(msg)
    return key, DQ_GROUPS[key]


# --- one chip -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipMetrics:
    """Statistics of one science array (a UVIS chip, an IR FLT, or one IR read)."""

    detector: str
    ny: int  # rows, in pixels
    nx: int  # columns, in pixels
    finite_fraction: float  # pixels that are not NaN/inf
    sky_median: float | None  # sigma-clipped, image units per pixel (UVIS e-, IR e-/s)
    sky_sigma: float | None  # sigma-clipped standard deviation, image units
    frac_saturated: float | None  # of all pixels; None without a DQ array
    frac_bad: float | None
    frac_cosmic_ray: float | None
    frac_data_lost: float | None
    n_peaks: int | None  # local maxima at nsigma (stars, galaxies, cosmic rays...)
    n_sources: int | None  # of those, star-like by DAOFIND sharpness
    snr_median: float | None  # median aperture S/N of the star-like sources
    snr_p90: float | None
    nsigma: float
    reason: str | None  # why some values are None


def _dq_fractions(dq: NDArray[np.integer] | None, groups: DqGroups) -> dict[str, float | None]:
    names = ("saturated", "bad", "cosmic_ray", "data_lost")
    if dq is None:
        return {f"frac_{name}": None for name in names}
    dq = np.asarray(dq)
    size = max(dq.size, 1)
    return {
        f"frac_{name}": float(np.count_nonzero(dq & getattr(groups, name))) / size for name in names
    }


def _source_snr(
    sci: NDArray[np.floating], err: NDArray[np.floating] | None, sources: SourceList
) -> NDArray[np.float64]:
    """Aperture S/N of each source: radius = FWHM (≥ 1.5 px), sky from the global median.

    With ERR the noise is the aperture sum of ERR² (source, sky and read noise as calwf3 wrote
    them); without it, only the sky noise (a background-limited S/N, an upper bound).
    """
    if sources.n_sources == 0:
        return np.empty(0)
    radius = max(1.5, sources.fwhm_pix)
    apertures = CircularAperture(np.column_stack([sources.x, sources.y]), r=radius)
    mask = ~np.isfinite(sci)
    table = aperture_photometry(sci, apertures, error=err, mask=mask if mask.any() else None)
    signal = np.asarray(table["aperture_sum"], dtype=np.float64) - sources.sky * apertures.area
    if err is not None:
        noise = np.asarray(table["aperture_sum_err"], dtype=np.float64)
    else:
        noise = np.full(signal.size, sources.sky_sigma * math.sqrt(apertures.area))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = signal / noise
    return snr[np.isfinite(snr)]


def chip_metrics(
    sci: NDArray[np.floating],
    err: NDArray[np.floating] | None = None,
    dq: NDArray[np.integer] | None = None,
    *,
    detector: str = "UVIS",
    fwhm_pix: float | None = None,
    nsigma: float = 5.0,
    sources: SourceList | None = None,
) -> ChipMetrics:
    """Sky, DQ fractions, source count and S/N of one science array.

    Parameters
    ----------
    sci, err : 2-D float arrays
        Science and error arrays, same units (memmap slices are fine; neither is copied whole).
    dq : 2-D int array, optional
        DQ array; fractions are None without it.
    detector : {'UVIS', 'IR'}
        Selects the DQ bit groups (:data:`UVIS_DQ`, :data:`IR_DQ`).
    fwhm_pix : float, optional
        Expected FWHM in pixels for detection (default 2.0 UVIS, 1.3 IR).
    nsigma : float
        Detection threshold, in matched-filter sigma.
    sources : SourceList, optional
        A detection already made on this array (see :func:`measure_chip`).

    Returns
    -------
    ChipMetrics
        None values come with a ``reason``; an array too small or empty never raises.
    """
    key, groups = _groups(detector)
    reasons: list[str] = []
    finite = np.isfinite(sci)
    finite_fraction = float(finite.mean()) if finite.size else 0.0
    del finite
    sky = sky_sigma = None
    median, sigma, n_used = sky_statistics(sci, dq=dq, dq_bits=groups.unusable)
    if n_used >= _MIN_SKY_PIXELS and math.isfinite(sigma):
        sky, sky_sigma = median, sigma
    else:
        reasons.append(f"only {n_used} usable pixels: no sky statistics")
    n_peaks = n_sources = snr_median = snr_p90 = None
    if sources is None:
        sources = detect_sources(sci, dq, detector=key, fwhm_pix=fwhm_pix, nsigma=nsigma)
    if (small := too_small_reason(sci.shape, "find sources")) is not None:
        reasons.append(small)
    elif sky is not None:  # without a sky there was nothing to search
        n_peaks, n_sources = sources.n_peaks, sources.n_sources
        snr = _source_snr(sci, err, sources)
        if snr.size:
            snr_median, snr_p90 = float(np.median(snr)), float(np.percentile(snr, 90))
        else:
            reasons.append(sources.reason or "no source with a finite S/N")
    ny, nx = sci.shape if sci.ndim == 2 else (0, 0)
    return ChipMetrics(
        detector=key,
        ny=ny,
        nx=nx,
        finite_fraction=finite_fraction,
        sky_median=sky,
        sky_sigma=sky_sigma,
        **_dq_fractions(dq, groups),
        n_peaks=n_peaks,
        n_sources=n_sources,
        snr_median=snr_median,
        snr_p90=snr_p90,
        nsigma=nsigma,
        reason="; ".join(reasons) or None,
    )


def measure_chip(
    sci: NDArray[np.floating],
    err: NDArray[np.floating] | None = None,
    dq: NDArray[np.integer] | None = None,
    *,
    detector: str = "UVIS",
    fwhm_pix: float | None = None,
    nsigma: float = 5.0,
) -> tuple[ChipMetrics, PsfSummary]:
    """Chip metrics and PSF of one array, sharing one detection (the expensive step)."""
    sources = detect_sources(sci, dq, detector=detector, fwhm_pix=fwhm_pix, nsigma=nsigma)
    metrics = chip_metrics(sci, err, dq, detector=detector, nsigma=nsigma, sources=sources)
    psf = measure_psf(sci, dq, detector=detector, fwhm_guess_pix=fwhm_pix, sources=sources)
    return metrics, psf


# --- IR IMA reads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadMetrics:
    """One IMA read, and the interval since the read before it (rates in e-/s)."""

    sampnum: int  # 0 = zeroth read
    extver: int  # imset number in the file ([SCI,1] is the last read)
    samptime_s: float  # time since the zeroth read, in seconds
    deltatime_s: float | None  # since the previous read, in seconds
    sky_rate_median: float | None  # sigma-clipped median of this read's SCI (cumulative rate)
    sky_rate_sigma: float | None
    interval_rate_median: float | None  # median rate of the counts gathered in this interval
    interval_rate_sigma: float | None  # per-pixel noise of the interval rate (robust)
    rate_step_sigma: float | None  # interval median minus the previous one, in sigma of that
    outlier_pixels: int | None  # pixels > nsigma above their own rate in this interval only
    outlier_fraction: float | None  # of the usable science pixels
    outlier_sigma: float | None  # excess of outlier pixels over the other intervals, in sigma
    reason: str | None


@dataclass(frozen=True)
class ImaMetrics:
    """Read-to-read consistency of an IR IMA: a satellite or a jump in one read stands out."""

    n_reads: int  # including the zeroth read
    n_intervals: int
    reads: list[ReadMetrics]  # in time order, zeroth read first
    read_outlier_sigma: float | None  # largest outlier_sigma of any read
    worst_sampnum: int | None  # the read with that score
    rate_step_sigma_max: float | None  # largest |rate_step_sigma|
    reason: str | None


def _inner(array: NDArray, border: int) -> NDArray:
    """The science area of an IMA read, without its reference-pixel border."""
    if border > 0 and min(array.shape) > 2 * border:
        return array[border:-border, border:-border]
    return array


def _usable_mask(
    sci_reads: Sequence[NDArray], dq_reads: Sequence[NDArray] | None, border: int
) -> NDArray[np.bool_]:
    """Pixels finite in every read and never flagged lost, bad or saturated.

    Cosmic-ray bits are not excluded: calwf3 may flag a satellite streak as a CR, and finding
    it is the point.
    """
    usable = np.ones(_inner(sci_reads[0], border).shape, dtype=bool)
    for k, sci in enumerate(sci_reads):
        usable &= np.isfinite(_inner(sci, border))
        if dq_reads is not None:
            usable &= (_inner(np.asarray(dq_reads[k]), border) & IR_DQ.unusable) == 0
    return usable


def _interval_rates(
    sci_sorted: list[NDArray], times: list[float], border: int
) -> NDArray[np.float32]:
    """(n_intervals, ny, nx) count rates between consecutive reads, in e-/s."""
    counts_prev = np.zeros(_inner(sci_sorted[0], border).shape, dtype=np.float32)
    rates = np.empty((len(times) - 1, *counts_prev.shape), dtype=np.float32)
    for k in range(1, len(times)):
        # IMA SCI is the cumulative count divided by SAMPTIME (zeroth read subtracted).
        counts = np.asarray(_inner(sci_sorted[k], border), dtype=np.float32) * np.float32(times[k])
        rates[k - 1] = (counts - counts_prev) / np.float32(times[k] - times[k - 1])
        counts_prev = counts
    return rates


def _outlier_scores(counts: NDArray[np.float64], dts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Excess of outlier pixels per interval over the quiet intervals, in Poisson sigma."""
    per_second = counts / dts
    # With two intervals the quieter one is the baseline; with more, the median.
    baseline = float(np.median(per_second)) if counts.size >= 3 else float(per_second.min())
    expected = baseline * dts
    return (counts - expected) / np.sqrt(expected + 1.0)


def _read_stats(sci: NDArray, usable: NDArray[np.bool_], border: int) -> tuple[float | None, ...]:
    median, sigma, n_used = sky_statistics(_inner(sci, border), ~usable)
    if n_used < _MIN_SKY_PIXELS or not sigma > 0:
        return None, None
    return median, sigma


def ima_read_metrics(
    sci_reads: Sequence[NDArray[np.floating]],
    samptime_s: Sequence[float],
    *,
    dq_reads: Sequence[NDArray[np.integer]] | None = None,
    border_pix: int = _IR_BORDER_PIX,
    nsigma: float = 5.0,
) -> ImaMetrics:
    """Per-read sky and count-rate consistency of an IR IMA.

    The counts gathered between consecutive reads give one rate image per interval.  Per
    interval this reports the median rate and its step from the previous interval (a sky jump),
    and the pixels more than ``nsigma`` above their mean rate in the other intervals (a
    satellite or a CR shower in that read only), with the excess of their count over the other
    intervals' (scaled by duration) in Poisson sigma.

    Parameters
    ----------
    sci_reads : sequence of 2-D arrays
        [SCI,1], [SCI,2], ... in file order (any order works: reads are sorted by SAMPTIME),
        in e-/s as calwf3 writes IMA.
    samptime_s : sequence of float
        SAMPTIME of each read, in seconds (0 for the zeroth read).
    dq_reads : sequence of 2-D int arrays, optional
        DQ per read; pixels ever flagged lost, bad or saturated are left out.
    border_pix : int
        Reference-pixel border excluded from the statistics, in pixels.
    nsigma : float
        Outlier threshold per pixel.
    """
    if len(sci_reads) != len(samptime_s) or not sci_reads:
        msg = f"need one SAMPTIME per read: {len(sci_reads)} reads, {len(samptime_s)} times"
        raise ValueError(msg)
    order = sorted(range(len(sci_reads)), key=lambda i: samptime_s[i])
    times = [float(samptime_s[i]) for i in order]
    sci_sorted = [sci_reads[i] for i in order]
    dq_sorted = None if dq_reads is None else [dq_reads[i] for i in order]
    reason = too_small_reason(_inner(sci_sorted[0], border_pix).shape, "compare reads")
    if reason is None and len(times) < 3:
        reason = f"{len(times)} reads: at least 3 (2 intervals) are needed to compare reads"
    if reason is None and min(np.diff(times)) <= 0:
        reason = "two reads share a SAMPTIME: intervals undefined"
    usable = _usable_mask(sci_sorted, dq_sorted, border_pix)
    if reason is None and usable.sum() < _MIN_SKY_PIXELS:
        reason = f"only {int(usable.sum())} usable pixels in every read: reads not compared"
    sky = [_read_stats(sci, usable, border_pix) for sci in sci_sorted]
    if reason is not None:
        reads = [_bare_read(k, order[k] + 1, times, sky[k], reason) for k in range(len(times))]
        return ImaMetrics(len(times), max(len(times) - 1, 0), reads, None, None, None, reason)
    return _compare_reads(sci_sorted, times, order, usable, sky, border_pix, nsigma)


def _bare_read(
    k: int, extver: int, times: list[float], sky: tuple[float | None, ...], reason: str | None
) -> ReadMetrics:
    return ReadMetrics(
        sampnum=k,
        extver=extver,
        samptime_s=times[k],
        deltatime_s=times[k] - times[k - 1] if k else None,
        sky_rate_median=sky[0],
        sky_rate_sigma=sky[1],
        interval_rate_median=None,
        interval_rate_sigma=None,
        rate_step_sigma=None,
        outlier_pixels=None,
        outlier_fraction=None,
        outlier_sigma=None,
        reason=reason,
    )


def _interval_statistics(
    rates: NDArray[np.float32], usable: NDArray[np.bool_], dts: NDArray[np.float64], nsigma: float
) -> tuple[list[float], list[float], list[int]]:
    """Per interval: median rate, robust per-pixel sigma, and pixels in excess of the others."""
    n_int = len(rates)
    # Each interval is compared with the mean of the others: an event in interval k then shows
    # as a positive excess in k only (and a small negative one elsewhere, which is not counted).
    total = rates.sum(axis=0)
    mean_rate = total / np.float32(n_int)
    source_rate = np.clip(mean_rate - np.median(mean_rate[usable]), 0.0, None)[usable]
    stride = max(1, int(usable.sum()) // 250_000)
    medians, sigmas, counts = [], [], []
    for k, rate in enumerate(rates):
        delta = (rate - (total - rate) / np.float32(n_int - 1))[usable]
        # Bright pixels add their own Poisson noise (rates are in electrons per second).
        noise = np.sqrt(float(mad_std(delta[::stride])) ** 2 + source_rate / dts[k])
        counts.append(int(np.count_nonzero(delta > nsigma * noise)))
        values = rate[usable]
        medians.append(float(np.median(values)))
        sigmas.append(float(mad_std(values[::stride])))
    return medians, sigmas, counts


def _compare_reads(
    sci_sorted: list[NDArray],
    times: list[float],
    order: list[int],
    usable: NDArray[np.bool_],
    sky: list[tuple[float | None, ...]],
    border: int,
    nsigma: float,
) -> ImaMetrics:
    dts = np.diff(np.asarray(times))
    rates = _interval_rates(sci_sorted, times, border)
    medians, sigmas, counts = _interval_statistics(rates, usable, dts, nsigma)
    del rates
    scores = _outlier_scores(np.asarray(counts, dtype=np.float64), dts)
    n_usable = int(usable.sum())
    reads = [_bare_read(0, order[0] + 1, times, sky[0], "zeroth read: no interval before it")]
    for k in range(len(dts)):
        rate_step = None
        if k:
            # Noise of a median of n pixels is 1.2533 sigma / sqrt(n).
            noise = 1.2533 * math.hypot(sigmas[k], sigmas[k - 1]) / math.sqrt(n_usable)
            rate_step = (medians[k] - medians[k - 1]) / noise if noise > 0 else None
        reads.append(
            ReadMetrics(
                sampnum=k + 1,
                extver=order[k + 1] + 1,
                samptime_s=times[k + 1],
                deltatime_s=float(dts[k]),
                sky_rate_median=sky[k + 1][0],
                sky_rate_sigma=sky[k + 1][1],
                interval_rate_median=medians[k],
                interval_rate_sigma=sigmas[k],
                rate_step_sigma=rate_step,
                outlier_pixels=counts[k],
                outlier_fraction=counts[k] / n_usable,
                outlier_sigma=float(scores[k]),
                reason=None if k else "first interval: no step from a previous one",
            )
        )
    worst = int(np.argmax(scores))
    steps = [abs(r.rate_step_sigma) for r in reads if r.rate_step_sigma is not None]
    return ImaMetrics(
        n_reads=len(times),
        n_intervals=len(dts),
        reads=reads,
        read_outlier_sigma=float(scores[worst]),
        worst_sampnum=worst + 1,
        rate_step_sigma_max=max(steps) if steps else None,
        reason=None,
    )


# --- preview --------------------------------------------------------------------------------


def _block_mean(sci: NDArray[np.floating], factor: int) -> NDArray[np.float32]:
    """Mean over factor x factor blocks (NaNs ignored), one strip of rows at a time."""
    ny, nx = (sci.shape[0] // factor) * factor, (sci.shape[1] // factor) * factor
    out = np.full((ny // factor, nx // factor), np.nan, dtype=np.float32)
    for row in range(out.shape[0]):
        strip = np.asarray(sci[row * factor : (row + 1) * factor, :nx], dtype=np.float32)
        blocks = strip.reshape(factor, nx // factor, factor)
        finite = np.isfinite(blocks)
        n = finite.sum(axis=(0, 2))
        total = np.where(finite, blocks, 0.0).sum(axis=(0, 2))
        out[row] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return out


def preview_png(sci: NDArray[np.floating], max_size: int = 256) -> bytes:
    """A zscale-stretched greyscale PNG of an image, block-averaged to at most max_size pixels.

    Row 0 is at the bottom, as in DS9 and the notebook's displays.  NaNs show black.
    """
    if sci.ndim != 2 or min(sci.shape) == 0:
        msg = f"preview needs a non-empty 2-D array, got shape {sci.shape}"
        raise ValueError(msg)
    factor = max(1, math.ceil(max(sci.shape) / max_size))
    small = _block_mean(sci, factor) if factor > 1 else np.asarray(sci, dtype=np.float32)
    finite = np.isfinite(small)
    vmin, vmax = (0.0, 1.0)
    if finite.any():
        vmin, vmax = ZScaleInterval().get_limits(small[finite])
    if not vmax > vmin:
        vmax = vmin + 1.0
    buffer = io.BytesIO()
    mpl_image.imsave(
        buffer,
        np.where(finite, small, vmin),
        vmin=vmin,
        vmax=vmax,
        cmap="gray",
        origin="lower",
        format="png",
    )
    return buffer.getvalue()
