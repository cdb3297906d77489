"""`hstmon nightly` over synthetic nights: MAST (replayed portal + a real HTTP download server)
-> archive tree -> ingest -> analysis -> digest; then quiet nights, failed nights, dead runs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import database_snapshot, scratch_database
from dask.distributed import Client
from mast_fixtures import (
    MastDownloadServer,
    MastPortalReplay,
    recorded,
    replay_mast_portal,
    rows_beside_the_pipeline_files,
    start_night_in_own_session,
)
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.engine import make_url

from analysis import nightly as nightly_module
from analysis.download_failures import RETRY_AFTER, Outstanding, next_try, split_due
from analysis.nightly import NightlyOptions, _as_utc, run_nightly
from dashboard import queries as dashboard_queries
from ingest.mast import DOWNLOAD_URL_ENV, SKIP_REASONS, MastProduct, MastSelection, to_mjd
from ingest.synth import write_archive
from models.access import access_report
from models.cli import main
from models.database import make_engine
from models.locks import job_lock
from models.tables import DownloadFailure, IngestRun, NightlyRun

# Verdict deadlines count from this day (the synthetic visits were observed in early 2022).
TODAY = date(2022, 3, 1)
_KIND_OF_SUFFIX = {"asn": "ASN", "jif": "JIF", "jit": "JIT", "flc": "FLC", "flt": "FLT"}


@pytest.fixture(scope="module")
def mast_side(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What MAST holds: a synthetic archive of plain FITS files, as MAST serves them."""
    directory = tmp_path_factory.mktemp("mast_side")
    write_archive(directory, 90, 11, gzip=False)
    # MAST's download service knows files by name alone: the test server serves one folder.
    store = directory / "store"
    store.mkdir()
    for path in directory.glob("*/*/*.fits"):
        os.link(path, store / path.name)
    return directory


def _catalogue(
    mast_side: Path,
    released: dict[str, datetime],
    proprietary: set[str],
    listed_sizes: dict[str, int],
    public_on: dict[str, datetime],
) -> tuple[list, list]:
    """CAOM observation and product rows of every visit folder released so far, as MAST lists
    them: beside each visit's pipeline files, a HAP copy (sub-group FLC), an HLA image and a
    JPG preview (sub-group FLC), none of them served.

    ``released`` maps obs ids (folder names) to their release times; visits not in it are not
    listed yet. Rows of ``proprietary`` visits read EXCLUSIVE_ACCESS, public from
    ``public_on[obs_id]`` where given (t_obs_release); ``listed_sizes`` are sizes MAST lists
    instead of the files' own. Rows are the recorded ones of the real portal
    with this archive's values.
    """
    observation = recorded("caom_filtered.json")["data"][0]
    product = recorded("caom_products.json")["data"][0]
    observations, products = [], []
    for number, folder in enumerate(sorted(mast_side.glob("*/*/"))):
        if folder.name not in released:
            continue
        obsid = str(3_000_000_000 + number)
        release = to_mjd(released[folder.name])
        rights = "EXCLUSIVE_ACCESS" if folder.name in proprietary else "PUBLIC"
        observations.append(
            observation
            | {"obs_id": folder.name.upper(), "proposal_id": folder.parent.name, "obsid": obsid,
               "t_obs_release": to_mjd(public_on[folder.name]) if folder.name in public_on
               else release,
               "t_min": release - 1.0, "t_max": release - 0.99, "dataRights": rights}
        )  # fmt: skip
        visit = product | {"obsID": obsid, "parent_obsid": obsid, "obs_id": folder.name.upper(),
                           "proposal_id": folder.parent.name, "dataRights": rights}  # fmt: skip
        for path in sorted(folder.iterdir()):
            kind = _KIND_OF_SUFFIX[path.name.split("_")[1].split(".")[0]]
            products.append(
                visit
                | {"dataURI": f"mast:HST/product/{path.name}", "productFilename": path.name,
                   "productSubGroupDescription": kind,
                   "size": listed_sizes.get(path.name, path.stat().st_size)}
            )  # fmt: skip
        products += rows_beside_the_pipeline_files(visit, folder.parent.name, folder.name)
    return observations, products


