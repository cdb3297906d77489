"""The MAST source: selections become CAOM queries, results arrive whole, downloads arrive verified.

Discovery runs astroquery's real request, paging and parsing code against MAST's recorded
portal answers; downloads go through a real HTTP server on 127.0.0.1 that serves files at MAST's
download path and injects faults. Nothing here reaches the internet.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
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
    DownloadOutcome,
    MastError,
    MastProduct,
    MastSelection,
    download_product,
    download_products,
    download_url,
    find_products,
    mast_criteria,
    split_present,
    to_mjd,
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
    via_server: MastDownloadServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MastDownloadServer]:
    """astroquery's real login, answered by the test server, which accepts ``TOKEN``."""
    via_server.valid_token = TOKEN
    monkeypatch.setattr(Observations._auth_obj, "SESSION_INFO_URL", via_server.whoami_url)
    # login sets the session's Accept header: put it back afterwards, with the cookie gone.
    headers = Observations._session.headers
    monkeypatch.setitem(headers, "Accept", headers.get("Accept", "*/*"))
    yield via_server
    Observations.logout()


def product(mast_files: Path, name: str, *, listed_size: bool = True) -> MastProduct:
    """The MastProduct MAST would list for one of the served files."""
    path = mast_files / name
    stem, kind = name.split(".")[0].split("_")
    return MastProduct(
        uri=f"mast:HST/product/{name}",
        filename=name,
        obs_id=stem,
        proposal_id="17097" if stem.startswith("iepp") else "17259",
        product_type=kind.upper(),
        size_bytes=path.stat().st_size if listed_size and path.exists() else None,
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
    ],
)
def test_impossible_selections_are_refused(arguments: dict, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        MastSelection(**arguments)


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
    )
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
        "FLC", 168_675_840, data_rights="PUBLIC",
        released_at=datetime(2024, 1, 2, 5, 15, tzinfo=UTC),  # its visit's t_obs_release
    )  # fmt: skip
    assert to_mjd(flc.released_at) == 60311.21875
    assert flc.local_path(tmp_path) == tmp_path / "17097" / "iepp01uvq" / "iepp01uvq_flc.fits"
    jif = products[names.index("iepp01010_jif.fits")]
    assert jif.local_path(tmp_path) == tmp_path / "17097" / "iepp01010" / "iepp01010_jif.fits"


def test_product_types_choose_the_files(portal: MastPortalReplay) -> None:
    selection = MastSelection(programs=("16990",), product_types=("JIF", "JIT"))
    products = find_products(selection)
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
        if r["productSubGroupDescription"] in ("FLT", "FLC", "IMA", "JIF", "JIT", "ASN")
    }
    assert sorted(p.uri for p in paged) == sorted(wanted)  # each once
    # 7 WFC3 observations: pages of 3, 3 and 1.
    assert [(c.page, c.pagesize) for c in portal.calls_to(FILTERED)] == [(1, 3), (2, 3), (3, 3)]
    # Every product row MAST holds for them came back: full pages, then a short one.
    assert [c.page for c in portal.calls_to(PRODUCTS)] == list(range(1, len(rows) // 3 + 2))


def test_a_full_page_is_followed_by_the_next(portal: MastPortalReplay) -> None:
    # Program 17097 has 4 WFC3 observations: two full pages of 2, then an empty third.
    products = find_products(MastSelection(programs=("17097",)), page_size=2)
    assert [c.page for c in portal.calls_to(FILTERED)] == [1, 2, 3]
    assert len([p for p in products if p.product_type != "ASN"]) == 20


def test_products_are_asked_for_in_chunks_of_observations(
    portal: MastPortalReplay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mast, "_OBSERVATIONS_PER_PRODUCT_QUERY", 2)
    whole = find_products(MastSelection())
    chunks = [c.params["obsid"].split(",") for c in portal.calls_to(PRODUCTS)]
    assert [len(c) for c in chunks] == [2, 2, 2, 1]
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
    products = find_products(selection)
    assert {p.obs_id[:6] for p in products} == {"iepp02"}
    assert len(portal.calls_to(FILTERED)) == 1


def test_observation_dates_select_by_start_time(portal: MastPortalReplay) -> None:
    selection = MastSelection(
        date_field="observation", since=datetime(2024, 1, 6), until=datetime(2024, 1, 8)
    )
    assert {p.obs_id[:6] for p in find_products(selection)} == {"ieou01", "ieou02"}


def test_nothing_found_is_an_empty_list(portal: MastPortalReplay) -> None:
    assert find_products(MastSelection(programs=("99999",))) == []
    assert portal.calls_to(PRODUCTS) == []
    assert find_products(MastSelection(programs=("17097",), product_types=("CRJ",))) == []


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
        (FILTERED, "lose_row", "MAST counted 4"),
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


def test_a_file_that_stays_wrong_fails_with_its_reason(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    jif = product(mast_files, "i68602010_jif.fits")
    via_server.inject(jif.filename, *["short"] * 3)
    outcome = download_product(jif, str(archive), retries=2, backoff_s=0)
    assert (outcome.status, outcome.attempts, outcome.size_bytes) == ("failed", 3, 0)
    assert f"received {jif.size_bytes - 2880} bytes, MAST lists {jif.size_bytes}" in outcome.error
    assert "after 3 attempts" in outcome.error
    assert not list(archive.rglob("*.fits*"))


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
    assert outcome.attempts == 3 == len(via_server.requests_for(name))
    assert not list(archive.rglob("*.fits*"))


def test_a_missing_file_is_not_retried(
    via_server: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    outcome = download_product(product(mast_files, "iepp09zzq_flt.fits"), str(archive))
    assert (outcome.status, outcome.attempts) == ("failed", 1)
    assert "HTTP 404" in outcome.error


def test_an_unwritable_archive_is_an_outcome_not_an_exception(
    via_server: MastDownloadServer, mast_files: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    outcome = download_product(product(mast_files, FLC), str(tmp_path / "a-file"))
    assert outcome.status == "failed" and "cannot write" in outcome.error


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
    # A file of another size than MAST lists is not the product: fetch it again.
    products[1].local_path(archive).write_bytes(b"SIMPLE  =")
    assert split_present(products, archive) == ([products[1]], [products[0]])


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
    assert downloaded[0].cookie == f"mast_token={TOKEN}"  # logged in: the cookie went along
    assert "HTTP 403" in outcomes[1].error and "<MAST token>" in outcomes[1].error
    captured = capsys.readouterr()
    for text in (repr(outcomes), captured.out, captured.err, caplog.text):
        assert TOKEN not in text
    assert TOKEN not in repr(mast._Secret(TOKEN))


def test_a_refused_token_fails_the_download_without_showing_it(
    mast_login: MastDownloadServer, mast_files: Path, archive: Path
) -> None:
    wrong = "0123456789abcdef0123456789abcdef"
    outcome = download_product(product(mast_files, FLC), str(archive), token=wrong)
    assert outcome.status == "failed" and "MAST login failed" in outcome.error
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
    assert "not a FITS file" in outcomes[-1].error
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
