"""FLT/FLC/IMA ingest: header columns, image metrics and PSF in the store, in either file order."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from analysis.run import run_analysis
from ingest.pipeline import run_ingest
from ingest.psf_profiles import fwhm_after_pixelation
from ingest.synth import write_archive
from ingest.synth_images import write_archive_images, write_uvis_flc


def _one(engine: Engine, sql: str) -> dict:
    with engine.connect() as connection:
        return dict(connection.execute(text(sql)).mappings().one())


def _all(engine: Engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_real_science_headers_land_in_their_columns(
    real_data: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    summary = run_ingest([real_data], database_url, scheduler=dask_scheduler)
    assert summary.failed == 0, summary.failures
    uvis = _one(engine, "SELECT * FROM exposure WHERE exposure_id = 'ib4606c5'")
    assert (uvis["rootname"], uvis["asn_id"], uvis["proposid"]) == ("ib4606c5q", "ib4606060", 11665)
    assert (uvis["config"], uvis["detector"], uvis["filter"]) == ("WFC3/UVIS", "UVIS", "F555W")
    assert (uvis["exptime_s"], uvis["expflag"], uvis["fgslock"]) == (1.0, "NORMAL", "FINE")
    assert uvis["scan_typ"] == "N" and not uvis["subarray"] and uvis["mtflag"] is None
    assert str(uvis["date_delivered"])[:10] == "2023-12-15" and uvis["sci_rank"] == 3
    assert uvis["photplam_angstrom"] == pytest.approx(5307.9121)
    # The arrays were cut to 10x10: no metric can be computed, and the row says why.
    chips = _all(engine, "SELECT extver, ccdchip, nx, reason FROM image_metric m JOIN exposure e"
                         " ON e.exposure_id = m.exposure_id WHERE e.exposure_id = 'ib4606c5'"
                         " ORDER BY extver")  # fmt: skip
    assert [(c[0], c[1], c[2]) for c in chips] == [(1, 2, 10), (2, 1, 10)]
    assert all("10x10" in c[3] for c in chips)
    # DQ 4096 (cosmic ray found by AstroDrizzle) is 1 of the 100 pixels of [DQ,1]; the IR FLT
    # has one pixel of 4144 = 4096 + 32 + 16.
    cosmic = _all(engine, "SELECT exposure_id, extver, frac_cosmic_ray FROM image_metric"
                          " WHERE kind IN ('flc', 'flt') ORDER BY 1, 2")  # fmt: skip
    assert [(e, x, pytest.approx(f)) for e, x, f in cosmic] == [
        ("ib4606c5", 1, 0.01), ("ib4606c5", 2, 0.0), ("ib4606cp", 1, 0.01),
    ]  # fmt: skip
    kinds = _one(engine, "SELECT imagetyp, obsmode, mtflag FROM exposure"
                         " WHERE exposure_id = 'ib4606c5'")  # fmt: skip
    assert kinds == {"imagetyp": "EXT", "obsmode": "ACCUM", "mtflag": None}
    psf = _all(engine, "SELECT n_psf_stars, fwhm_median_pix, reason FROM psf_measurement"
                       " WHERE exposure_id = 'ib4606c5'")  # fmt: skip
    assert psf and all(p[0] == 0 and p[1] is None and "10x10" in p[2] for p in psf)
    ir = _one(engine, "SELECT * FROM exposure WHERE exposure_id = 'ib4606cp'")
    assert (ir["detector"], ir["filter"], ir["exptime_s"]) == ("IR", "F110W", 699.232483)

    ima = _all(engine, "SELECT sampnum, samptime_s FROM image_metric"
                       " WHERE exposure_id = 'ibxy01z8' ORDER BY sampnum")  # fmt: skip
    assert [s for s, _ in ima] == [0, 1, 2, 3], "4 reads, zeroth first"
    assert ima[-1][1] == pytest.approx(0.833445) and ima[0][1] == 0.0
    read_score = _one(engine, "SELECT read_outlier_sigma, subarray FROM exposure"
                              " WHERE exposure_id = 'ibxy01z8'")  # fmt: skip
    assert read_score["read_outlier_sigma"] is not None and read_score["subarray"]
    assert _one(engine, "SELECT count(*) AS n FROM image_preview")["n"] == 2 + 1 + 1


@pytest.fixture(scope="module")
def visit_with_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The IEPP01010 visit (exposures 4-7 lost their guide star) with FLC files."""
    archive = tmp_path_factory.mktemp("iepp")
    truth = write_archive(archive, 7, seed=3)
    write_archive_images(archive, truth, 7, seed=3)
    return archive / "16748" / "iepp01010"