class FakeMast:
    """The replayed portal and the download server, with what MAST has released so far."""

    def __init__(self, mast_side: Path, portal: MastPortalReplay, server: MastDownloadServer):
        self.mast_side, self.portal, self.server = mast_side, portal, server
        self.released: dict[str, datetime] = {}
        self.proprietary: set[str] = set()
        self.listed_sizes: dict[str, int] = {}
        self.public_on: dict[str, datetime] = {}

    def release(
        self, obs_ids: list[str], when: datetime, public_on: datetime | None = None
    ) -> None:
        """List ``obs_ids`` as observed at ``when``; under exclusive access until ``public_on``."""
        self.released.update(dict.fromkeys(obs_ids, when))
        if public_on is not None:
            self.proprietary.update(obs_ids)
            self.public_on.update(dict.fromkeys(obs_ids, public_on))
        observations, products = _catalogue(
            self.mast_side, self.released, self.proprietary, self.listed_sizes, self.public_on
        )
        self.portal.observations = self.portal.observations | {"data": observations}
        self.portal.products = self.portal.products | {"data": products}

    def visits(self) -> list[str]:
        return sorted(p.name for p in self.mast_side.glob("*/*/"))

    def files(self, obs_ids: list[str]) -> int:
        return len(self.file_names(obs_ids))

    def file_names(self, obs_ids: list[str]) -> list[str]:
        """The pipeline files MAST serves for these visits."""
        return sorted(
            p.name for o in obs_ids for p in next(self.mast_side.glob(f"*/{o}")).iterdir()
        )


@pytest.fixture
def fake_mast(
    mast_side: Path, monkeypatch: pytest.MonkeyPatch, dask_scheduler: str
) -> Iterator[FakeMast]:
    portal = replay_mast_portal(monkeypatch)
    with MastDownloadServer(mast_side / "store") as server, Client(dask_scheduler) as client:
        # Downloads run on the cluster's worker processes: they read the URL there.
        url = server.url  # a lambda using `server` would have to pickle its lock
        client.run(lambda: os.environ.update({DOWNLOAD_URL_ENV: url}))
        monkeypatch.setenv(DOWNLOAD_URL_ENV, url)
        try:
            yield FakeMast(mast_side, portal, server)
        finally:
            client.run(lambda: os.environ.pop(DOWNLOAD_URL_ENV, None))


def _options(
    tmp_path: Path, database_url: str, scheduler: str, **changes: object
) -> NightlyOptions:
    values: dict[str, object] = {
        "archive_root": tmp_path / "archive",
        "database_url": database_url,
        "scheduler": scheduler,
        "digest_dir": tmp_path / "digests",
        "today": TODAY,
        "progress": False,
        "selection": MastSelection(product_types=("FLT", "FLC", "IMA", "JIF", "JIT", "ASN")),
    }
    return NightlyOptions(**(values | changes))  # type: ignore[arg-type]


def _runs(engine: Engine) -> list:
    with engine.connect() as connection:
        return connection.execute(select(NightlyRun).order_by(NightlyRun.run_id)).all()


