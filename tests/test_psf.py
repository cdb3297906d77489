"""PSF measurement recovers injected FWHM and trailing, and survives edges, NaNs and saturation."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from photutils.detection import DAOStarFinder

from ingest.psf import (
    NOMINAL_FWHM,
    detect_sources,
    measure_psf,
    moffat_fwhm,
    nominal_fwhm_confirmed,
    nominal_fwhm_pix,
)
from ingest.psf_profiles import moffat_gamma
from ingest.synth_images import make_star_field

FIELD = (384, 384)


@pytest.mark.parametrize("profile", ["moffat", "gaussian"])
@pytest.mark.parametrize("fwhm_pix", [1.6, 2.0, 2.5, 3.0])
def test_fwhm_of_point_sampled_stars_is_recovered_within_5_percent(
    profile: str, fwhm_pix: float
) -> None:
    sci, _, dq, truth = make_star_field(FIELD, 50, fwhm_pix, profile, seed=11, sampling="center")
    summary = measure_psf(sci, dq)
    assert summary.n_psf_stars >= 25, summary.rejected
    assert_allclose(summary.fwhm_median_pix, truth.fwhm_pix, rtol=0.05)
    assert summary.elongation_median < 1.2


@pytest.mark.parametrize("profile", ["moffat", "gaussian"])
@pytest.mark.parametrize("fwhm_pix", [1.6, 2.0, 2.5, 3.0])
def test_fwhm_of_pixel_integrated_stars_is_the_pixelated_fwhm(
    profile: str, fwhm_pix: float
) -> None:
    """Real pixels integrate the PSF: the fit measures the broadened FWHM (as IHB 7.6 says)."""
    sci, _, dq, truth = make_star_field(FIELD, 50, fwhm_pix, profile, seed=12)
    summary = measure_psf(sci, dq)
    assert truth.fwhm_effective_pix > truth.fwhm_pix
    assert_allclose(summary.fwhm_median_pix, truth.fwhm_effective_pix, rtol=0.05)
    assert summary.fwhm_median_pix > truth.fwhm_pix


def test_trailed_stars_are_elongated_along_the_trail() -> None:
    round_sci, _, round_dq, _ = make_star_field(FIELD, 50, 2.0, seed=3)
    sci, _, dq, _ = make_star_field(FIELD, 50, 2.0, seed=3, trail_pix=6.0, trail_angle_deg=30.0)
    round_psf, trailed = measure_psf(round_sci, round_dq), measure_psf(sci, dq)
    assert round_psf.elongation_median < 1.2
    assert trailed.elongation_median > 1.5
    angles = np.array([s.position_angle_deg for s in trailed.stars])
    assert abs(np.median(angles) - 30.0) < 5.0
    # A trailed PSF is also wider and fits a round Moffat worse, relative to its amplitude.
    assert trailed.fwhm_median_pix > round_psf.fwhm_median_pix
    rel = [
        np.median([s.residual_rms / s.moffat_amplitude for s in p.stars])
        for p in (round_psf, trailed)
    ]
    assert rel[1] > rel[0]


def test_edge_stars_and_nan_holes_do_not_crash_or_bias() -> None:
    sci, _, dq, truth = make_star_field(FIELD, 60, 2.0, seed=4)
    sci[100:140, 200:260] = np.nan
    for x, y in zip(truth.x[:5], truth.y[:5], strict=True):  # holes on some star cores
        sci[round(y), round(x)] = np.nan
    sci[:, :3] = np.nan  # a dead edge, and stars cut by it
    summary = measure_psf(sci, dq)
    assert summary.reason is None
    assert_allclose(summary.fwhm_median_pix, truth.fwhm_effective_pix, rtol=0.05)
    for star in summary.stars:
        assert not (95 <= star.y <= 145 and 195 <= star.x <= 265)
        assert star.x > 3
    assert summary.rejected["edge"] > 0 and summary.rejected["saturated_or_bad"] > 0


def test_saturated_stars_are_rejected() -> None:
    sci, _, dq, truth = make_star_field(FIELD, 60, 2.0, seed=5, saturate_fraction=0.15)
    assert truth.saturated.sum() >= 8
    for with_dq in (True, False):
        summary = measure_psf(sci, dq) if with_dq else measure_psf(sci, saturation_level=60_000.0)
        sat_x, sat_y = truth.x[truth.saturated], truth.y[truth.saturated]
        for star in summary.stars:
            assert np.min(np.hypot(sat_x - star.x, sat_y - star.y)) > 3.0
        assert summary.n_psf_stars >= 20
        assert_allclose(summary.fwhm_median_pix, truth.fwhm_effective_pix, rtol=0.05)


def test_cosmic_rays_are_not_taken_for_stars() -> None:
    sci, _, dq, truth = make_star_field(FIELD, 50, 2.0, seed=6, n_cosmic_rays=400)
    summary = measure_psf(sci, dq)
    crs = truth.cosmic_ray_xy
    near_cr = [np.min(np.hypot(crs[:, 0] - s.x, crs[:, 1] - s.y)) < 1.0 for s in summary.stars]
    assert sum(near_cr) <= 1
    assert_allclose(summary.fwhm_median_pix, truth.fwhm_effective_pix, rtol=0.05)


def test_undersampled_ir_stars_are_measured() -> None:
    sci, _, dq, truth = make_star_field(
        (256, 256), 40, 1.2, seed=7, sky=20.0, read_noise=15.0, sampling="center"
    )
    summary = measure_psf(sci, dq, detector="IR")
    assert summary.n_psf_stars >= 10
    assert_allclose(summary.fwhm_median_pix, truth.fwhm_pix, rtol=0.05)
    assert summary.elongation_median < 1.2


def test_pixel_integrated_undersampled_ir_stars_pass_the_sharpness_cut() -> None:
    """At the IR handbook widths (~1 px before pixelation) stars reach DAOFIND sharpness 0.93."""
    sci, _, dq, _ = make_star_field(
        (400, 400), 60, 0.95, seed=3, sky=5.0, read_noise=15.0, flux_range=(2e3, 5e4)
    )
    found = detect_sources(sci, dq, detector="IR")
    assert found.n_sources >= found.n_peaks - 2, "no star lost to the sharpness cut"
    assert detect_sources(sci, dq, detector="UVIS").n_sources < found.n_sources - 5
    assert measure_psf(sci, dq, detector="IR").n_psf_stars >= 30


def _one_star() -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """An image with one bright star well inside it, and the star's pixel (x, y)."""
    for seed in range(100):
        sci, _, dq, truth = make_star_field((96, 96), 1, 2.0, seed=seed, flux_range=(4e4, 4e4))
        x, y = round(float(truth.x[0])), round(float(truth.y[0]))
        if 25 <= x <= 70 and 25 <= y <= 70:
            return sci, dq, (x, y)
    raise AssertionError("no seed puts the star inside")