def test_psf_of_injected_stars_and_trails_through_ingest(
    visit_with_images: Path, sqlite_url: str, dask_scheduler: str
) -> None:
    from models.database import make_engine

    run_ingest([visit_with_images], sqlite_url, scheduler=dask_scheduler)
    run_analysis(sqlite_url, today=date(2026, 11, 26))
    engine = make_engine(sqlite_url)
    rows = _all(engine, "SELECT asn_member_index, fwhm_median_pix, elongation_median,"
                        " jit_n_samples FROM exposure ORDER BY asn_member_index")  # fmt: skip
    expected = fwhm_after_pixelation(1.9)
    for number, fwhm, elongation, samples in rows:
        assert samples > 0, "jitter and science columns meet on one exposure row"
        if number <= 3:
            assert fwhm == pytest.approx(expected, rel=0.05) and elongation < 1.2
        else:
            assert elongation > 1.5, f"exposure {number} was trailed"
    psf_flags = _all(engine, "SELECT e.asn_member_index FROM flag f JOIN exposure e"
                             " ON e.exposure_id = f.exposure_id WHERE f.rule = 'degraded_psf'"
                             " ORDER BY 1")  # fmt: skip
    assert [n for (n,) in psf_flags] == [4, 5, 6, 7]
    engine.dispose()


@pytest.mark.parametrize("science_first", [True, False])
def test_science_and_jitter_files_join_in_either_order(
    visit_with_images: Path, tmp_path: Path, sqlite_url: str, dask_scheduler: str,
    science_first: bool,
) -> None:  # fmt: skip
    from models.database import make_engine

    science, jitter = tmp_path / "science", tmp_path / "jitter"
    for folder in (science, jitter):
        folder.mkdir()
    for path in visit_with_images.iterdir():
        shutil.copy2(path, (science if path.name.endswith("_flc.fits") else jitter) / path.name)
    for folder in (science, jitter) if science_first else (jitter, science):
        run_ingest([folder], sqlite_url, scheduler=dask_scheduler)
    engine = make_engine(sqlite_url)
    row = _one(engine, "SELECT rootname, guideact, jit_n_samples, filter, fwhm_median_pix,"
                       " asn_id FROM exposure WHERE exposure_id = 'iepp01uv'")  # fmt: skip
    engine.dispose()
    assert row["rootname"] == "iepp01uvq" and row["asn_id"] == "iepp01010"
    assert row["guideact"] == "FINE LOCK" and row["jit_n_samples"] > 0
    assert row["filter"] == "F606W" and row["fwhm_median_pix"] is not None


def test_flc_outranks_flt_whatever_arrives_last(
    tmp_path: Path, sqlite_url: str, dask_scheduler: str
) -> None:
    from models.database import make_engine

    flc, flt = tmp_path / "a" / "iabc01xyq_flc.fits", tmp_path / "b" / "iabc01xyq_flt.fits"
    flc.parent.mkdir()
    flt.parent.mkdir()
    write_uvis_flc(flc, chip_shape=(128, 128), n_stars=25, fwhm_pix=1.9, kind="flc", seed=1)
    write_uvis_flc(flt, chip_shape=(128, 128), n_stars=25, fwhm_pix=3.0, kind="flt", seed=1)
    engine = make_engine(sqlite_url)
    query = "SELECT sci_rank, fwhm_median_pix FROM exposure WHERE exposure_id = 'iabc01xy'"
    run_ingest([flc.parent], sqlite_url, scheduler=dask_scheduler)
    from_flc = _one(engine, query)
    run_ingest([flt.parent], sqlite_url, scheduler=dask_scheduler)
    assert _one(engine, query) == from_flc, "a later FLT does not overwrite the FLC's PSF"
    assert from_flc["sci_rank"] == 3
    assert _all(engine, "SELECT count(*) FROM psf_measurement")[0][0] == 4, "both files kept"
    engine.dispose()
