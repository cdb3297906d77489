"""Ingest throughput of hstmon against the notebook's way and against the raw read rate.

Run:  .venv/bin/python benchmarks/ingest_benchmark.py [--exposures 2400] [--postgres URL]

One run generates a synthetic archive and measures, on this machine:
  (a) the notebook's way: fits.getheader(file, ext)[keyword] per keyword, Table(fits.getdata(...))
      per extension, one ORM add per row (on a subset of sets: it is slow);
  (b) `hstmon ingest` into SQLite, (c) into PostgreSQL (a database created for the run);
  the raw read rate of the JIT tables (astropy, and hstmon's reader), and the peak memory of the
  ingest process tree at half and full archive size (flat memory means the ratio stays near 1).
It prints exposures/s and the ratios. A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from astropy.io import fits
from astropy.table import Table
from scratch import scratch_postgres
from sqlalchemy import text
from sqlalchemy.orm import Session

from ingest.fits_blocks import read_hdus
from ingest.synth import write_archive
from models.database import make_engine, upgrade
from models.tables import JIT_COLUMNS, Exposure, JitterSample

JIF_KEYWORDS = ("EXPNAME", "GUIDEACT", "GSACQ", "ACTGSSEP", "GSSEPRMS", "NLOSSES", "CRVAL1",
                "CRVAL2", "V2_RMS", "V3_RMS", "GSFAIL")  # fmt: skip


def _jitter_sets(archive: Path) -> list[tuple[Path | None, Path]]:
    """(jif or None, jit) pairs of the archive."""
    sets = []
    for jit in sorted(archive.rglob("*_jit.fits*")):
        jif = jit.with_name(jit.name.replace("_jit.", "_jif."))
        sets.append((jif if jif.exists() else None, jit))
    return sets


def notebook_way(sets: list[tuple[Path | None, Path]], url: str) -> int:
    """The seed notebook's access pattern, into the same tables; returns exposures written."""
    engine = make_engine(url)
    exposures = 0
    with Session(engine) as session:
        for jif, jit in sets:
            n_ext = fits.getheader(jit, 0)["NEXTEND"]
            for ext in range(1, n_ext + 1):
                keywords = {}
                if jif is not None:
                    for keyword in JIF_KEYWORDS:
                        try:
                            keywords[keyword] = fits.getheader(jif, ext)[keyword]
                        except KeyError:
                            keywords[keyword] = None
                table = Table(fits.getdata(jit, ext))
                expname = fits.getheader(jit, ext)["EXPNAME"].strip().lower()
                rms = keywords.get("V2_RMS")
                session.add(Exposure(exposure_id=expname[:8], jitter_name=expname,
                                     v2_rms_mas=None if rms == -32767 else rms))  # fmt: skip
                for index, row in enumerate(table):
                    values = {sql: float(row[name]) for name, sql, _, _ in JIT_COLUMNS}
                    session.add(JitterSample(exposure_id=expname[:8], sample_index=index, **values))
                exposures += 1
        session.commit()
    engine.dispose()
    return exposures


def raw_read_rates(sets: list[tuple[Path | None, Path]]) -> dict[str, float]:
    """JIT rows/s: astropy (open + every table's data) and hstmon's reader (headers + tables)."""
    rates = {}
    started, rows = time.perf_counter(), 0
    for _, jit in sets:
        with fits.open(jit) as hdul:
            rows += sum(len(hdu.data) for hdu in hdul[1:])
    rates["astropy"] = rows / (time.perf_counter() - started)
    started = time.perf_counter()
    for _, jit in sets:
        raw = jit.read_bytes()
        read_hdus(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw, jit.name)
    rates["hstmon reader"] = rows / (time.perf_counter() - started)
    rates["rows"] = rows
    return rates


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def hstmon_ingest(archive: Path, url: str, workers: int) -> tuple[float, int]:
    """Seconds for `hstmon ingest` end to end (local cluster start included), peak tree RSS."""
    command = [sys.executable, "-c", "from models.cli import main; main()", "ingest",
               str(archive), "--db", url, "--workers", str(workers), "--no-progress"]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, _tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    if process.returncode not in (0, 1):
        raise SystemExit(f"hstmon ingest failed with status {process.returncode}")
    return time.perf_counter() - started, peak


