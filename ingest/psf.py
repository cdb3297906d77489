"""PSF FWHM and elongation per image from isolated stars: detection, Moffat radial fits, moments."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from astropy.stats import sigma_clipped_stats
from numpy.typing import NDArray
from photutils.detection import DAOStarFinder
from photutils.utils.exceptions import NoDetectionsWarning
from scipy import ndimage
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.spatial import cKDTree

__all__ = [
    "DQ_PSF_REJECT",
    "MIN_IMAGE_SIDE_PIX",
    "NOMINAL_FWHM",
    "NominalFwhm",
    "PsfSummary",
    "SourceList",
    "StarMeasurement",
    "bad_pixel_mask",
    "detect_sources",
    "measure_psf",
    "moffat_fwhm",
    "nominal_fwhm_confirmed",
    "nominal_fwhm_pix",
    "sky_statistics",
    "too_small_reason",
]

# --- nominal FWHM per wavelength (DOMAIN §7) ----------------------------------------------------


@dataclass(frozen=True)
class NominalFwhm:
    """One row of a handbook FWHM table (optical FWHM, before pixelation)."""

    wavelength_nm: float
    fwhm_pix: float
    fwhm_arcsec: float | None
    confirmed: bool  # False: recalled, not checked against the handbook (UNCONF)


def _table(
    wavelengths_nm: range,
    fwhm_pix: tuple[float, ...],
    arcsec: tuple[float | None, ...],
    confirmed_nm: frozenset[int],
) -> tuple[NominalFwhm, ...]:
    return tuple(
        NominalFwhm(float(nm), px, asec, nm in confirmed_nm)
        for nm, px, asec in zip(wavelengths_nm, fwhm_pix, arcsec, strict=True)
    )


# IR: WFC3 IHB Table 7.5.  800 and 900 nm are confirmed; 1000-1700 nm are UNCONF (recalled values,
# consistent with the 1.0-1.2 px range and the px->arcsec arithmetic; check against the handbook).
# UVIS: IHB Table 6.7, 200-1100 nm, all UNCONF.  Override with nominal_fwhm_pix(overrides=...).
NOMINAL_FWHM: dict[str, tuple[NominalFwhm, ...]] = {
    "IR": _table(
        range(800, 1800, 100),
        (0.971, 0.986, 1.001, 1.019, 1.040, 1.067, 1.098, 1.136, 1.177, 1.230),
        (0.124, 0.126, 0.128, None, None, None, None, None, None, 0.157),
        frozenset({800, 900}),
    ),
    "UVIS": _table(
        range(200, 1200, 100),
        (2.069, 1.870, 1.738, 1.675, 1.681, 1.746, 1.844, 1.960, 2.091, 2.236),
        (0.083, 0.075, 0.070, 0.067, 0.067, 0.070, 0.074, 0.078, 0.084, 0.089),
        frozenset(),
    ),
}


def _nominal_points(
    detector: str, overrides: Mapping[float, float] | None
) -> dict[float, tuple[float, bool]] | None:
    rows = NOMINAL_FWHM.get(detector.strip().upper())
    if rows is None:
        return None
    points = {row.wavelength_nm: (row.fwhm_pix, row.confirmed) for row in rows}
    # An override is a value someone checked against the handbook: it counts as confirmed.
    points.update({float(nm): (float(px), True) for nm, px in (overrides or {}).items()})
    return points


def _bracket(
    points: dict[float, tuple[float, bool]], wavelength_nm: float
) -> tuple[float, float, float, bool] | None:
    """Interpolated FWHM (pixels), and whether both bracketing table rows are confirmed."""
    nms = sorted(points)
    if not nms[0] <= wavelength_nm <= nms[-1]:
        return None
    hi = next(i for i, nm in enumerate(nms) if nm >= wavelength_nm)
    lo = max(hi - 1, 0) if nms[hi] != wavelength_nm else hi
    (f_lo, c_lo), (f_hi, c_hi) = points[nms[lo]], points[nms[hi]]
    w = 0.0 if hi == lo else (wavelength_nm - nms[lo]) / (nms[hi] - nms[lo])
    return f_lo + w * (f_hi - f_lo), nms[lo], nms[hi], c_lo and c_hi


def nominal_fwhm_pix(
    detector: str,
    photplam_angstrom: float | None,
    *,
    overrides: Mapping[float, float] | None = None,
) -> float | None:
    """Nominal optical FWHM in pixels at a pivot wavelength, interpolated in the handbook table.

    Parameters
    ----------
    detector : {'UVIS', 'IR'}
        The DETECTOR keyword.
    photplam_angstrom : float
        Pivot wavelength PHOTPLAM, in Å.
    overrides : mapping of wavelength (nm) to FWHM (pixels), optional
        Replace or add table rows for this detector (e.g. checked values for the UNCONF rows).

    Returns
    -------
    float or None
        FWHM before pixelation in pixels (fits on real pixels come out larger); None for an
        unknown detector, a missing PHOTPLAM, or a wavelength outside the table (no extrapolation).
    """
    points = _nominal_points(detector, overrides)
    if points is None or photplam_angstrom is None or not math.isfinite(photplam_angstrom):
        return None
    found = _bracket(points, photplam_angstrom / 10.0)
    return None if found is None else found[0]


def nominal_fwhm_confirmed(
    detector: str, photplam_angstrom: float, *, overrides: Mapping[float, float] | None = None
) -> bool:
    """True when the interpolated nominal FWHM rests only on confirmed table rows."""
    points = _nominal_points(detector, overrides)
    found = None if points is None else _bracket(points, photplam_angstrom / 10.0)
    return bool(found and found[3])


# --- data-quality bits (DOMAIN §5, hstcal wf3dq.h) ----------------------------------------------

# Pixels that ruin a PSF star: saturation (256; UVIS also 2048 A/D), bad detector pixel (4), data
# lost (2) and Reed-Solomon errors (1).  IR 2048 flags the zero-read signal correction of bright
# pixels, so it is not a reason to reject an IR star.
DQ_PSF_REJECT: dict[str, int] = {"UVIS": 1 | 2 | 4 | 256 | 2048, "IR": 1 | 2 | 4 | 256}
# Pixels left out of a fit (hot, warm, bad flat, cosmic rays: 4096 found by AstroDrizzle, 8192
# rejected in combination, IR 1024) but tolerated outside the core.
_DQ_PSF_EXCLUDE: dict[str, int] = {
    "UVIS": 8 | 16 | 64 | 128 | 512 | 1024 | 4096 | 8192,
    "IR": 8 | 16 | 32 | 64 | 512 | 1024 | 4096 | 8192,
}
# Cosmic-ray hits the pipeline flagged are not sources: set to the sky before detection, so a
# hit beside a star neither becomes a peak nor makes the star look crowded.
_DQ_COSMIC_RAY = 4096
MIN_IMAGE_SIDE_PIX = 32  # below this an image cannot hold an isolated star and its surroundings
_MAX_SKY_SAMPLE = 250_000  # pixels: enough for a sky median good to <1% of sigma
# DAOFIND sharpness of star-like sources. CR hits are sharper than 0.9 in UVIS; an undersampled
# IR star (optical FWHM ~1 px) reaches 0.93, so IR keeps up to 0.95 (the pipeline has rejected
# most IR CRs up the ramp). Trailed stars stay above 0.4.
_DAO_SHARPNESS = {"UVIS": (0.2, 0.9), "IR": (0.2, 0.95)}
_RECENTER_MAX_PIX = 2.0  # as the seed RadialProfile: a larger recentring shift is refused
_DEFAULT_FWHM_GUESS = {"UVIS": 2.0, "IR": 1.3}  # pixels: fitted FWHMs come out above the tables
_MIN_FWHM_PIX = 0.7  # narrower fits are cosmic rays or hot pixels, even for the IR PSF
_MIN_WEIGHT_VAR_PIX2 = 2.25  # (1.5 px)²: moments weight floor, see _adaptive_moments
_MAX_REPORTED_ALPHA = 100.0  # beyond this a Moffat is a Gaussian to < 1%: α, γ are capped here


def _detector_key(detector: str) -> str:
    key = detector.strip().upper()
    if key not in DQ_PSF_REJECT:
        msg = f"detector must be 'UVIS' or 'IR', got {detector!r}"
        raise ValueError(msg)
    return key


def too_small_reason(shape: tuple[int, ...], what: str) -> str | None:
    """A readable reason when an image is too small for `what`, else None."""
    if len(shape) != 2:
        return f"image has shape {shape}: expected a 2-D array"
    if min(shape) < MIN_IMAGE_SIDE_PIX:
        side = MIN_IMAGE_SIDE_PIX
        return f"image is {shape[0]}x{shape[1]}: too small to {what} (needs {side}x{side})"
    return None


# --- detection ----------------------------------------------------------------------------------


def _stride(shape: tuple[int, int]) -> int:
    """Subsampling step so a strided view holds at most ~_MAX_SKY_SAMPLE pixels."""
    return max(1, int(math.sqrt(shape[0] * shape[1] / _MAX_SKY_SAMPLE)))


def sky_statistics(
    sci: NDArray[np.floating],
    bad: NDArray[np.bool_] | None = None,
    *,
    dq: NDArray[np.integer] | None = None,
    dq_bits: int = 0,
) -> tuple[float, float, int]:
    """Sigma-clipped (3σ) sky median and standard deviation of an image, in its units.

    A strided subsample of at most ~250 000 pixels is used: a full UVIS chip would cost ~0.8 s
    for no useful gain in precision.  NaNs, ``bad`` pixels and pixels with any of ``dq_bits``
    set in ``dq`` are left out.  Returns (median, sigma, number of pixels used); NaNs when no
    pixel is usable.
    """
    step = _stride(sci.shape)
    sample = np.asarray(sci[::step, ::step], dtype=np.float32)
    usable = np.isfinite(sample)
    if bad is not None:
        usable &= ~bad[::step, ::step]
    if dq is not None and dq_bits:
        usable &= (np.asarray(dq[::step, ::step]) & dq_bits) == 0
    n_used = int(usable.sum())
    if n_used == 0:
        return math.nan, math.nan, 0
    _, median, sigma = sigma_clipped_stats(sample[usable], sigma=3.0, maxiters=5)
    return float(median), float(sigma), n_used


@dataclass(frozen=True, eq=False)
class SourceList:
    """Sources of one image: all significant peaks, and the star-like ones DAOFIND accepted.

    Positions are 0-indexed pixel coordinates (x = column, y = row), in pixels.
    """

    x: NDArray[np.float64]  # DAOFIND centroids of star-like sources
    y: NDArray[np.float64]
    peak: NDArray[np.float64]  # brightest pixel above sky, image units
    flux: NDArray[np.float64]  # DAOFIND flux on the sky-subtracted image, image units
    sharpness: NDArray[np.float64]
    snr: NDArray[np.float64]  # matched-filter S/N of the peak (detection significance)
    peak_x: NDArray[np.int64]  # every local maximum above the threshold (stars, CRs, artefacts)
    peak_y: NDArray[np.int64]
    sky: float  # sigma-clipped median, image units per pixel
    sky_sigma: float
    nsigma: float
    fwhm_pix: float  # detection kernel FWHM, in pixels
    reason: str | None = None  # why the list is empty when it is

    @property
    def n_peaks(self) -> int:
        return int(self.peak_x.size)

    @property
    def n_sources(self) -> int:
        return int(self.x.size)


def _empty_sources(
    sky: float, sky_sigma: float, nsigma: float, fwhm_pix: float, reason: str
) -> SourceList:
    f, i = np.empty(0), np.empty(0, dtype=np.int64)
    return SourceList(f, f, f, f, f, f, i, i, sky, sky_sigma, nsigma, fwhm_pix, reason)


def bad_pixel_mask(
    sci: NDArray[np.floating], dq: NDArray[np.integer] | None, bits: int
) -> NDArray[np.bool_]:
    """NaN/inf pixels and pixels with any of `bits` set in DQ."""
    bad = ~np.isfinite(sci)
    if dq is not None:
        bad |= (np.asarray(dq) & bits) != 0
    return bad


def _local_maxima(
    smooth: NDArray[np.float32], threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Pixels above threshold that are the maximum of their 5x5 neighbourhood.

    Only the pixels above threshold are tested (a few per source), which is ~30x cheaper than a
    full-image maximum filter on a UVIS chip.
    """
    ny, nx = smooth.shape
    idx = np.flatnonzero(smooth > threshold)
    iy, ix = np.divmod(idx, nx)
    values = smooth.reshape(-1)[idx]
    is_max = np.ones(idx.size, dtype=bool)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if dx or dy:
                neighbour = smooth[np.clip(iy + dy, 0, ny - 1), np.clip(ix + dx, 0, nx - 1)]
                # Ties (flat saturated tops) keep the first pixel in raster order only.
                later = dy > 0 or (dy == 0 and dx > 0)
                is_max &= (values > neighbour) | ((values == neighbour) & later)
    return iy[is_max], ix[is_max], values[is_max]


