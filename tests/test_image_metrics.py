"""Image metrics on genuine WFC3 files and seeded synthetic ones; the synthetic writers' layout."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from matplotlib import image as mpl_image
from numpy.testing import assert_allclose, assert_array_equal

from ingest.image_metrics import (
    IR_DQ,
    UVIS_DQ,
    chip_metrics,
    ima_read_metrics,
    measure_chip,
    preview_png,
)
from ingest.psf import measure_psf
from ingest.synth_images import make_star_field, write_ir_flt, write_ir_ima, write_uvis_flc

# --- genuine files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "detector", "n_chips"),
    [("sample_ipppssoot_flc.fits", "UVIS", 2), ("sample_ipppssoot_flt.fits", "IR", 1)],
)
def test_cut_10x10_real_arrays_give_none_and_a_reason(
    real_data: Path, name: str, detector: str, n_chips: int
) -> None:
    with fits.open(real_data / name) as hdus:
        for extver in range(1, n_chips + 1):
            sci, err, dq = (hdus[ext, extver].data for ext in ("SCI", "ERR", "DQ"))
            metrics, psf = measure_chip(sci, err, dq, detector=detector)
            assert (metrics.ny, metrics.nx) == (10, 10)
            assert metrics.n_sources is None and metrics.snr_median is None
            assert "image is 10x10: too small to find sources" in metrics.reason
            assert metrics.frac_bad is not None  # what can be computed still is
            assert psf.fwhm_median_pix is None and psf.n_psf_stars == 0
            assert psf.reason.startswith("image is 10x10: too small to find stars")
            assert preview_png(sci).startswith(b"\x89PNG")


def _read_ima(path: Path) -> tuple[list, list, list, list[float]]:
    """SCI/ERR/DQ arrays and SAMPTIME of every read, in file order."""
    with fits.open(path, memmap=False) as hdus:
        n = hdus[0].header["NSAMP"]
        sci = [hdus["SCI", v].data for v in range(1, n + 1)]
        err = [hdus["ERR", v].data for v in range(1, n + 1)]
        dq = [hdus["DQ", v].data for v in range(1, n + 1)]
        samptime = [float(hdus["SCI", v].header["SAMPTIME"]) for v in range(1, n + 1)]
    return sci, err, dq, samptime


def test_real_ima_gives_metrics_for_each_of_its_4_reads(real_data: Path) -> None:
    sci, err, dq, samptime = _read_ima(real_data / "ibxy01z8q_ima.fits")
    ima = ima_read_metrics(sci, samptime, dq_reads=dq)
    assert ima.reason is None and (ima.n_reads, ima.n_intervals) == (4, 3)
    assert [r.sampnum for r in ima.reads] == [0, 1, 2, 3]
    assert [r.extver for r in ima.reads] == [4, 3, 2, 1]  # [SCI,1] is the last read
    assert_allclose([r.samptime_s for r in ima.reads], [0.0, 0.277815, 0.55563, 0.833445])
    zeroth, *reads = ima.reads
    assert zeroth.sky_rate_median is None and "zeroth read" in zeroth.reason
    for read in reads:
        assert read.sky_rate_sigma > 0 and read.interval_rate_sigma > 0
        assert read.deltatime_s == pytest.approx(0.277815)
        assert read.outlier_pixels is not None and np.isfinite(read.outlier_sigma)
    # Cumulative-rate noise falls as 1/SAMPTIME (read noise dominates these 0.28 s reads).
    sigmas = [r.sky_rate_sigma for r in reads]
    assert sigmas[0] > sigmas[1] > sigmas[2]
    assert ima.read_outlier_sigma < 5.0  # a nominal exposure: no read stands out
    for extver in range(1, 4):  # each read's array is also a valid IR chip
        metrics = chip_metrics(sci[extver - 1], err[extver - 1], dq[extver - 1], detector="IR")
        assert metrics.sky_sigma > 0 and metrics.frac_bad > 0


# --- IMA read events ----------------------------------------------------------------------


def test_satellite_in_one_ima_read_stands_out(tmp_path: Path) -> None:
    clean = write_ir_ima(tmp_path / "clean_ima.fits", seed=4)
    event = write_ir_ima(tmp_path / "event_ima.fits", seed=4, satellite_sampnum=3)
    assert clean.satellite_sampnum is None and event.satellite_sampnum == 3
    sci, _, dq, samptime = _read_ima(tmp_path / "clean_ima.fits")
    nominal = ima_read_metrics(sci, samptime, dq_reads=dq)
    sci, _, dq, samptime = _read_ima(tmp_path / "event_ima.fits")
    ima = ima_read_metrics(sci, samptime, dq_reads=dq)
    assert nominal.read_outlier_sigma < 5.0
    assert ima.worst_sampnum == 3 and ima.read_outlier_sigma > 50.0
    others = [r.outlier_sigma for r in ima.reads if r.sampnum not in (0, 3)]
    assert max(others) < 5.0
    # The event is in the counts of read 3 and later, but in the interval ending at 3 only.
    assert ima.reads[3].outlier_fraction > 0.005


def _ramp_reads(sky_rates: list[float], dt: float = 25.0) -> tuple[list, list[float]]:
    """IMA-like reads (cumulative e-/s, last read first) of a sky with these interval rates."""
    rng = np.random.default_rng(5)
    counts = np.zeros((128, 128))
    reads, times = [np.zeros((128, 128), np.float32)], [0.0]
    for k, rate in enumerate(sky_rates, start=1):
        counts = counts + rng.poisson(rate * dt, counts.shape)
        reads.append(((counts + rng.normal(0.0, 15.0, counts.shape)) / (k * dt)).astype(np.float32))
        times.append(k * dt)
    return reads[::-1], times[::-1]


def test_sky_jump_in_one_ima_read_shows_as_a_rate_step() -> None:
    reads, times = _ramp_reads([2.0, 2.0, 2.6, 2.0, 2.0])
    ima = ima_read_metrics(reads, times, border_pix=0)
    steps = {r.sampnum: r.rate_step_sigma for r in ima.reads if r.rate_step_sigma is not None}
    assert steps[3] > 10.0 and steps[4] < -10.0
    assert abs(steps[2]) < 5.0 and abs(steps[5]) < 5.0
    assert ima.reads[3].interval_rate_median == pytest.approx(2.6, abs=0.1)
    assert ima.rate_step_sigma_max == pytest.approx(max(abs(v) for v in steps.values()))


def test_ima_without_enough_reads_or_pixels_says_why() -> None:
    reads = [np.zeros((64, 64), np.float32), np.ones((64, 64), np.float32)]
    ima = ima_read_metrics(reads, [0.0, 2.9])
    assert ima.read_outlier_sigma is None and "at least 3" in ima.reason
    reads, times = _ramp_reads([2.0, 2.0, 2.0])
    flagged = [np.full((128, 128), 256, np.int16) for _ in reads]
    ima = ima_read_metrics(reads, times, dq_reads=flagged)
    assert ima.read_outlier_sigma is None and "usable pixels" in ima.reason
    assert all(r.sky_rate_median is None for r in ima.reads)
    with pytest.raises(ValueError, match="one SAMPTIME per read"):
        ima_read_metrics(reads, [0.0])


# --- chip metrics -------------------------------------------------------------------------


def test_chip_metrics_recover_sky_sources_and_snr() -> None:
    sci, err, dq, truth = make_star_field(
        (512, 512), 80, 2.0, seed=21, sky=40.0, read_noise=3.0, bad_pixel_fraction=1e-3
    )
    metrics = chip_metrics(sci, err, dq)
    assert metrics.reason is None
    assert_allclose(metrics.sky_median, 40.0, rtol=0.01)
    assert_allclose(metrics.sky_sigma, np.sqrt(40.0 + 3.0**2), rtol=0.05)
    inside = (truth.x > 2) & (truth.x < 509) & (truth.y > 2) & (truth.y < 509)
    assert 0.85 * inside.sum() <= metrics.n_sources <= inside.sum() + 2
    assert metrics.frac_bad == pytest.approx(2e-3, rel=0.01)  # dead + hot pixels
    assert metrics.frac_saturated == 0.0 and metrics.frac_cosmic_ray == 0.0
    # Background-limited S/N (no ERR) ignores the stars' own noise, so it is higher.
    no_err = chip_metrics(sci, None, dq)
    assert no_err.snr_median > metrics.snr_median > 20.0
    assert metrics.snr_p90 > metrics.snr_median


def test_dq_fractions_use_the_detector_bit_groups() -> None:
    sci = np.random.default_rng(1).normal(0.0, 1.0, (40, 50)).astype(np.float32)
    dq = np.zeros(sci.shape, np.int16)
    dq.flat[:10] = 256
    dq.flat[10:30] = 2048  # A/D saturation on UVIS, zero-read correction on IR
    dq.flat[30:70] = 16 | 8192
    dq.flat[70:75] = 1024  # a sink pixel on UVIS, a CR spike on IR
    uvis, ir = chip_metrics(sci, None, dq), chip_metrics(sci, None, dq, detector="IR")
    n = sci.size
    assert uvis.frac_saturated == 30 / n and ir.frac_saturated == 10 / n
    assert uvis.frac_bad == 45 / n and ir.frac_bad == 40 / n
    assert uvis.frac_cosmic_ray == 40 / n and ir.frac_cosmic_ray == 45 / n
    assert UVIS_DQ.saturated == 256 | 2048 and IR_DQ.saturated == 256
    assert chip_metrics(sci).frac_saturated is None
    with pytest.raises(ValueError, match="'UVIS' or 'IR'"):
        chip_metrics(sci, detector="ACS")


def test_metrics_and_psf_read_memmapped_big_endian_chips_without_writing_them(
    tmp_path: Path,
) -> None:
    truths = write_uvis_flc(
        tmp_path / "iabc01xyq_flc.fits", chip_shape=(256, 384), n_stars=40, seed=3
    )
    with fits.open(tmp_path / "iabc01xyq_flc.fits", memmap=True) as hdus:
        for extver, truth in zip((1, 2), truths, strict=True):
            sci, err, dq = (hdus[ext, extver].data for ext in ("SCI", "ERR", "DQ"))
            assert sci.dtype.byteorder == ">"
            before = sci.copy()
            metrics, psf = measure_chip(sci, err, dq)
            assert_array_equal(sci, before)
            assert metrics.n_sources > 20
            assert_allclose(psf.fwhm_median_pix, truth.fwhm_effective_pix, rtol=0.05)
            assert psf == measure_psf(sci, dq)


# --- preview --------------------------------------------------------------------------------


def test_preview_png_is_block_averaged_to_max_size() -> None:
    sci, _, _, _ = make_star_field((300, 700), 30, 2.0, seed=2)
    sci[:50, :50] = np.nan
    png = preview_png(sci, max_size=128)
    pixels = mpl_image.imread(io.BytesIO(png), format="png")
    assert max(pixels.shape[:2]) <= 128 and pixels.shape[:2] == (300 // 6, 700 // 6)
    assert mpl_image.imread(io.BytesIO(preview_png(sci[:40, :40]))).shape[:2] == (40, 40)
    assert preview_png(np.full((20, 20), np.nan)).startswith(b"\x89PNG")


# --- synthetic generator and writers ----------------------------------------------------------


def test_star_fields_are_deterministic_per_seed() -> None:
    first = make_star_field((64, 64), 5, 2.0, seed=9, n_cosmic_rays=3, satellite_peak=50.0)
    again = make_star_field((64, 64), 5, 2.0, seed=9, n_cosmic_rays=3, satellite_peak=50.0)
    other = make_star_field((64, 64), 5, 2.0, seed=10)
    for a, b in zip(first[:3], again[:3], strict=True):
        assert_array_equal(a, b)
    assert_array_equal(first[3].x, again[3].x)
    assert first[3].satellite is not None and first[3].satellite.peak == 50.0
    assert not np.array_equal(first[0], other[0])


def _keywords(header: fits.Header) -> set[str]:
    return set(header) - {"HISTORY", "COMMENT", ""}


def test_synthetic_uvis_flc_has_the_real_layout_and_keyword_names(
    real_data: Path, tmp_path: Path
) -> None:
    path = tmp_path / "iabc01xyq_flc.fits"
    write_uvis_flc(path, header_overrides={"FGSLOCK": "GYROS"})
    with fits.open(path) as mine, fits.open(real_data / "sample_ipppssoot_flc.fits") as real:
        layout = [(hdu.name, hdu.ver) for hdu in mine]
        assert layout == [(hdu.name, hdu.ver) for hdu in real[:7]]
        assert mine[0].header["NEXTEND"] == 6 and mine[0].header["FGSLOCK"] == "GYROS"
        assert [mine["SCI", v].header["CCDCHIP"] for v in (1, 2)] == [2, 1]  # [SCI,1] = UVIS2
        for i in range(7):
            assert _keywords(mine[i].header) <= _keywords(real[i].header), mine[i].name
        for key in (
            "ROOTNAME",
            "INSTRUME",
            "DETECTOR",
            "FILTER",
            "APERTURE",
            "SUBARRAY",
            "EXPTIME",
            "EXPFLAG",
            "FGSLOCK",
        ):
            assert key in mine[0].header
        assert mine["SCI", 1].header["PHOTPLAM"] == pytest.approx(5889.0)
        assert mine["SCI", 1].data.dtype == np.dtype(">f4") and mine["DQ", 2].data.dtype == ">i2"


def test_synthetic_ir_ima_and_flt_have_the_real_layout_and_keyword_names(
    real_data: Path, tmp_path: Path
) -> None:
    truth = write_ir_ima(tmp_path / "iabc02xyq_ima.fits", nsamp=5, sample_step_s=12.5)
    write_ir_flt(tmp_path / "iabc02xzq_flt.fits")
    with (
        fits.open(tmp_path / "iabc02xyq_ima.fits") as mine,
        fits.open(real_data / "ibxy01z8q_ima.fits") as real,
    ):
        assert [hdu.name for hdu in mine[1:6]] == ["SCI", "ERR", "DQ", "SAMP", "TIME"]
        assert len(mine) == 1 + 5 * 5 and mine[0].header["NSAMP"] == 5
        times = [mine["SCI", v].header["SAMPTIME"] for v in range(1, 6)]
        assert times == [50.0, 37.5, 25.0, 12.5, 0.0] == list(truth.samptime_s)[::-1]
        assert mine["SCI", 1].header["SAMPTIME"] == mine[0].header["EXPTIME"]
        assert not mine["SCI", 5].data.any()  # zeroth read
        assert (
            mine["SCI", 1].data.shape == (266, 266) and mine["TIME", 2].header["PIXVALUE"] == 37.5
        )
        for i in range(6):
            assert _keywords(mine[i].header) <= _keywords(real[i].header), mine[i].name
    with (
        fits.open(tmp_path / "iabc02xzq_flt.fits") as mine,
        fits.open(real_data / "sample_ipppssoot_flt.fits") as real,
    ):
        assert [(h.name, h.ver) for h in mine] == [(h.name, h.ver) for h in real[:6]]
        for i in range(6):
            assert _keywords(mine[i].header) <= _keywords(real[i].header), mine[i].name
