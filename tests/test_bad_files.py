"""Every kind of bad input becomes a 'failed' outcome with a reason a person can act on."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from astropy.io import fits

from ingest.reader import read_file


def _plain_copy(source: Path, target: Path) -> Path:
    target.write_bytes(gzip.decompress(source.read_bytes()))
    return target


def _edited(source: Path, target: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    with fits.open(source) as hdul:
        edit(hdul)
        hdul.writeto(target)
    return target


def _failure(path: Path) -> str:
    outcome = read_file(str(path))
    assert outcome.status == "failed", f"{path.name} should fail, got {outcome.status}"
    assert outcome.record is None
    assert outcome.sha256 is not None and outcome.size_bytes == path.stat().st_size
    return outcome.error or ""


def test_truncated_gzip_is_reported(real_data: Path, tmp_path: Path) -> None:
    data = (real_data / "ldfd01010_jit.fits.gz").read_bytes()
    path = tmp_path / "ldfd01010_jit.fits.gz"
    path.write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated gzip stream" in _failure(path)


def test_fits_cut_mid_block_is_reported(real_data: Path, tmp_path: Path) -> None:
    path = _plain_copy(real_data / "ldfd01010_jit.fits.gz", tmp_path / "ldfd01010_jit.fits")
    path.write_bytes(path.read_bytes()[:-1000])
    assert "truncated" in _failure(path)


def test_fits_missing_its_last_blocks_is_reported(real_data: Path, tmp_path: Path) -> None:
    path = _plain_copy(real_data / "ldfd01010_jit.fits.gz", tmp_path / "ldfd01010_jit.fits")
    path.write_bytes(path.read_bytes()[: -2880 * 4])
    error = _failure(path)
    assert "ldfd01010_jit.fits" in error and "truncated" in error.lower()


def test_not_a_fits_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "iabc01010_jit.fits"
    path.write_text("<html>503 Service Unavailable</html>\n")
    assert "not a FITS file" in _failure(path)


def test_foreign_product_under_a_jitter_name_is_reported(real_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "ldfd01010_jif.fits.gz"
    path.write_bytes((real_data / "ldfd01010_jit.fits.gz").read_bytes())
    error = _failure(path)
    assert "FILETYPE = 'JTB', expected 'JIM'" in error and "foreign product" in error


def test_science_image_named_as_jitter_file_is_reported(real_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "ibxy01z8j_jit.fits"
    path.write_bytes((real_data / "ibxy01z8q_ima.fits").read_bytes())
    assert "FILETYPE" in _failure(path)


def test_missing_extname_is_reported(real_data: Path, tmp_path: Path) -> None:
    def drop_extname(hdul: fits.HDUList) -> None:
        del hdul[2].header["EXTNAME"]

    path = _edited(real_data / "ldfd01010_jit.fits.gz", tmp_path / "x_jit.fits", drop_extname)
    assert "HDU 2: no EXTNAME" in _failure(path)


def test_missing_required_keyword_is_reported(real_data: Path, tmp_path: Path) -> None:
    def drop_proposid(hdul: fits.HDUList) -> None:
        del hdul[0].header["PROPOSID"]

    path = _edited(real_data / "ldfd01010_jif.fits.gz", tmp_path / "x_jif.fits", drop_proposid)
    assert "HDU 0: required keyword PROPOSID is missing" in _failure(path)


def test_missing_optional_keyword_is_null(real_data: Path, tmp_path: Path) -> None:
    def drop_gsseprms(hdul: fits.HDUList) -> None:
        del hdul[1].header["GSSEPRMS"]

    path = _edited(real_data / "ldfd01010_jif.fits.gz", tmp_path / "x_jif.fits", drop_gsseprms)
    outcome = read_file(str(path))
    assert outcome.status == "ingested" and outcome.record is not None
    assert outcome.record.exposures[0]["gsseprms_mas"] is None
    assert outcome.record.exposures[1]["gsseprms_mas"] == 0.5


def test_jif_sentinel_becomes_null_but_stays_in_the_header(real_data: Path, tmp_path: Path) -> None:
    def fail_guide_star(hdul: fits.HDUList) -> None:
        header = hdul[4].header
        header["V2_RMS"] = -32767
        header["V3_RMS"] = -32767
        header["GSSEPRMS"] = -32767
        header["GSACQ"] = " "
        header["GSFAIL"] = "NOLOCK"

    path = _edited(real_data / "ldfd01010_jif.fits.gz", tmp_path / "x_jif.fits", fail_guide_star)
    outcome = read_file(str(path))
    assert outcome.record is not None
    failed = outcome.record.exposures[3]
    assert failed["v2_rms_mas"] is None and failed["v3_rms_mas"] is None
    assert failed["gsseprms_mas"] is None and failed["gsacq"] is None
    assert failed["gsfail"] == "NOLOCK"
    assert outcome.record.headers[4].header["V2_RMS"] == -32767


@pytest.mark.parametrize(
    "keyword, value, column, row",
    [("V2_RMS", "high", "v2_rms_mas", "exposure"), ("T_GSFAIL", 3, "t_gsfail", "association"),
     ("GSACQ", "NONE", "gsacq", "exposure")],
)  # fmt: skip
def test_an_unreadable_keyword_value_costs_that_value_not_the_file(
    real_data: Path, tmp_path: Path, keyword: str, value: object, column: str, row: str
) -> None:
    hdu_index = 0 if row == "association" else 1

    def spoil(hdul: fits.HDUList) -> None:
        hdul[hdu_index].header[keyword] = value

    path = _edited(real_data / "ldfd01010_jif.fits.gz", tmp_path / "x_jif.fits", spoil)
    outcome = read_file(str(path))
    assert outcome.status == "ingested" and outcome.record is not None, outcome.error
    rows = outcome.record.associations if row == "association" else outcome.record.exposures
    assert rows[0][column] is None, "the odd value is NULL"
    assert len(outcome.record.exposures) == 4 and outcome.record.exposures[1]["v2_rms_mas"] == 3.6
    (warning,) = outcome.record.warnings
    assert (warning["hdu_index"], warning["keyword"]) == (hdu_index, keyword)
    assert warning["raw_value"] == str(value)
    assert f"HDU {hdu_index}: keyword {keyword} = {value!r}, expected" in warning["message"]
    assert warning["exposure_id"] == (None if row == "association" else "ldfd01vn")


def test_an_unreadable_identity_keyword_fails_the_file(real_data: Path, tmp_path: Path) -> None:
    def spoil(hdul: fits.HDUList) -> None:
        hdul[0].header["PROPOSID"] = "fourteen"

    path = _edited(real_data / "ldfd01010_jif.fits.gz", tmp_path / "x_jif.fits", spoil)
    assert "HDU 0: keyword PROPOSID = 'fourteen', expected a number" in _failure(path)


@pytest.mark.parametrize("cut_bytes", [300_000, 2880 * 100])
def test_truncated_science_file_is_reported(
    real_data: Path, tmp_path: Path, cut_bytes: int
) -> None:
    path = tmp_path / "ibxy01z8q_ima.fits"
    path.write_bytes((real_data / "ibxy01z8q_ima.fits").read_bytes()[:cut_bytes])
    error = _failure(path)
    assert error.startswith("ibxy01z8q_ima.fits: truncated"), error


def test_gzipped_science_file_is_read(real_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "ibxy01z8q_ima.fits.gz"
    path.write_bytes(gzip.compress((real_data / "ibxy01z8q_ima.fits").read_bytes()))
    outcome = read_file(str(path))
    assert outcome.status == "ingested" and outcome.record is not None
    assert [m["sampnum"] for m in outcome.record.image_metrics] == [0, 1, 2, 3]
