"""Tests of the synthetic WFC3 jitter archive: structure of the real files, truth, determinism."""

from __future__ import annotations

import gzip
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ingest.synth import FAILURE_MODES, SyntheticExposure, read_truth, write_archive

REAL = Path(__file__).parent / "data" / "real"
HST_TIME = re.compile(r"^\d{4}\.\d{3}:\d{2}:\d{2}:\d{2}$")
FILLED = ("V2_dom", "V3_dom", "V2_roll", "V3_roll", "SI_V2_AVG", "SI_V2_RMS", "SI_V2_P2P",
          "SI_V3_AVG", "SI_V3_RMS", "SI_V3_P2P", "RA", "DEC", "Roll")  # fmt: skip
N = 200


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticExposure]]:
    out = tmp_path_factory.mktemp("archive")
    return out, write_archive(out, N, seed=11)


@pytest.fixture(scope="module")
def sets(archive: tuple[Path, list[SyntheticExposure]]) -> dict[str, dict[str, object]]:
    """Every set's headers and JIT tables, read once: {asn_id: {'jif': [...], 'jit': [...]}}."""
    out, truth = archive
    result: dict[str, dict[str, object]] = {}
    for asn_id, proposid in sorted({(t.asn_id, t.proposid) for t in truth}):
        folder = out / str(proposid) / asn_id
        with fits.open(folder / f"{asn_id}_jif.fits.gz") as jif:
            jif.verify("exception")
            jif_headers = [hdu.header.copy() for hdu in jif]
            images = [hdu.data.copy() for hdu in jif[1:]]
        with fits.open(folder / f"{asn_id}_jit.fits.gz") as jit:
            jit.verify("exception")
            jit_headers = [hdu.header.copy() for hdu in jit]
            tables = [np.array(hdu.data) for hdu in jit[1:]]
        result[asn_id] = {"folder": folder, "jif": jif_headers, "jit": jit_headers,
                          "images": images, "tables": tables}  # fmt: skip
    return result


def _signature(header: fits.Header) -> list[tuple[str, str, object]]:
    """Keyword order, comments and the text of blank-keyword (section title) cards."""
    return [(c.keyword, c.comment, c.value if c.keyword == "" else None) for c in header.cards]


def _layout(header: fits.Header) -> list[tuple[str, int]]:
    """Where each card's comment starts: fixes value widths and string padding."""
    return [(c.image[:10], c.image.find(" / ")) for c in header.cards]


def _layout_vs_2017(header: fits.Header) -> list[tuple[str, int]]:
    """Layout with TARGNAME padded to 30 like the 2017 files (EDPS pads to 31 since 2018)."""
    return [(k, pos - 1 if k == "TARGNAME= " and pos > 0 else pos) for k, pos in _layout(header)]


def _fill_rows(table: np.ndarray) -> np.ndarray:
    return np.abs(table["SI_V2_AVG"].astype(float)) > 1e30


def _by_mode(truth: list[SyntheticExposure], mode: str) -> list[SyntheticExposure]:
    return [t for t in truth if t.mode == mode]


# --- (1) structural identity with the real EDPS files ------------------------------------


def test_jif_headers_match_real_file_card_for_card(archive, sets) -> None:
    jif = sets["iepp01010"]["jif"]
    with fits.open(REAL / "ldfd01010_jif.fits.gz") as real:
        assert _signature(jif[0]) == _signature(real[0].header)
        assert _layout_vs_2017(jif[0]) == _layout(real[0].header)
        assert _signature(jif[1]) == _signature(real[1].header)
        assert _layout(jif[1]) == _layout(real[1].header)
        image = sets["iepp01010"]["images"][0]
        assert image.shape == real[1].data.shape == (64, 64)
        assert image.dtype == real[1].data.dtype
        # A failed exposure has exactly one extra card, after the PROBLEM FLAGS title card.
        assert _signature(jif[4])[:-1] == _signature(real[1].header)
        assert jif[4].cards[-1].keyword == "GSFAIL"


