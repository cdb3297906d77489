"""Image metrics + PSF per exposure, on one core: hstmon against the seed notebook's way.

Run:  .venv/bin/python benchmarks/psf_benchmark.py [--stars 300] [--seed-fits 300]

One run writes a full-frame synthetic UVIS FLC (2 x 4096x2051 float32 chips, --stars stars and
3000 cosmic-ray hits per chip) and an IR FLT (1014x1014), then measures each way in a fresh
process pinned to one core (so the peak RSS is that of the measurement alone):
  (a) hstmon: ingest.image_metrics.measure_chip per chip (sky, DQ fractions, sources, S/N,
      then PSF FWHM/elongation of <= 100 isolated stars), files opened with memmap;
  (b) the seed notebook's way (exception-report notebook, section 6.1): sigma_clipped_stats on
      the chip, DAOStarFinder(fwhm=2.5, threshold=3*std) on the whole chip, then a RadialProfile
      (r=5, recenter=True, Moffat fit) for every detected source.  The loop is timed on
      --seed-fits random sources and extrapolated to all of them, since it takes minutes.
Peak memory is the process's VmHWM; "imports" is its RSS after importing, before any work.
It prints seconds per file, peak memory per process and the ratio.  A benchmark: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --- workers (run in their own process) -----------------------------------------------------


def _pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _status_mb(field: str) -> float | None:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    return None


def _peak_rss_mb() -> float:
    """Peak resident memory of this process since it started, in MB.

    Linux's ru_maxrss carries the parent's high-water mark across fork+exec, so VmHWM (the
    peak of this process's own address space) is read first.
    """
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _chips(path: str) -> list[int]:
    from astropy.io import fits

    with fits.open(path) as hdus:
        return [hdu.ver for hdu in hdus if hdu.name == "SCI"]


def hstmon_worker(path: str, detector: str) -> dict[str, Any]:
    """Metrics + PSF of every chip of one file, the way the ingest pipeline will call them."""
    from astropy.io import fits

    from ingest.image_metrics import measure_chip

    imports_mb = _status_mb("VmRSS")
    start = time.perf_counter()
    fwhm, n_stars = [], 0
    with fits.open(path, memmap=True) as hdus:
        for extver in _chips(path):
            sci, err, dq = (hdus[ext, extver].data for ext in ("SCI", "ERR", "DQ"))
            _, psf = measure_chip(sci, err, dq, detector=detector)
            fwhm.append(psf.fwhm_median_pix)
            n_stars += psf.n_psf_stars
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "fwhm_pix": fwhm, "n_fit": n_stars, "imports_mb": imports_mb}


def _seed_radial_profile(x: float, y: float, data: Any, r: float = 5.0) -> float:
    """The seed's RadialProfile(x, y, data, r=5, fit=True, recenter=True).fwhm, minus plots."""
    import numpy as np
    from photutils.aperture import CircularAperture
    from photutils.centroids import centroid_2dg
    from scipy.optimize import curve_fit

    def cutout(x: float, y: float) -> tuple[Any, Any]:
        mask = CircularAperture((x, y), r=r).to_mask()
        return mask, mask.cutout(data, fill_value=np.nan)

    def model(rad: Any, amp: float, gamma: float, alpha: float, bias: float) -> Any:
        return amp * (1.0 + (rad / gamma) ** 2.0) ** (-1.0 * alpha) + bias

    mask, cut = cutout(x, y)
    if cut is None:
        return math.nan
    xg, yg = centroid_2dg(cut)
    if math.hypot(xg + mask.bbox.ixmin - x, yg + mask.bbox.iymin - y) <= 2.0:
        x, y = xg + mask.bbox.ixmin, yg + mask.bbox.iymin
        mask, cut = cutout(x, y)
    iy, ix = np.mgrid[mask.bbox.iymin : mask.bbox.iymax, mask.bbox.ixmin : mask.bbox.ixmax]
    distances = np.sqrt((ix - x) ** 2 + (iy - y) ** 2).ravel()
    values = cut.ravel()
    try:
        best, _ = curve_fit(
            model,
            distances,
            values,
            p0=[np.amax(values), 1.5, 1.5, np.nanmedian(values)],
            bounds=([0.0, 0.3, 0.5, 0.0], [np.inf, 10.0, 10.0, np.inf]),
        )
    except Exception:  # the seed prints the exception and moves on
        return math.nan
    return 2.0 * best[1] * math.sqrt(2.0 ** (1.0 / best[2]) - 1.0)


def seed_worker(path: str, max_fits: int) -> dict[str, Any]:
    """The seed notebook's loop on every chip; the profile loop extrapolated past max_fits."""
    import numpy as np
    from astropy.io import fits
    from astropy.stats import sigma_clipped_stats
    from photutils.detection import DAOStarFinder

    warnings.simplefilter("ignore")  # centroid_2dg and curve_fit warn on CR hits and NaN edges
    imports_mb = _status_mb("VmRSS")
    rng = np.random.default_rng(0)
    total, n_sources, fwhm = 0.0, 0, []
    with fits.open(path, memmap=True) as hdus:
        for extver in _chips(path):
            data = hdus["SCI", extver].data
            start = time.perf_counter()
            _, median, std = sigma_clipped_stats(data, sigma=3.0)
            sources = DAOStarFinder(fwhm=2.5, threshold=3 * std)(data - median)
            detect = time.perf_counter() - start
            xy = np.column_stack([sources["x_centroid"], sources["y_centroid"]])
            # Time the loop on a random sample (faint sources and CR hits fit slower than stars);
            # its FWHM comes from the 50 brightest sources, comparable with ours.
            sample = rng.choice(len(xy), min(max_fits, len(xy)), replace=False)
            start = time.perf_counter()
            for x, y in xy[sample]:
                _seed_radial_profile(x, y, data)
            per_fit = (time.perf_counter() - start) / max(sample.size, 1)
            total += detect + per_fit * len(xy)
            n_sources += len(xy)
            brightest = np.argsort(-np.asarray(sources["flux"]))[:50]
            fwhm.append(
                float(np.nanmedian([_seed_radial_profile(x, y, data) for x, y in xy[brightest]]))
            )
    return {"seconds": total, "n_sources": n_sources, "fwhm_pix": fwhm, "imports_mb": imports_mb}


def _worker_main(mode: str, path: str, arg: str) -> None:
    _pin_to_one_core()
    sys.path.insert(0, str(ROOT))
    result = hstmon_worker(path, arg) if mode == "hstmon" else seed_worker(path, int(arg))
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


# --- driver ---------------------------------------------------------------------------------


def _run(mode: str, path: Path, arg: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", mode, str(path), arg]
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_files(directory: Path, stars: int) -> tuple[Path, Path]:
    from ingest.synth_images import write_ir_flt, write_uvis_flc

    flc = directory / "ibench01q_flc.fits"
    write_uvis_flc(
        flc,
        rootname="ibench01q",
        chip_shape=(2051, 4096),
        n_stars=stars,
        fwhm_pix=1.9,
        seed=1,
        n_cosmic_rays=3000,
        saturate_fraction=0.02,
        bad_pixel_fraction=1e-3,
    )
    flt = directory / "ibench02q_flt.fits"
    write_ir_flt(flt, rootname="ibench02q", size=1014, n_stars=max(stars // 2, 1), seed=2)
    return flc, flt


def _fmt_fwhm(values: list[float | None]) -> str:
    return ", ".join("-" if v is None or math.isnan(v) else f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=300, help="stars per UVIS chip")
    parser.add_argument(
        "--seed-fits", type=int, default=300, help="seed RadialProfile fits timed per chip"
    )
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker_main(*args.worker)
        return
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        flc, flt = _write_files(Path(tmp), args.stars)
        print(
            f"synthetic files written in {time.perf_counter() - start:.1f} s: {flc.name} "
            f"(2 x 4096x2051, {args.stars} stars + 3000 CR hits per chip), {flt.name} "
            "(1014x1014)"
        )
        ours_uvis = _run("hstmon", flc, "UVIS")
        ours_ir = _run("hstmon", flt, "IR")
        seed_uvis = _run("seed", flc, str(args.seed_fits))
        seed_ir = _run("seed", flt, str(args.seed_fits))
    rows = [
        ("UVIS FLC", ours_uvis, seed_uvis),
        ("IR FLT", ours_ir, seed_ir),
    ]
    print(
        f"{'file':9} {'hstmon s':>9} {'peak MB':>8} {'seed s':>8} {'peak MB':>8} {'ratio':>6}"
        "  FWHM px, hstmon | seed (median per chip)"
    )
    for name, ours, seed in rows:
        print(
            f"{name:9} {ours['seconds']:9.2f} {ours['peak_rss_mb']:8.0f} {seed['seconds']:8.1f} "
            f"{seed['peak_rss_mb']:8.0f} {seed['seconds'] / ours['seconds']:5.0f}x  "
            f"{_fmt_fwhm(ours['fwhm_pix'])} | {_fmt_fwhm(seed['fwhm_pix'])}"
        )
    print(
        f"peak MB include the imports ({ours_uvis['imports_mb']:.0f} MB RSS before any work) and "
        "the memory-mapped pages of the file."
    )
    print(
        f"hstmon fit {ours_uvis['n_fit']} stars (UVIS) and {ours_ir['n_fit']} (IR); the seed "
        f"loop would fit {seed_uvis['n_sources']} and {seed_ir['n_sources']} sources "
        f"(timed on {args.seed_fits} random ones per chip, extrapolated).  One core each; "
        "targets: <= 3 s and <= 1 GB per UVIS full frame."
    )


if __name__ == "__main__":
    main()
