"""`hstmon assess`: the exception-report checklist for one visit, from files to a verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from models.cli import main


def test_assess_ingests_then_reports_the_iepp01010_pattern(
    synthetic_archive: Path, tmp_path: Path
) -> None:
    database = ["--db", f"sqlite:///{tmp_path / 'a.sqlite'}"]
    report = tmp_path / "report.html"
    result = CliRunner().invoke(
        main,
        [
            "assess",
            "IEPP01010",
            "--ingest",
            str(synthetic_archive),
            "--html",
            str(report),
            *database,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "HOPR (90-day limit passed on " in result.output, "a 2022 visit: shown apart"
    assert "exposures 4-7 lost their guide star; 1-3 are nominal" in result.output
    assert "problem flags: " in result.output and "T_GSFAIL" in result.output
    assert result.output.count("gs_acq_failure") == 4
    page = report.read_text()
    assert page.count("<img ") == 7, "one jitter plot per exposure"
    assert re.search(r"class='verdict hopr'", page)
    assert "GSFAIL" in page and "NOLOCK" in page

    as_json = CliRunner().invoke(main, ["assess", "iepp01uyq", "--json", *database])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    (exposure,) = document["exposures"]
    assert exposure["exposure_id"] == "iepp01uy" and exposure["verdict"]["verdict"] == "hopr"
    assert {f["rule"] for f in exposure["flags"]} >= {"gs_acq_failure"}
    assert document["verdict"]["verdict"] == "hopr"


def test_assess_of_nominal_real_visit_says_no_action(real_data: Path, tmp_path: Path) -> None:
    database = ["--db", f"sqlite:///{tmp_path / 'r.sqlite'}"]
    report = tmp_path / "ldfd.html"
    result = CliRunner().invoke(
        main,
        ["assess", "ldfd01010", "--ingest", str(real_data), "--html", str(report), *database],
    )
    assert result.exit_code == 0, result.output
    assert "OK: No action needed: all 4 exposures are nominal." in result.output
    assert report.read_text().count("<img ") == 4


def test_assess_of_an_unknown_id_is_a_clear_error(tmp_path: Path) -> None:
    database = ["--db", f"sqlite:///{tmp_path / 'e.sqlite'}"]
    result = CliRunner().invoke(main, ["assess", "ixxx01010", *database])
    assert result.exit_code == 1
    assert "ixxx01010: no association or exposure of that name has been ingested" in result.output


def test_a_broken_rules_file_is_a_clear_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[rules.high_jitter]\nseverity = "urgent"\n')
    database = ["--db", f"sqlite:///{tmp_path / 'e.sqlite'}"]
    result = CliRunner().invoke(main, ["analyze", "--rules", str(rules), *database])
    assert result.exit_code == 1
    assert "rule high_jitter: severity 'urgent' is not one of high, medium, info" in result.output
