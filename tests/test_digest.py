"""The nightly digest: what one night's analysis wrote, read from real SQLite and PostgreSQL stores.

One store per database kind and module: the synthetic archive (600 exposures, IEPP01010's
exposures 4-7 without a guide star) ingested, analysed once, then analysed again with nothing
changed. Tests only read it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import scratch_database
from sqlalchemy import Engine, text

from analysis.config import SEVERITIES
from analysis.digest import (
    NOTHING_NEW,
    Digest,
    FlagItem,
    OutstandingFile,
    VerdictItem,
    _what_happened,
    build_digest,
    digest_json,
    render_html,
    render_markdown,
    render_text,
    write_digest,
)
from analysis.run import AnalysisSummary, run_analysis
from ingest.pipeline import run_ingest
from models.database import make_engine, upgrade

TODAY = date(2022, 5, 8)  # 24 days before IEPP01010's HOPR deadline (delivery 2022-03-03 + 90)
IEPP_DEADLINE = date(2022, 6, 1)
PROBLEMS = [
    ("mast:iepp02010_jit.fits", "download failed: HTTP 503 Service Unavailable"),
    ("/archive/16748/iepp03010/iepp03010_jif.fits", "truncated: HDU 2 ends at byte 8640"),
]
WINDOW = (datetime(2022, 5, 7, 3, 0, tzinfo=UTC), datetime(2022, 5, 8, 3, 0, tzinfo=UTC))


@dataclasses.dataclass(frozen=True)
class Store:
    url: str
    first: AnalysisSummary  # analysed everything
    second: AnalysisSummary  # nothing had changed


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    synthetic_archive: Path,
    dask_scheduler: str,
) -> Iterator[Store]:
    with scratch_database(request.param, tmp_path_factory.mktemp("digest"), "hstmon_digest") as url:
        upgrade(url)
        ingest = run_ingest([synthetic_archive], url, scheduler=dask_scheduler, progress=False)
        assert ingest.failed == 0, ingest.failures
        first = run_analysis(url, today=TODAY)
        second = run_analysis(url, today=TODAY)
        yield Store(url, first, second)


@pytest.fixture(scope="module")
def store_engine(store: Store) -> Iterator[Engine]:
    engine = make_engine(store.url)
    yield engine
    engine.dispose()


def _digest(store_engine: Engine, run_ids: list[int], **options: object) -> Digest:
    options = {"facts": {}, "today": TODAY} | options
    with store_engine.connect() as connection:
        return build_digest(connection, run_ids, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def night(store_engine: Engine, store: Store) -> Digest:
    """The digest of the first analysis, as `hstmon nightly` would ask for it."""
    facts = {"files_discovered": 475, "files_downloaded": 473, "files_failed": 2,
             "exposures_analysed": store.first.exposures_analyzed}  # fmt: skip
    return _digest(
        store_engine, [store.first.run_id], facts=facts, problems=PROBLEMS, window=WINDOW
    )


def _rows(store_engine: Engine, sql: str, run_id: int) -> list[tuple]:
    with store_engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(sql), {"run": run_id})]


def _every_verdict(digest: Digest) -> list[VerdictItem]:
    return [v for item in digest.verdicts for v in (item, *item.exposures)]


def _item(digest: Digest, subject: str) -> VerdictItem:
    return next(v for v in _every_verdict(digest) if v.subject == subject)


# --- Verdicts -------------------------------------------------------------------------------------


def test_iepp01010_leads_as_a_hopr_visit_with_its_deadline_and_days_left(night: Digest) -> None:
    visit = _item(night, "iepp01")
    assert (visit.level, visit.verdict) == ("visit", "hopr")
    assert visit.hopr_deadline == IEPP_DEADLINE and visit.days_left == 24
    assert visit.happened == "exposures 4-7 lost their guide star; 1-3 are nominal"
    assert [(e.member_index, e.verdict) for e in visit.exposures] == [
        (n, "hopr") for n in (4, 5, 6, 7)
    ]
    assert all(e.asn_id == "iepp01010" and e.days_left == 24 for e in visit.exposures)
    assert night.verdicts[0] is visit, "the soonest open deadline of the archive comes first"

    lines = render_text(night).splitlines()
    line = (
        "  - IEPP01 by 2022-06-01 (24 days left) – "
        "exposures 4-7 lost their guide star; 1-3 are nominal"
    )
    assert line in lines
    assert lines.index(line) < lines.index("What the night did"), "summary lines come first"
    hopr = [v for v in night.verdicts if v.level == "visit" and v.verdict == "hopr"]
    still_open = [v for v in hopr if v.days_left is None or v.days_left >= 0]
    assert lines[lines.index(line) - 1] == f"{len(still_open)} visits need a HOPR:"
    late = len(hopr) - len(still_open)
    assert late, "the synthetic archive has HOPRs past their limit at this date"
    apart = next(i for i, text_ in enumerate(lines) if "the 90-day limit has passed" in text_)
    assert lines[apart].startswith(f"{late} visits had HOPR-worthy failures, but the 90-day")
    assert apart > lines.index(line), "HOPRs past their limit are listed apart, after open ones"
    assert "| **HOPR** | **IEPP01** |" in render_markdown(night)
    assert "<b>IEPP01</b>" in render_html(night)


def test_verdicts_are_those_the_run_wrote_soonest_deadline_first(
    night: Digest, store_engine: Engine, store: Store
) -> None:
    written = _rows(
        store_engine,
        "SELECT coalesce(exposure_id, visit_id) FROM verdict"
        " WHERE analysis_run_id = :run AND verdict <> 'ok'",
        store.first.run_id,
    )
    assert sorted(v.subject for v in _every_verdict(night)) == sorted(r[0] for r in written)
    assert {v.verdict for v in _every_verdict(night)} <= {"hopr", "helpdesk", "not_repeatable"}
    visits = [v for v in night.verdicts if v.level == "visit"]
    assert night.verdicts[: len(visits)] == visits, "visits first, then lone exposures"
    for visit in visits:
        assert all(e.subject[:6] == visit.subject for e in visit.exposures)
        numbers = [e.member_index for e in visit.exposures]
        assert numbers == sorted(numbers)
    days = [v.days_left for v in visits if v.days_left is not None]
    still_open = [d for d in days if d >= 0]
    passed = [d for d in days if d < 0]
    assert still_open and passed, "the synthetic archive has both at this date"
    assert days == sorted(still_open) + sorted(passed, reverse=True), (
        "open deadlines soonest first, then passed ones, the most recently passed first"
    )


def test_passed_deadlines_are_said_as_such(store_engine: Engine, store: Store) -> None:
    later = _digest(store_engine, [store.first.run_id], today=date(2022, 7, 1))
    visit = _item(later, "iepp01")
    assert visit.days_left == -30
    assert later.verdicts[0].days_left >= 0, "open deadlines still lead"
    assert "HOPR deadline 2022-06-01 (passed 30 days ago)" in render_text(later)
    assert "| 2022-06-01 | passed 30 days ago |" in render_markdown(later)
    assert "<td class='late'>passed 30 days ago</td>" in render_html(later)
    alone = dataclasses.replace(later, verdicts=[visit], flag_counts={}, flags=[])
    assert render_text(alone).splitlines()[3:5] == [
        "1 visit had a HOPR-worthy failure, but the 90-day limit has passed (ask the help "
        "desk whether a late HOPR is possible):",
        "  - IEPP01 late: the 90-day limit passed on 2022-06-01 (30 days ago) – "
        "exposures 4-7 lost their guide star; 1-3 are nominal",
    ]
    assert "HOPR (LATE)" in render_text(later), "the detailed list says so too"


# --- Flags ----------------------------------------------------------------------------------------


def test_flags_are_sorted_by_severity_and_counted_by_rule(
    night: Digest, store_engine: Engine, store: Store
) -> None:
    counted = _rows(
        store_engine,
        "SELECT rule, severity, count(*) FROM flag WHERE analysis_run_id = :run"
        " GROUP BY rule, severity",
        store.first.run_id,
    )
    assert {(r, s, n) for r, by in night.flag_counts.items() for s, n in by.items()} == set(counted)
    assert night.flags_by_severity == store.first.flags
    assert night.flags_total == len(night.flags) == sum(store.first.flags.values())
    ranks = [SEVERITIES.index(f.severity) for f in night.flags]
    assert ranks == sorted(ranks) and ranks[0] == 0 and ranks[-1] == 2, "high, medium, info"
    iepp = [f for f in night.flags if f.exposure_id == "iepp01uy"]
    assert {f.rule for f in iepp} == {"gs_acq_failure", "guiding_degraded", "take_data_down"}
    acquisition = next(f for f in iepp if f.rule == "gs_acq_failure")
    assert acquisition.evidence["GSFAIL"] == "NOLOCK" and acquisition.member_index == 4

    by_severity = ", ".join(f"{night.flags_by_severity[s]} {s}" for s in SEVERITIES)
    assert f"{night.flags_total} new flags: {by_severity}." in render_text(night).splitlines()
    assert "  [high] IEPP01UY (IEPP01010 #4) gs_acq_failure v2: Guide-star acquisition failed" in (
        render_text(night)
    )
    lines = render_text(night).splitlines()
    flag_line = next(i for i, line in enumerate(lines) if "IEPP01UY (IEPP01010 #4) gs_acq" in line)
    evidence = lines[flag_line + 1]
    assert evidence.startswith("      evidence: "), "under its flag"
    assert "GSFAIL=NOLOCK" in evidence and "GSACQ=—" in evidence and "T_GSFAIL=yes" in evidence


def test_max_flags_lists_the_most_severe_and_counts_the_rest(
    store_engine: Engine, store: Store
) -> None:
    capped = _digest(store_engine, [store.first.run_id], max_flags=10)
    assert len(capped.flags) == 10 and {f.severity for f in capped.flags} == {"high"}
    assert capped.flags_total == sum(store.first.flags.values())
    assert capped.flags_omitted == capped.flags_total - 10
    omitted = f"{capped.flags_omitted} more flags not listed (the least severe)"
    for rendered in (render_text(capped), render_markdown(capped), render_html(capped)):
        assert omitted in rendered
    with pytest.raises(ValueError, match="max_flags must be 0 or more, not -1"):
        _digest(store_engine, [store.first.run_id], max_flags=-1)


# --- Nothing new, problems, facts -----------------------------------------------------------------


def test_a_run_that_changed_nothing_gives_a_digest_saying_nothing_new(
    store_engine: Engine, store: Store
) -> None:
    assert store.second.exposures_analyzed == 0
    quiet = _digest(store_engine, [store.second.run_id], facts={"files_discovered": 0})
    assert quiet.nothing_new and not quiet.verdicts and not quiet.flags and not quiet.flag_counts
    document = digest_json(quiet)
    assert document["nothing_new"] is True
    assert document["summary"] == [{"lead": NOTHING_NEW, "items": []}]
    for rendered in (render_text(quiet), render_markdown(quiet), render_html(quiet)):
        assert NOTHING_NEW in rendered
        assert "Verdicts" not in rendered and "Flags" not in rendered
    assert render_text(quiet).splitlines()[3] == NOTHING_NEW, "said first, plainly"
    assert _digest(store_engine, []).nothing_new, "no analysis run: nothing new either"


def test_a_quiet_night_with_failures_does_not_say_all_is_well(
    store_engine: Engine, store: Store
) -> None:
    quiet = _digest(store_engine, [store.second.run_id], problems=PROBLEMS[:1])
    text_ = render_text(quiet)
    assert NOTHING_NEW not in text_
    assert "No new verdict needs action." in text_
    assert "1 problem during the night:" in text_


def test_problems_and_facts_are_listed_in_every_format(night: Digest) -> None:
    text_, markdown, page = render_text(night), render_markdown(night), render_html(night)
    document = digest_json(night)
    for where, reason in PROBLEMS:
        assert f"{where}: {reason}" in text_
        assert f"- `{where}`: {reason}" in markdown
        assert f"<td>{where}</td><td>{reason}</td>" in page
        assert {"where": where, "reason": reason} in document["problems"]
    assert "2 problems during the night:" in text_
    assert "  files discovered    475" in text_ and "| files failed | 2 |" in markdown
    assert "<tr><th>exposures analysed</th><td>600</td></tr>" in page
    assert "Files discovered between 2022-05-07 03:00 UTC and 2022-05-08 03:00 UTC." in text_


def _outstanding(filename: str, attempts: int, *, tonight: bool) -> OutstandingFile:
    failed = datetime(2022, 5, 8, 3, 0, tzinfo=UTC)
    return OutstandingFile(
        filename=filename,
        uri=f"mast:HST/product/{filename}",
        reason="HTTP 404 Not Found: File not found (gave up after 1 attempt)",
        attempts=attempts,
        first_failed_at=failed,
        next_try_at=datetime(2022, 5, 9, 3, 0, tzinfo=UTC),
        failed_tonight=tonight,
    )


def test_outstanding_files_skipped_rows_and_warnings_are_listed_in_every_format(
    store_engine: Engine, store: Store
) -> None:
    outstanding = [_outstanding("iepp02a1q_flt.fits", 1, tonight=True)]
    skipped = {"not the instrument's calibration pipeline (HAP and HLA products)": 6}
    warnings = [("download mast:HST/product/iepp01uvq_flc.fits", "MAST lists 10 bytes")]
    digest = _digest(
        store_engine, [store.second.run_id], outstanding=outstanding, skipped=skipped,
        warnings=warnings,
    )  # fmt: skip
    text_, markdown, page = render_text(digest), render_markdown(digest), render_html(digest)
    document = digest_json(digest)
    lead = "1 file from MAST is outstanding (refused, missing or broken; tried again later"
    assert lead in text_ and lead in page
    assert "  - iepp02a1q_flt.fits: HTTP 404 Not Found" in text_
    assert "next try from 2022-05-09 03:00 UTC (failed 1 night)" in render_text(
        digest, details=False
    )
    assert "Outstanding downloads (1)" in text_ and "## Outstanding downloads (1)" in markdown
    assert "| `iepp02a1q_flt.fits` | 2022-05-09 03:00 UTC | 1 |" in markdown
    assert "<td>iepp02a1q_flt.fits</td><td>2022-05-09 03:00 UTC</td><td>1</td>" in page
    assert "Not fetched, by design" in text_ and "HAP and HLA products)  6" in text_
    assert "| not the instrument's calibration pipeline (HAP and HLA products) | 6 |" in markdown
    assert "Warnings (1)" in text_ and f"- `{warnings[0][0]}`: MAST lists 10 bytes" in markdown
    assert document["outstanding"][0]["next_try_at"] == "2022-05-09T03:00:00+00:00"
    assert document["skipped"] == skipped
    assert document["warnings"] == [{"where": warnings[0][0], "reason": "MAST lists 10 bytes"}]


def test_a_file_newly_outstanding_is_news_one_outstanding_since_before_is_not(
    store_engine: Engine, store: Store
) -> None:
    def quiet_with(item: OutstandingFile) -> Digest:
        return _digest(store_engine, [store.second.run_id], outstanding=[item])

    assert not quiet_with(_outstanding("iepp02a1q_flt.fits", 1, tonight=True)).nothing_new
    assert quiet_with(_outstanding("iepp02a1q_flt.fits", 2, tonight=True)).nothing_new
    still = quiet_with(_outstanding("iepp02a1q_flt.fits", 1, tonight=False))
    assert still.nothing_new
    assert NOTHING_NEW in render_text(still) and "iepp02a1q_flt.fits" in render_text(still)


def test_terminal_text_is_plain_and_can_stop_after_the_summary(night: Digest) -> None:
    full, short = render_text(night), render_text(night, details=False)
    assert "\x1b" not in full
    assert full.startswith(short) and len(short.splitlines()) < 30
    assert "IEPP01 by 2022-06-01" in short and "Verdicts (" not in short


# --- Escaping, JSON, files ------------------------------------------------------------------------


def test_html_and_markdown_escape_what_messages_say(night: Digest) -> None:
    hostile = "<script>alert('jit')</script> & <b>bold</b>"
    flag = FlagItem("iepp01uy", "iepp01010", 4, "gs_acq_failure", 1, "high", hostile,
                    {"note": hostile}, None)  # fmt: skip
    digest = dataclasses.replace(
        night,
        flags=[flag, *night.flags],
        problems=[*night.problems, dataclasses.replace(night.problems[0], reason=hostile)],
        facts=night.facts | {"<script>": hostile},
    )
    page = render_html(digest)
    assert "<script" not in page.lower() and "<b>bold" not in page
    assert "&lt;script&gt;alert(&#x27;jit&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold" in page
    markdown = render_markdown(digest)
    outside_code = re.sub(r"(`+).*?\1", "", markdown)  # code spans show their text as is
    assert not re.search(r"(?<!\\)<", outside_code), "every < outside code is escaped"
    assert r"\<script\>alert('jit')\</script\> \& \<b\>bold\</b\>" in markdown


def test_json_is_json_safe_and_round_trips(night: Digest) -> None:
    odd = dataclasses.replace(
        night,
        facts=night.facts | {"archive": Path("/archive"), "files": np.int64(3), "rate": np.nan},
    )
    document = digest_json(odd)
    assert json.loads(json.dumps(document)) == document
    assert (document["facts"]["archive"], document["facts"]["files"]) == ("/archive", 3)
    assert document["facts"]["rate"] is None
    assert document["today"] == "2022-05-08" and document["window"][0] == WINDOW[0].isoformat()
    assert datetime.fromisoformat(document["generated_at"]).tzinfo is not None
    visit = document["verdicts"][0]
    assert (visit["subject"], visit["hopr_deadline"], visit["days_left"]) == (
        "iepp01", "2022-06-01", 24,
    )  # fmt: skip
    assert [e["member_index"] for e in visit["exposures"]] == [4, 5, 6, 7]
    assert document["flags_total"] == len(document["flags"]) == night.flags_total


def test_write_digest_writes_markdown_html_and_json(night: Digest, tmp_path: Path) -> None:
    paths = write_digest(night, tmp_path / "digests" / "2022", "hstmon-2022-05-08")
    assert {k: p.name for k, p in paths.items()} == {
        "md": "hstmon-2022-05-08.md",
        "html": "hstmon-2022-05-08.html",
        "json": "hstmon-2022-05-08.json",
    }
    assert paths["md"].read_text(encoding="utf-8") == render_markdown(night)
    assert paths["html"].read_text(encoding="utf-8") == render_html(night)
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == digest_json(night)
    page = paths["html"].read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<style>" in page and "<link" not in page


def test_what_happened_is_the_verdict_without_its_advice() -> None:
    advice_dropped = {
        "File a HOPR (no delivery date known: the 90-day limit cannot be computed): "
        "exposure 2 lost lock; 1 is nominal.": "exposure 2 lost lock; 1 is nominal",
        "File a HOPR by 2022-06-01 (24 days left): Guide-star acquisition failed (GSFAIL=NOLOCK"
        "): the exposure was not guided.": "Guide-star acquisition failed (GSFAIL=NOLOCK): the "
        "exposure was not guided",
        "Something without advice.": "Something without advice",
    }
    for summary, happened in advice_dropped.items():
        assert _what_happened(summary) == happened


# --- Readers without access -----------------------------------------------------------------------


def test_a_digest_for_readers_without_access_leaves_proprietary_programs_out(
    store_engine: Engine, store: Store, night: Digest
) -> None:
    problems = [(*PROBLEMS[0], None), (*PROBLEMS[1], 16748)]
    public = _digest(store_engine, [store.first.run_id], problems=problems, hidden_programs=[16748])
    everything = [v.subject for v in _every_verdict(night)]
    assert "iepp01" in everything and "iepp01uy" in everything  # the visit, an exposure
    shown = [v.subject for v in _every_verdict(public)]
    assert not [s for s in shown if s.startswith("iepp01")]
    assert {v.proposid for v in _every_verdict(public)} <= {
        v.proposid for v in _every_verdict(night)
    } - {16748}
    hidden_flags = _rows(
        store_engine,
        "SELECT count(*) FROM flag f JOIN exposure e ON e.exposure_id = f.exposure_id"
        " WHERE f.analysis_run_id = :run AND e.proposid = 16748",
        store.first.run_id,
    )[0][0]
    assert hidden_flags > 0 and public.flags_total == night.flags_total - hidden_flags
    assert not [f for f in public.flags if f.exposure_id.startswith("iepp01")]
    assert [p.where for p in public.problems] == [PROBLEMS[0][0]]
    assert public.withheld_programs == 1 and night.withheld_programs == 0
    for text_ in (render_text(public), render_markdown(public), render_html(public)):
        assert "IEPP01" not in text_.upper() and "16748" not in text_
        assert "1 proprietary program is left out of this digest" in text_
    assert digest_json(public)["withheld_programs"] == 1
