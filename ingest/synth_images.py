"""Seeded synthetic WFC3 images (star fields, trailing, saturation, satellites) with their truth."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.io import fits
from astropy.time import Time
from numpy.typing import NDArray
from scipy.signal import oaconvolve

from ingest.psf_profiles import Profile, fwhm_after_pixelation, profile_value

__all__ = [
    "FILTER_PIVOT_ANGSTROM",
    "ImaTruth",
    "SatelliteTrail",
    "StarFieldTruth",
    "SyntheticImage",
    "make_star_field",
    "write_archive_images",
    "write_ir_flt",
    "write_ir_ima",
    "write_uvis_flc",
]

Sampling = Literal["integrated", "center"]

# Pivot wavelengths (PHOTPLAM, Å) of common filters.  F555W, F110W and F130N are the values in the
# real sample headers; the others are approximate (close to the synphot values), good enough to
# put a realistic PHOTPLAM in a synthetic header.
FILTER_PIVOT_ANGSTROM: dict[str, float] = {
    "F225W": 2372.0,
    "F275W": 2710.0,
    "F336W": 3355.0,
    "F438W": 4326.0,
    "F555W": 5307.9,
    "F606W": 5889.0,
    "F814W": 8039.0,
    "F105W": 10552.0,
    "F110W": 11534.5,
    "F125W": 12486.0,
    "F130N": 13005.7,
    "F140W": 13923.0,
    "F160W": 15369.0,
}

_UVIS_FULL_WELL_E = 63_000.0  # electrons; above this a UVIS pixel is flagged 256 and bleeds
_UVIS_CHIP_SHAPE = (2051, 4096)
_IR_BORDER_PIX = 5  # reference-pixel border of every IR read (IMA keeps it, FLT trims it)
_DQ_BAD = np.int16(4)
_DQ_HOT = np.int16(16)
_DQ_SATURATED = np.int16(256)


@dataclass(frozen=True, eq=False)
class SatelliteTrail:
    """A straight streak across the image."""

    x0: float  # a point on the trail, in pixels (0-indexed column)
    y0: float  # in pixels (0-indexed row)
    angle_deg: float  # from the +x axis, counter-clockwise
    peak: float  # surface brightness on the trail's axis, in image units per pixel
    sigma_pix: float  # Gaussian width across the trail, in pixels


@dataclass(frozen=True, eq=False)
class StarFieldTruth:
    """The true parameters of a synthetic star field."""

    x: NDArray[np.float64]  # star centres (trail midpoints), 0-indexed column, in pixels
    y: NDArray[np.float64]  # 0-indexed row, in pixels
    flux: NDArray[np.float64]  # total flux per star, in electrons
    peak: NDArray[np.float64]  # brightest noiseless star pixel above sky, in electrons
    saturated: NDArray[np.bool_]  # the star has pixels at or above full well
    fwhm_pix: float  # injected FWHM before pixelation, in pixels
    fwhm_effective_pix: float  # FWHM of the pixel-integrated profile (what pixels show), pixels
    profile: str
    moffat_alpha: float
    sky: float  # electrons per pixel
    read_noise: float  # electrons
    trail_pix: float  # length of the guiding trail smearing every star, in pixels
    trail_angle_deg: float
    satellite: SatelliteTrail | None = None
    cosmic_ray_xy: NDArray[np.int64] = field(default_factory=lambda: np.empty((0, 2), np.int64))


@dataclass(frozen=True, eq=False)
class ImaTruth:
    """The true parameters of a synthetic IR IMA."""

    field: StarFieldTruth  # star fluxes are in electrons per second here
    samptime_s: tuple[float, ...]  # per read in time order, zeroth read first
    satellite_sampnum: int | None  # SAMPNUM of the read in which the satellite crossed


def _render_stars(
    shape: tuple[int, int],
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    flux: NDArray[np.float64],
    fwhm_pix: float,
    profile: Profile,
    alpha: float,
    sampling: Sampling,
) -> NDArray[np.float64]:
    """Noiseless image of the stars, in electrons per pixel."""
    image = np.zeros(shape, dtype=np.float64)
    radius = math.ceil(max(10.0, 8.0 * fwhm_pix))
    sub = 5 if sampling == "integrated" else 1
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    span = np.arange(-radius, radius + 1)
    for xs, ys, fs in zip(x, y, flux, strict=True):
        ix, iy = round(xs), round(ys)
        cols, rows = ix + span, iy + span
        keep_c = (cols >= 0) & (cols < shape[1])
        keep_r = (rows >= 0) & (rows < shape[0])
        if not keep_c.any() or not keep_r.any():
            continue
        dx = (cols[keep_c] - xs)[None, None, :, None] + offsets[None, None, None, :]
        dy = (rows[keep_r] - ys)[:, None, None, None] + offsets[None, :, None, None]
        values = profile_value(dx**2 + dy**2, fwhm_pix, profile, alpha).mean(axis=(1, 3))
        image[np.ix_(rows[keep_r], cols[keep_c])] += fs * values
    return image


def _trail_kernel(length_pix: float, angle_deg: float) -> NDArray[np.float64]:
    """Normalised line kernel: a star smeared uniformly along a segment (guide-star drift)."""
    half = math.ceil(length_pix / 2.0) + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    steps = np.linspace(-0.5, 0.5, max(2, int(length_pix * 20)))
    px = half + steps * length_pix * math.cos(math.radians(angle_deg))
    py = half + steps * length_pix * math.sin(math.radians(angle_deg))
    # Bilinear splat keeps the kernel's centroid exactly on the segment midpoint.
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for ox, oy, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(kernel, (y0 + oy, x0 + ox), w)
    return kernel / kernel.sum()


def _satellite(
    shape: tuple[int, int], rng: np.random.Generator, peak: float
) -> tuple[NDArray[np.float64], SatelliteTrail]:
    """A straight streak across the image, Gaussian across its width."""
    trail = SatelliteTrail(
        x0=float(rng.uniform(0.3, 0.7) * shape[1]),
        y0=float(rng.uniform(0.3, 0.7) * shape[0]),
        angle_deg=float(rng.uniform(10.0, 80.0)),
        peak=peak,
        sigma_pix=1.0,
    )
    rows, cols = np.indices(shape, dtype=np.float64)
    theta = math.radians(trail.angle_deg)
    distance = (cols - trail.x0) * math.sin(theta) - (rows - trail.y0) * math.cos(theta)
    return peak * np.exp(-0.5 * (distance / trail.sigma_pix) ** 2), trail


def _saturate(
    model: NDArray[np.float64], dq: NDArray[np.int16], full_well: float
) -> NDArray[np.bool_]:
    """Clip at full well and bleed the excess charge along columns, as a CCD does; flag 256."""
    over = model >= full_well
    if not over.any():
        return over
    for col in np.unique(np.nonzero(over)[1]):
        column = model[:, col]
        rows = np.nonzero(column >= full_well)[0]
        excess = float((column[rows] - full_well).sum())
        n_bleed = math.ceil(excess / full_well / 2.0)
        lo, hi = max(rows.min() - n_bleed, 0), min(rows.max() + n_bleed + 1, column.size)
        column[lo:hi] = full_well
        dq[lo:hi, col] |= _DQ_SATURATED
    return dq & _DQ_SATURATED > 0


def _star_positions(
    shape: tuple[int, int], n_stars: int, rng: np.random.Generator, flux_range: tuple[float, float]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Uniform positions (edges included) and log-uniform fluxes."""
    x = rng.uniform(-0.5, shape[1] - 0.5, n_stars)
    y = rng.uniform(-0.5, shape[0] - 0.5, n_stars)
    flux = np.exp(rng.uniform(math.log(flux_range[0]), math.log(flux_range[1]), n_stars))
    return x, y, flux


