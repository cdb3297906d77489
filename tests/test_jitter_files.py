"""The JIF/JIT/ASN parsers read the genuine HST files exactly."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from numpy.testing import assert_allclose

from ingest.keywords import parse_hst_time
from ingest.reader import product_kind, read_file
from ingest.records import FileRecord


def _record(path: Path) -> FileRecord:
    outcome = read_file(str(path))
    assert outcome.status == "ingested", outcome.error
    assert outcome.record is not None
    return outcome.record


def _by_exposure(record: FileRecord) -> dict[str, dict]:
    return {row["exposure_id"]: row for row in record.exposures}


def test_hst_times_are_day_of_year_utc() -> None:
    assert parse_hst_time("2017.181:05:00:08   ") == datetime(2017, 6, 30, 5, 0, 8, tzinfo=UTC)
    assert parse_hst_time("   ") is None
    with pytest.raises(ValueError, match=r"YYYY\.DDD"):
        parse_hst_time("2017-06-30T05:00:08")


def test_product_kind_comes_from_the_file_name_suffix() -> None:
    assert product_kind("/a/ldfd01010_jif.fits.gz") == "jif"
    assert product_kind("ldngz2szj_jit.fits") == "jit"
    assert product_kind("sample_ipppssoot_flc.fits") == "flc"
    assert product_kind("notes.txt") is None


def test_jif_association_flags_and_summary(real_data: Path) -> None:
    record = _record(real_data / "ldfd01010_jif.fits.gz")
    (association,) = record.associations
    assert association["asn_id"] == "ldfd01010"
    assert association["proposid"] == 14933
    assert association["config"] == "COS/FUV"
    assert association["instrument"] == "COS"
    assert association["guidecmd"] == "FINE LOCK"
    assert association["t_gdact"] is True and association["t_actgsp"] is True
    flags = ("t_gsfail", "t_sgstar", "t_tlmprb", "t_notlm", "t_gsgap", "t_slewng", "t_tdfdwn")
    assert all(association[flag] is False for flag in flags)
    assert association["t_ntmgap"] == 0 and association["t_tmgap"] == 0.0
    assert association["tv2_rms_mas"] == pytest.approx(3.60277670693036)
    assert association["tv3_rms_mas"] == pytest.approx(5.95965603034269)
    assert association["window_start"] == datetime(2017, 6, 30, 5, 0, 8, tzinfo=UTC)
    assert association["window_end"] == datetime(2017, 6, 30, 7, 15, 45, tzinfo=UTC)


def test_jif_has_four_exposures_with_their_guiding_keywords(real_data: Path) -> None:
    record = _record(real_data / "ldfd01010_jif.fits.gz")
    exposures = _by_exposure(record)
    assert list(exposures) == ["ldfd01vn", "ldfd01vp", "ldfd01vr", "ldfd01vt"]
    vn = exposures["ldfd01vn"]
    assert vn["jitter_name"] == "ldfd01vnj"
    assert vn["asn_member_index"] == 1
    assert (vn["v2_rms_mas"], vn["v3_rms_mas"]) == (3.4, 5.7)
    assert (vn["v2_p2p_mas"], vn["v3_p2p_mas"]) == (26.7, 99.4)
    assert vn["guideact"] == "FINE LOCK"
    assert vn["gsacq"] == datetime(2017, 6, 30, 4, 51, 46, tzinfo=UTC)
    assert vn["gsfail"] is None
    assert vn["tdf_down"] is False
    assert vn["actgssep_arcsec"] == 1062.842 and vn["gsseprms_mas"] == 0.9
    assert vn["nlosses"] == 0 and vn["lockloss_s"] == 0.0
    assert vn["window_start"] == datetime(2017, 6, 30, 5, 0, 8, tzinfo=UTC)
    assert exposures["ldfd01vt"]["v3_rms_mas"] == 6.7


def test_jif_headers_are_kept_whole(real_data: Path) -> None:
    record = _record(real_data / "ldfd01010_jif.fits.gz")
    assert [h.hdu_index for h in record.headers] == [0, 1, 2, 3, 4]
    primary, first = record.headers[0].header, record.headers[1].header
    assert primary["FILETYPE"] == "JIM" and primary["T_GSFAIL"] is False
    assert "/ PROBLEM FLAGS and WARNINGS" in " ".join(primary[""])
    with fits.open(real_data / "ldfd01010_jif.fits.gz") as hdul:
        keywords = {k for k in hdul[1].header if k not in ("", "COMMENT", "HISTORY")}
    assert keywords <= set(first)
    assert first["EXPNAME"] == "ldfd01vnj" and record.headers[1].exposure_id == "ldfd01vn"


def test_jit_samples_and_statistics(real_data: Path) -> None:
    record = _record(real_data / "ldfd01010_jit.fits.gz")
    assert [block.n_rows for block in record.samples] == [372, 373, 471, 471]
    vn = _by_exposure(record)["ldfd01vn"]
    assert vn["jit_n_samples"] == 372 and vn["jit_n_fill"] == 0
    assert vn["jit_takedata_frac"] == 1.0
    block = record.samples[0]
    assert len(block.columns) == 28
    with fits.open(real_data / "ldfd01010_jit.fits.gz") as hdul:
        table = hdul[1].data
        assert_allclose(block.columns["si_v2_avg"], table["SI_V2_AVG"])
        assert_allclose(block.columns["ra"], table["RA"])
        v2_avg_mas = table["SI_V2_AVG"] * 1000.0
        v2_rms_mas = np.asarray(table["SI_V2_RMS"], dtype=float) * 1000.0
        v3_rms_mas = np.asarray(table["SI_V3_RMS"], dtype=float) * 1000.0
    assert vn["drift_v2_mas"] == pytest.approx(np.ptp(v2_avg_mas), rel=1e-6)
    assert vn["si_v2_rms_median_mas"] == pytest.approx(np.median(v2_rms_mas), rel=1e-6)
    combined = np.hypot(v2_rms_mas, v3_rms_mas)
    assert vn["si_rms_p95_mas"] == pytest.approx(np.percentile(combined, 95), rel=1e-6)
    # The header's V2_RMS (3.4 mas) summarises the same series to within ~20% (DOMAIN.md 4).
    estimate = math.sqrt(np.var(v2_avg_mas) + np.mean(v2_rms_mas**2))
    assert estimate == pytest.approx(3.4, rel=0.2)


def test_termang_not_applicable_becomes_nan(real_data: Path) -> None:
    record = _record(real_data / "ldfd01010_jit.fits.gz")
    with fits.open(real_data / "ldfd01010_jit.fits.gz") as hdul:
        raw = hdul[1].data["TermAng"]
    sentinel = raw > 1e30
    assert sentinel.any(), "the real file has TermAng = 1.6e36 rows"
    term_ang = record.samples[0].columns["term_ang"]
    assert np.isnan(term_ang[sentinel]).all()
    assert_allclose(term_ang[~sentinel], raw[~sentinel])


def test_acquisition_fill_rows_are_counted_and_nulled(real_data: Path) -> None:
    record = _record(real_data / "ldngz2szj_jit.fits.gz")
    (exposure,) = record.exposures
    assert exposure["exposure_id"] == "ldngz2sz"
    assert exposure["asn_id"] == "ldngz2szj", "a lone exposure's set is named by its jitter name"
    assert exposure["jit_n_samples"] == 21 and exposure["jit_n_fill"] == 13
    assert exposure["jit_takedata_frac"] == pytest.approx(8 / 21)
    columns = record.samples[0].columns
    assert np.isnan(columns["si_v2_avg"]).sum() == 13
    assert not np.isnan(columns["seconds"]).any()
    assert (columns["take_data"][np.isnan(columns["v2_dom"])] == 0).all()


def test_jit_without_jif_still_describes_its_exposures(real_data: Path) -> None:
    record = _record(real_data / "ldxe02010_jit.fits.gz")
    assert [row["exposure_id"] for row in record.exposures] == [
        "ldxe02sv", "ldxe02sx", "ldxe02sz", "ldxe02t1",
    ]  # fmt: skip
    assert [block.n_rows for block in record.samples] == [268, 268, 409, 409]
    assert record.associations[0]["proposid"] == 15626


def test_asn_table_names_the_science_rootnames(real_data: Path) -> None:
    record = _record(real_data / "ldfd01010_asn.fits.gz")
    assert [(e["exposure_id"], e["rootname"]) for e in record.exposures] == [
        ("ldfd01vn", "ldfd01vnq"),
        ("ldfd01vp", "ldfd01vpq"),
        ("ldfd01vr", "ldfd01vrq"),
        ("ldfd01vt", "ldfd01vtq"),
    ]


def test_products_hstmon_does_not_read_are_skipped_with_a_reason(
    real_data: Path, tmp_path: Path
) -> None:
    support = tmp_path / "ldfd01vnq_spt.fits.gz"
    support.write_bytes((real_data / "ldfd01010_asn.fits.gz").read_bytes())
    outcome = read_file(str(support))
    assert outcome.status == "skipped"
    assert "'spt' products are not ingested" in (outcome.error or "")


def _edited_jit(source: Path, target: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    with fits.open(source) as hdul:
        edit(hdul)
        hdul.writeto(target)
    return target


def test_fill_rows_are_rows_without_guiding_data(real_data: Path, tmp_path: Path) -> None:
    """Geometry, magnetometer and the roll FGS (at fill by design on one guide star) do not make
    a row fill; the dominant guide star's position and the SI jitter do."""

    def edit(hdul: fits.HDUList) -> None:
        table = hdul[1].data
        table["LimbAng"][:50] = 1.6e38
        table["Mag_V1"][:50] = 1.6e38
        table["V2_roll"][:] = 1.6e38
        table["SI_V2_AVG"][300:310] = 1.6e38

    path = _edited_jit(real_data / "ldfd01010_jit.fits.gz", tmp_path / "x_jit.fits", edit)
    vn = _by_exposure(_record(path))["ldfd01vn"]
    assert vn["jit_n_fill"] == 10 and vn["jit_n_samples"] == 372