def _smoothed(
    sci: NDArray[np.floating], bad: NDArray[np.bool_], sky: float, fwhm_pix: float
) -> NDArray[np.float32]:
    """Sky-subtracted image convolved with the PSF-sized Gaussian (the one full-size copy)."""
    # One new native float32 array, whatever sci is (big-endian memmap, int, float64).
    work = np.subtract(sci, np.float32(sky), dtype=np.float32)
    work[bad] = 0.0  # sky level: NaN holes and dead pixels neither spread nor make peaks
    sigma = fwhm_pix / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    ndimage.gaussian_filter(work, sigma, output=work, truncate=3.0)
    return work


def _stamps(
    sci: NDArray[np.floating], ix: NDArray[np.int64], iy: NDArray[np.int64], half: int, sky: float
) -> NDArray[np.float32]:
    """(N, 2h+1, 2h+1) sky-subtracted cutouts around the peaks; off-image and NaN pixels are 0."""
    ny, nx = sci.shape
    offsets = np.arange(-half, half + 1)
    rows, cols = iy[:, None] + offsets, ix[:, None] + offsets
    inside = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    stamps = np.asarray(
        sci[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]],
        dtype=np.float32,
    ) - np.float32(sky)
    stamps[~inside | ~np.isfinite(stamps)] = 0.0
    return stamps