def _count(url: str, sql: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        value = connection.execute(text(sql)).scalar_one()
    engine.dispose()
    return int(value)


def _split_archive(archive: Path, half: Path) -> None:
    """A half-size archive (hard links) to show that peak memory does not grow with the archive."""
    directories = sorted(p for p in archive.iterdir() if p.is_dir())
    for directory in directories[: len(directories) // 2]:
        for path in directory.rglob("*.fits*"):
            target = half / path.relative_to(archive)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--notebook-sets", type=int, default=40,
                        help="jitter sets timed the notebook's way (it is slow)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a server where a scratch database may be created; '' to skip",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hstmon-bench-") as scratch_name:
        scratch = Path(scratch_name)
        archive = scratch / "archive"
        started = time.perf_counter()
        write_archive(archive, args.exposures, args.seed)
        sets = _jitter_sets(archive)
        print(f"archive: {args.exposures} exposures in {len(sets)} jitter file sets, "
              f"written in {time.perf_counter() - started:.1f} s")  # fmt: skip
        results: dict[str, float] = {}

        rates = raw_read_rates(sets)
        print(f"raw JIT read: {rates['rows']:.0f} rows; astropy {rates['astropy']:,.0f} rows/s, "
              f"hstmon reader {rates['hstmon reader']:,.0f} rows/s")  # fmt: skip

        notebook_url = f"sqlite:///{scratch / 'notebook.sqlite'}"
        upgrade(notebook_url)
        subset = sets[: args.notebook_sets]
        started = time.perf_counter()
        n_notebook = notebook_way(subset, notebook_url)
        results["notebook way (SQLite, ORM)"] = n_notebook / (time.perf_counter() - started)

        half = scratch / "half"
        _split_archive(archive, half)
        peaks = {}
        targets = [("SQLite", f"sqlite:///{scratch / 'hstmon.sqlite'}")]
        pg = scratch_postgres(args.postgres) if args.postgres else None
        with pg or contextlib.nullcontext(None) as pg_url:
            if pg_url:
                targets.append(("PostgreSQL", pg_url))
            for label, url in targets:
                seconds, peak = hstmon_ingest(archive, url, args.workers)
                exposures = _count(url, "SELECT count(*) FROM exposure")
                samples = _count(url, "SELECT count(*) FROM jitter_sample")
                results[f"hstmon ingest ({label})"] = exposures / seconds
                results[f"  sample rows/s ({label})"] = samples / seconds
                peaks[label] = peak
            half_url = f"sqlite:///{scratch / 'half.sqlite'}"
            _, peaks["SQLite, half archive"] = hstmon_ingest(half, half_url, args.workers)

    print("\nexposures/s (end to end, Dask local cluster start-up included):")
    for label, value in results.items():
        print(f"  {label:36s} {value:12,.0f}")
    notebook = results["notebook way (SQLite, ORM)"]
    print("\nratios measured in this run:")
    for label in ("SQLite", "PostgreSQL"):
        key = f"hstmon ingest ({label})"
        if key in results:
            print(f"  hstmon {label} / notebook way:            {results[key] / notebook:8.1f}x")
            rows = results[f"  sample rows/s ({label})"]
            print(f"  hstmon {label} rows/s / astropy raw read: {rows / rates['astropy']:8.2f}x")
            print(
                f"  hstmon {label} rows/s / hstmon reader:    {rows / rates['hstmon reader']:8.2f}x"
            )
    print("\npeak RSS of the ingest process tree (CLI + Dask scheduler/workers):")
    for label, peak in peaks.items():
        print(f"  {label:36s} {peak / 2**20:8.0f} MiB")
    full, halved = peaks["SQLite"], peaks["SQLite, half archive"]
    print(f"  full / half archive:                 {full / halved:8.2f}x (1.0 = flat)")


if __name__ == "__main__":
    main()
