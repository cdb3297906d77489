"""The hstmon command line as a newcomer uses it: help, database set-up, ingest exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect

from models.cli import main
from models.database import make_engine


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    # The default store lives in the user's data directory: point that at a temporary folder.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    monkeypatch.delenv("HSTMON_DATABASE_URL", raising=False)
    return CliRunner()


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("demo", "ingest", "synth", "db"):
        assert command in result.output


@pytest.mark.parametrize(
    "words", [["ingest"], ["synth"], ["demo"], ["db"], ["db", "upgrade"], ["db", "schema"]]
)
def test_every_command_explains_itself(runner: CliRunner, words: list[str]) -> None:
    result = runner.invoke(main, [*words, "--help"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) > 5


def test_default_database_is_an_sqlite_file_in_the_data_directory(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    expected = tmp_path / "data-home" / "hstmon" / "hstmon.sqlite"
    assert str(expected) in result.output
    assert expected.is_file()
    assert "exposure" in inspect(make_engine(f"sqlite:///{expected}")).get_table_names()


def test_db_option_and_environment_choose_the_database(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "given.sqlite"
    assert runner.invoke(main, ["db", "upgrade", "--db", f"sqlite:///{given}"]).exit_code == 0
    assert given.is_file()
    monkeypatch.setenv("HSTMON_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    result = runner.invoke(main, ["db", "url"])
    assert str(tmp_path / "env.sqlite") in result.output


def test_ingest_exit_status_says_whether_a_file_failed(
    runner: CliRunner, real_data: Path, tmp_path: Path, dask_scheduler: str
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy2(real_data / "ldngz2szj_jit.fits.gz", archive)
    db = ["--db", f"sqlite:///{tmp_path / 'x.sqlite'}", "--scheduler", dask_scheduler]
    result = runner.invoke(main, ["ingest", str(archive), *db])
    assert result.exit_code == 0, result.output
    assert "1 ingested" in result.output and "21 jitter samples" in result.output

    (archive / "ibad01010_jit.fits").write_text("not fits")
    result = runner.invoke(main, ["ingest", str(archive), *db])
    assert result.exit_code == 1
    assert "1 failed" in result.output and "not a FITS file" in result.output


def test_unreachable_database_is_a_clear_error(runner: CliRunner, real_data: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/nothing"
    result = runner.invoke(main, ["ingest", str(real_data), "--db", url])
    assert result.exit_code == 1
    assert "the database is unreachable or went away" in result.output
    assert "run the same command again" in result.output
    assert "Traceback" not in result.output


def test_an_outdated_schema_is_a_clear_error(
    runner: CliRunner, real_data: Path, tmp_path: Path
) -> None:
    from models.database import upgrade

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0001")
    result = runner.invoke(main, ["ingest", str(real_data), "--db", url])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "has schema revision 0001" in result.output and "hstmon db upgrade" in result.output