def test_jit_headers_and_columns_match_real_files(sets) -> None:
    jit = sets["iepp01010"]["jit"]
    for name, layout in (("ldfd01010_jit.fits.gz", _layout_vs_2017),
                         ("ldxe02010_jit.fits.gz", _layout)):  # fmt: skip
        with fits.open(REAL / name) as real:
            assert _signature(jit[0]) == _signature(real[0].header)
            assert layout(jit[0]) == _layout(real[0].header)
            for ext in (1, 5):
                assert _signature(jit[ext]) == _signature(real[1].header)
                assert _layout(jit[ext]) == _layout(real[1].header)
            theirs = real[1].columns
            with fits.open(sets["iepp01010"]["folder"] / "iepp01010_jit.fits.gz") as ours_file:
                ours = ours_file[1].columns
                assert ours.names == theirs.names
                assert ours.formats == theirs.formats
                assert ours.units == theirs.units
                assert len(ours) == 28
                assert ours_file[1].data.dtype == real[1].data.dtype


def test_lone_exposure_jit_matches_real_lone_file(archive, sets) -> None:
    _, truth = archive
    lone = next(t for t in truth if t.rootname is None)
    jit = sets[lone.asn_id]["jit"]
    with fits.open(REAL / "ldngz2szj_jit.fits.gz") as real:
        assert _signature(jit[0]) == _signature(real[0].header)
        assert _layout(jit[0]) == _layout(real[0].header)
        assert _signature(jit[1]) == _signature(real[1].header)
        assert _layout(jit[1]) == _layout(real[1].header)


def test_asn_table_matches_real_structure(sets) -> None:
    with (
        fits.open(sets["iepp01010"]["folder"] / "iepp01010_asn.fits.gz") as ours,
        fits.open(REAL / "ldfd01010_asn.fits.gz") as real,
    ):
        ours.verify("exception")
        mine, theirs = _signature(ours[0].header), _signature(real[0].header)
        # The one documented difference: WFC3's DETECTOR comment instead of COS's.
        differ = [a for a, b in zip(mine, theirs, strict=True) if a != b]
        assert differ == [("DETECTOR", "detector in use: UVIS or IR", None)]
        assert _layout(ours[0].header) == _layout(real[0].header)
        assert _signature(ours[1].header) == _signature(real[1].header)
        assert ours[1].name == "ASN"
        assert ours[1].columns.formats == real[1].columns.formats == ["14A", "14A", "L"]
        assert ours[1].columns.names == ["MEMNAME", "MEMTYPE", "MEMPRSNT"]


# --- (2) determinism ---------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    write_archive(tmp_path / "a", 25, seed=3)
    write_archive(tmp_path / "b", 25, seed=3)
    write_archive(tmp_path / "c", 25, seed=4)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert a != c


def test_plain_fits_equals_decompressed_gzip(tmp_path: Path) -> None:
    write_archive(tmp_path / "gz", 12, seed=5, gzip=True)
    write_archive(tmp_path / "plain", 12, seed=5, gzip=False)
    gz, plain = _tree(tmp_path / "gz"), _tree(tmp_path / "plain")
    assert {k.removesuffix(".gz") for k in gz} == set(plain)
    for name, blob in gz.items():
        if name.endswith(".gz"):
            assert blob[4:8] == b"\0\0\0\0"  # gzip mtime 0
            assert gzip.decompress(blob) == plain[name.removesuffix(".gz")]
        assert len(plain[name.removesuffix(".gz")]) % 2880 == 0 or name == "truth.csv"


# --- (3) truth matches the files ---------------------------------------------------------


def test_read_truth_round_trips(archive) -> None:
    out, truth = archive
    assert read_truth(out) == truth
    header = (out / "truth.csv").read_text().splitlines()[0]
    assert header.split(",") == list(SyntheticExposure.__dataclass_fields__)


def test_truth_rows_match_tables_and_names(archive, sets) -> None:
    _, truth = archive
    for t in truth:
        s = sets[t.asn_id]
        table = s["tables"][t.member_index - 1]
        jit_ext, jif_ext = s["jit"][t.member_index], s["jif"][t.member_index]
        assert len(table) == t.n_samples == jit_ext["NAXIS2"]
        assert int(_fill_rows(table).sum()) == t.n_fill
        assert jit_ext["EXPNAME"] == jif_ext["EXPNAME"] == t.jitter_name
        assert t.jitter_name == t.exposure_id + "j"
        assert s["jif"][0]["PROPOSID"] == t.proposid
        assert s["jif"][0]["CONFIG"] == t.config
        assert t.mode in FAILURE_MODES