def _daofind(
    sci: NDArray[np.floating],
    sky: float,
    sky_sigma: float,
    ix: NDArray[np.int64],
    iy: NDArray[np.int64],
    nsigma: float,
    fwhm_pix: float,
    sharpness_range: tuple[float, float],
) -> tuple[NDArray[np.int64], dict[str, NDArray[np.float64]]]:
    """DAOStarFinder at the given peaks: (index of the accepted peaks, their measurements).

    DAOStarFinder convolves whatever image it gets, so it runs on a mosaic of small stamps around
    the peaks: the same numbers as on the full image (the stamps are wider than the kernel's
    reach twice over), for a fraction of the pixels and no full-size copy.
    """
    finder = DAOStarFinder(
        threshold=nsigma * sky_sigma,
        fwhm=fwhm_pix,
        xycoords=np.zeros((1, 2)),
        sharpness_range=sharpness_range,
        roundness_range=None,
    )
    half = 2 * (finder.kernel.data.shape[0] // 2) + 2
    size = 2 * half + 1
    n_cols = math.ceil(math.sqrt(ix.size))
    n_rows = math.ceil(ix.size / n_cols)
    stamps = np.zeros((n_rows * n_cols, size, size), dtype=np.float32)
    stamps[: ix.size] = _stamps(sci, ix, iy, half, sky)
    mosaic = stamps.reshape(n_rows, n_cols, size, size).transpose(0, 2, 1, 3)
    mosaic = mosaic.reshape(n_rows * size, n_cols * size)
    k = np.arange(ix.size)
    finder.xycoords = np.column_stack([(k % n_cols) * size + half, (k // n_cols) * size + half])
    with warnings.catch_warnings():
        # "none pass the filtering criteria" is an answer here, not a problem.
        warnings.simplefilter("ignore", NoDetectionsWarning)
        table = finder(mosaic)
    if table is None:
        return np.empty(0, dtype=np.int64), {}
    xm = np.asarray(table["x_centroid"], dtype=np.float64)
    ym = np.asarray(table["y_centroid"], dtype=np.float64)
    index = np.floor(ym / size).astype(np.int64) * n_cols + np.floor(xm / size).astype(np.int64)
    return index, {
        "x": xm - (index % n_cols) * size - half + ix[index],
        "y": ym - (index // n_cols) * size - half + iy[index],
        "peak": np.asarray(table["peak"], dtype=np.float64),
        "flux": np.asarray(table["flux"], dtype=np.float64),
        "sharpness": np.asarray(table["sharpness"], dtype=np.float64),
    }


def detect_sources(
    sci: NDArray[np.floating],
    dq: NDArray[np.integer] | None = None,
    *,
    detector: str = "UVIS",
    fwhm_pix: float | None = None,
    nsigma: float = 5.0,
    sharpness_range: tuple[float, float] | None = None,
) -> SourceList:
    """Find sources at `nsigma` and keep the star-like ones (photutils DAOStarFinder).

    Peaks are local maxima of the image convolved with a PSF-sized Gaussian (a matched filter;
    noise from a sigma-clipped strided sample); DAOStarFinder then measures centroids, sharpness
    and flux at those peaks only, which keeps a full 4096x2051 UVIS chip near 0.3 s instead of
    ~1.3 s for DAOStarFinder on the whole chip.  Roundness is not cut, so trailed stars survive;
    sharpness above 0.9 rejects cosmic-ray hits.

    Parameters
    ----------
    sci : 2-D array
        Science image (a memmap slice is fine: it is read, never written).
    dq : 2-D int array, optional
        DQ array; NaN, dead, lost and hot pixels and pipeline-flagged cosmic rays (4096) are
        set to the sky before detection.
    detector : {'UVIS', 'IR'}
        Selects the DQ bit groups and the default FWHM.
    fwhm_pix : float, optional
        Expected FWHM on the pixels, in pixels (default 2.0 for UVIS, 1.3 for IR).
    nsigma : float
        Detection threshold in units of the matched-filter noise.
    sharpness_range : (float, float), optional
        DAOFIND sharpness accepted as star-like (default per detector: UVIS 0.2-0.9, IR
        0.2-0.95, where an undersampled star is sharper).
    """
    key = _detector_key(detector)
    fwhm = fwhm_pix or _DEFAULT_FWHM_GUESS[key]
    bad = bad_pixel_mask(sci, dq, (DQ_PSF_REJECT[key] & ~(256 | 2048)) | 16 | _DQ_COSMIC_RAY)
    sky, sky_sigma, n_used = sky_statistics(sci, bad)
    if (reason := too_small_reason(sci.shape, "find stars")) or n_used == 0:
        return _empty_sources(sky, sky_sigma, nsigma, fwhm, reason or "no usable pixel")
    if not sky_sigma > 0:
        return _empty_sources(sky, sky_sigma, nsigma, fwhm, "image is constant: no source")
    smooth = _smoothed(sci, bad, sky, fwhm)
    del bad
    smooth_median, smooth_sigma, _ = sky_statistics(smooth)
    if not smooth_sigma > 0:
        return _empty_sources(sky, sky_sigma, nsigma, fwhm, "image is constant: no source")
    iy, ix, values = _local_maxima(smooth, smooth_median + nsigma * smooth_sigma)
    del smooth
    if ix.size == 0:
        return _empty_sources(sky, sky_sigma, nsigma, fwhm, f"no source above {nsigma:g} sigma")
    sharpness = sharpness_range or _DAO_SHARPNESS[key]
    index, found = _daofind(sci, sky, sky_sigma, ix, iy, nsigma, fwhm, sharpness)
    if index.size == 0:
        reason = f"no star-like source above {nsigma:g} sigma"
        return replace(
            _empty_sources(sky, sky_sigma, nsigma, fwhm, reason),
            peak_x=ix.astype(np.int64),
            peak_y=iy.astype(np.int64),
        )
    return SourceList(
        x=found["x"],
        y=found["y"],
        peak=found["peak"],
        flux=found["flux"],
        sharpness=found["sharpness"],
        snr=((values[index] - smooth_median) / smooth_sigma).astype(np.float64),
        peak_x=ix.astype(np.int64),
        peak_y=iy.astype(np.int64),
        sky=sky,
        sky_sigma=sky_sigma,
        nsigma=nsigma,
        fwhm_pix=fwhm,
    )


# --- radial profile fit ---------------------------------------------------------------------


def moffat_fwhm(gamma_pix: float, alpha: float) -> float:
    """FWHM in pixels of a Moffat profile A(1+(r/γ)²)^-α: 2γ·sqrt(2^(1/α) - 1)."""
    # expm1 keeps precision when α is huge (a Gaussian star drives α and γ to infinity).
    return 2.0 * gamma_pix * math.sqrt(math.expm1(math.log(2.0) / alpha))


def _moffat_gamma(fwhm_pix: float, alpha: float) -> float:
    return fwhm_pix / (2.0 * math.sqrt(math.expm1(math.log(2.0) / alpha)))


def _moffat(
    xy: NDArray[np.float64],
    amp: float,
    x0: float,
    y0: float,
    log_gamma: float,
    log_alpha: float,
    bias: float,
) -> NDArray[np.float64]:
    """Circular Moffat plus background; γ and α fitted as logarithms so they stay positive."""
    r2 = (xy[0] - x0) ** 2 + (xy[1] - y0) ** 2
    return amp * np.exp(-math.exp(log_alpha) * np.log1p(r2 * math.exp(-2.0 * log_gamma))) + bias


def _moffat_jac(
    xy: NDArray[np.float64],
    amp: float,
    x0: float,
    y0: float,
    log_gamma: float,
    log_alpha: float,
    bias: float,
) -> NDArray[np.float64]:
    dx, dy = xy[0] - x0, xy[1] - y0
    inv_g2, alpha = math.exp(-2.0 * log_gamma), math.exp(log_alpha)
    log_u = np.log1p((dx * dx + dy * dy) * inv_g2)
    core = np.exp(-alpha * log_u)  # u^-α
    slope = 2.0 * amp * alpha * core / (1.0 + (dx * dx + dy * dy) * inv_g2) * inv_g2
    return np.column_stack(
        [
            core,
            slope * dx,
            slope * dy,
            slope * (dx * dx + dy * dy),
            -amp * core * log_u * alpha,
            np.ones_like(dx),
        ]
    )


@dataclass(frozen=True)
class StarMeasurement:
    """One star's radial-profile fit and shape; positions 0-indexed, in pixels."""

    x: float  # fitted centre, column
    y: float  # fitted centre, row
    fwhm_pix: float  # Moffat FWHM, in pixels
    elongation: float  # major/minor axis sigma from adaptive second moments (1 = round)
    position_angle_deg: float  # major axis from +x towards +y, in degrees, [0, 180)
    peak: float  # brightest pixel above the local background, image units
    flux: float  # background-subtracted sum within the fit radius, image units
    snr: float  # detection significance (matched filter)
    moffat_amplitude: float  # A, image units
    moffat_gamma_pix: float  # γ, in pixels (recomputed from the FWHM when α is capped)
    moffat_alpha: float  # α, capped at 100 (a Gaussian star's α runs to infinity)
    moffat_background: float  # B above the global sky (may be negative), image units
    residual_rms: float  # rms of data - model within the fit radius, image units
    recenter_shift_pix: float  # fitted centre minus detection centroid, in pixels
    recentered: bool  # False if the shift exceeded 2 px and the centre was held


def _fit_bounds(
    x0: float, y0: float, fwhm_guess: float, free_centre: bool
) -> tuple[list[float], list[float]]:
    """Lower and upper bounds of (amp, [x0, y0,] log γ, log α, bias) for a Moffat fit.

    γ from 0.01 px to 50 FWHM guesses and α from 0.2 to 10⁴ keep every exponential of the
    model finite (a Gaussian-like star reaches α ~ 10³ at most); the centre may move at most
    twice the recentring limit, so a fit that wanders off the star stops at the wall.
    """
    log_gamma = (math.log(0.01), math.log(50.0 * fwhm_guess))
    log_alpha = (math.log(0.2), math.log(1.0e4))
    reach = 2.0 * _RECENTER_MAX_PIX
    centre_lo = [x0 - reach, y0 - reach] if free_centre else []
    centre_hi = [x0 + reach, y0 + reach] if free_centre else []
    lower = [-math.inf, *centre_lo, log_gamma[0], log_alpha[0], -math.inf]
    upper = [math.inf, *centre_hi, log_gamma[1], log_alpha[1], math.inf]
    return lower, upper


def _fit_profile(
    xy: NDArray[np.float64],
    values: NDArray[np.float64],
    x0: float,
    y0: float,
    fwhm_guess: float,
    recenter: bool,
) -> tuple[NDArray[np.float64], bool] | str:
    """Bounded Moffat fit to the pixels: (parameters, recentred), or why it failed."""
    alpha0 = 2.5
    gamma0 = fwhm_guess / (2.0 * math.sqrt(2.0 ** (1.0 / alpha0) - 1.0))
    p0 = [max(float(values.max()), 1e-6), x0, y0, math.log(gamma0), math.log(alpha0), 0.0]

    def fixed(xy: NDArray, amp: float, lg: float, la: float, b: float) -> NDArray:
        return _moffat(xy, amp, x0, y0, lg, la, b)

    def fixed_jac(xy: NDArray, amp: float, lg: float, la: float, b: float) -> NDArray:
        return _moffat_jac(xy, amp, x0, y0, lg, la, b)[:, [0, 3, 4, 5]]

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            if recenter:
                bounds = _fit_bounds(x0, y0, fwhm_guess, free_centre=True)
                params, _ = curve_fit(
                    _moffat, xy, values, p0=p0, jac=_moffat_jac, bounds=bounds, max_nfev=300
                )
                if math.hypot(params[1] - x0, params[2] - y0) <= _RECENTER_MAX_PIX:
                    return params, True
            bounds = _fit_bounds(x0, y0, fwhm_guess, free_centre=False)
            params4, _ = curve_fit(
                fixed, xy, values, p0=[p0[0], *p0[3:]], jac=fixed_jac, bounds=bounds, max_nfev=300
            )
        except RuntimeError:
            return "fit_failed"  # no convergence within the evaluation budget
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            # Non-finite residuals or a singular step: the pixels do not describe a star.
            return "fit_error"
    if not np.all(np.isfinite(params4)):
        return "fit_error"
    return np.array([params4[0], x0, y0, *params4[1:]]), False


def _adaptive_moments(
    image: NDArray[np.float64],
    good: NDArray[np.bool_],
    dx: NDArray[np.float64],
    dy: NDArray[np.float64],
    sigma0: float,
) -> tuple[float, float] | None:
    """Elongation (major/minor sigma) and position angle from Gaussian-weighted moments.

    The weight ellipse is iterated to match the star (adaptive moments), so a trailed star is
    not forced round by a circular weight, and noise far from the star barely counts.  For a
    Gaussian star S and weight W the weighted moments are (S⁻¹ + W⁻¹)⁻¹, which is inverted
    exactly.  The weight is kept at least 1.5 px wide: a narrower one samples an undersampled
    star (IR, or UVIS at 1.6 px) too coarsely and the pixel phase alone would read as ~1.2-1.8
    elongation.
    """
    weight = np.eye(2) * max(sigma0**2, _MIN_WEIGHT_VAR_PIX2)
    star = weight
    for _ in range(30):
        inv_w = np.linalg.inv(weight)
        q = inv_w[0, 0] * dx * dx + 2.0 * inv_w[0, 1] * dx * dy + inv_w[1, 1] * dy * dy
        w = np.where(good, np.exp(-0.5 * q), 0.0) * image
        total = w.sum()
        if not total > 0:
            return None
        measured = (
            np.array(
                [
                    [(w * dx * dx).sum(), (w * dx * dy).sum()],
                    [(w * dx * dy).sum(), (w * dy * dy).sum()],
                ]
            )
            / total
        )
        with np.errstate(all="ignore"):
            precision = np.linalg.inv(measured) - inv_w
        if not (np.all(np.isfinite(precision)) and np.all(np.linalg.eigvalsh(precision) > 0)):
            return None  # noise-dominated: the moments are not a positive-definite ellipse
        new = np.linalg.inv(precision)
        converged = np.allclose(new, star, rtol=1e-4, atol=1e-6)
        star = new
        if converged:
            break
        eigvals, eigvecs = np.linalg.eigh(star)
        weight = eigvecs @ np.diag(np.maximum(eigvals, _MIN_WEIGHT_VAR_PIX2)) @ eigvecs.T
    eigvals, eigvecs = np.linalg.eigh(star)
    elongation = math.sqrt(eigvals[1] / eigvals[0])
    angle = math.degrees(math.atan2(eigvecs[1, 1], eigvecs[0, 1])) % 180.0
    return elongation, angle


# --- per-image summary ----------------------------------------------------------------------


@dataclass(frozen=True)
class PsfSummary:
    """PSF of one image (chip or read) from its isolated, unsaturated stars."""

    n_psf_stars: int  # stars whose fit was kept
    fwhm_median_pix: float | None  # in pixels; None when no star was measured (see reason)
    fwhm_p90_pix: float | None  # 90th percentile, in pixels
    elongation_median: float | None  # major/minor sigma; ~1.0-1.1 round, > 1.3 trailed
    stars: list[StarMeasurement]
    reason: str | None  # why the values are None
    fwhm_mad_pix: float | None = None  # scatter (median absolute deviation), in pixels
    n_sources: int = 0  # star-like sources detected at nsigma
    fwhm_guess_pix: float = 0.0  # detection kernel and fit-radius scale, in pixels
    rejected: dict[str, int] = field(default_factory=dict)  # candidates dropped, by reason


def _candidate_order(
    sources: SourceList, shape: tuple[int, int], margin: float, isolation: float, min_snr: float
) -> tuple[NDArray[np.int64], Counter[str]]:
    """Indices of usable candidates, brightest first, and the counts of those dropped."""
    ny, nx = shape
    x, y = sources.x, sources.y
    inside = (x >= margin) & (x <= nx - 1 - margin) & (y >= margin) & (y <= ny - 1 - margin)
    tree = cKDTree(np.column_stack([sources.peak_x, sources.peak_y]))
    n_close = np.array(
        [len(hits) for hits in tree.query_ball_point(np.column_stack([x, y]), isolation)]
    )
    # A star's own peak lies within ~1 px of its centroid: one hit is the star itself.
    isolated = n_close <= 1
    bright = sources.snr >= min_snr
    dropped = Counter(
        {
            "edge": int((~inside).sum()),
            "crowded": int((inside & ~isolated).sum()),
            "faint": int((inside & isolated & ~bright).sum()),
        }
    )
    keep = np.flatnonzero(inside & isolated & bright)
    return keep[np.argsort(-sources.flux[keep], kind="stable")], dropped


def _measure_star(
    sci: NDArray[np.floating],
    dq: NDArray[np.integer] | None,
    sources: SourceList,
    i: int,
    radius: float,
    key: str,
    fwhm_guess: float,
    recenter: bool,
    saturation_level: float | None,
) -> StarMeasurement | str:
    """Fit one star; a string says why it was rejected."""
    xc, yc = float(sources.x[i]), float(sources.y[i])
    half = math.ceil(radius) + 1
    ix, iy = round(xc), round(yc)
    box = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
    cut = np.asarray(sci[box], dtype=np.float64) - sources.sky
    flags = np.zeros(cut.shape, dtype=np.int64) if dq is None else np.asarray(dq[box], np.int64)
    yy, xx = np.mgrid[iy - half : iy + half + 1, ix - half : ix + half + 1].astype(np.float64)
    r = np.hypot(xx - xc, yy - yc)
    within = r <= radius
    finite = np.isfinite(cut)
    if (flags[within] & DQ_PSF_REJECT[key]).any() or not finite[within].all():
        return "saturated_or_bad"
    if saturation_level is not None and (cut[within] + sources.sky >= saturation_level).any():
        return "saturated_or_bad"
    excluded = (flags & _DQ_PSF_EXCLUDE[key]) != 0
    if (excluded & (r <= fwhm_guess)).any():
        return "flagged_core"
    use = within & ~excluded
    found = _fit_profile(np.vstack([xx[use], yy[use]]), cut[use], xc, yc, fwhm_guess, recenter)
    if isinstance(found, str):
        return found
    (amp, x0, y0, log_gamma, log_alpha, bias), recentered = found
    gamma, alpha = math.exp(log_gamma), math.exp(log_alpha)
    fwhm = moffat_fwhm(gamma, alpha)
    if not (amp > 0 and alpha >= 0.5 and _MIN_FWHM_PIX <= fwhm <= 10.0 * fwhm_guess):
        return "implausible_fit"
    if alpha > _MAX_REPORTED_ALPHA:  # a Gaussian-like star: same FWHM, readable parameters
        alpha, gamma = _MAX_REPORTED_ALPHA, _moffat_gamma(fwhm, _MAX_REPORTED_ALPHA)
    model = _moffat(np.vstack([xx[use], yy[use]]), amp, x0, y0, log_gamma, log_alpha, bias)
    signal = cut - bias
    shape = _adaptive_moments(signal, within & ~excluded, xx - x0, yy - y0, fwhm / 2.3548)
    if shape is None:
        return "moments_failed"
    return StarMeasurement(
        x=float(x0),
        y=float(y0),
        fwhm_pix=fwhm,
        elongation=shape[0],
        position_angle_deg=shape[1],
        peak=float(signal[use].max()),
        flux=float(signal[use].sum()),
        snr=float(sources.snr[i]),
        moffat_amplitude=float(amp),
        moffat_gamma_pix=gamma,
        moffat_alpha=alpha,
        moffat_background=float(bias),
        residual_rms=float(np.sqrt(np.mean((cut[use] - model) ** 2))),
        recenter_shift_pix=float(math.hypot(x0 - xc, y0 - yc)),
        recentered=recentered,
    )


def _summary(
    stars: list[StarMeasurement],
    sources: SourceList,
    fwhm_guess: float,
    rejected: Counter[str],
    reason_if_empty: str,
) -> PsfSummary:
    common = {
        "stars": stars,
        "n_sources": sources.n_sources,
        "fwhm_guess_pix": fwhm_guess,
        "rejected": dict(sorted(rejected.items())),
    }
    if not stars:
        return PsfSummary(0, None, None, None, reason=reason_if_empty, **common)
    fwhm = np.array([s.fwhm_pix for s in stars])
    median = float(np.median(fwhm))
    return PsfSummary(
        n_psf_stars=len(stars),
        fwhm_median_pix=median,
        fwhm_p90_pix=float(np.percentile(fwhm, 90)),
        elongation_median=float(np.median([s.elongation for s in stars])),
        reason=None,
        fwhm_mad_pix=float(np.median(np.abs(fwhm - median))),
        **common,
    )


def measure_psf(
    sci: NDArray[np.floating],
    dq: NDArray[np.integer] | None = None,
    *,
    detector: str = "UVIS",
    fwhm_guess_pix: float | None = None,
    sources: SourceList | None = None,
    nsigma: float = 5.0,
    min_snr: float = 20.0,
    max_stars: int = 100,
    fit_radius_pix: float | None = None,
    isolation_radius_pix: float | None = None,
    edge_margin_pix: float | None = None,
    saturation_level: float | None = None,
    recenter: bool = True,
) -> PsfSummary:
    """Measure the PSF of one image: Moffat FWHM and elongation of its best isolated stars.

    Stars are the star-like sources (see :func:`detect_sources`) away from the edge, with no
    other peak within the isolation radius, detected at ``min_snr`` or more, and with no
    saturated, bad, lost or NaN pixel within the fit radius; the brightest ``max_stars`` are fit.
    Each is fit as the seed notebook's RadialProfile does, A(1+(r/γ)²)^-α + B over the pixels
    within the fit radius, with B free (negative allowed) and the centre refined by the fit
    unless that moves it more than 2 px (then the detection centroid is kept, as RadialProfile
    does).  Elongation comes from adaptive second moments.

    Parameters
    ----------
    sci : 2-D array
        Science image (memmap slices are fine: only cutouts are read).
    dq : 2-D int array, optional
        DQ array of the image.
    detector : {'UVIS', 'IR'}
        Selects DQ bit groups and the default FWHM guess.
    fwhm_guess_pix : float, optional
        Expected FWHM on the pixels, in pixels (default 2.0 UVIS, 1.3 IR).
    sources : SourceList, optional
        Reuse a detection (e.g. the one image metrics made) instead of detecting again.
    min_snr : float
        Minimum detection significance of a PSF star.
    max_stars : int
        At most this many stars are fit (brightest first); bounds the run time.
    fit_radius_pix : float, optional
        Pixels within this radius of the star are fit, in pixels (default 3 x FWHM guess, ≥ 4).
    isolation_radius_pix : float, optional
        No other peak may lie this close, in pixels (default fit radius + 2.5 x FWHM guess).
    edge_margin_pix : float, optional
        Minimum distance to the image edge, in pixels (never less than fit radius + 2, so the
        fit box is whole).
    saturation_level : float, optional
        Pixel value (image units) treated as saturated, for images without a DQ array.
    recenter : bool
        Let the fit refine the centre (True, as RadialProfile(recenter=True)).

    Returns
    -------
    PsfSummary
        Values are None with a ``reason`` when no star could be measured; never raises for
        image content (NaNs, edges, tiny or empty images).
    """
    key = _detector_key(detector)
    fwhm_guess = fwhm_guess_pix or _DEFAULT_FWHM_GUESS[key]
    if sources is None:
        sources = detect_sources(sci, dq, detector=key, fwhm_pix=fwhm_guess, nsigma=nsigma)
    if sources.n_sources == 0:
        return _summary([], sources, fwhm_guess, Counter(), sources.reason or "no source")
    radius = fit_radius_pix or max(4.0, 3.0 * fwhm_guess)
    isolation = isolation_radius_pix or radius + 2.5 * fwhm_guess
    # The fit box must lie inside the image: ceil(radius) + 1 pixels each side of the star.
    margin = max(edge_margin_pix or 0.0, math.ceil(radius) + 2.0)
    order, rejected = _candidate_order(sources, sci.shape, margin, isolation, min_snr)
    stars: list[StarMeasurement] = []
    for i in order:
        if len(stars) >= max_stars:
            break
        try:
            result = _measure_star(
                sci, dq, sources, int(i), radius, key, fwhm_guess, recenter, saturation_level
            )
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            # One star's numbers (a singular moment matrix, an overflow) cost that star only.
            result = "fit_error"
        if isinstance(result, str):
            rejected[result] += 1
        else:
            stars.append(result)
    reason = (
        f"no isolated unsaturated star above {min_snr:g} sigma"
        if not order.size
        or set(rejected) <= {"edge", "crowded", "faint", "saturated_or_bad", "flagged_core"}
        else "no star fit converged"
    )
    return _summary(stars, sources, fwhm_guess, rejected, reason)