def test_cosmic_rays_flagged_4096_are_masked_from_the_fit() -> None:
    """AstroDrizzle's CR flag (DQ 4096): a hit in a star's wing costs that pixel, not the star;
    a hit in its core rejects the star."""
    sci, dq, (x, y) = _one_star()
    clean = measure_psf(sci, dq, min_snr=10.0)
    assert clean.n_psf_stars == 1
    hit = sci.copy()
    hit[y + 3, x + 2] += 3000.0  # a cosmic ray in the wing, within the fit radius
    unflagged = measure_psf(hit, dq, min_snr=10.0)
    flagged_dq = dq.copy()
    flagged_dq[y + 3, x + 2] = 4096
    flagged = measure_psf(hit, flagged_dq, min_snr=10.0)
    assert flagged.n_psf_stars == 1
    assert_allclose(flagged.fwhm_median_pix, clean.fwhm_median_pix, rtol=0.02)
    assert unflagged.n_psf_stars == 0 or abs(
        unflagged.fwhm_median_pix - clean.fwhm_median_pix
    ) > abs(flagged.fwhm_median_pix - clean.fwhm_median_pix)
    core_dq = dq.copy()
    core_dq[y, x] = 4096
    core = measure_psf(hit, core_dq, min_snr=10.0)
    assert core.n_psf_stars == 0 and core.rejected.get("flagged_core") == 1


@pytest.mark.parametrize(
    ("shape", "fill", "expected"),
    [
        ((10, 10), 1.0, "image is 10x10: too small to find stars"),
        ((64, 64), 3.0, "image is constant"),
        ((64, 64), np.nan, "no usable pixel"),
    ],
)
def test_images_without_stars_give_none_and_a_reason(
    shape: tuple[int, int], fill: float, expected: str
) -> None:
    summary = measure_psf(np.full(shape, fill, dtype=np.float32))
    assert summary.fwhm_median_pix is None and summary.elongation_median is None
    assert summary.n_psf_stars == 0 and summary.reason.startswith(expected)


def test_pure_noise_gives_a_reason() -> None:
    noise = np.random.default_rng(0).normal(10.0, 3.0, (128, 128)).astype(np.float32)
    summary = measure_psf(noise)
    assert summary.fwhm_median_pix is None
    assert "no" in summary.reason and "sigma" in summary.reason