def test_fill_rows_hold_float32_fill_and_no_take_data(sets) -> None:
    for s in sets.values():
        for table in s["tables"]:
            fill = _fill_rows(table)
            for col in FILLED:
                assert np.all(table[col][fill] == table[col].dtype.type(1.6e38))
                assert not np.any(np.abs(table[col][~fill].astype(float)) > 1e30)
            assert np.all(table["TakeData"][fill] == 0)


def test_modes_are_reflected_in_keywords_and_rows(archive, sets) -> None:
    _, truth = archive
    for t in truth:
        ext = sets[t.asn_id]["jif"][t.member_index]
        table = sets[t.asn_id]["tables"][t.member_index - 1]
        failed = t.mode == "gs_acq_failure"
        assert (ext["GSACQ"] == "") is failed
        assert (ext.get("GSFAIL") == "NOLOCK") is failed
        assert ("TDF-DOWN" in ext) is (t.mode == "tdf_down")
        assert (ext["NLOSSES"] > 0) is (t.mode == "loss_of_lock")
        assert (ext["GUIDEACT"] != "FINE LOCK") is (t.mode in ("gs_acq_failure", "gyro_drift"))
        assert (t.n_fill > 0) is (t.mode in ("gs_acq_failure", "loss_of_lock"))
        if failed:
            assert ext["V2_RMS"] == ext["V3_RMS"] == ext["GSSEPRMS"] == -32767
            assert t.n_fill == t.n_samples
            assert np.all(table["TakeData"] == 0)
        elif t.mode == "loss_of_lock":
            window = len(table) * 3.0
            assert ext["LOCKLOSS"] > 0.05 * window
            fill = np.flatnonzero(_fill_rows(table))
            assert fill[0] > 0 and fill[-1] < len(table) - 1  # mid-exposure
        elif t.mode == "tdf_down":
            assert table["TakeData"].mean() < 0.9
        elif t.mode == "high_jitter":
            assert 15 <= ext["V2_RMS"] <= 40 and 15 <= ext["V3_RMS"] <= 40
            assert np.median(table["SI_V2_RMS"]) > 0.010  # arcsec
        elif t.mode == "nominal":  # gyro_drift has its own test below
            assert max(ext["V2_RMS"], ext["V3_RMS"]) < 10
            assert table["TakeData"].all() and not table["Recenter"].any()


def test_gyro_drift_is_a_linear_1_to_5_mas_per_s_drift(archive, sets) -> None:
    _, truth = archive
    for t in _by_mode(truth, "gyro_drift"):
        table = sets[t.asn_id]["tables"][t.member_index - 1]
        secs = table["Seconds"].astype(float)
        slopes = [np.polyfit(secs, table[c].astype(float) * 1000, 1)[0] for c in
                  ("SI_V2_AVG", "SI_V3_AVG")]  # fmt: skip
        rate = math.hypot(*slopes)  # mas/s
        assert 0.8 < rate < 5.5
        assert rate * (secs[-1] - secs[0]) > 15  # tens of mas over the exposure
        ext = sets[t.asn_id]["jif"][t.member_index]
        assert ext["GUIDEACT"] in ("GYRO", "FINE LOCK/GYRO")
        assert sets[t.asn_id]["jif"][0]["GUIDECMD"] == "FINE LOCK"


def test_header_rms_agrees_with_jit_rows_within_20_percent(sets) -> None:
    checked = 0
    for s in sets.values():
        for ext, table in zip(s["jif"][1:], s["tables"], strict=True):
            if ext["V2_RMS"] == -32767:
                continue
            ok = ~_fill_rows(table)
            for axis in ("V2", "V3"):
                avg = table[f"SI_{axis}_AVG"][ok].astype(float) * 1000
                rms = table[f"SI_{axis}_RMS"][ok].astype(float) * 1000
                estimate = math.sqrt(avg.var() + np.mean(rms**2))
                assert ext[f"{axis}_RMS"] == pytest.approx(estimate, rel=0.2)
            checked += 1
    assert checked > N // 2