def make_star_field(
    shape: tuple[int, int] = (512, 512),
    n_stars: int = 100,
    fwhm_pix: float = 2.0,
    profile: Profile = "moffat",
    seed: int = 0,
    *,
    moffat_alpha: float = 2.5,
    sky: float = 30.0,
    read_noise: float = 3.1,
    flux_range: tuple[float, float] = (2e3, 2e5),
    trail_pix: float = 0.0,
    trail_angle_deg: float = 0.0,
    saturate_fraction: float = 0.0,
    full_well: float = _UVIS_FULL_WELL_E,
    satellite_peak: float = 0.0,
    n_cosmic_rays: int = 0,
    bad_pixel_fraction: float = 0.0,
    sampling: Sampling = "integrated",
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int16], StarFieldTruth]:
    """A UVIS-like star field in electrons, with Poisson and read noise, and its truth.

    Parameters
    ----------
    shape : (ny, nx)
        Image shape in pixels.
    n_stars : int
        Stars placed uniformly, edges included (some fall partly off the image).
    fwhm_pix : float
        Optical FWHM before pixelation, in pixels.
    profile : {'moffat', 'gaussian'}
        Circular PSF shape; Moffat with power index ``moffat_alpha``.
    seed : int
        Everything random derives from this seed: same seed, same arrays.
    sky, read_noise : float
        Sky level per pixel and read noise, in electrons.
    flux_range : (float, float)
        Star fluxes are log-uniform in this range, in electrons.
    trail_pix, trail_angle_deg : float
        Every star smeared along a segment of this length in pixels (guide-star failure).
    saturate_fraction : float
        Fraction of stars made bright enough to exceed ``full_well`` (clipped, bled along the
        column and flagged 256 in DQ).
    satellite_peak : float
        Surface brightness in electrons of a satellite streak across the image; 0 for none.
    n_cosmic_rays : int
        Unflagged cosmic-ray hits of 1-3 pixels, as in a single FLC.
    bad_pixel_fraction : float
        Fraction of pixels flagged bad (4, value 0) and as many hot (16, +500 e-).
    sampling : {'integrated', 'center'}
        'integrated' averages the PSF over each pixel (real pixels); 'center' samples it at
        pixel centres, so a radial fit recovers ``fwhm_pix`` itself.

    Returns
    -------
    sci, err, dq, truth
        float32 science and error arrays in electrons, int16 DQ, and the truth.
    """
    rng = np.random.default_rng(seed)
    x, y, flux = _star_positions(shape, n_stars, rng, flux_range)
    n_sat = round(saturate_fraction * n_stars)
    if n_sat:
        # A peak pixel holds ~flux/(1.13 FWHM²): this puts it ~7x over full well, a saturated core.
        flux[rng.choice(n_stars, n_sat, replace=False)] = 8.0 * full_well * fwhm_pix**2
    model = _render_stars(shape, x, y, flux, fwhm_pix, profile, moffat_alpha, sampling)
    if trail_pix > 0:
        model = oaconvolve(model, _trail_kernel(trail_pix, trail_angle_deg), mode="same")
    peaks = _star_peaks(model, x, y, trail_pix)
    satellite = None
    if satellite_peak > 0:
        streak, satellite = _satellite(shape, rng, satellite_peak)
        model += streak
    model += sky
    dq = np.zeros(shape, dtype=np.int16)
    saturated_pixels = _saturate(model, dq, full_well)
    counts = rng.poisson(np.clip(model, 0.0, None)) + rng.normal(0.0, read_noise, shape)
    counts[saturated_pixels] = full_well
    cr_xy = _add_cosmic_rays(counts, n_cosmic_rays, rng)
    _add_bad_pixels(counts, dq, bad_pixel_fraction, rng)
    sci = counts.astype(np.float32)
    err = np.sqrt(np.clip(sci, 0.0, None) + read_noise**2).astype(np.float32)
    truth = StarFieldTruth(
        x=x,
        y=y,
        flux=flux,
        peak=peaks,
        saturated=_stars_touching(saturated_pixels, x, y, fwhm_pix),
        fwhm_pix=fwhm_pix,
        fwhm_effective_pix=(
            fwhm_after_pixelation(fwhm_pix, profile, moffat_alpha)
            if sampling == "integrated"
            else fwhm_pix
        ),
        profile=profile,
        moffat_alpha=moffat_alpha,
        sky=sky,
        read_noise=read_noise,
        trail_pix=trail_pix,
        trail_angle_deg=trail_angle_deg,
        satellite=satellite,
        cosmic_ray_xy=cr_xy,
    )
    return sci, err, dq, truth