def test_a_synthetic_night_then_a_quiet_one(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    visits = fake_mast.visits()
    fake_mast.release(visits, datetime.now(UTC) - timedelta(hours=12))
    options = _options(tmp_path, database_url, dask_scheduler)

    first = run_nightly(options)

    n_files = fake_mast.files(visits)
    assert first.status == "succeeded", first.counts
    assert first.counts["products_found"] == first.counts["products_downloaded"] == n_files
    assert first.counts["files_ingested"] == n_files and first.counts["files_failed"] == 0
    # The pipeline's FITS files, once each: the HAP and HLA copies and previews MAST lists
    # beside them are passed over, and counted.
    assert sorted(s.name for s in fake_mast.server.served) == fake_mast.file_names(visits)
    assert first.counts["products_skipped"] == {
        "other_project": 2 * len(visits), "preview": len(visits),
    }  # fmt: skip
    assert first.digest is not None and not first.digest.nothing_new
    hopr = {item.subject for item in first.digest.verdicts if item.verdict == "hopr"}
    assert "iepp01" in {subject.lower() for subject in hopr}, "the visit, ipppss"
    assert {kind: path.exists() for kind, path in first.digest_paths.items()} == {
        "md": True, "html": True, "json": True,
    }  # fmt: skip
    with engine.connect() as connection:
        exposures = connection.execute(text("SELECT count(*) FROM exposure")).scalar_one()
    assert exposures == 90
    lead, items = dashboard_queries.nightly_headline(engine)[0]
    assert "need a HOPR" in lead and any(item.startswith("IEPP01 ") for item in items)

    second = run_nightly(options)

    assert second.status == "succeeded"
    # The overlap asks MAST about the last day again; nothing already here is fetched again.
    assert second.counts["products_found"] == second.counts["products_present"] == n_files
    assert second.counts["products_downloaded"] == 0
    assert second.counts["files_ingested"] == 0
    assert second.digest is not None and second.digest.nothing_new
    assert len(fake_mast.server.served) == n_files
    runs = _runs(engine)
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    assert runs[1].window_start == runs[0].window_end - timedelta(days=1)
    assert runs[0].ingest_run_id and runs[0].analysis_run_id
    stored = runs[0].digest
    assert stored["summary"] == json.loads(first.digest_paths["json"].read_text())["summary"]
    assert stored["files"]["html"] == str(first.digest_paths["html"])
    assert len(stored["verdicts"]) + stored["verdicts_not_stored"] == len(first.digest.verdicts)
    # The dashboard's overview shows the last night, with its seconds per stage.
    shown = dashboard_queries.last_nightly_run(engine)
    assert shown is not None and (shown.run_id, shown.status) == (runs[1].run_id, "succeeded")
    assert set(shown.counts["seconds"]) == {"discover", "download", "ingest", "analyze", "digest"}
    assert dashboard_queries.nightly_headline(engine) == [("Nothing new needs attention.", [])]


def test_proprietary_rows_and_stale_sizes_do_not_stop_the_pipeline_files(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    visits = fake_mast.visits()[:8]
    hidden, public = visits[0], visits[1:]
    fake_mast.proprietary.add(hidden)
    stale = fake_mast.file_names([visits[1]])[-1]
    real_size = (fake_mast.mast_side / "store" / stale).stat().st_size
    fake_mast.listed_sizes[stale] = real_size + 5 * 2880  # MAST's listing is out of date
    fake_mast.release(visits, datetime.now(UTC) - timedelta(hours=12))
    # Followed as observed, no token: the visit still in its exclusive access period is seen.
    selection = MastSelection(date_field="observation")
    options = _options(tmp_path, database_url, dask_scheduler, selection=selection)

    night = run_nightly(options)

    assert night.status == "succeeded", night.counts
    assert sorted(s.name for s in fake_mast.server.served) == fake_mast.file_names(public)
    assert night.counts["products_skipped"] == {
        "not_public": fake_mast.files([hidden]), "other_project": 16, "preview": 8,
    }  # fmt: skip
    assert night.counts["download_size_warnings"] == 1
    assert night.digest is not None
    [warning] = night.digest.warnings
    assert stale in warning.where
    assert f"MAST lists {real_size + 5 * 2880} bytes, the file has {real_size}" in warning.reason
    assert night.digest.skipped[SKIP_REASONS["not_public"]] == fake_mast.files([hidden])
    markdown = night.digest_paths["md"].read_text()
    assert "## Not fetched, by design" in markdown and "HAP and HLA products" in markdown
    assert "## Warnings (1)" in markdown
    # The file MAST lists with another size is in place: asked about the same days again,
    # it is not fetched again.
    again = run_nightly(dataclasses.replace(options, since=datetime.now(UTC) - timedelta(days=3)))
    assert again.counts["products_present"] == fake_mast.files(public)
    assert again.counts["products_downloaded"] == 0
    assert len(fake_mast.server.served) == fake_mast.files(public)


def _time_passes(engine: Engine) -> None:
    """Every outstanding file's next try comes due."""
    with engine.begin() as connection:
        connection.execute(
            update(DownloadFailure)
            .where(DownloadFailure.resolved_at.is_(None))
            .values(next_try_at=datetime.now(UTC) - timedelta(minutes=1))
        )


def test_a_file_that_fails_for_good_is_outstanding_and_the_nights_move_on(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    visits = fake_mast.visits()[:4]
    fake_mast.release(visits, datetime.now(UTC) - timedelta(hours=6))
    missing = fake_mast.file_names(visits[:1])[-1]
    fake_mast.server.inject(missing, "404", "404")  # MAST has it on the third try only
    options = _options(tmp_path, database_url, dask_scheduler, overlap=timedelta(0))

    first = run_nightly(options)

    assert first.status == "succeeded", first.counts
    assert first.counts["downloads_failed"] == first.counts["downloads_failed_permanent"] == 1
    assert first.counts["files_outstanding"] == 1
    assert first.digest is not None and not first.digest.nothing_new
    [outstanding] = first.digest.outstanding
    assert (outstanding.filename, outstanding.attempts) == (missing, 1)
    assert outstanding.failed_tonight and "HTTP 404" in outstanding.reason
    night_one = _runs(engine)[0]
    assert outstanding.next_try_at == _as_utc(night_one.window_end) + timedelta(days=1)
    assert first.digest.problems == []  # listed as outstanding, not as a problem of the night
    [(lead, items)] = [b for b in _summary(first) if "outstanding" in b[0]]
    assert lead.startswith("1 file from MAST is outstanding") and missing in items[0]
    with engine.connect() as connection:
        record = connection.execute(select(DownloadFailure.__table__)).one()
    assert (record.filename, record.attempts, record.resolved_at) == (missing, 1, None)
    assert record.path == str(tmp_path / "archive" / record.proposal_id / record.obs_id / missing)
    assert (record.project, record.data_rights, record.product_type) == ("CALWF3", "PUBLIC", "JIT")

    second = run_nightly(options)

    # The window moved on; the file waits for its next try, still listed.
    night_two = _runs(engine)[1]
    assert second.status == "succeeded"
    assert night_two.window_start == night_one.window_end
    assert len(fake_mast.server.requests_for(missing)) == 1
    assert second.counts["retries_waiting"] == 1
    assert second.digest is not None and second.digest.nothing_new
    assert [o.filename for o in second.digest.outstanding] == [missing]

    _time_passes(engine)
    third = run_nightly(options)

    # Due: asked for again from its record (the window has moved past its release); missing
    # again, so the next wait is three days.
    assert third.counts["products_found"] == 0 and third.counts["retries_due"] == 1
    assert len(fake_mast.server.requests_for(missing)) == 2
    assert third.digest is not None
    [again] = third.digest.outstanding
    assert again.attempts == 2 and again.first_failed_at == outstanding.first_failed_at
    assert again.next_try_at == _as_utc(_runs(engine)[2].window_end) + timedelta(days=3)

    _time_passes(engine)
    fourth = run_nightly(options)

    assert fourth.status == "succeeded"
    assert fourth.counts["products_downloaded"] == fourth.counts["files_ingested"] == 1
    assert fourth.counts["files_outstanding"] == 0
    assert fourth.digest is not None and fourth.digest.outstanding == []
    with engine.connect() as connection:
        record = connection.execute(select(DownloadFailure.__table__)).one()
    assert record.resolved_at is not None and record.attempts == 2


def test_outstanding_files_wait_1_3_7_days_then_weekly() -> None:
    failed = datetime(2026, 3, 1, 3, 15, tzinfo=UTC)
    waits = [next_try(failed, attempts, RETRY_AFTER) - failed for attempts in range(1, 7)]
    assert [wait.days for wait in waits] == [1, 3, 7, 7, 7, 7]
    with pytest.raises(ValueError, match="attempts must be 1 or more"):
        next_try(failed, 0, RETRY_AFTER)


def test_a_file_due_tomorrow_is_due_to_tomorrows_run_even_if_it_starts_a_little_early() -> None:
    last_night = datetime(2026, 3, 1, 3, 15, 20, tzinfo=UTC)
    item = Outstanding(
        MastProduct("mast:HST/product/x_jit.fits", "x_jit.fits", "x", "17097", "JIT", None),
        "HTTP 404 Not Found", 1, last_night, next_try(last_night, 1, RETRY_AFTER),
    )  # fmt: skip
    tonight = last_night + timedelta(days=1) - timedelta(seconds=30)
    assert split_due([item], tonight) == ([item], [])
    assert split_due([item], last_night + timedelta(hours=12)) == ([], [item])


def _summary(result: nightly_module.NightlyResult) -> list[tuple[str, list[str]]]:
    stored = json.loads(result.digest_paths["json"].read_text())["summary"]
    return [(block["lead"], block["items"]) for block in stored]


def test_the_next_night_fetches_only_what_was_released_since(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    visits = fake_mast.visits()
    old, new = visits[:-3], visits[-3:]
    fake_mast.release(old, datetime.now(UTC) - timedelta(days=3))
    options = _options(tmp_path, database_url, dask_scheduler, overlap=timedelta(0))
    run_nightly(options)
    served_before = len(fake_mast.server.served)

    fake_mast.release(new, datetime.now(UTC))
    second = run_nightly(options)

    assert second.counts["products_found"] == fake_mast.files(new)
    assert len(fake_mast.server.served) - served_before == fake_mast.files(new)
    assert second.counts["files_ingested"] == fake_mast.files(new)


def test_failed_downloads_make_a_failed_run_and_the_next_run_fetches_them(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    visits = fake_mast.visits()[:6]
    fake_mast.release(visits, datetime.now(UTC) - timedelta(hours=1))
    broken = sorted(fake_mast.mast_side.glob(f"*/{visits[0]}/*_jit.fits"))[0].name
    fake_mast.server.inject(broken, *["503"] * 3)
    options = _options(tmp_path, database_url, dask_scheduler, retries=2, retry_wait_s=0.0)

    first = run_nightly(options)

    assert first.status == "failed"
    assert first.counts["downloads_failed"] == 1
    assert first.digest is not None
    assert any(broken in problem.where for problem in first.digest.problems)
    second = run_nightly(options)
    assert second.status == "succeeded"
    assert second.counts["products_downloaded"] == 1
    assert second.counts["files_ingested"] == 1
    runs = _runs(engine)
    # No run succeeded before the second: it covered the same window again, from the start.
    assert runs[1].window_start == runs[0].window_start
    assert "next run asks for them again" in runs[0].message


def test_a_run_that_errors_is_recorded_and_the_next_one_finishes_its_work(
    fake_mast: FakeMast,
    database_url: str,
    engine: Engine,
    dask_scheduler: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_mast.release(fake_mast.visits(), datetime.now(UTC) - timedelta(hours=12))
    options = _options(tmp_path, database_url, dask_scheduler)

    def analysis_breaks(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the analysis machine caught fire")

    monkeypatch.setattr(nightly_module, "run_analysis", analysis_breaks)
    with pytest.raises(RuntimeError, match="caught fire"):
        run_nightly(options)
    monkeypatch.undo()  # the portal replay too: make it again
    monkeypatch.setenv(DOWNLOAD_URL_ENV, fake_mast.server.url)
    fake_mast.portal = replay_mast_portal(monkeypatch)
    fake_mast.release(fake_mast.visits(), datetime.now(UTC) - timedelta(hours=12))

    second = run_nightly(options)

    errored, finished = _runs(engine)
    assert (errored.status, errored.stage) == ("error", "analyze")
    assert "caught fire" in errored.message
    assert second.status == "succeeded"
    assert second.counts["products_downloaded"] == 0  # all fetched by the run that errored
    assert second.counts["exposures_analyzed"] == 90
    assert finished.window_start == errored.window_start
    assert second.digest is not None
    assert any(item.verdict == "hopr" for item in second.digest.verdicts)


def test_a_dead_run_is_marked_aborted_and_its_window_covered(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    fake_mast.release(fake_mast.visits()[:4], datetime.now(UTC) - timedelta(days=2))
    now = datetime.now(UTC)
    with engine.begin() as connection:
        three_days_ago = now - timedelta(days=3)
        succeeded = {"started_at": three_days_ago, "finished_at": three_days_ago,
                     "status": "succeeded", "stage": "digest", "date_field": "release",
                     "window_start": now - timedelta(days=10), "window_end": three_days_ago,
                     "parameters": {}, "host": socket.gethostname(), "pid": 1}  # fmt: skip
        connection.execute(insert(NightlyRun).values(succeeded))
        dead_id = connection.execute(
            insert(NightlyRun)
            .values(
                succeeded
                | {
                    "status": "running",
                    "stage": "ingest",
                    "finished_at": None,
                    "started_at": now - timedelta(days=1),
                    "window_start": now - timedelta(days=4),
                    "window_end": now - timedelta(days=1),
                }
            )
            .returning(NightlyRun.run_id)
        ).scalar_one()
        connection.execute(
            insert(IngestRun).values(
                started_at=now - timedelta(days=1), status="running",
                parameters={"nightly_run_id": dead_id},
            )
        )  # fmt: skip

    result = run_nightly(_options(tmp_path, database_url, dask_scheduler))

    assert result.aborted_runs == [dead_id]
    assert result.status == "succeeded"
    assert result.counts["products_downloaded"] == fake_mast.files(fake_mast.visits()[:4])
    runs = _runs(engine)
    assert runs[1].status == "aborted" and runs[1].finished_at is not None
    # The window starts from the last run that succeeded, not from the dead one.
    assert runs[2].window_start == runs[0].window_end - timedelta(days=1)
    with engine.connect() as connection:
        orphan = connection.execute(
            text("SELECT status FROM ingest_run ORDER BY run_id LIMIT 1")
        ).scalar_one()
    assert orphan == "aborted"


def test_a_second_nightly_run_waits_for_none_and_says_why(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    with job_lock(engine, "nightly"):
        result = CliRunner().invoke(
            main, ["nightly", "--db", database_url, "--archive", str(tmp_path / "a")]
        )
    assert result.exit_code == 75, result.output
    assert "another `hstmon nightly` is running on this database" in result.output
    assert _runs(engine) == []


def test_the_command_line_runs_the_night(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    fake_mast.release(fake_mast.visits()[:5], datetime.now(UTC) - timedelta(hours=3))
    refused = fake_mast.file_names(fake_mast.visits()[:1])[0]
    fake_mast.server.inject(refused, "404")
    arguments = [
        "nightly", "--db", database_url, "--archive", str(tmp_path / "archive"),
        "--scheduler", dask_scheduler, "--digest-dir", str(tmp_path / "digests"), "--no-progress",
    ]  # fmt: skip
    result = CliRunner().invoke(main, arguments)

    assert result.exit_code == 0, result.output
    assert "Nightly run 1: succeeded" in result.output
    assert "Digest (html):" in result.output
    assert (
        len(list((tmp_path / "archive").rglob("*.fits")))
        == fake_mast.files(fake_mast.visits()[:5]) - 1
    )
    # The file MAST did not have is printed, with when it is asked for again.
    assert "1 file from MAST is outstanding" in result.output
    [line] = [line for line in result.output.splitlines() if refused in line]
    assert "HTTP 404" in line and "next try from" in line and "(failed 1 night)" in line


def test_the_token_is_used_and_stored_nowhere(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    # MAST has nothing new: no worker needs to log in (the login server is out of reach here;
    # tests/test_mast.py checks the login and the download with a token).
    fake_mast.release([], datetime.now(UTC))
    token = "s3cr3t-mast-token-for-this-test"
    arguments = [
        "nightly", "--db", database_url, "--archive", str(tmp_path / "archive"),
        "--scheduler", dask_scheduler, "--digest-dir", str(tmp_path / "digests"),
        "--no-progress", "--token", token,
    ]  # fmt: skip
    result = CliRunner().invoke(main, arguments)

    assert result.exit_code == 0, result.output
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM nightly_run")).all()
    stored = repr(rows)
    assert token not in stored and token not in result.output
    assert _runs(engine)[0].parameters["with_token"] is True
    for path in (tmp_path / "digests").iterdir():
        assert token not in path.read_text()


def test_an_instrument_without_a_known_pipeline_needs_its_project(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    arguments = ["nightly", "--db", db, "--archive", str(tmp_path), "--instrument", "NICMOS/NIC2"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2, result.output
    assert "no calibration pipeline known for NICMOS/NIC2" in result.output
    assert "--project" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "store.sqlite").exists()  # refused before anything ran


def test_nightly_help_explains_the_job() -> None:
    result = CliRunner().invoke(main, ["nightly", "--help"])
    assert result.exit_code == 0
    for words in ("Discover", "Download", "Ingest", "Analyze", "Digest", "lock", "--token"):
        assert words in result.output


def test_mast_out_of_reach_is_a_recorded_error_with_a_readable_message(
    fake_mast: FakeMast, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    fake_mast.release(fake_mast.visits()[:2], datetime.now(UTC))
    fake_mast.portal.faults["Mast.Caom.Filtered"] = ["connection"] * 5
    arguments = ["nightly", "--db", database_url, "--archive", str(tmp_path / "archive"),
                 "--digest-dir", str(tmp_path / "digests"), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(main, arguments)

    assert result.exit_code == 1, result.output
    assert "MAST:" in result.output and "could not reach MAST" in result.output
    assert "Traceback" not in result.output
    (run,) = _runs(engine)
    assert (run.status, run.stage) == ("error", "discover")
    assert "MastError" in run.message


def _archive_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("killed_after_share", [0.25, 0.75])
def test_a_night_killed_during_its_downloads_then_run_again_equals_a_clean_night(
    fake_mast: FakeMast,
    database_url: str,
    engine: Engine,
    dask_scheduler: str,
    tmp_path: Path,
    killed_after_share: float,
) -> None:
    """SIGKILL of the night (and its Dask workers) with part of its files fetched: the same
    night again fetches the rest and leaves the archive and the database a clean night would."""
    visits = fake_mast.visits()[:12]
    fake_mast.release(visits, datetime.now(UTC) - timedelta(hours=12))
    fake_mast.server.latency_s = 0.05  # downloads long enough to be interrupted in the middle
    n_files = fake_mast.files(visits)
    kind = make_url(database_url).get_backend_name()
    with scratch_database(kind, tmp_path / "clean", "hstmon_night") as clean_url:
        clean_night = run_nightly(_options(tmp_path / "clean", clean_url, dask_scheduler))
        assert clean_night.status == "succeeded", clean_night.counts
        clean_engine = make_engine(clean_url)
        clean = database_snapshot(clean_engine)
        clean_engine.dispose()
    clean_archive = _archive_files(tmp_path / "clean" / "archive")
    assert len(clean_archive) == n_files

    # The same night in another database, on the same archive path, killed mid-download.
    shutil.rmtree(tmp_path / "clean" / "archive")
    options = _options(tmp_path / "clean", database_url, dask_scheduler)
    served_before = len(fake_mast.server.served)
    night = start_night_in_own_session(
        fake_mast.portal, dataclasses.replace(options, scheduler=None, workers=2)
    )
    deadline = time.monotonic() + 180
    while len(fake_mast.server.served) - served_before < killed_after_share * n_files:
        assert night.is_alive(), "the night ended before it could be killed"
        assert time.monotonic() < deadline, "the night never fetched its files"
        time.sleep(0.005)
    os.killpg(night.pid, signal.SIGKILL)
    night.join(30)
    fetched = _archive_files(tmp_path / "clean" / "archive")
    assert 0 < len(fetched) < n_files, "the kill should land during the downloads"

    again = run_nightly(options)
    assert again.status == "succeeded", again.counts
    assert again.aborted_runs, "the killed night is found dead and marked aborted"
    assert _archive_files(tmp_path / "clean" / "archive") == clean_archive
    assert database_snapshot(engine) == clean


def test_a_night_records_the_programs_mast_keeps_exclusive_and_leaves_them_out(
    fake_mast: FakeMast, database_url: str, engine: Engine, dask_scheduler: str, tmp_path: Path
) -> None:
    """Without a token the exclusive visits are not fetched, but their program is recorded as
    proprietary (source MAST, until its release), before any file of the night lands."""
    visits = fake_mast.visits()
    folder = next(fake_mast.mast_side.glob("*/iepp01010"))
    program = int(folder.parent.name)
    exclusive = [p.name for p in folder.parent.iterdir()]  # every visit of its program
    public = [v for v in visits if v not in exclusive]
    public_on = datetime.now(UTC) + timedelta(days=300)
    observed = datetime.now(UTC) - timedelta(hours=12)
    fake_mast.release(public, observed)
    fake_mast.release(exclusive, observed, public_on=public_on)
    selection = MastSelection(date_field="observation",
                              product_types=("FLT", "FLC", "IMA", "JIF", "JIT", "ASN"))  # fmt: skip
    night = run_nightly(_options(tmp_path, database_url, dask_scheduler, selection=selection))

    assert night.status == "succeeded", night.counts
    assert night.counts["files_ingested"] == fake_mast.files(public)
    assert night.counts["products_skipped"]["not_public"] == fake_mast.files(exclusive)
    (status,) = access_report(engine, [program])
    assert status.proprietary
    assert (status.source, status.data_rights) == ("mast", "EXCLUSIVE_ACCESS")
    assert status.exclusive_until is not None
    assert abs(status.exclusive_until - public_on) < timedelta(seconds=1)
    assert night.digest is not None
    for path in night.digest_paths.values():
        assert "iepp01" not in path.read_text().lower(), path
