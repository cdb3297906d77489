"""The labelled corpus of observing situations (tests/domain_corpus.py) through the command line:
`hstmon ingest` + `hstmon analyze`, then `hstmon assess` per visit, on SQLite and PostgreSQL.

Each case must raise exactly its expected flags above info on every exposure, and give every
exposure and the visit the expected verdict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import scratch_database
from domain_corpus import CASES, Case, write_corpus
from sqlalchemy import text

from models.cli import main
from models.database import make_engine


@dataclass(frozen=True)
class Judged:
    url: str
    flags: dict[str, dict[str, str]]  # exposure -> rule -> severity
    verdicts: dict[str, tuple[str, str, date | None]]  # exposure or visit -> (verdict, ...)
    warnings: list[tuple[str, str, str]]
    failed_files: list[str]


def _hstmon(*arguments: str) -> str:
    result = CliRunner().invoke(main, list(arguments))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def judged(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    dask_scheduler: str,
) -> Iterator[Judged]:
    corpus = tmp_path_factory.mktemp("corpus")
    write_corpus(corpus)
    with scratch_database(request.param, tmp_path_factory.mktemp("store"), "hstmon_corpus") as url:
        _hstmon("ingest", str(corpus), "--db", url, "--scheduler", dask_scheduler, "--no-progress")
        _hstmon("analyze", "--db", url)
        engine = make_engine(url)
        with engine.connect() as connection:
            flags: dict[str, dict[str, str]] = {}
            for exposure_id, rule, severity in connection.execute(
                text("SELECT exposure_id, rule, severity FROM flag")
            ):
                flags.setdefault(exposure_id, {})[rule] = severity
            verdicts = {
                subject: (verdict, summary, delivered)
                for subject, verdict, summary, delivered in connection.execute(
                    text(
                        "SELECT coalesce(exposure_id, visit_id), verdict, summary, delivered_on"
                        " FROM verdict"
                    )
                )
            }
            warnings = [tuple(row) for row in connection.execute(
                text("SELECT exposure_id, keyword, raw_value FROM file_warning")
            )]  # fmt: skip
            failed = list(
                connection.execute(text("SELECT path FROM source_file WHERE status = 'failed'"))
            )
        engine.dispose()
        yield Judged(url, flags, verdicts, warnings, [row[0] for row in failed])


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_case_gets_exactly_its_flags_and_verdicts(judged: Judged, case: Case) -> None:
    exposures = {e for e in judged.verdicts if len(e) == 8 and e.startswith(case.visit)}
    assert exposures == set(case.verdicts), "every exposure of the case, and no other"
    for exposure_id in sorted(exposures):
        fired = judged.flags.get(exposure_id, {})
        above_info = {rule for rule, severity in fired.items() if severity != "info"}
        assert above_info == case.flags.get(exposure_id, set()), (exposure_id, fired)
        assert case.info.get(exposure_id, set()) <= set(fired), (exposure_id, fired)
        verdict, summary, _ = judged.verdicts[exposure_id]
        assert verdict == case.verdicts[exposure_id], (exposure_id, summary)
    verdict, summary, delivered = judged.verdicts[case.visit]
    assert verdict == case.visit_verdict, summary
    assert case.says in summary, summary
    if case.delivered_on is not None:
        assert delivered is not None and str(delivered)[:10] == str(case.delivered_on)


def test_no_file_of_the_corpus_fails_and_odd_values_are_warnings(judged: Judged) -> None:
    assert judged.failed_files == []
    assert ("ia0k01vp", "GSACQ", "NONE") in judged.warnings


def test_assess_reads_each_visit_as_analyze_judged_it(judged: Judged) -> None:
    for case in CASES:
        document = json.loads(_hstmon("assess", case.visit.upper(), "--json", "--db", judged.url))
        assert document["visit"] == case.visit
        assert document["verdict"]["verdict"] == case.visit_verdict, case.name
        shown = {e["exposure_id"]: e["verdict"]["verdict"] for e in document["exposures"]}
        assert shown == case.verdicts, case.name


def test_assess_says_what_an_instrument_scientist_would(judged: Judged, tmp_path: Path) -> None:
    report = tmp_path / "late.html"
    late = _hstmon("assess", "ia0r01", "--db", judged.url, "--html", str(report))
    assert "HOPR (90-day limit passed on 2011-05-20)" in late
    assert "a reprocessing, so the first delivery is taken as the" in report.read_text()
    odd = _hstmon("assess", "ia0k01", "--db", judged.url, "--html", str(tmp_path / "odd.html"))
    assert "keyword GSACQ = 'NONE', expected" in odd
    gyro = _hstmon("assess", "ia0g01", "--db", judged.url, "--html", str(tmp_path / "g.html"))
    assert "OK: No action needed: all 4 exposures are nominal." in gyro.splitlines()
    assert "gs_acq_failure" not in gyro, "on gyros, as commanded, nothing was to be acquired"
