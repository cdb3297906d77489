"""A synthetic night of `hstmon nightly`: files, seconds per stage, and what was flagged.

Run:  .venv/bin/python benchmarks/nightly_benchmark.py [--exposures 600] [--images 12]
      [--postgres URL]

MAST is out of reach here, so one run stands a synthetic night in for it: a synthetic WFC3
archive of plain FITS files (jitter files for every exposure, FLC files for some) is "released"
through the recorded MAST portal replayed under astroquery (tests/mast_fixtures.py) and served
by a real HTTP server on 127.0.0.1 at MAST's download path. It measures, in one run:
  (a) the notebook's way of fetching: astroquery `Observations.download_file` file after file;
  (b) `hstmon nightly`: discovery, download on Dask, ingest, analysis and digest (seconds per
      stage from `nightly_run.counts`), then a second, quiet night;
and prints the ratio of (b)'s download stage to (a), and the digest's headline. The download
server is local, so download seconds measure hstmon's overheads, not the network.
A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from astroquery.mast import Observations  # noqa: E402
from mast_fixtures import (  # noqa: E402
    MastDownloadServer,
    recorded,
    replay_mast_portal,
    rows_beside_the_pipeline_files,
)
from scratch import scratch_postgres  # noqa: E402

from analysis.digest import render_text  # noqa: E402
from analysis.nightly import NightlyOptions, run_nightly  # noqa: E402
from ingest.mast import DOWNLOAD_URL_ENV, MastSelection, to_mjd  # noqa: E402
from ingest.synth import write_archive  # noqa: E402
from ingest.synth_images import write_archive_images  # noqa: E402

_KINDS = {"asn": "ASN", "jif": "JIF", "jit": "JIT", "flc": "FLC", "flt": "FLT", "ima": "IMA"}


def make_night(directory: Path, exposures: int, images: int, seed: int) -> Path:
    """The synthetic MAST holdings; returns the flat folder the download server serves."""
    written = write_archive(directory, exposures, seed, gzip=False)
    if images:
        write_archive_images(directory, written, images, seed)
    store = directory / "store"
    store.mkdir()
    for path in directory.glob("*/*/*.fits*"):
        os.link(path, store / path.name)
    return store


def catalogue(directory: Path, released: datetime) -> tuple[list, list]:
    """CAOM observation and product rows (the recorded rows' columns) for every visit, with the
    HAP, HLA and preview rows MAST lists beside the pipeline files (passed over by discovery)."""
    observation = recorded("caom_filtered.json")["data"][0]
    product = recorded("caom_products.json")["data"][0]
    observations, products = [], []
    mjd = to_mjd(released)
    for number, folder in enumerate(sorted(directory.glob("[0-9]*/*/"))):
        obsid = str(3_000_000_000 + number)
        identity = {"obs_id": folder.name.upper(), "proposal_id": folder.parent.name}
        observations.append(
            observation | identity | {"obsid": obsid, "t_obs_release": mjd, "t_min": mjd - 1}
        )
        visit = product | identity | {"obsID": obsid, "parent_obsid": obsid}
        for path in sorted(folder.glob("*.fits*")):
            kind = _KINDS[path.name.split("_")[1].split(".")[0]]
            products.append(
                visit
                | {"productFilename": path.name, "dataURI": f"mast:HST/product/{path.name}",
                   "productSubGroupDescription": kind, "size": path.stat().st_size}
            )  # fmt: skip
        products += rows_beside_the_pipeline_files(visit, folder.parent.name, folder.name)
    return observations, products


def notebook_downloads(store: Path, url: str, target: Path) -> tuple[float, int]:
    """The notebook's way: astroquery's download_file, one file after another."""
    target.mkdir()
    started = time.perf_counter()
    names = sorted(p.name for p in store.iterdir())
    fetched = 0
    for name in names:
        status, message, _ = Observations.download_file(
            f"mast:HST/product/{name}", local_path=str(target / name), base_url=url, verbose=False
        )
        if status != "COMPLETE":
            raise RuntimeError(f"the notebook's way failed on {name}: {message}")
        fetched += 1
    return time.perf_counter() - started, fetched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=600)
    parser.add_argument("--images", type=int, default=12, help="exposures that get FLC files")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", metavar="URL",
                        help="a PostgreSQL server to measure on, in a scratch database "
                        "(default: SQLite)")  # fmt: skip
    latency_help = ("wait before each answer of the download server, standing in for the "
                    "internet round trips to MAST (0: a local server's own speed)")  # fmt: skip
    parser.add_argument("--latency-ms", type=float, default=100.0, help=latency_help)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="hstmon-night-") as tmp,
        pytest.MonkeyPatch.context() as mp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        database_url = (
            stack.enter_context(scratch_postgres(args.postgres))
            if args.postgres
            else f"sqlite:///{work / 'nightly.sqlite'}"
        )
        store = make_night(work / "mast", args.exposures, args.images, args.seed)
        n_files = sum(1 for _ in store.iterdir())
        size_mb = sum(p.stat().st_size for p in store.iterdir()) / 1e6
        portal = replay_mast_portal(mp)
        observations, products = catalogue(work / "mast", datetime.now(UTC) - timedelta(hours=6))
        portal.observations = portal.observations | {"data": observations}
        portal.products = portal.products | {"data": products}
        with MastDownloadServer(store) as server:
            server.latency_s = args.latency_ms / 1000
            mp.setenv(DOWNLOAD_URL_ENV, server.url)  # the local cluster's workers inherit it
            notebook_s, _ = notebook_downloads(store, server.url, work / "notebook")
            options = NightlyOptions(
                archive_root=work / "archive",
                selection=MastSelection(),
                database_url=database_url,
                workers=args.workers,
                digest_dir=work / "digests",
                today=date(2022, 3, 1),
                progress=False,
            )
            started = time.perf_counter()
            night = run_nightly(options)
            night_s = time.perf_counter() - started
            started = time.perf_counter()
            quiet = run_nightly(options)
            quiet_s = time.perf_counter() - started

    seconds = night.counts["seconds"]
    store_kind = options.database_url.split(":")[0]
    print(f"Synthetic night: {args.exposures} exposures, {n_files} files, {size_mb:.0f} MB "
          f"({args.images} exposures with FLC files), database {store_kind}, "
          f"download server latency {args.latency_ms:.0f} ms")  # fmt: skip
    print(f"hstmon nightly: {night.status} in {night_s:.1f} s wall")
    for stage in ("discover", "download", "ingest", "analyze", "digest"):
        print(f"  {stage:9s} {seconds[stage]:7.2f} s")
    rest = night_s - sum(seconds.values())
    print(f"  other     {rest:7.2f} s (starting and stopping the local Dask cluster, schema check)")
    print(f"  counts: { ({k: v for k, v in night.counts.items() if k != 'seconds'}) }")
    print(f"notebook's way of downloading (astroquery download_file, serial): {notebook_s:.2f} s; "
          f"hstmon's download stage {seconds['download']:.2f} s: "
          f"{notebook_s / seconds['download']:.1f}x")  # fmt: skip
    print(f"quiet second night: {quiet.status} in {quiet_s:.1f} s wall, "
          f"downloaded {quiet.counts['products_downloaded']}, "
          f"ingested {quiet.counts['files_ingested']}")  # fmt: skip
    if night.digest is not None:
        print("digest headline:")
        print(render_text(night.digest, details=False))


if __name__ == "__main__":
    main()