def test_jit_status_columns_are_counted(real_data: Path, tmp_path: Path) -> None:
    def edit(hdul: fits.HDUList) -> None:
        table = hdul[1].data
        table["SlewFlag"][100:110] = 1
        table["TakeData"][105:120] = 0
        table["Recenter"][200:203] = 1

    path = _edited_jit(real_data / "ldfd01010_jit.fits.gz", tmp_path / "x_jit.fits", edit)
    exposures = _by_exposure(_record(path))
    vn = exposures["ldfd01vn"]
    assert (vn["jit_n_slew"], vn["jit_n_slew_guided"], vn["jit_n_recenter"]) == (10, 5, 3)
    assert exposures["ldfd01vp"]["jit_n_slew"] == 0


def test_drift_rate_needs_guided_time_to_mean_anything(real_data: Path) -> None:
    """A nominal COS exposure drifts by a fraction of a mas/s; a 1-s acquisition's few rows
    measure noise, so it gets no rate."""
    nominal = _by_exposure(_record(real_data / "ldfd01010_jit.fits.gz"))["ldfd01vn"]
    assert 0 < nominal["drift_rate_mas_s"] < 0.05
    (acquisition,) = _record(real_data / "ldngz2szj_jit.fits.gz").exposures
    assert acquisition["drift_rate_mas_s"] is None


def test_the_jif_keyword_map_is_what_the_parser_reads(real_data: Path) -> None:
    from ingest.records import OWNED_COLUMNS
    from models.jif_keywords import JIF_KEYWORDS, jif_columns
    from models.tables import Association, Exposure

    record = _record(real_data / "ldfd01010_jif.fits.gz")
    assert set(jif_columns("association")) <= set(record.associations[0])
    assert all(set(jif_columns("exposure")) <= set(row) for row in record.exposures)
    assert OWNED_COLUMNS["jif"] == {
        "association": jif_columns("association"), "exposure": jif_columns("exposure")
    }  # fmt: skip
    tables = {"association": Association.__table__, "exposure": Exposure.__table__}
    for keyword in JIF_KEYWORDS:
        column = tables[keyword.table].c[keyword.column]
        assert keyword.keyword in (column.comment or ""), (keyword.keyword, column.comment)
