"""The MAST source: selections become CAOM queries, results arrive whole, downloads arrive verified.

Discovery runs astroquery's real request, paging and parsing code against MAST's recorded
portal answers; downloads go through a real HTTP server on 127.0.0.1 that serves files at MAST's
download path and injects faults. Nothing here reaches the internet.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits
from astroquery.mast import Observations
from dask.distributed import Client, wait
from mast_fixtures import (
    MastDownloadServer,
    MastPortalReplay,
    recorded,
    replay_mast_portal,
)

from ingest import mast
from ingest.mast import (
    DOWNLOAD_URL_ENV,
    SKIP_REASONS,
    Discovery,
    DownloadOutcome,
    MastError,
    MastProduct,
    MastSelection,
    download_product,
    download_products,
    download_url,
    find_products,
    from_mjd,
    mast_criteria,
    split_present,
    to_mjd,
    verify_fits,
)
from ingest.synth import write_archive

FILTERED, PRODUCTS = "Mast.Caom.Filtered", "Mast.Caom.Products"
TOKEN = "c0ffee1234567890deadbeefcafe0042"  # what a MAST API token looks like (32 hex digits)
FLC = "iepp01uvq_flc.fits"  # a science file large enough that a cut-off body leaves bytes


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def portal(monkeypatch: pytest.MonkeyPatch) -> MastPortalReplay:
    return replay_mast_portal(monkeypatch)


@pytest.fixture(scope="module")
def mast_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the download server holds: synthetic jitter files (plain and gzipped), a science
    file, a page that is not FITS and a gzip file with a corrupted byte."""
    directory = tmp_path_factory.mktemp("mast-files")
    archive = tmp_path_factory.mktemp("synth")
    write_archive(archive / "plain", 4, seed=3, gzip=False)
    write_archive(archive / "gz", 4, seed=3, gzip=True)
    for path in archive.rglob("*.fits*"):
        shutil.copy(path, directory / path.name)
    rng = np.random.default_rng(11)
    chips = [fits.ImageHDU(rng.normal(100, 5, (256, 256)).astype("f4"), name="SCI") for _ in "ab"]
    fits.HDUList([fits.PrimaryHDU(), *chips, fits.ImageHDU(np.zeros((256, 256), "i2"))]).writeto(
        directory / FLC
    )
    (directory / "iepp01uwq_flt.fits").write_bytes(b"<html><body>Please log in</body></html>\n")
    corrupt = bytearray((directory / "i68602010_jit.fits.gz").read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (directory / "i68602011_jit.fits.gz").write_bytes(bytes(corrupt))
    return directory


@pytest.fixture
def server(mast_files: Path) -> Iterator[MastDownloadServer]:
    with MastDownloadServer(mast_files) as running:
        yield running


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def via_server(server: MastDownloadServer, monkeypatch: pytest.MonkeyPatch) -> MastDownloadServer:
    """Downloads in this process go to the test server; no MAST token from the environment."""
    monkeypatch.setenv(DOWNLOAD_URL_ENV, server.url)
    monkeypatch.delenv("MAST_API_TOKEN", raising=False)
    return server


@pytest.fixture
def mast_login(
    server: MastDownloadServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MastDownloadServer]:
    """MAST itself, as this process sees it: astroquery's real login and MAST's download URL,
    both answered by the test server, which accepts ``TOKEN``."""
    server.valid_token = TOKEN
    server.answer_for_mast(monkeypatch)
    monkeypatch.delenv(DOWNLOAD_URL_ENV, raising=False)
    monkeypatch.delenv("MAST_API_TOKEN", raising=False)
    # login sets the session's Accept header: put it back afterwards, with the cookie gone.
    headers = Observations._session.headers
    monkeypatch.setitem(headers, "Accept", headers.get("Accept", "*/*"))
    yield server
    Observations.logout()


def product(
    mast_files: Path, name: str, *, listed_size: bool = True, size_bytes: int | None = None
) -> MastProduct:
    """The MastProduct MAST would list for one of the served files (``size_bytes``: a listed
    size other than the file's)."""
    path = mast_files / name
    stem, kind = name.split(".")[0].split("_")
    if size_bytes is None and listed_size and path.exists():
        size_bytes = path.stat().st_size
    return MastProduct(
        uri=f"mast:HST/product/{name}",
        filename=name,
        obs_id=stem,
        proposal_id="17097" if stem.startswith("iepp") else "17259",
        product_type=kind.upper(),
        size_bytes=size_bytes,
        project="CALWF3",
        data_rights="PUBLIC",
    )


# --- selection -> criteria ----------------------------------------------------------------


def test_dates_become_modified_julian_dates_in_utc() -> None:
    assert to_mjd(datetime(2024, 1, 1, tzinfo=UTC)) == 60310.0
    assert to_mjd(datetime(2024, 1, 1, 12)) == 60310.5  # naive means UTC
    eastern = timezone(timedelta(hours=-5))
    assert to_mjd(datetime(2024, 1, 1, 7, tzinfo=eastern)) == 60310.5


def test_selection_becomes_caom_criteria() -> None:
    selection = MastSelection(
        programs=("17097", "16990"),
        obs_ids=("iepp01010", "ieou*"),
        since=datetime(2024, 1, 1, tzinfo=UTC),
        until=datetime(2024, 1, 8, tzinfo=UTC),
    )
    assert mast_criteria(selection) == {
        "obs_collection": "HST",
        "instrument_name": ["WFC3/UVIS", "WFC3/IR"],
        "proposal_id": ["17097", "16990"],
        "obs_id": ["IEPP01010", "IEOU*"],
        "t_obs_release": [60310.0, 60317.0],
    }


def test_date_field_and_open_ends() -> None:
    observed = MastSelection(date_field="observation", since=datetime(2024, 1, 1))
    assert mast_criteria(observed)["t_min"] == [60310.0, 100_000.0]
    assert "t_obs_release" not in mast_criteria(observed)
    released = MastSelection(until=datetime(2024, 1, 1), instruments=())
    assert mast_criteria(released) == {"obs_collection": "HST", "t_obs_release": [0.0, 60310.0]}
    assert "t_min" not in mast_criteria(MastSelection(programs=("17097",)))


def test_selection_as_json_is_json_safe_and_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    selection = MastSelection(programs=("17097",), since=datetime(2024, 1, 1, 7, tzinfo=eastern))
    as_json = json.loads(json.dumps(selection.as_json()))
    assert as_json["since"] == "2024-01-01T12:00:00+00:00"
    assert as_json["until"] is None
    assert as_json["programs"] == ["17097"]
    assert as_json["product_types"] == ["FLT", "FLC", "IMA", "JIF", "JIT", "ASN"]


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"obs_ids": ("iepp*", "ieou*")}, "one wildcard"),
        ({"since": datetime(2024, 2, 1), "until": datetime(2024, 1, 1)}, "must be before"),
        ({"date_field": "processing"}, "date_field"),
        ({"product_types": ()}, "product_types"),
        ({"instruments": ("NICMOS/NIC2",)}, "no calibration pipeline known for NICMOS/NIC2"),
    ],
)
def test_impossible_selections_are_refused(arguments: dict, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        MastSelection(**arguments)


def test_each_instrument_keeps_its_own_pipelines_products() -> None:
    assert MastSelection().pipeline_projects == ("CALWF3",)
    assert MastSelection(instruments=("ACS/WFC", "WFC3/IR")).pipeline_projects == (
        "CALACS", "CALWF3",
    )  # fmt: skip
    assert set(MastSelection(instruments=()).pipeline_projects) >= {"CALWF3", "CALACS"}
    nicmos = MastSelection(instruments=("NICMOS/NIC2",), projects=("CALNICA",))
    assert nicmos.pipeline_projects == ("CALNICA",)
    assert nicmos.as_json()["projects"] == ["CALNICA"]


def test_pipeline_obs_ids_are_asked_for_in_upper_case_and_hap_ones_as_they_are() -> None:
    hap = "hst_17097_01_wfc3_uvis_f606w_iepp01"
    criteria = mast_criteria(MastSelection(obs_ids=("iepp01010", hap)))
    assert criteria["obs_id"] == ["IEPP01010", hap]


def test_criteria_reach_mast_as_portal_filters(portal: MastPortalReplay) -> None:
    selection = MastSelection(
        programs=("17097",),
        obs_ids=("iepp0*",),
        since=datetime(2024, 1, 1, tzinfo=UTC),
        until=datetime(2024, 1, 8, tzinfo=UTC),
    )
    find_products(selection)
    count = portal.calls_to(FILTERED, counts=True)[0]
    assert count.filter("instrument_name")["values"] == ["WFC3/UVIS", "WFC3/IR"]
    assert count.filter("proposal_id")["values"] == ["17097"]
    assert count.filter("obs_id")["freeText"] == "IEPP0%"
    assert count.filter("t_obs_release")["values"] == [{"min": 60310.0, "max": 60317.0}]
    assert count.filter("obs_collection")["values"] == ["HST"]
    assert [c.params["filters"] for c in portal.calls_to(FILTERED)] == [count.params["filters"]]


# --- discovery ----------------------------------------------------------------------------


def test_products_of_a_program_are_the_wanted_types_once_each(
    portal: MastPortalReplay, tmp_path: Path
) -> None:
    products = find_products(
        MastSelection(programs=("17097",), product_types=("FLT", "FLC", "IMA", "JIF", "JIT"))
    ).products
    names = [p.filename for p in products]
    assert names == [
        "iepp01010_jif.fits", "iepp01010_jit.fits",
        "iepp01uvq_flc.fits", "iepp01uvq_flt.fits", "iepp01uwq_flc.fits", "iepp01uwq_flt.fits",
        "iepp02010_jif.fits", "iepp02010_jit.fits",
        "iepp02a1q_flt.fits", "iepp02a1q_ima.fits", "iepp02a2q_flt.fits", "iepp02a2q_ima.fits",
        "iepp03bzj_jif.fits", "iepp03bzj_jit.fits", "iepp03bzq_flc.fits", "iepp03bzq_flt.fits",
        "iepp04010_jif.fits", "iepp04010_jit.fits", "iepp04c1q_flc.fits", "iepp04c1q_flt.fits",
    ]  # fmt: skip
    # MAST lists iepp04010_jif twice; ACS (jepp05010) and other programs are not asked for.
    listed = [r["productFilename"] for r in recorded("caom_products.json")["data"]]
    assert listed.count("iepp04010_jif.fits") == 2
    flc = products[names.index("iepp01uvq_flc.fits")]
    assert flc == MastProduct(
        "mast:HST/product/iepp01uvq_flc.fits", "iepp01uvq_flc.fits", "iepp01uvq", "17097",
        "FLC", 168_675_840, "CALWF3", "PUBLIC", released_at=from_mjd(60311.21875),
    )  # fmt: skip
    assert flc.released_at == datetime(2024, 1, 2, 5, 15, tzinfo=UTC)
    assert flc.local_path(tmp_path) == tmp_path / "17097" / "iepp01uvq" / "iepp01uvq_flc.fits"
    jif = products[names.index("iepp01010_jif.fits")]
    assert jif.local_path(tmp_path) == tmp_path / "17097" / "iepp01010" / "iepp01010_jif.fits"


def test_only_the_pipelines_fits_products_are_kept_and_the_rest_is_counted(
    portal: MastPortalReplay,
) -> None:
    # MAST lists HAP single-visit copies of IEPP01010's FLC files (sub-group FLC, as the
    # pipeline's), HAP and HLA drizzled images, and JPG previews whose sub-groups read FLT/FLC.
    listed = [r["productFilename"] for r in recorded("caom_products.json")["data"]]
    assert {"hst_17097_01_wfc3_uvis_f606w_iepp01uv_flc.fits", "iepp01uvq_flc.jpg"} <= set(listed)
    discovery = find_products(MastSelection(programs=("17097",)))
    names = [p.filename for p in discovery.products]
    assert [n for n in names if n.startswith("hst_") or not n.endswith(".fits")] == []
    assert {p.project for p in discovery.products} == {"CALWF3"}
    assert names.count("iepp01uvq_flc.fits") == 1  # one copy of each exposure's FLC
    assert discovery.skipped == {"other_project": 6, "preview": 3, "other_product_type": 10}
    assert discovery.warnings == []
    assert set(SKIP_REASONS) >= set(discovery.skipped)


def test_proprietary_products_are_fetched_only_with_a_token(portal: MastPortalReplay) -> None:
    # IEOU04010 was observed in January 2024 and is not public yet: its rows read
    # EXCLUSIVE_ACCESS or PROPRIETARY.
    public = find_products(MastSelection(programs=("16990",)))
    assert [p for p in public.products if p.obs_id.startswith("ieou04")] == []
    assert public.skipped["not_public"] == 4
    # Withheld, not forgotten: their rights and release stay known, for access control.
    assert {(p.filename, p.data_rights) for p in public.not_public} == {
        ("ieou04010_jif.fits", "EXCLUSIVE_ACCESS"), ("ieou04010_jit.fits", "EXCLUSIVE_ACCESS"),
        ("ieou04g1q_flt.fits", "EXCLUSIVE_ACCESS"), ("ieou04g1q_flc.fits", "PROPRIETARY"),
    }  # fmt: skip
    with_token = find_products(MastSelection(programs=("16990",), public_only=False))
    hidden = {p.filename: p for p in with_token.products if p.obs_id.startswith("ieou04")}
    assert sorted(hidden) == [
        "ieou04010_jif.fits", "ieou04010_jit.fits", "ieou04g1q_flc.fits", "ieou04g1q_flt.fits",
    ]  # fmt: skip
    assert "not_public" not in with_token.skipped and with_token.not_public == []
    # What MAST says of their rights and release stays on the product, for access control.
    assert hidden["ieou04g1q_flc.fits"].data_rights == "PROPRIETARY"
    assert hidden["ieou04010_jif.fits"].data_rights == "EXCLUSIVE_ACCESS"
    assert hidden["ieou04g1q_flt.fits"].released_at == from_mjd(60702.29102)
    assert from_mjd(60702.29102).date() == date(2025, 1, 27)


def test_a_product_not_tied_to_its_observation_is_skipped_with_a_warning(
    portal: MastPortalReplay,
) -> None:
    # An observation listed without its program, and its JIF row without one either.
    observation = recorded("caom_filtered.json")["data"][0] | {
        "obsid": "2006148109", "obs_id": "IEPP09010", "proposal_id": None,
    }  # fmt: skip
    jif = recorded("caom_products.json")["data"][1] | {
        "obsID": "2006148109", "parent_obsid": "2006148109", "obs_id": "IEPP09010",
        "proposal_id": None, "dataURI": "mast:HST/product/iepp09010_jif.fits",
        "productFilename": "iepp09010_jif.fits",
    }  # fmt: skip
    portal.observations = portal.observations | {
        "data": [*portal.observations["data"], observation]
    }
    portal.products = portal.products | {"data": [*portal.products["data"], jif]}
    discovery = find_products(MastSelection(obs_ids=("iepp0*",)))
    assert "iepp09010_jif.fits" not in [p.filename for p in discovery.products]
    assert len(discovery.products) == 22  # the rest of IEPP01-04's pipeline FITS products
    assert discovery.skipped["no_observation"] == 1
    [warning] = discovery.warnings
    assert "mast:HST/product/iepp09010_jif.fits" in warning and "proposal_id" in warning


def test_product_types_choose_the_files(portal: MastPortalReplay) -> None:
    selection = MastSelection(programs=("16990",), product_types=("JIF", "JIT"))
    products = find_products(selection).products
    assert [(p.filename, p.product_type) for p in products] == [
        ("ieou01010_jif.fits", "JIF"), ("ieou01010_jit.fits", "JIT"),
        ("ieou02010_jif.fits", "JIF"), ("ieou02010_jit.fits", "JIT"),
        ("ieou03010_jif.fits", "JIF"), ("ieou03010_jit.fits", "JIT"),
    ]  # fmt: skip
    assert products[-1].size_bytes is None  # MAST lists no size for it


def test_at_a_small_page_size_every_row_arrives_once(portal: MastPortalReplay) -> None:
    everything = find_products(MastSelection())
    portal.calls.clear()
    paged = find_products(MastSelection(), page_size=3)
    assert paged == everything
    rows = [r for r in recorded("caom_products.json")["data"] if not r["obs_id"].startswith("J")]
    wanted = {
        r["dataURI"]
        for r in rows
        if r["project"] == "CALWF3"
        and r["productFilename"].endswith(".fits")
        and r["productSubGroupDescription"] in ("FLT", "FLC", "IMA", "JIF", "JIT", "ASN")
        and r["dataRights"] == "PUBLIC"
    }
    assert sorted(p.uri for p in paged.products) == sorted(wanted)  # each once
    # 9 WFC3 observations (one of them HAP's): three full pages of 3, then an empty one.
    assert [(c.page, c.pagesize) for c in portal.calls_to(FILTERED)] == [
        (1, 3), (2, 3), (3, 3), (4, 3),
    ]  # fmt: skip
    # Every product row MAST holds for them came back: full pages, then a short one.
    assert [c.page for c in portal.calls_to(PRODUCTS)] == list(range(1, len(rows) // 3 + 2))


def test_a_full_page_is_followed_by_the_next(portal: MastPortalReplay) -> None:
    # Program 17097 has 5 WFC3 observations (one of them HAP's): pages of 2, 2 and 1.
    products = find_products(MastSelection(programs=("17097",)), page_size=2).products
    assert [c.page for c in portal.calls_to(FILTERED)] == [1, 2, 3]
    assert len([p for p in products if p.product_type != "ASN"]) == 20


def test_products_are_asked_for_in_chunks_of_observations(
    portal: MastPortalReplay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mast, "_OBSERVATIONS_PER_PRODUCT_QUERY", 2)
    whole = find_products(MastSelection())
    chunks = [c.params["obsid"].split(",") for c in portal.calls_to(PRODUCTS)]
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 1]
    observations = [r["obsid"] for r in recorded("caom_filtered.json")["data"]]
    wfc3 = sorted(o for o in observations if o != "2006148105")
    assert sorted(o for c in chunks for o in c) == wfc3
    monkeypatch.setattr(mast, "_OBSERVATIONS_PER_PRODUCT_QUERY", 500)
    assert find_products(MastSelection()) == whole


def test_since_is_inclusive_and_until_exclusive(portal: MastPortalReplay) -> None:
    # IEPP02010 was released at MJD 60313.0, IEPP03BZQ at 60321.5: MAST's range holds both ends.
    selection = MastSelection(
        programs=("17097",), since=datetime(2024, 1, 4), until=datetime(2024, 1, 12, 12)
    )
    products = find_products(selection).products
    assert {p.obs_id[:6] for p in products} == {"iepp02"}
    assert len(portal.calls_to(FILTERED)) == 1


def test_observation_dates_select_by_start_time(portal: MastPortalReplay) -> None:
    selection = MastSelection(
        date_field="observation", since=datetime(2024, 1, 6), until=datetime(2024, 1, 8)
    )
    assert {p.obs_id[:6] for p in find_products(selection).products} == {"ieou01", "ieou02"}


def test_nothing_found_is_an_empty_discovery(portal: MastPortalReplay) -> None:
    assert find_products(MastSelection(programs=("99999",))) == Discovery([], {}, [])
    assert portal.calls_to(PRODUCTS) == []
    none_of_that_type = find_products(MastSelection(programs=("17097",), product_types=("CRJ",)))
    assert none_of_that_type.products == []
    assert none_of_that_type.skipped["other_product_type"] == 33  # every pipeline FITS row


def test_a_mast_that_stops_answering_cannot_hang_the_query(
    portal: MastPortalReplay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # astroquery sends its portal queries with no timeout; find_products gives them one.
    find_products(MastSelection(programs=("17097",)))
    monkeypatch.setattr(mast, "_READ_TIMEOUT_S", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        held: list[socket.socket] = []
        threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        request = Observations._session.prepare_request(requests.Request("GET", url))
        adapter = Observations._session.get_adapter("https://mast.example/")
        assert isinstance(adapter, mast._TimeoutAdapter)  # else the send below would hang
        with pytest.raises(requests.ReadTimeout):
            adapter.send(request)
        for connection in held:
            connection.close()


@pytest.mark.parametrize(
    ("service", "fault", "said"),
    [
        (FILTERED, "error", "Error converting data type nvarchar to float"),
        (FILTERED, "http500", "HTTP 500"),
        (FILTERED, "timeout", "could not reach MAST"),
        (PRODUCTS, "connection", "could not reach MAST"),
        (FILTERED, "lose_row", "MAST counted 5"),
    ],
)
def test_mast_failures_are_readable_mast_errors(
    portal: MastPortalReplay, service: str, fault: str, said: str
) -> None:
    # The count comes first: a fault on the second call of the service hits the rows query.
    portal.faults[service] = [None, fault] if service == FILTERED else [fault]
    with pytest.raises(MastError) as caught:
        find_products(MastSelection(programs=("17097",)))
    message = str(caught.value)
    assert said in message
    assert "programs 17097" in message  # what was asked
    assert any(advice in message for advice in ("try again", "Try again", "Run again", "Check"))


# --- downloads ----------------------------------------------------------------------------


def test_downloads_are_verified_byte_identical_and_leave_no_part(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    names = ["i68602010_jif.fits", "i68602010_jit.fits.gz", FLC]
    outcomes = [download_product(product(mast_files, n), str(archive)) for n in names]
    for name, outcome in zip(names, outcomes, strict=True):
        assert outcome.status == "downloaded", outcome.error
        assert outcome.attempts == 1 and outcome.error is None
        path = Path(outcome.path)
        assert path == product(mast_files, name).local_path(archive)
        assert path.read_bytes() == (mast_files / name).read_bytes()
        assert outcome.size_bytes == path.stat().st_size
    assert not list(archive.rglob("*.part"))


def test_server_errors_are_retried(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    via_server.inject("i68601k5j_jit.fits", "503", "503")
    outcome = download_product(product(mast_files, "i68601k5j_jit.fits"), str(archive), backoff_s=0)
    assert (outcome.status, outcome.attempts) == ("downloaded", 3)
    assert [s.status for s in via_server.requests_for("i68601k5j_jit.fits")] == [503, 503, 200]


@pytest.mark.parametrize("fault", ["503", "cut"])
def test_a_server_or_network_that_keeps_failing_is_a_transient_failure(
    via_server: MastDownloadServer, mast_files: Path, archive: Path, fault: str
) -> None:
    via_server.inject(FLC, *[fault] * 3)
    outcome = download_product(product(mast_files, FLC), str(archive), retries=2, backoff_s=0)
    assert (outcome.status, outcome.attempts, outcome.permanent) == ("failed", 3, False)
    assert "after 3 attempts" in outcome.error


def test_a_cut_off_download_resumes_where_it_stopped(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    via_server.inject(FLC, "cut")
    outcome = download_product(product(mast_files, FLC), str(archive), backoff_s=0)
    assert (outcome.status, outcome.attempts) == ("downloaded", 2), outcome.error
    size = (mast_files / FLC).stat().st_size
    first, resumed = via_server.requests_for(FLC)
    assert first.range is None and first.bytes_sent < size
    start = int(resumed.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= first.bytes_sent  # what had arrived was kept...
    assert (resumed.status, resumed.bytes_sent) == (206, size - start)  # ...only the rest fetched
    assert Path(outcome.path).read_bytes() == (mast_files / FLC).read_bytes()
    assert not Path(outcome.path + ".part").exists()


def test_a_part_file_left_by_an_earlier_run_is_resumed(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    flc = product(mast_files, FLC)
    target = flc.local_path(archive)
    target.parent.mkdir(parents=True)
    Path(f"{target}.part").write_bytes((mast_files / FLC).read_bytes()[:100_000])
    outcome = download_product(flc, str(archive))
    assert (outcome.status, outcome.attempts) == ("downloaded", 1)
    [served] = via_server.requests_for(FLC)
    assert (served.range, served.bytes_sent) == ("bytes=100000-", flc.size_bytes - 100_000)
    assert target.read_bytes() == (mast_files / FLC).read_bytes()


def test_a_range_answered_with_the_whole_file_is_not_appended(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    flc = product(mast_files, FLC)
    target = flc.local_path(archive)
    target.parent.mkdir(parents=True)
    Path(f"{target}.part").write_bytes((mast_files / FLC).read_bytes()[:100_000])
    via_server.inject(FLC, "ignore_range")
    outcome = download_product(flc, str(archive))
    assert (outcome.status, outcome.attempts) == ("downloaded", 1)
    assert target.read_bytes() == (mast_files / FLC).read_bytes()


def test_a_body_of_the_wrong_size_is_deleted_and_fetched_again(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    jif = product(mast_files, "i68602010_jif.fits")
    via_server.inject(jif.filename, "short")
    outcome = download_product(jif, str(archive), backoff_s=0)
    assert (outcome.status, outcome.attempts) == ("downloaded", 2)
    assert [s.range for s in via_server.requests_for(jif.filename)] == [None, None]
    assert Path(outcome.path).read_bytes() == (mast_files / jif.filename).read_bytes()


def test_a_file_that_stays_wrong_fails_for_good_with_its_reason(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    # A whole HTTP answer, one FITS block short of what the file's own headers describe.
    jif = product(mast_files, "i68602010_jif.fits", listed_size=False)
    size = (mast_files / jif.filename).stat().st_size
    via_server.inject(jif.filename, *["short"] * 3)
    outcome = download_product(jif, str(archive), retries=2, backoff_s=0)
    assert (outcome.status, outcome.attempts, outcome.size_bytes) == ("failed", 3, 0)
    assert f"truncated: its HDU headers add up to {size} bytes, it has {size - 2880}" in (
        outcome.error
    )
    assert "after 3 attempts" in outcome.error
    assert outcome.permanent  # what MAST sends for it is wrong: tonight's retries did not help
    assert not list(archive.rglob("*.fits*"))


def test_a_stale_listed_size_is_a_warning_not_a_failure(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    real = (mast_files / FLC).stat().st_size
    flc = product(mast_files, FLC, size_bytes=real + 10 * 2880)  # MAST's listing is out of date
    outcome = download_product(flc, str(archive), backoff_s=0)
    assert (outcome.status, outcome.attempts, outcome.error) == ("downloaded", 1, None)
    assert f"MAST lists {real + 10 * 2880} bytes, the file has {real}" in outcome.warning
    assert Path(outcome.path).read_bytes() == (mast_files / FLC).read_bytes()
    assert split_present([flc], archive) == ([], [flc])  # and not fetched again tomorrow
    exact = download_product(product(mast_files, FLC), str(archive / "elsewhere"))
    assert (exact.status, exact.warning) == ("downloaded", None)


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (-2880, "truncated: its HDU headers add up to"),
        (-100, "is not a whole number of 2880-byte FITS blocks"),
        (+2880, "2880 bytes after the last HDU its headers describe"),
    ],
)
def test_fits_structure_decides_a_whole_file(
    mast_files: Path, tmp_path: Path, cut: int, reason: str
) -> None:
    whole = (mast_files / FLC).read_bytes()
    assert verify_fits(mast_files / FLC) is None
    damaged = tmp_path / FLC
    damaged.write_bytes(whole[:cut] if cut < 0 else whole + b"\0" * cut)
    assert reason in verify_fits(damaged)


def test_the_genuine_hst_files_are_whole_fits(real_data: Path) -> None:
    files = sorted(real_data.glob("*.fits*"))
    assert len(files) >= 8 and any(f.suffix == ".gz" for f in files)
    assert {f.name: verify_fits(f) for f in files} == {f.name: None for f in files}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("iepp01uwq_flt.fits", "not a FITS file"),
        ("i68602011_jit.fits.gz", "corrupt or truncated gzip stream"),
    ],
)
def test_a_file_that_is_not_whole_fits_fails_after_retries(
    via_server: MastDownloadServer, mast_files: Path, archive: Path, name: str, reason: str
) -> None:
    # MAST lists no size here: only the FITS structure and the gzip CRC can tell.
    outcome = download_product(
        product(mast_files, name, listed_size=False), str(archive), retries=2, backoff_s=0
    )
    assert outcome.status == "failed" and reason in outcome.error
    assert outcome.permanent
    assert outcome.attempts == 3 == len(via_server.requests_for(name))
    assert not list(archive.rglob("*.fits*"))


def test_a_missing_file_is_not_retried(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    outcome = download_product(product(mast_files, "iepp09zzq_flt.fits"), str(archive))
    assert (outcome.status, outcome.attempts, outcome.permanent) == ("failed", 1, True)
    assert "HTTP 404" in outcome.error


def test_an_unwritable_archive_is_an_outcome_not_an_exception(
    via_server: MastDownloadServer, mast_files: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    outcome = download_product(product(mast_files, FLC), str(tmp_path / "a-file"))
    assert outcome.status == "failed" and "cannot write" in outcome.error
    assert not outcome.permanent  # the local disk, not the file


def test_files_already_present_are_not_fetched_again(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    products = [product(mast_files, n) for n in ("i68601k5j_jif.fits", FLC)]
    assert split_present(products, archive) == (products, [])
    for p in products:
        download_product(p, str(archive))
    hits = len(via_server.served)
    assert split_present(products, archive) == ([], products)
    again = download_product(products[0], str(archive))
    assert (again.status, again.attempts) == ("present", 0)
    assert len(via_server.served) == hits
    # Files are renamed into place only once verified, and MAST's listed sizes can be stale:
    # a file in place is present whatever size MAST lists (ingest judges it).
    stale = dataclasses.replace(products[1], size_bytes=products[1].size_bytes + 2880)
    assert split_present([stale], archive) == ([], [stale])


def test_names_from_mast_cannot_leave_the_archive() -> None:
    with pytest.raises(ValueError, match="not a plain file name"):
        MastProduct("mast:HST/product/x.fits", "../x.fits", "iepp01uvq", "17097", "FLT", None)


def test_a_dask_task_that_dies_fails_its_files(
    dask_scheduler: str, mast_files: Path, archive: Path
) -> None:
    flc = product(mast_files, FLC)
    with Client(dask_scheduler) as client:
        future = client.submit(int, "not a number", pure=False)
        wait(future)
        [outcome] = mast._batch_result(future, [flc], archive, mast._Secret(TOKEN))
    assert (outcome.status, outcome.path) == ("failed", str(flc.local_path(archive)))
    assert "the Dask task failed: ValueError" in outcome.error


def test_the_download_url_is_read_from_the_environment_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = "mast:HST/product/iepp01uvq_flc.fits"
    monkeypatch.delenv(DOWNLOAD_URL_ENV, raising=False)
    assert download_url(uri) == (
        "https://mast.stsci.edu/api/v0.1/Download/file?uri=mast:HST/product/iepp01uvq_flc.fits"
    )
    monkeypatch.setenv(DOWNLOAD_URL_ENV, "http://mirror.example/file")
    assert download_url(uri) == "http://mirror.example/file?uri=" + uri


def test_the_token_logs_in_and_never_leaks(
    mast_login: MastDownloadServer,
    mast_files: Path,
    archive: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    # The server echoes the cookie back in a 403 and fails another file with 503s.
    mast_login.inject("i68601k5j_jif.fits", "403_echo")
    mast_login.inject("i68601k5j_jit.fits", "503", "503")
    names = ["i68602010_jif.fits", "i68601k5j_jif.fits", "i68601k5j_jit.fits"]
    outcomes = [
        download_product(product(mast_files, n), str(archive), token=TOKEN, retries=1, backoff_s=0)
        for n in names
    ]
    assert [o.status for o in outcomes] == ["downloaded", "failed", "failed"]
    downloaded = mast_login.requests_for("i68602010_jif.fits")
    assert downloaded[0].cookie == f"mast_token={TOKEN}"  # logged in: the cookie went to MAST
    assert "HTTP 403" in outcomes[1].error and "<MAST token>" in outcomes[1].error
    assert [o.permanent for o in outcomes[1:]] == [True, False]  # 403 for good; 503 for now
    captured = capsys.readouterr()
    for text in (repr(outcomes), captured.out, captured.err, caplog.text):
        assert TOKEN not in text
    assert TOKEN not in repr(mast._Secret(TOKEN))


def test_the_token_goes_to_mast_only_never_to_a_mirror(
    mast_login: MastDownloadServer,
    mast_files: Path,
    archive: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Logged in at MAST, downloading from a mirror at another address.
    monkeypatch.setenv(DOWNLOAD_URL_ENV, mast_login.url)
    outcome = download_product(product(mast_files, FLC), str(archive), token=TOKEN)
    assert outcome.status == "downloaded", outcome.error
    [served] = mast_login.requests_for(FLC)
    assert served.cookie is None

    def cookie_for(url: str) -> str | None:
        request = Observations._session.prepare_request(requests.Request("GET", url))
        return request.headers.get("Cookie")

    assert cookie_for("https://mast.stsci.edu/api/v0.1/Download/file") == f"mast_token={TOKEN}"
    assert cookie_for("https://auth.mast.stsci.edu/token") == f"mast_token={TOKEN}"
    for elsewhere in (
        "http://mast.stsci.edu/api/v0.1/Download/file",  # not over plain HTTP
        "https://mirror.example.org/api/v0.1/Download/file",
        "https://mast.stsci.edu.mirror.example.org/file",
        "https://notmast.stsci.edu/file",
    ):
        assert cookie_for(elsewhere) is None, elsewhere


def test_a_login_mast_never_answers_times_out(
    via_server: MastDownloadServer,
    mast_files: Path,
    archive: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mast, "_READ_TIMEOUT_S", 0.5)
    headers = Observations._session.headers
    monkeypatch.setitem(headers, "Accept", headers.get("Accept", "*/*"))
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        held: list[socket.socket] = []
        threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
        whoami = f"http://127.0.0.1:{silent.getsockname()[1]}/whoami"
        monkeypatch.setattr(Observations._auth_obj, "SESSION_INFO_URL", whoami)
        outcome = download_product(product(mast_files, FLC), str(archive), token=TOKEN)
        for connection in held:
            connection.close()
    assert outcome.status == "failed" and "MAST login failed (ReadTimeout" in outcome.error
    assert outcome.seconds < 30 and not outcome.permanent
    assert via_server.requests_for(FLC) == []
    assert Observations._session.cookies.get("mast_token") is None


def test_a_refused_token_fails_the_download_without_showing_it(
    mast_login: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    wrong = "0123456789abcdef0123456789abcdef"
    outcome = download_product(product(mast_files, FLC), str(archive), token=wrong)
    assert outcome.status == "failed" and "MAST login failed" in outcome.error
    assert not outcome.permanent  # the token is wrong, not the file
    assert wrong not in repr(outcome)
    assert Observations._session.cookies.get("mast_token") is None  # not left on the session
    assert mast_login.requests_for(FLC) == []


def test_downloads_run_on_dask_workers(
    dask_scheduler: str, server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    names = [
        "i68601k5j_jif.fits", "i68601k5j_jit.fits", "i68602010_asn.fits",
        "i68602010_jif.fits", "i68602010_jit.fits", "i68602010_jif.fits.gz", FLC,
        "iepp01uwq_flt.fits",
    ]  # fmt: skip
    products = [product(mast_files, n) for n in names]
    server.inject(FLC, "cut")
    server.inject("i68602010_jit.fits", "503")
    # Only the workers are pointed at the test server: had a download run in this process, it
    # would have gone to MAST, which is out of reach.
    assert DOWNLOAD_URL_ENV not in os.environ
    with Client(dask_scheduler) as client:
        url = server.url  # lambdas travel by value; a bound os.environ method would copy environ
        client.run(lambda: os.environ.update({DOWNLOAD_URL_ENV: url}))
        try:
            outcomes = download_products(
                [*products, products[0]], archive, client=client, retries=2, backoff_s=0
            )
        finally:
            client.run(lambda: os.environ.pop(DOWNLOAD_URL_ENV, None))
    assert [o.uri for o in outcomes] == [p.uri for p in products]
    assert all(isinstance(o, DownloadOutcome) for o in outcomes)
    assert [o.status for o in outcomes] == ["downloaded"] * 7 + ["failed"], outcomes
    assert "not a FITS file" in outcomes[-1].error and outcomes[-1].permanent
    for p, outcome in zip(products[:-1], outcomes[:-1], strict=True):
        assert Path(outcome.path).read_bytes() == (mast_files / p.filename).read_bytes()
    assert not list(archive.rglob("*.part"))
    assert server.requests_for(FLC)[1].range is not None


def test_download_products_of_nothing_is_nothing(dask_scheduler: str, archive: Path) -> None:
    with Client(dask_scheduler) as client:
        assert download_products([], archive, client=client) == []


def test_recorded_responses_are_in_the_portal_format() -> None:
    for name in ("caom_filtered.json", "caom_products.json", "count.json"):
        response = recorded(name)
        assert response["status"] == "COMPLETE"
        fields = {f["name"] for f in response["fields"]}
        assert all(set(row) <= fields for row in response["data"]), name
