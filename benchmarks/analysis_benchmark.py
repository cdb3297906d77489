"""Seconds for `hstmon analyze` over an archive-sized store (300k exposures by default).

Run:  .venv/bin/python benchmarks/analysis_benchmark.py [--exposures 300000] [--postgres URL]

Exposure and association rows are synthesised directly in the database (no jitter samples: the
rules read exposure-level columns only), with the failure patterns of the synthetic archive at
its rates. Measures, per store: a full analysis, an immediate re-run (nothing changed), and a
run after 1% of the exposures were re-ingested. A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from scratch import scratch_postgres
from sqlalchemy import insert, update

from analysis.run import run_analysis
from models.database import make_engine, upgrade
from models.tables import Association, Exposure


def _associations(n_exposures: int, rng: np.random.Generator) -> list[dict]:
    n_visits = n_exposures // 4
    start = datetime(2019, 1, 1, tzinfo=UTC)
    return [
        {
            "asn_id": f"i{i:05d}010",
            "proposid": 15500 + i // 50,
            "config": "WFC3/UVIS" if i % 3 else "WFC3/IR",
            "guidecmd": "FINE LOCK",
            "window_start": start + timedelta(hours=3 * i),
            "t_gsfail": False,
            "t_ntmgap": 0,
            "t_tmgap": 0.0,
        }
        for i in range(n_visits)
    ]


def _exposure_id(index: int, n_visits: int) -> str:
    """ipppss + 2: four exposures a visit, named like their visit's association."""
    return f"i{index // 4 % n_visits:05d}a{index % 4}"


def _exposures(visits: list[dict], n_exposures: int, rng: np.random.Generator) -> list[dict]:
    modes = rng.choice(6, size=n_exposures, p=[0.85, 0.03, 0.03, 0.02, 0.03, 0.04])
    v2 = rng.normal(3.2, 0.4, n_exposures)
    v3 = rng.normal(3.4, 0.5, n_exposures)
    rows = []
    now = datetime.now(UTC)
    for index in range(n_exposures):
        number = index // 4 % len(visits)
        visit = visits[number]
        mode = modes[index]
        start = visit["window_start"] + timedelta(minutes=20 * (index % 4))
        rows.append({
            "exposure_id": _exposure_id(index, len(visits)), "asn_id": visit["asn_id"],
            "asn_member_index": index % 4 + 1, "proposid": visit["proposid"],
            "config": visit["config"], "window_start": start,
            "window_end": start + timedelta(seconds=600), "proctime": start + timedelta(days=1),
            "guideact": "GYRO" if mode in (1, 4) else "FINE LOCK",
            "gsacq": None if mode == 1 else start, "gsfail": "NOLOCK" if mode == 1 else None,
            "tdf_down": mode == 3, "nlosses": 1 if mode == 2 else 0,
            "lockloss_s": 60.0 if mode == 2 else 0.0, "nrecent": 1 if mode == 2 else 0,
            "v2_rms_mas": None if mode == 1 else float(v2[index] * (6 if mode == 5 else 1)),
            "v3_rms_mas": None if mode == 1 else float(v3[index] * (6 if mode == 5 else 1)),
            "gsseprms_mas": None if mode == 1 else 0.8,
            "jit_n_samples": 200, "jit_n_fill": 200 if mode == 1 else 0,
            "jit_takedata_frac": 0.0 if mode == 1 else (0.7 if mode == 3 else 1.0),
            "jit_duration_s": 600.0, "drift_trend_v2_mas": 60.0 if mode == 4 else 1.0,
            "drift_trend_v3_mas": 1.0, "drift_rate_mas_s": 0.1 if mode == 4 else 0.002,
            "jif_file_id": None, "updated_at": now,
        })  # fmt: skip
    return rows


def _fill(url: str, n_exposures: int) -> None:
    rng = np.random.default_rng(1)
    visits = _associations(n_exposures, rng)
    exposures = _exposures(visits, n_exposures, rng)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(insert(Association), visits)
        for start in range(0, len(exposures), 50_000):
            connection.execute(insert(Exposure), exposures[start : start + 50_000])
    engine.dispose()


def _timed(label: str, url: str, **options: object) -> None:
    started = time.perf_counter()
    summary = run_analysis(url, **options)
    seconds = time.perf_counter() - started
    print(f"  {label:38s} {seconds:7.1f} s  ({summary.exposures_analyzed} exposures analysed)")


def _touch_one_percent(url: str, n_exposures: int) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        ids = [_exposure_id(index, n_exposures // 4) for index in range(0, n_exposures, 100)]
        later = datetime.now(UTC) + timedelta(seconds=1)
        connection.execute(
            update(Exposure).where(Exposure.exposure_id.in_(ids)).values(updated_at=later)
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=300_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        targets = [("SQLite", f"sqlite:///{Path(scratch) / 'bench.sqlite'}")]
        if args.postgres:
            targets.append(("PostgreSQL", stack.enter_context(scratch_postgres(args.postgres))))
        for label, url in targets:
            upgrade(url)
            started = time.perf_counter()
            _fill(url, args.exposures)
            print(f"{label}: {args.exposures} exposures synthesised in "
                  f"{time.perf_counter() - started:.1f} s")  # fmt: skip
            _timed("full analysis", url)
            _timed("re-run, nothing changed", url)
            _touch_one_percent(url, args.exposures)
            _timed("after 1% re-ingested", url)


if __name__ == "__main__":
    main()