def test_primary_summarises_extensions(sets) -> None:
    for s in sets.values():
        primary, exts = s["jif"][0], s["jif"][1:]
        guided = [h for h in exts if h["V2_RMS"] != -32767]
        assert primary["NEXTEND"] == len(exts) == s["jit"][0]["NEXTEND"]
        assert primary["T_GSFAIL"] == any("GSFAIL" in h for h in exts)
        assert primary["T_TDFDWN"] == any("TDF-DOWN" in h for h in exts)
        assert primary["T_GDACT"] == all(h["GUIDEACT"] == primary["GUIDECMD"] for h in exts)
        assert primary["TNLOSSES"] == sum(h["NLOSSES"] for h in exts)
        assert primary["TLOCKLOS"] == pytest.approx(sum(h["LOCKLOSS"] for h in exts))
        assert primary["TNRECENT"] == sum(h["NRECENT"] for h in exts)
        assert primary["TSTRTIME"] == exts[0]["STARTIME"]
        assert primary["TENDTIME"] == exts[-1]["ENDTIME"]
        if guided:
            tv2 = math.sqrt(np.mean([h["V2_RMS"] ** 2 for h in guided]))
            assert primary["TV2_RMS"] == pytest.approx(tv2, rel=1e-9)
            assert primary["MV3_P2P"] == max(h["V3_P2P"] for h in guided)
        else:
            assert primary["TV2_RMS"] == -32767


def test_headers_use_edps_conventions(sets) -> None:
    for asn_id, s in sets.items():
        jif0, jit0 = s["jif"][0], s["jit"][0]
        assert (jif0["FILETYPE"], jit0["FILETYPE"]) == ("JIM", "JTB")
        assert jif0["INSTRUME"] == jit0["INSTRUME"] == "FGS"
        assert jif0["CONFIG"] in ("WFC3/UVIS", "WFC3/IR")
        lone = jif0["ASN_ID"] == "NONE"
        # Association jit files repeat the jif name, as EDPS does.
        assert jit0["FILENAME"] == f"{asn_id}_{'jit' if lone else 'jif'}.fits"
        assert jif0["ROOTNAME"] == jit0["ROOTNAME"] == asn_id
        for key in ("TSTRTIME", "TENDTIME"):
            assert HST_TIME.match(jif0[key])
        for ext in s["jif"][1:]:
            assert (ext["EXTNAME"], ext["ROOTNAME"]) == ("jit", asn_id)
            assert ext["ASN_MTYP"] == ("NONE" if lone else "EXP-DTH")
            for key in ("STARTIME", "ENDTIME", "PROCTIME", "SHADOENT", "SHADOEXT"):
                assert HST_TIME.match(ext[key])
            assert ext["STARTIME"] < ext["ENDTIME"]
        for number, ext in enumerate(s["jit"][1:], start=1):
            assert (ext["EXTNAME"], ext["EXTVER"]) == ("jit", number)


def test_jit_rows_follow_the_3_second_cadence(sets) -> None:
    cadences = Counter()
    for s in sets.values():
        for table in s["tables"]:
            secs = table["Seconds"].astype(float)
            if secs[0] == 0:  # acquisition-like 0.05-s rows
                assert np.allclose(np.diff(secs), 0.05, atol=1e-5)
                cadences["0.05"] += 1
                continue
            assert secs[0] == pytest.approx(2.95, abs=1e-4)
            steps = np.diff(secs)
            assert np.allclose(steps[:-1], 3.0, atol=1e-3)
            assert 0 < steps[-1] <= 3.0 + 1e-3  # the short last row
            cadences["3"] += 1
    assert cadences["3"] > 0


def test_observation_dates_span_several_years(sets) -> None:
    years = {int(s["jif"][0]["TSTRTIME"][:4]) for s in sets.values()}
    assert min(years) <= 2020 and max(years) >= 2025
    assert years <= set(range(2019, 2027))


