"""`hstmon ingest` on real databases: exact values, idempotency, order independence, bad files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from astropy.io import fits
from conftest import database_snapshot
from sqlalchemy import Engine, text

from ingest.pipeline import run_ingest


def _scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def _copy(real_data: Path, target: Path, *names: str) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(real_data / name, target / name)
    return target


JITTER_FILES = (
    "ldfd01010_jif.fits.gz",
    "ldfd01010_jit.fits.gz",
    "ldfd01010_asn.fits.gz",
    "ldngz2szj_jit.fits.gz",
    "ldxe02010_jit.fits.gz",
)


def test_real_files_land_in_the_right_columns(
    real_data: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    summary = run_ingest([real_data], database_url, scheduler=dask_scheduler)
    assert summary.counts.get("failed", 0) == 0
    assert summary.counts == {"ingested": 8}, "5 jitter files and 3 science files"
    with engine.connect() as connection:
        vn = (
            connection.execute(text("SELECT * FROM exposure WHERE exposure_id = 'ldfd01vn'"))
            .one()
            ._mapping
        )
    assert vn["rootname"] == "ldfd01vnq" and vn["jitter_name"] == "ldfd01vnj"
    assert vn["asn_id"] == "ldfd01010" and vn["proposid"] == 14933
    assert (vn["v2_rms_mas"], vn["v3_rms_mas"]) == (3.4, 5.7)
    assert vn["jit_n_samples"] == 372 and vn["jit_n_fill"] == 0
    assert vn["tdf_down"] is False or vn["tdf_down"] == 0
    assert vn["gsfail"] is None and vn["gsacq"] is not None
    assert _scalar(engine, "SELECT count(*) FROM exposure WHERE asn_id = 'ldfd01010'") == 4
    assert (
        _scalar(engine, "SELECT count(*) FROM jitter_sample WHERE exposure_id = 'ldfd01vn'") == 372
    )
    sz = "SELECT {} FROM jitter_sample WHERE exposure_id = 'ldngz2sz'"
    assert _scalar(engine, sz.format("count(*)")) == 21
    assert _scalar(engine, sz.format("count(*) - count(si_v2_avg)")) == 13
    assert _scalar(engine, sz.format("count(*) - count(term_ang)")) == 21
    assert _scalar(engine, sz.format("max(take_data)")) == 1
    assert _scalar(engine, "SELECT max(si_v2_avg) FROM jitter_sample") < 1.0
    assert (
        _scalar(engine, "SELECT asn_id FROM exposure WHERE exposure_id = 'ldngz2sz'") == "ldngz2szj"
    )
    asn = "SELECT {} FROM association WHERE asn_id = '{}'"
    assert _scalar(engine, asn.format("config", "ldfd01010")) == "COS/FUV"
    assert _scalar(engine, asn.format("guidecmd", "ldfd01010")) == "FINE LOCK"
    assert _scalar(engine, asn.format("tv3_rms_mas", "ldfd01010")) == pytest.approx(5.9596560)
    # ldxe02010 came without its JIF: the exposures exist, the JIF columns wait for it.
    assert _scalar(engine, asn.format("guidecmd", "ldxe02010")) is None
    assert _scalar(engine, "SELECT count(*) FROM exposure WHERE asn_id = 'ldxe02010'") == 4
    assert (
        _scalar(
            engine,
            "SELECT count(*) FROM exposure WHERE asn_id = 'ldxe02010' AND v2_rms_mas IS NULL",
        )
        == 4
    )
    jitter_hdus, science_hdus = 5 + 5 + 2 + 2 + 5, 24 + 16 + 21
    assert _scalar(engine, "SELECT count(*) FROM fits_header") == jitter_hdus + science_hdus


def test_same_data_on_sqlite_and_postgresql(
    real_data: Path, sqlite_url: str, postgres_url: str, dask_scheduler: str
) -> None:
    from models.database import make_engine

    snapshots = []
    for url in (sqlite_url, postgres_url):
        run_ingest([real_data], url, scheduler=dask_scheduler)
        engine = make_engine(url)
        snapshot = database_snapshot(engine)
        engine.dispose()
        # Backends differ in how they return timestamps and JSON key order: compare as text.
        snapshots.append(
            {t: sorted(repr(_normal(r)) for r in rows) for t, rows in snapshot.items()}
        )
    assert snapshots[0] == snapshots[1]


def _normal(row: tuple) -> tuple:
    import datetime as dt
    import json

    def value(v: object) -> object:
        if isinstance(v, dt.datetime):
            return v.replace(tzinfo=None).isoformat()
        if isinstance(v, dict):
            return json.dumps(v, sort_keys=True)
        if isinstance(v, str) and v.startswith("{"):
            return json.dumps(json.loads(v), sort_keys=True)
        if isinstance(v, bool):
            return int(v)
        return v

    return tuple(value(v) for v in row)


def test_second_run_does_no_work_and_changes_nothing(
    real_data: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    run_ingest([real_data], database_url, scheduler=dask_scheduler)
    before = database_snapshot(engine)
    again = run_ingest([real_data], database_url, scheduler=dask_scheduler)
    assert again.counts.get("ingested", 0) == 0 and again.counts["unchanged"] == 8
    assert again.samples == 0
    assert database_snapshot(engine) == before


def test_touched_file_with_same_bytes_is_not_parsed_again(
    real_data: Path, tmp_path: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    archive = _copy(real_data, tmp_path / "archive", "ldfd01010_jit.fits.gz")
    run_ingest([archive], database_url, scheduler=dask_scheduler)
    (archive / "ldfd01010_jit.fits.gz").touch()
    again = run_ingest([archive], database_url, scheduler=dask_scheduler)
    assert again.counts == {"unchanged": 1}
    third = run_ingest([archive], database_url, scheduler=dask_scheduler)
    assert third.counts == {"unchanged": 1}


def test_jit_and_jif_fill_in_either_order(
    real_data: Path, tmp_path: Path, sqlite_url: str, dask_scheduler: str
) -> None:
    from models.database import make_engine

    jit = _copy(real_data, tmp_path / "jit", "ldfd01010_jit.fits.gz")
    jif = _copy(real_data, tmp_path / "jif", "ldfd01010_jif.fits.gz", "ldfd01010_asn.fits.gz")
    snapshots = []
    for name, order in (("a", [jit, jif]), ("b", [jif, jit]), ("c", [[jit, jif]])):
        url = sqlite_url.replace("hstmon.sqlite", f"{name}.sqlite")
        for paths in order:
            run_ingest(paths if isinstance(paths, list) else [paths], url, scheduler=dask_scheduler)
        engine = make_engine(url)
        snapshots.append(database_snapshot(engine))
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT v2_rms_mas, jit_n_samples, rootname FROM exposure"
                    " WHERE exposure_id = 'ldfd01vn'"
                )
            ).one()
        engine.dispose()
        assert tuple(row) == (3.4, 372, "ldfd01vnq")
    assert snapshots[0] == snapshots[1] == snapshots[2]


def test_changed_file_replaces_its_rows(
    real_data: Path, tmp_path: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    target = archive / "ldfd01010_jit.fits"
    target.write_bytes(gzip.decompress((real_data / "ldfd01010_jit.fits.gz").read_bytes()))
    run_ingest([archive], database_url, scheduler=dask_scheduler)
    assert _scalar(engine, "SELECT count(*) FROM jitter_sample") == 372 + 373 + 471 + 471

    # Reprocessed: the last exposure is gone and the first one is shorter.
    with fits.open(target) as hdul:
        first = fits.BinTableHDU(data=hdul[1].data[:100], header=hdul[1].header)
        fits.HDUList([hdul[0], first, hdul[2], hdul[3]]).writeto(target, overwrite=True)
    summary = run_ingest([archive], database_url, scheduler=dask_scheduler)
    assert summary.counts == {"ingested": 1}
    assert _scalar(engine, "SELECT count(*) FROM jitter_sample") == 100 + 373 + 471
    assert (
        _scalar(engine, "SELECT jit_n_samples FROM exposure WHERE exposure_id = 'ldfd01vn'") == 100
    )
    # The exposure no longer in the file keeps its identity but none of the file's values.
    assert (
        _scalar(engine, "SELECT jit_n_samples FROM exposure WHERE exposure_id = 'ldfd01vt'") is None
    )
    assert _scalar(engine, "SELECT count(*) FROM fits_header") == 4


def test_bad_files_are_recorded_and_the_run_goes_on(
    real_data: Path, tmp_path: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    archive = _copy(real_data, tmp_path / "archive", *JITTER_FILES)
    data = (real_data / "ldfd01010_jit.fits.gz").read_bytes()
    (archive / "icut01010_jit.fits.gz").write_bytes(data[:5000])
    (archive / "ihtm01010_jif.fits").write_text("<html>not found</html>")
    summary = run_ingest([archive], database_url, scheduler=dask_scheduler)
    assert summary.failed == 2 and summary.counts["ingested"] == 5
    assert sorted(Path(p).name for p, _ in summary.failures) == [
        "icut01010_jit.fits.gz", "ihtm01010_jif.fits",
    ]  # fmt: skip
    with engine.connect() as connection:
        errors = dict(
            connection.execute(
                text("SELECT kind, error FROM source_file WHERE status = 'failed'")
            ).all()
        )
    assert "truncated gzip" in errors["jit"] and "not a FITS file" in errors["jif"]
    assert _scalar(engine, "SELECT count(*) FROM exposure") == 9
    status = _scalar(engine, "SELECT status FROM ingest_run ORDER BY run_id DESC LIMIT 1")
    assert status == "failed"

    # Fixed upstream: the re-downloaded file replaces the failure.
    shutil.copy2(real_data / "ldfd01010_jit.fits.gz", archive / "icut01010_jit.fits.gz")
    again = run_ingest([archive], database_url, scheduler=dask_scheduler)
    assert again.counts == {"ingested": 1, "unchanged": 6}
    assert _scalar(engine, "SELECT count(*) FROM source_file WHERE status = 'failed'") == 1