def test_stamp_mosaic_detection_equals_daofind_on_the_whole_image() -> None:
    sci, _, dq, _ = make_star_field((300, 300), 40, 2.0, seed=8, n_cosmic_rays=100)
    sources = detect_sources(sci, dq)
    finder = DAOStarFinder(
        threshold=5.0 * sources.sky_sigma,
        fwhm=2.0,
        sharpness_range=(0.2, 0.9),
        roundness_range=None,
        xycoords=np.column_stack([sources.peak_x, sources.peak_y]),
    )
    table = finder(sci - np.float32(sources.sky))
    x, y = np.asarray(table["x_centroid"]), np.asarray(table["y_centroid"])
    ours, theirs = np.lexsort((sources.x, sources.y)), np.lexsort((x, y))
    assert_allclose(sources.x[ours], x[theirs], atol=1e-9)
    assert_allclose(sources.y[ours], y[theirs], atol=1e-9)
    assert_allclose(sources.flux[ours], np.asarray(table["flux"])[theirs], rtol=1e-6)


def test_moffat_fwhm_inverts_the_synthetic_gamma() -> None:
    for alpha in (1.5, 2.5, 8.0, 1e6):
        assert_allclose(moffat_fwhm(moffat_gamma(2.3, alpha), alpha), 2.3, rtol=1e-9)


def test_nominal_fwhm_interpolates_the_handbook_tables() -> None:
    assert nominal_fwhm_pix("IR", 8000.0) == pytest.approx(0.971)
    assert nominal_fwhm_pix("IR", 8500.0) == pytest.approx((0.971 + 0.986) / 2)
    assert nominal_fwhm_pix("ir ", 15369.0) == pytest.approx(1.136 + 0.369 * (1.177 - 1.136))
    assert nominal_fwhm_pix("UVIS", 5307.9) == pytest.approx(1.675 + 0.30791 * (1.681 - 1.675))
    assert nominal_fwhm_pix("UVIS", 1500.0) is None  # outside the table: no extrapolation
    assert nominal_fwhm_pix("ACS", 6000.0) is None and nominal_fwhm_pix("IR", None) is None


def test_unconfirmed_fwhm_rows_are_marked_and_overridable() -> None:
    confirmed = {
        (det, row.wavelength_nm)
        for det, rows in NOMINAL_FWHM.items()
        for row in rows
        if row.confirmed
    }
    assert confirmed == {("IR", 800.0), ("IR", 900.0)}
    assert nominal_fwhm_confirmed("IR", 8500.0)
    assert not nominal_fwhm_confirmed("IR", 12000.0)
    assert not nominal_fwhm_confirmed("UVIS", 6000.0)
    checked = {1200.0: 1.05, 1300.0: 1.08}
    assert nominal_fwhm_pix("IR", 12500.0, overrides=checked) == pytest.approx(1.065)
    assert nominal_fwhm_confirmed("IR", 12500.0, overrides=checked)
    assert nominal_fwhm_pix("IR", 12500.0) == pytest.approx((1.040 + 1.067) / 2)


@pytest.mark.parametrize("failure", [OverflowError("math range error"), ValueError("nan")])
def test_a_star_whose_fit_raises_costs_that_star_only(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """A fit that blows up (as scipy's optimiser may on a new release) rejects one star."""
    from ingest import psf

    sci, _, dq, truth = make_star_field(FIELD, 50, 2.0, seed=13)
    calls = {"n": 0}
    real_curve_fit = psf.curve_fit

    def first_fit_fails(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise failure
        return real_curve_fit(*args, **kwargs)

    monkeypatch.setattr(psf, "curve_fit", first_fit_fails)
    summary = measure_psf(sci, dq)
    assert summary.rejected["fit_error"] == 1
    assert summary.n_psf_stars >= 25
    assert_allclose(summary.fwhm_median_pix, truth.fwhm_effective_pix, rtol=0.05)


def test_the_moffat_model_is_finite_everywhere_inside_the_fit_bounds() -> None:
    """The bounds on log γ and log α keep every exponential of the model and its Jacobian finite."""
    from ingest.psf import _fit_bounds, _moffat, _moffat_jac

    lower, upper = _fit_bounds(10.0, 10.0, 2.0, free_centre=True)
    yy, xx = np.mgrid[0:21, 0:21].astype(np.float64)
    xy = np.vstack([xx.ravel(), yy.ravel()])
    for log_gamma in (lower[3], upper[3]):
        for log_alpha in (lower[4], upper[4]):
            params = (1e5, lower[1], upper[2], log_gamma, log_alpha, -3.0)
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                assert np.all(np.isfinite(_moffat(xy, *params)))
                assert np.all(np.isfinite(_moffat_jac(xy, *params)))