def test_program_codes_map_one_to_one_to_proposal_ids(archive, sets) -> None:
    _, truth = archive
    pairs = {(t.exposure_id[1:4], t.proposid) for t in truth}
    assert len({code for code, _ in pairs}) == len({pid for _, pid in pairs}) == len(pairs)
    assert len(pairs) >= 5
    for t in truth:
        assert re.fullmatch(r"i[0-9a-z]{7}", t.exposure_id)
        assert sets[t.asn_id]["jif"][0]["PROGRMID"] == t.exposure_id[1:4].upper()


# --- (4) the IEPP01010 visit ---------------------------------------------------------------


def test_iepp01010_reproduces_the_guide_star_failure_visit(archive, sets) -> None:
    _, truth = archive
    visit = [t for t in truth if t.asn_id == "iepp01010"]
    assert [t.mode for t in visit] == ["nominal"] * 3 + ["gs_acq_failure"] * 4
    assert [t.member_index for t in visit] == list(range(1, 8))
    assert visit[0].rootname == "iepp01uvq" and visit[0].jitter_name == "iepp01uvj"
    assert {(t.proposid, t.config) for t in visit} == {(16748, "WFC3/UVIS")}
    primary, exts = sets["iepp01010"]["jif"][0], sets["iepp01010"]["jif"][1:]
    assert primary["T_GSFAIL"] is True and primary["PROPOSID"] == 16748
    assert [h["GSACQ"] == "" for h in exts] == [False] * 3 + [True] * 4
    assert [h.get("GSFAIL") for h in exts] == [None] * 3 + ["NOLOCK"] * 4
    for table in sets["iepp01010"]["tables"][3:]:
        assert _fill_rows(table).all() and not table["TakeData"].any()
    with fits.open(sets["iepp01010"]["folder"] / "iepp01010_asn.fits.gz") as asn:
        rows = asn["ASN"].data
        assert list(rows["MEMNAME"]) == [t.rootname.upper() for t in visit] + ["IEPP01010"]
        assert list(rows["MEMTYPE"]) == ["EXP-DTH"] * 7 + ["PROD-DTH"]
        assert rows["MEMPRSNT"].all()


def test_small_archives_skip_the_iepp_visit(tmp_path: Path) -> None:
    truth = write_archive(tmp_path, 3, seed=2)
    assert len(truth) == 3
    assert all(t.asn_id != "iepp01010" and t.proposid != 16748 for t in truth)
    assert write_archive(tmp_path / "empty", 0) == []
    assert read_truth(tmp_path / "empty") == []


# --- (5) counts and modes ----------------------------------------------------------------


def test_exactly_n_exposures_and_every_mode_present(archive) -> None:
    out, truth = archive
    assert len(truth) == N
    modes = Counter(t.mode for t in truth)
    assert set(modes) == set(FAILURE_MODES)
    assert modes["nominal"] > 0.7 * N
    assert len({t.exposure_id for t in truth}) == N
    jif_files = list(out.rglob("*_jif.fits.gz"))
    assert sum(fits.getval(f, "NEXTEND") for f in jif_files) == N
    for t in truth:
        assert len({m.member_index for m in truth if m.asn_id == t.asn_id}) <= 8


# --- (6) lone exposures --------------------------------------------------------------------


def test_lone_exposures_have_no_association(archive, sets) -> None:
    _, truth = archive
    lone = [t for t in truth if t.rootname is None]
    assert lone
    for t in lone:
        s = sets[t.asn_id]
        assert t.asn_id == t.jitter_name and t.member_index == 1
        assert s["jif"][0]["ASN_ID"] == s["jit"][0]["ASN_ID"] == "NONE"
        assert s["jif"][0]["ROOTNAME"] == t.jitter_name
        assert s["jif"][0]["NEXTEND"] == 1
        assert not (s["folder"] / f"{t.asn_id}_asn.fits.gz").exists()
    for t in truth:
        if t.rootname is not None:
            assert (sets[t.asn_id]["folder"] / f"{t.asn_id}_asn.fits.gz").exists()
            assert t.asn_id.endswith("010") and t.rootname == t.exposure_id + "q"
