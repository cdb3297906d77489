"""Milliseconds of each dashboard page's queries over an archive-sized store (300k exposures).

Run:  .venv/bin/python benchmarks/dashboard_benchmark.py [--exposures 300000] [--postgres URL]
      [--repeat 20] [--sample-exposures 1000] [--hidden-programs 0]

Association and exposure rows are synthesised directly in the database with the failure
patterns of the synthetic archive at its rates; `hstmon analyze` then writes the flags and
verdicts; a modest number of exposures get JIT samples, source files and headers. Each page's
queries run uncached (as on a cache miss, through the dashboard's read-only engine), ``repeat``
times; the figures are the p50 and p95 of a whole page's queries and of each query. The target
is p95 < 300 ms per page. The pages read as an anonymous viewer, on PostgreSQL as the reader role
of `hstmon db reader` (as a deployed dashboard does); ``--hidden-programs N`` then marks N
programs proprietary and measures again, so the viewer's scope (row-level security, SQLite's
views) has rows to leave out.
A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from scratch import scratch_postgres
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from analysis.run import run_analysis
from dashboard import queries as q
from models.access import mark_program
from models.bulk import bulk_insert
from models.database import make_engine, resolve_database_url, upgrade
from models.reader import ensure_reader_role, reader_url
from models.tables import Association, Exposure, FitsHeader, IngestRun, JitterSample, SourceFile

START = datetime(2009, 6, 1, tzinfo=UTC)  # WFC3's first light
MODES = [0.85, 0.03, 0.03, 0.02, 0.03, 0.04]  # nominal, GS fail, lock loss, TDF, gyro, jitter
FILTERS = {
    "WFC3/UVIS": (("F606W", 1.90), ("F814W", 2.10), ("F438W", 1.85)),
    "WFC3/IR": (("F160W", 1.25), ("F110W", 1.15)),
}  # filter, nominal FWHM (pixels)
IMAGED = 0.3  # fraction of exposures whose science file (and PSF) is in the store


def _base36(number: int, width: int) -> str:
    digits = ""
    for _ in range(width):
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
    return digits


def _visit_name(visit: int) -> str:
    """``ipppss`` of a visit: as HST names go, each program (50 visits) has its own code ppp."""
    return f"i{_base36(visit // 50, 3)}{_base36(visit % 50, 2)}"


def _associations(n_visits: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    span_h = (datetime(2026, 6, 1, tzinfo=UTC) - START).total_seconds() / 3600
    step_h = span_h / n_visits
    return [
        {
            "asn_id": f"{_visit_name(i)}010", "proposid": 11000 + i // 50,
            "config": "WFC3/UVIS" if i % 3 else "WFC3/IR", "instrument": "WFC3",
            "targname": f"TARGET-{i // 50:04d}", "asn_stat": "COMPLETE",
            "guidecmd": "FINE LOCK", "window_start": START + timedelta(hours=step_h * i),
            "window_end": START + timedelta(hours=step_h * i + 1.5), "t_gsfail": False,
            "t_ntmgap": 0, "t_tmgap": 0.0, "t_gdact": True, "t_actgsp": True,
        }
        for i in range(n_visits)
    ]  # fmt: skip


def _exposures(visits: list[dict[str, Any]], n: int, rng: np.random.Generator) -> list[dict]:
    modes = rng.choice(len(MODES), size=n, p=MODES)
    v2, v3 = rng.normal(3.2, 0.4, n), rng.normal(3.4, 0.5, n)
    p95, drift = rng.gamma(6.0, 0.8, n), rng.gamma(3.0, 1.5, n)
    imaged, pick, spread = rng.random(n) < IMAGED, rng.integers(0, 6, n), rng.normal(1.08, 0.05, n)
    now = datetime.now(UTC)
    rows = []
    for index in range(n):
        visit, mode = visits[index // 4 % len(visits)], modes[index]
        start = visit["window_start"] + timedelta(minutes=20 * (index % 4))
        big = 6 if mode == 5 else 1
        rows.append({
            "exposure_id": f"{visit['asn_id'][:6]}{index % 4:02d}",
            "rootname": f"{visit['asn_id'][:6]}{index % 4:02d}q",
            "asn_id": visit["asn_id"], "asn_member_index": index % 4 + 1,
            "proposid": visit["proposid"], "config": visit["config"], "window_start": start,
            "window_end": start + timedelta(seconds=600), "proctime": start + timedelta(days=1),
            "guideact": "GYRO" if mode in (1, 4) else "FINE LOCK",
            "gsacq": None if mode == 1 else start, "gsfail": "NOLOCK" if mode == 1 else None,
            "tdf_down": mode == 3, "nlosses": 1 if mode == 2 else 0,
            "lockloss_s": 60.0 if mode == 2 else 0.0, "nrecent": 1 if mode == 2 else 0,
            "v2_rms_mas": None if mode == 1 else float(v2[index] * big),
            "v3_rms_mas": None if mode == 1 else float(v3[index] * big),
            "si_rms_p95_mas": None if mode == 1 else float(p95[index] * big),
            "drift_v2_mas": None if mode == 1 else float(drift[index]),
            "drift_v3_mas": None if mode == 1 else float(drift[index] * 1.1),
            "gsseprms_mas": None if mode == 1 else 0.8, "jit_n_samples": 200,
            "jit_n_fill": 200 if mode == 1 else 0,
            "jit_takedata_frac": 0.0 if mode == 1 else (0.7 if mode == 3 else 1.0),
            "jit_duration_s": 600.0, "drift_trend_v2_mas": 60.0 if mode == 4 else 1.0,
            "drift_trend_v3_mas": 1.0, "updated_at": now,
            **_science(visit["config"], bool(imaged[index]), int(pick[index]),
                       float(spread[index]) * (2.5 if mode in (1, 4) else 1.0)),
        })  # fmt: skip
    return rows


def _science(config: str, imaged: bool, pick: int, spread: float) -> dict[str, Any]:
    """Science-file columns: a filter and a PSF FWHM around its nominal value, for some."""
    if not imaged:
        return {"filter": None, "fwhm_median_pix": None, "fwhm_nominal_pix": None,
                "elongation_median": None}  # fmt: skip
    name, nominal = FILTERS[config][pick % len(FILTERS[config])]
    return {"filter": name, "fwhm_median_pix": nominal * spread, "fwhm_nominal_pix": nominal,
            "elongation_median": 1.0 + (spread - 1.0) / 2}  # fmt: skip


def _samples(exposure_ids: list[str], per_exposure: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for exposure_id in exposure_ids:
        jitter = rng.normal(0.0, 0.003, (per_exposure, 4))
        for i in range(per_exposure):
            fill = 40 <= i < 55
            rows.append({
                "exposure_id": exposure_id, "sample_index": i, "seconds": 3.0 * (i + 1),
                "si_v2_avg": None if fill else float(jitter[i, 0]),
                "si_v3_avg": None if fill else float(jitter[i, 1]),
                "si_v2_rms": None if fill else abs(float(jitter[i, 2])),
                "si_v3_rms": None if fill else abs(float(jitter[i, 3])),
                "take_data": 0 if fill else 1, "recenter": 0, "slew_flag": 0,
            })  # fmt: skip
    return rows


def _files_and_headers(connection: Any, exposure_ids: list[str]) -> None:
    now = datetime.now(UTC)
    files = [
        {"file_id": i + 1, "path": f"/archive/{e}_jit.fits", "kind": "jit", "size_bytes": 1,
         "mtime_ns": 1, "status": "ingested", "n_exposures": 1, "ingested_at": now}
        for i, e in enumerate(exposure_ids)
    ]  # fmt: skip
    broken = {"file_id": len(files) + 1, "path": "/archive/broken_jif.fits", "kind": "jif",
              "size_bytes": 1, "mtime_ns": 1, "status": "failed",
              "error": "truncated FITS file", "ingested_at": now}  # fmt: skip
    bulk_insert(connection, SourceFile.__table__, [broken])
    bulk_insert(connection, SourceFile.__table__, files)
    headers = []
    for i, exposure_id in enumerate(exposure_ids):
        headers.append({"file_id": i + 1, "hdu_index": 0, "extname": None, "exposure_id": None,
                        "header": {"SIMPLE": True, "ROOTNAME": exposure_id}})  # fmt: skip
        headers.append({"file_id": i + 1, "hdu_index": 1, "extname": "jit",
                        "exposure_id": exposure_id,
                        "header": {"EXPNAME": f"{exposure_id}j", "V2_RMS": 3.2}})  # fmt: skip
    bulk_insert(connection, FitsHeader.__table__, headers)
    connection.execute(
        insert(IngestRun).values(
            started_at=now, finished_at=now, status="failed", parameters={"paths": ["/archive"]},
            counts={"files_seen": len(files) + 1, "files_ingested": len(files), "files_failed": 1},
        )
    )  # fmt: skip


def fill(url: str, n_exposures: int, sample_exposures: int) -> None:
    """Synthesise the store: associations, exposures, samples, files, headers; then analyse."""
    rng = np.random.default_rng(1)
    visits = _associations(max(1, n_exposures // 4), rng)
    exposures = _exposures(visits, n_exposures, rng)
    with_samples = [row["exposure_id"] for row in exposures[:: max(1, n_exposures // max(1, sample_exposures))]][:sample_exposures]  # fmt: skip  # noqa: E501
    engine = make_engine(url)
    with engine.begin() as connection:
        bulk_insert(connection, Association.__table__, visits)
        for start in range(0, len(exposures), 50_000):
            bulk_insert(connection, Exposure.__table__, exposures[start : start + 50_000])
        for start in range(0, len(with_samples), 200):
            chunk = with_samples[start : start + 200]
            bulk_insert(connection, JitterSample.__table__, _samples(chunk, 200, rng))
        _files_and_headers(connection, with_samples)
    engine.dispose()
    run_analysis(url)
    if make_url(url).get_backend_name() == "postgresql":
        # Statistics and the visibility map, as autovacuum leaves them soon after a bulk load.
        vacuum = create_engine(make_url(url).set(drivername="postgresql+psycopg"),
                               isolation_level="AUTOCOMMIT")  # fmt: skip
        with vacuum.connect() as connection:
            connection.execute(text("VACUUM ANALYZE"))
        vacuum.dispose()


PageQueries = list[tuple[str, Callable[[Engine], Any]]]


def pages(engine: Engine, summary: q.DailySummary) -> dict[str, PageQueries]:
    """The queries each page runs on a cache miss, with the arguments a first visit uses.

    The trend pages roll up ``summary`` (built once per store version, timed separately); the
    SQL page runs on the engine's own URL (the reader role on PostgreSQL).
    """
    options = q.filter_options(engine)
    everything = q.TrendFilters(start=options.first_day, end=options.last_day)
    one_year = q.TrendFilters(
        start=date(2020, 1, 1), end=date(2020, 12, 31), configs=("WFC3/UVIS",),
        guideacts=("FINE LOCK",),
    )  # fmt: skip
    program = options.proposids[len(options.proposids) // 2]
    programs = q.TrendFilters(proposids=tuple(options.proposids[:20]))
    visit = str(q.program_visits(engine, program)["asn_id"].iloc[0])
    exposure = str(q.visit_exposures(engine, visit)["exposure_id"].iloc[0])
    sampled = "i0000000"  # the first exposure: it has JIT samples and headers
    return {
        "overview": [
            ("is_empty", q.is_empty),
            ("store_counts", q.store_counts),
            ("last_ingest_run", q.last_ingest_run),
            ("last_analysis_run", q.last_analysis_run),
            ("failed_files", q.failed_files),
            ("action_count", q.action_count),
            ("action_items(500)", lambda e: q.action_items(e, limit=500)),
            ("flag_counts", q.flag_counts),
        ],
        "trends (all, month)": [
            ("is_empty", q.is_empty),
            ("filter_options", lambda e: q.filter_options(e, summary)),
            ("jitter_trend", lambda e: q.jitter_trend(e, everything, "month", summary=summary)),
            ("jitter_outliers", lambda e: q.jitter_outliers(e, everything, limit=100)),
            ("flag_rates", lambda e: q.flag_rates(e, everything, "month", summary=summary)),
            ("psf_trend", lambda e: q.psf_trend(e, everything, "month", summary=summary)),
        ],
        "trends (1 year, UVIS, FINE LOCK, day)": [
            ("is_empty", q.is_empty),
            ("filter_options", lambda e: q.filter_options(e, summary)),
            ("jitter_trend", lambda e: q.jitter_trend(e, one_year, "day", summary=summary)),
            ("jitter_outliers", lambda e: q.jitter_outliers(e, one_year, limit=100)),
            ("flag_rates", lambda e: q.flag_rates(e, one_year, "day", summary=summary)),
            ("psf_trend", lambda e: q.psf_trend(e, one_year, "day", summary=summary)),
        ],
        "trends (20 programs: no summary, SQL)": [
            ("is_empty", q.is_empty),
            ("filter_options", lambda e: q.filter_options(e, summary)),
            ("jitter_trend", lambda e: q.jitter_trend(e, programs, "month")),
            ("jitter_outliers", lambda e: q.jitter_outliers(e, programs, limit=100)),
            ("flag_rates", lambda e: q.flag_rates(e, programs, "month")),
            ("psf_trend", lambda e: q.psf_trend(e, programs, "month")),
        ],
        "programs (list, program, visit)": [
            ("is_empty", q.is_empty),
            ("program_list", lambda e: q.program_list(e, "")),
            ("program_visits", lambda e: q.program_visits(e, program)),
            ("visit_exposures", lambda e: q.visit_exposures(e, visit)),
        ],
        "programs (search)": [
            ("is_empty", q.is_empty),
            ("find_ids", lambda e: q.find_ids(e, "i0a012")),
            ("program_list", lambda e: q.program_list(e, "i0a012")),
        ],
        "exposure drilldown": [
            ("is_empty", q.is_empty),
            ("exposure_detail", lambda e: q.exposure_detail(e, exposure)),
            ("visit_exposures", lambda e: q.visit_exposures(e, visit)),
            ("jitter_samples", lambda e: q.jitter_samples(e, sampled)),
        ],
        "exposure headers (expander)": [("fits_headers", lambda e: q.fits_headers(e, sampled))],
        "visit view": [
            ("is_empty", q.is_empty),
            ("visit_detail", lambda e: q.visit_detail(e, visit)),
            ("visit_exposures", lambda e: q.visit_exposures(e, visit)),
        ],
        "exposure landing": [
            ("is_empty", q.is_empty),
            ("action_items(10)", lambda e: q.action_items(e, limit=10)),
        ],
        "sql (page + worst-50 ready query)": [
            ("is_empty", q.is_empty),
            (
                "run_readonly_sql",
                lambda e: q.run_readonly_sql(
                    e.url.render_as_string(hide_password=False),
                    q.ready_queries(e.dialect.name)["Worst 50 exposures by SI RMS p95"],
                ),
            ),
        ],
    }


def _p(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def hide_programs(url: str, count: int) -> int:
    """Mark ``count`` programs proprietary (spread over the store); the exposures they hold."""
    engine = make_engine(url)
    with engine.connect() as connection:
        programs = sorted(
            connection.execute(text("SELECT DISTINCT proposid FROM exposure")).scalars()
        )
    chosen = programs[:: max(1, len(programs) // max(1, count))][:count]
    for proposid in chosen:
        mark_program(engine, proposid, proprietary=True, until=None, marked_by="benchmark")
    with engine.connect() as connection:
        hidden = connection.execute(
            select(func.count()).select_from(Exposure).where(Exposure.proposid.in_(chosen))
        ).scalar_one()
    engine.dispose()
    return int(hidden)


@contextlib.contextmanager
def dashboard_url(url: str) -> Iterator[str]:
    """What a deployed dashboard reads as: the store itself on SQLite, a reader role (made for
    this run, dropped after it) on PostgreSQL."""
    if make_url(url).get_backend_name() != "postgresql":
        yield url
        return
    role = f"hstmon_bench_reader_{uuid.uuid4().hex[:8]}"
    engine = make_engine(url)
    try:
        ensure_reader_role(engine, role)
        yield resolve_database_url(reader_url(url, role))
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE IF EXISTS {role}"))
        engine.dispose()


def measure(url: str, repeat: int) -> None:
    """Print p50/p95 (ms) of every page's queries and of its slowest query."""
    engine = q.read_only_engine(url, pooled=True)  # as the dashboard makes it
    builds = []
    for _ in range(3):
        started = time.perf_counter()
        summary = q.daily_summary(engine)
        builds.append((time.perf_counter() - started) * 1000)
    print(f"  daily summary for the trends (once per ingest/analysis run): "
          f"{min(builds):.0f} ms, {len(summary.jitter):,} day/config/mode rows")  # fmt: skip
    for page, steps in pages(engine, summary).items():
        totals: list[float] = []
        each: dict[str, list[float]] = {name: [] for name, _ in steps}
        for _ in range(repeat):
            page_started = time.perf_counter()
            for name, step in steps:
                started = time.perf_counter()
                step(engine)
                each[name].append((time.perf_counter() - started) * 1000)
            totals.append((time.perf_counter() - page_started) * 1000)
        slowest = max(each, key=lambda n: _p(each[n], 0.95))
        verdict = "ok" if _p(totals, 0.95) < 300 else "SLOW"
        p50, p95, worst = statistics.median(totals), _p(totals, 0.95), _p(each[slowest], 0.95)
        print(f"  {page:40s} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  {verdict:4s} "
              f"(slowest: {slowest} p95 {worst:.1f} ms)")  # fmt: skip
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=300_000)
    parser.add_argument("--sample-exposures", type=int, default=1000,
                        help="exposures given 200 JIT samples each")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="server for a scratch database; '' skips PostgreSQL")  # fmt: skip
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="measure one store")
    parser.add_argument("--hidden-programs", type=int, default=0,
                        help="programs marked proprietary, hidden from the viewer")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        targets = []
        if args.only != "postgres":
            targets.append(("SQLite", f"sqlite:///{Path(scratch) / 'bench.sqlite'}"))
        if args.postgres and args.only != "sqlite":
            targets.append(("PostgreSQL", stack.enter_context(scratch_postgres(args.postgres))))
        for label, url in targets:
            upgrade(url)
            started = time.perf_counter()
            fill(url, args.exposures, args.sample_exposures)
            seconds = time.perf_counter() - started
            print(f"{label}: {args.exposures:,} exposures (+ flags, verdicts, "
                  f"{args.sample_exposures} with JIT samples) in {seconds:.0f} s; "
                  f"per page, {args.repeat} runs:")  # fmt: skip
            with dashboard_url(url) as reader:
                measure(reader, args.repeat)
                if args.hidden_programs:  # the same store, now with rows to leave out
                    hidden = hide_programs(url, args.hidden_programs)
                    print(f"  {args.hidden_programs} programs proprietary: {hidden:,} exposures "
                          "hidden from the (anonymous) viewer:")  # fmt: skip
                    measure(reader, args.repeat)


if __name__ == "__main__":
    main()
