"""`hstmon demo` runs the whole job unattended and says what it found and where."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from models.cli import main


def test_demo_runs_end_to_end_without_asking_anything(tmp_path: Path) -> None:
    database = tmp_path / "demo.sqlite"
    arguments = ["demo", "--db", f"sqlite:///{database}", "--archive", str(tmp_path / "archive"),
                 "--exposures", "40", "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(main, arguments, input="")
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output
    lines = result.output.splitlines()
    iepp = next(line for line in lines if line.startswith("16748"))
    # program 16748 is the IEPP01010 pattern: 7 exposures, 4 guide-star acquisition failures
    assert iepp.split()[:6] == ["16748", "WFC3/UVIS", "1", "7", iepp.split()[4], "4"]
    assert f"The database is {database}" in result.output
    assert "Visits that need attention" in result.output
    iepp_action = next(line for line in lines if line.strip().startswith("iepp01 "))
    assert "hopr" in iepp_action and "exposures 4-7 lost their guide star" in iepp_action
    assert database.is_file()

    again = CliRunner().invoke(main, arguments, input="")
    assert again.exit_code == 0, again.output
    assert "0 ingested" in again.output and "unchanged" in again.output
