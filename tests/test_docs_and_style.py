"""The references a user reads are current, and the code is lint-clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from models.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_cli_and_schema_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "update_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_column_is_documented() -> None:
    from models.tables import Base

    schema = (ROOT / "docs" / "schema.md").read_text()
    for table in Base.metadata.tables.values():
        assert f"## `{table.name}`" in schema
        for column in table.columns:
            assert f"| `{column.name}` |" in schema, f"{table.name}.{column.name}"
            assert column.comment, f"{table.name}.{column.name} has no comment (units, meaning)"


def test_readme_quick_start_names_real_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/hstmon demo" in readme and ".venv/bin/pytest" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in readme.splitlines() if ".venv/bin/pytest" in line)
    assert test_command.strip() in ci, ".ci/run must run the README's test command"
    assert CliRunner().invoke(main, ["demo", "--help"]).exit_code == 0


def test_code_is_ruff_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_constraints_pin_every_dependency_within_its_declared_range() -> None:
    """Production installs with constraints.txt: it must pin each declared dependency, validly."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [
        Requirement(r) for extra in project["optional-dependencies"].values() for r in extra
    ]
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a name==version pin"
            pins[canonicalize_name(name)] = version.strip()
    for requirement in declared:
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pinned), (
            f"constraints.txt pins {requirement.name}=={pinned}, outside {requirement.specifier}"
        )