def _star_peaks(
    model: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64], trail_pix: float
) -> NDArray[np.float64]:
    """Brightest noiseless pixel near each star (neighbours included), in electrons."""
    half = math.ceil(trail_pix / 2.0) + 1
    peaks = np.zeros(x.size)
    for i, (xs, ys) in enumerate(zip(x, y, strict=True)):
        ix, iy = round(xs), round(ys)
        box = model[max(iy - half, 0) : iy + half + 1, max(ix - half, 0) : ix + half + 1]
        peaks[i] = float(box.max()) if box.size else 0.0
    return peaks


def _stars_touching(
    mask: NDArray[np.bool_], x: NDArray[np.float64], y: NDArray[np.float64], fwhm_pix: float
) -> NDArray[np.bool_]:
    """Which stars have a masked pixel within 2 FWHM of their centre."""
    half = math.ceil(2.0 * fwhm_pix)
    out = np.zeros(x.size, dtype=bool)
    for i, (xs, ys) in enumerate(zip(x, y, strict=True)):
        ix, iy = round(xs), round(ys)
        box = mask[max(iy - half, 0) : iy + half + 1, max(ix - half, 0) : ix + half + 1]
        out[i] = bool(box.any())
    return out


def _add_cosmic_rays(
    counts: NDArray[np.float64], n_hits: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Sharp 1-3 pixel hits of 500-5000 e-, unflagged; returns their (x, y)."""
    ny, nx = counts.shape
    xy = np.column_stack([rng.integers(1, nx - 1, n_hits), rng.integers(1, ny - 1, n_hits)])
    for cx, cy in xy:
        counts[cy, cx] += rng.uniform(500.0, 5000.0)
        for _ in range(int(rng.integers(0, 3))):
            ox, oy = rng.integers(-1, 2, 2)
            counts[cy + oy, cx + ox] += rng.uniform(200.0, 2000.0)
    return xy.astype(np.int64)


def _add_bad_pixels(
    counts: NDArray[np.float64], dq: NDArray[np.int16], fraction: float, rng: np.random.Generator
) -> None:
    """Flag dead pixels (4, value 0) and hot pixels (16, +500 e-) in place."""
    n = round(fraction * counts.size)
    if n == 0:
        return
    flat_counts, flat_dq = counts.reshape(-1), dq.reshape(-1)
    dead = rng.choice(counts.size, n, replace=False)
    hot = rng.choice(counts.size, n, replace=False)
    flat_counts[dead] = 0.0
    flat_dq[dead] |= _DQ_BAD
    flat_counts[hot] += 500.0
    flat_dq[hot] |= _DQ_HOT


# --- FITS writers ---------------------------------------------------------------------------


def _primary_header(
    rootname: str, detector: str, filter_name: str, exptime: float, overrides: Mapping[str, Any]
) -> fits.Header:
    """PHU keywords with the names and comments of real calwf3 products."""
    header = fits.Header()
    cards: list[tuple[str, Any, str]] = [
        ("NEXTEND", 0, "Number of standard extensions"),
        ("FILENAME", "", "name of file"),
        ("FILETYPE", "SCI", "type of data found in data file"),
        ("TELESCOP", "HST", "telescope used to acquire data"),
        ("INSTRUME", "WFC3", "identifier for instrument used to acquire data"),
        ("ROOTNAME", rootname, "rootname of the observation set"),
        ("IMAGETYP", "EXT", "type of exposure identifier"),
        ("PRIMESI", "WFC3", "instrument designated as prime"),
        ("TARGNAME", "SYNTHETIC-FIELD", "proposer's target name"),
        ("PROPOSID", int(int(rootname[1:4], 36) % 100000), "PEP proposal identifier"),
        ("LINENUM", f"{rootname[4:6]}.001", "proposal logsheet line number"),
        ("ASN_ID", "NONE", "unique identifier assigned to association"),
        ("DATE-OBS", "2024-03-01", "UT date of start of observation (yyyy-mm-dd)"),
        ("TIME-OBS", "12:00:00", "UT time of start of observation (hh:mm:ss)"),
        ("EXPSTART", 60370.5, "exposure start time (Modified Julian Date)"),
        ("EXPEND", 60370.5 + exptime / 86400.0, "exposure end time (Modified Julian Date)"),
        ("EXPTIME", exptime, "exposure duration (seconds)--calculated"),
        ("EXPFLAG", "NORMAL", "Exposure interruption indicator"),
        ("FGSLOCK", "FINE", "commanded FGS lock (FINE,COARSE,GYROS,UNKNOWN)"),
        ("GYROMODE", "T", "number of gyros scheduled, T=3+OBAD"),
        ("MTFLAG", "", "moving target flag; T if it is a moving target"),
        ("SCAN_TYP", "N", "C:bostrophidon; D:C with dwell; N:N/A"),
        ("PA_V3", 194.955307, "position angle of V3-axis of HST (deg)"),
        ("SUN_ALT", 60.0, "altitude of the sun above Earth's limb"),
        ("QUALITY", "", ""),
        ("OBSTYPE", "IMAGING", "observation type - imaging or spectroscopic"),
        ("DETECTOR", detector, "detector in use: UVIS or IR"),
        ("FILTER", filter_name, "element selected from filter wheel"),
        ("CAL_VER", "3.7.1 (Oct-18-2023)", "CALWF3 code version"),
        ("OPUS_VER", "HSTDP 2023_3", "data processing software system version"),
    ]
    for key, value, comment in cards:
        header[key] = (value, comment)
    for key, value in overrides.items():
        header[key] = value
    header["HISTORY"] = "Synthetic WFC3 exposure written by hstmon ingest.synth_images"
    return header


def _image_hdu(
    data: NDArray[Any] | None,
    extname: str,
    extver: int,
    rootname: str,
    bunit: str,
    extra: Mapping[str, tuple[Any, str]] | None = None,
) -> fits.ImageHDU:
    hdu = fits.ImageHDU(data=data)
    hdu.header["EXTNAME"] = (extname, "extension name")
    hdu.header["EXTVER"] = (extver, "extension version number")
    hdu.header["ROOTNAME"] = (rootname, "rootname of the observation set")
    hdu.header["EXPNAME"] = (rootname, "exposure identifier")
    hdu.header["BUNIT"] = (bunit, "brightness units")
    for key, (value, comment) in (extra or {}).items():
        hdu.header[key] = (value, comment)
    return hdu


def _constant_hdu(
    extname: str, extver: int, rootname: str, bunit: str, value: float, shape: tuple[int, int]
) -> fits.ImageHDU:
    """An NAXIS=0 'constant array' extension (SAMP/TIME of IMA reads), as HSTIO writes it."""
    hdu = _image_hdu(None, extname, extver, rootname, bunit)
    hdu.header["NPIX1"] = (shape[1], "length of constant array axis 1")
    hdu.header["NPIX2"] = (shape[0], "length of constant array axis 2")
    hdu.header["PIXVALUE"] = (value, "values of pixels in constant array")
    return hdu


def _finish(path: Path, primary: fits.Header, hdus: list[fits.ImageHDU]) -> Path:
    primary["NEXTEND"] = len(hdus)
    primary["FILENAME"] = path.name
    fits.HDUList([fits.PrimaryHDU(header=primary), *hdus]).writeto(path, overwrite=True)
    return path


def write_uvis_flc(
    path: str | Path,
    *,
    rootname: str = "iabc01xyq",
    filter_name: str = "F606W",
    chip_shape: tuple[int, int] = (512, 512),
    n_stars: int = 60,
    fwhm_pix: float = 1.9,
    seed: int = 0,
    exptime: float = 350.0,
    kind: Literal["flc", "flt"] = "flc",
    header_overrides: Mapping[str, Any] | None = None,
    **field_options: Any,
) -> list[StarFieldTruth]:
    """Write a two-chip UVIS FLC (or FLT): PHU + (SCI, ERR, DQ) x 2, [SCI,1] = UVIS2 (CCDCHIP 2).

    ``chip_shape`` defaults to 512x512 per chip so files stay small; SUBARRAY is T unless the
    chips are full frame (2051x4096).  ``field_options`` go to :func:`make_star_field` (trailing,
    saturation, satellites...).  Returns the truth per chip, in extension order.
    """
    path = Path(path)
    full = tuple(chip_shape) == _UVIS_CHIP_SHAPE
    primary = _primary_header(
        rootname,
        "UVIS",
        filter_name,
        exptime,
        {
            "APERTURE": "UVIS",
            "SUBARRAY": not full,
            "OBSMODE": "ACCUM",
            "CCDAMP": "ABCD",
            "CCDGAIN": 1.5,
            "FLASHSTA": "NOT PERFORMED",
            "CRCORR": "OMIT",
            "PCTECORR": "COMPLETE" if kind == "flc" else "OMIT",
            **(header_overrides or {}),
        },
    )
    photplam = FILTER_PIVOT_ANGSTROM.get(filter_name, 5889.0)
    hdus: list[fits.ImageHDU] = []
    truths = []
    for extver, ccdchip in ((1, 2), (2, 1)):
        sci, err, dq, truth = make_star_field(
            chip_shape, n_stars, fwhm_pix, seed=seed * 2 + extver, **field_options
        )
        offsets = {
            "LTV1": (0.0, "offset in X to subsection start"),
            "LTV2": (0.0, "offset in Y to subsection start"),
        }
        sci_keys = {
            "CCDCHIP": (ccdchip, "CCD chip (1 or 2)"),
            "PHOTPLAM": (photplam, "Pivot wavelength (Angstroms)"),
            "PHOTFLAM": (1.8e-19, "Inverse sensitivity, ergs/cm2/A/e-"),
            "SIZAXIS1": (chip_shape[1], "subarray axis1 size in unbinned detector pixels"),
            "SIZAXIS2": (chip_shape[0], "subarray axis2 size in unbinned detector pixels"),
            **offsets,
        }
        hdus += [
            _image_hdu(sci, "SCI", extver, rootname, "ELECTRONS", sci_keys),
            _image_hdu(err, "ERR", extver, rootname, "ELECTRONS", offsets),
            _image_hdu(dq, "DQ", extver, rootname, "UNITLESS", offsets),
        ]
        truths.append(truth)
    _finish(path, primary, hdus)
    return truths


def _ir_primary(
    rootname: str,
    filter_name: str,
    subtype: str,
    nsamp: int,
    exptime: float,
    overrides: Mapping[str, Any] | None,
) -> fits.Header:
    return _primary_header(
        rootname,
        "IR",
        filter_name,
        exptime,
        {
            "APERTURE": "IR" if subtype == "FULLIMAG" else f"IR{subtype[:5]}",
            "SUBARRAY": subtype != "FULLIMAG",
            "SUBTYPE": subtype,
            "OBSMODE": "MULTIACCUM",
            "SAMP_SEQ": "SPARS25",
            "NSAMP": nsamp,
            "CCDAMP": "ABCD",
            "CCDGAIN": 2.5,
            "CRCORR": "COMPLETE",
            "UNITCORR": "COMPLETE",
            "PHOTPLAM": FILTER_PIVOT_ANGSTROM.get(filter_name, 15369.0),
            **(overrides or {}),
        },
    )


def _ir_field(
    size: int,
    n_stars: int,
    fwhm_pix: float,
    rng: np.random.Generator,
    sky_rate: float,
    exptime: float,
    read_noise: float,
) -> tuple[NDArray[np.float64], StarFieldTruth]:
    """Noiseless count-rate image (e-/s) of the science area and its truth (fluxes in e-/s)."""
    x, y, flux = _star_positions((size, size), n_stars, rng, (20.0, 2000.0))
    rate = _render_stars((size, size), x, y, flux, fwhm_pix, "moffat", 2.5, "integrated")
    rate += sky_rate
    truth = StarFieldTruth(
        x=x,
        y=y,
        flux=flux,
        peak=_star_peaks(rate - sky_rate, x, y, 0.0),
        saturated=np.zeros(n_stars, dtype=bool),
        fwhm_pix=fwhm_pix,
        fwhm_effective_pix=fwhm_after_pixelation(fwhm_pix),
        profile="moffat",
        moffat_alpha=2.5,
        sky=sky_rate * exptime,
        read_noise=read_noise,
        trail_pix=0.0,
        trail_angle_deg=0.0,
    )
    return rate, truth


def _ir_subtype(size: int) -> str:
    return "FULLIMAG" if size >= 1014 else f"SQ{size}SUB"


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the scene and for the noise, from one seed."""
    scene, noise = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(scene), np.random.default_rng(noise)


def _ima_counts(
    rate: NDArray[np.float64],
    streak: NDArray[np.float64] | float,
    samptime: tuple[float, ...],
    satellite_sampnum: int | None,
    read_noise: float,
    rng: np.random.Generator,
) -> list[NDArray[np.float64]]:
    """Counts of each read since the zeroth read (zero-read subtracted), reference border kept."""
    full = rate.shape[0] + 2 * _IR_BORDER_PIX
    inner = (slice(_IR_BORDER_PIX, -_IR_BORDER_PIX),) * 2
    zero_read_noise = rng.normal(0.0, read_noise, (full, full))
    accumulated = np.zeros((full, full))
    reads = [np.zeros((full, full))]
    for k in range(1, len(samptime)):
        dt = samptime[k] - samptime[k - 1]
        signal = rate + (streak / dt if k == satellite_sampnum else 0.0)
        accumulated[inner] += rng.poisson(signal * dt)
        reads.append(accumulated + rng.normal(0.0, read_noise, (full, full)) - zero_read_noise)
    return reads


def _ima_imset(
    counts: NDArray[np.float64],
    k: int,
    extver: int,
    samptime: tuple[float, ...],
    rootname: str,
    read_noise: float,
) -> list[fits.ImageHDU]:
    """SCI, ERR, DQ, SAMP, TIME of read k (SAMPNUM k), in e-/s as calwf3 writes IMA."""
    t, full = samptime[k], counts.shape[0]
    sci = counts / t if t > 0 else counts
    err = np.sqrt(np.clip(counts, 0.0, None) + 2.0 * read_noise**2) / max(t, 1.0)
    offsets = {
        "LTV1": (-(1024.0 - full) / 2.0, "offset in X to subsection start"),
        "LTV2": (-(1024.0 - full) / 2.0, "offset in Y to subsection start"),
    }
    sci_keys = {
        "SAMPNUM": (k, "MULTIACCUM sample number"),
        "SAMPTIME": (t, "total integration time (sec)"),
        "DELTATIM": (t - samptime[k - 1] if k else 0.0, "integration time of this sample"),
        **offsets,
    }
    return [
        _image_hdu(sci.astype(np.float32), "SCI", extver, rootname, "ELECTRONS/S", sci_keys),
        _image_hdu(err.astype(np.float32), "ERR", extver, rootname, "ELECTRONS/S", offsets),
        _image_hdu(np.zeros(counts.shape, np.int16), "DQ", extver, rootname, "UNITLESS"),
        _constant_hdu("SAMP", extver, rootname, "SAMPLES", k + 1, counts.shape),
        _constant_hdu("TIME", extver, rootname, "SECONDS", t, counts.shape),
    ]


def write_ir_ima(
    path: str | Path,
    *,
    rootname: str = "iabc02xyq",
    filter_name: str = "F160W",
    size: int = 256,
    nsamp: int = 6,
    sample_step_s: float = 25.0,
    n_stars: int = 30,
    fwhm_pix: float = 1.2,
    seed: int = 0,
    sky_rate: float = 1.0,
    read_noise: float = 20.0,
    satellite_sampnum: int | None = None,
    satellite_counts: float = 600.0,
    header_overrides: Mapping[str, Any] | None = None,
) -> ImaTruth:
    """Write an IR IMA: NSAMP imsets (SCI, ERR, DQ, SAMP, TIME) in reverse time order.

    [SCI,1] is the last read (SAMPTIME = EXPTIME) and [SCI,NSAMP] the zeroth read (SAMPTIME = 0,
    SCI = 0 after the zero-read subtraction); SCI and ERR are in e-/s and include the 5-pixel
    reference border (``size`` + 10 pixels a side).  ``satellite_sampnum`` puts a satellite
    streak in the counts accumulated between read SAMPNUM-1 and read SAMPNUM only, so it shows
    in that read and every later cumulative read, as a real one does; ``satellite_counts`` is
    the charge it leaves on its axis, in electrons per pixel.
    """
    path = Path(path)
    scene_rng, noise_rng = _rngs(seed)
    samptime = tuple(sample_step_s * k for k in range(nsamp))
    rate, truth = _ir_field(size, n_stars, fwhm_pix, scene_rng, sky_rate, samptime[-1], read_noise)
    streak = _satellite((size, size), scene_rng, satellite_counts)[0] if satellite_sampnum else 0.0
    reads = _ima_counts(rate, streak, samptime, satellite_sampnum, read_noise, noise_rng)
    primary = _ir_primary(
        rootname, filter_name, _ir_subtype(size), nsamp, samptime[-1], header_overrides
    )
    hdus: list[fits.ImageHDU] = []
    for extver, k in enumerate(range(nsamp - 1, -1, -1), start=1):
        hdus += _ima_imset(reads[k], k, extver, samptime, rootname, read_noise)
    _finish(path, primary, hdus)
    return ImaTruth(field=truth, samptime_s=samptime, satellite_sampnum=satellite_sampnum)


def write_ir_flt(
    path: str | Path,
    *,
    rootname: str = "iabc02xzq",
    filter_name: str = "F160W",
    size: int = 256,
    n_stars: int = 30,
    fwhm_pix: float = 1.2,
    seed: int = 0,
    exptime: float = 250.0,
    sky_rate: float = 1.0,
    read_noise: float = 20.0,
    header_overrides: Mapping[str, Any] | None = None,
) -> StarFieldTruth:
    """Write an IR FLT: one imset SCI, ERR (e-/s), DQ, SAMP, TIME, reference border trimmed."""
    path = Path(path)
    scene_rng, noise_rng = _rngs(seed)
    rate, truth = _ir_field(size, n_stars, fwhm_pix, scene_rng, sky_rate, exptime, read_noise)
    counts = noise_rng.poisson(rate * exptime) + noise_rng.normal(0.0, read_noise, rate.shape)
    sci = (counts / exptime).astype(np.float32)
    err = (np.sqrt(np.clip(counts, 0.0, None) + read_noise**2) / exptime).astype(np.float32)
    primary = _ir_primary(rootname, filter_name, _ir_subtype(size), 14, exptime, header_overrides)
    hdus = [
        _image_hdu(
            sci,
            "SCI",
            1,
            rootname,
            "ELECTRONS/S",
            {"SAMPTIME": (exptime, "total integration time (sec)")},
        ),
        _image_hdu(err, "ERR", 1, rootname, "ELECTRONS/S"),
        _image_hdu(np.zeros(sci.shape, np.int16), "DQ", 1, rootname, "UNITLESS"),
        _image_hdu(np.full(sci.shape, 14, np.int16), "SAMP", 1, rootname, "SAMPLES"),
        _image_hdu(np.full(sci.shape, exptime, np.float32), "TIME", 1, rootname, "SECONDS"),
    ]
    _finish(path, primary, hdus)
    return truth


# --- science files for a synthetic jitter archive ------------------------------------------

IMAGES_TRUTH_FILE = "images.csv"
_UVIS_FWHM_PIX = 1.9  # about the pixelated PSF of a mid-band UVIS filter
_IR_FWHM_PIX = 1.4
# Guide-star trouble smears stars: no guiding at all trails them most (DOMAIN.md 8).
_TRAIL_PIX = {"gs_acq_failure": 9.0, "gyro_drift": 4.0}


@dataclass(frozen=True)
class SyntheticImage:
    """A science file written for one exposure of the synthetic archive, and what it holds."""

    exposure_id: str
    path: str
    kind: str  # flc | flt
    fwhm_pix: float  # injected FWHM before trailing, in pixels
    trail_pix: float  # injected trail length, in pixels (0 = round stars)


# The science header's FGSLOCK for each guiding mode the jitter files report (GUIDEACT).
_FGSLOCK = {"FINE LOCK": "FINE", "FINE LOCK/GYRO": "FINE/GYRO", "GYRO": "GYROS"}
_EXPOSURE_START_S = 20.0  # the shutter opens this long after the observation window starts


def _exposure_time(exposure: Any) -> float:
    """At most 350 s, and within the exposure's observation window."""
    return float(min(350.0, max(1.0, 0.8 * exposure.window_s - _EXPOSURE_START_S)))


def _agreeing_keywords(exposure: Any, exptime: float) -> dict[str, Any]:
    """Science-header keywords that agree with the exposure's jitter files, as real files do:
    EXPSTART and EXPEND inside its observation window, FGSLOCK the guiding obtained, PROCTIME
    that of its logs, the program's target."""
    start = exposure.window_start_mjd + _EXPOSURE_START_S / 86400.0
    moment = Time(start, format="mjd", scale="utc").to_datetime()
    return {
        "PROPOSID": exposure.proposid,
        "ASN_ID": exposure.asn_id.upper(),
        "EXPSTART": start,
        "EXPEND": start + exptime / 86400.0,
        "DATE-OBS": moment.strftime("%Y-%m-%d"),
        "TIME-OBS": moment.strftime("%H:%M:%S"),
        "FGSLOCK": _FGSLOCK.get(exposure.guideact, "UNKNOWN"),
        "PROCTIME": exposure.proctime_mjd,
        "RA_TARG": exposure.ra_targ,
        "DEC_TARG": exposure.dec_targ,
    }


def _image_order(exposures: Sequence[Any]) -> list[Any]:
    """The IEPP01010 visit first (the seed notebook's example), then the rest in archive order."""
    members = [e for e in exposures if e.rootname]
    return sorted(members, key=lambda e: (e.asn_id != "iepp01010", e.asn_id, e.member_index))


def write_archive_images(
    out_dir: str | Path, exposures: Sequence[Any], n_images: int, seed: int = 0
) -> list[SyntheticImage]:
    """Write FLC (UVIS) or FLT (IR) files for ``n_images`` exposures of a synthetic archive.

    ``exposures`` are the archive's truth rows (``ingest.synth.read_truth``); files go beside
    each exposure's jitter files and the truth of what was injected to ``images.csv``.
    """
    out_dir = Path(out_dir)
    written: list[SyntheticImage] = []
    for index, exposure in enumerate(_image_order(exposures)[:n_images]):
        folder = out_dir / str(exposure.proposid) / exposure.asn_id
        trail = _TRAIL_PIX.get(exposure.mode, 0.0)
        exptime = _exposure_time(exposure)
        overrides = _agreeing_keywords(exposure, exptime)
        if exposure.config.endswith("UVIS"):
            path = folder / f"{exposure.rootname}_flc.fits"
            write_uvis_flc(path, rootname=exposure.rootname, chip_shape=(256, 256), n_stars=40,
                           fwhm_pix=_UVIS_FWHM_PIX, seed=seed + index, exptime=exptime,
                           header_overrides=overrides, trail_pix=trail,
                           trail_angle_deg=35.0)  # fmt: skip
            kind, fwhm = "flc", _UVIS_FWHM_PIX
        else:
            path = folder / f"{exposure.rootname}_flt.fits"
            write_ir_flt(path, rootname=exposure.rootname, size=256, n_stars=40,
                         fwhm_pix=_IR_FWHM_PIX, seed=seed + index, exptime=exptime,
                         header_overrides=overrides)  # fmt: skip
            kind, fwhm, trail = "flt", _IR_FWHM_PIX, 0.0
        written.append(SyntheticImage(exposure.exposure_id, str(path), kind, fwhm, trail))
    with open(out_dir / IMAGES_TRUTH_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["exposure_id", "path", "kind", "fwhm_pix", "trail_pix"])
        writer.writerows((i.exposure_id, i.path, i.kind, i.fwhm_pix, i.trail_pix) for i in written)
    return written
