"""Run an `hstmon` command and SIGKILL it at a chosen moment of its work with the database.

    python tests/fault_injection.py statement:N -- ingest DIR --db URL
    python tests/fault_injection.py commit:N -- analyze --db URL
    python tests/fault_injection.py call:N:PROGRAM -- ingest DIR --db URL
    python tests/fault_injection.py none -- ingest DIR --db URL     (counts only)

The process kills itself just before the Nth SQL statement (or the Nth commit) it sends, or runs
PROGRAM (split on spaces) just before its Nth commit and goes on: a moment chosen by what the
program is doing, not by a clock, so every run of a test hits the same point. When it is not
killed it prints ``statements=S commits=C`` to stderr at exit, so a test can spread its kill
points over a clean run. Only the process that runs the command counts; Dask
workers it starts live in the same session, for the test to kill with the process group.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["run_with_fault"]


def run_with_fault(
    fault: str, arguments: list[str], timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``hstmon ARGUMENTS`` with ``fault`` in its own session; kill what it leaves behind."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), fault, "--", *arguments],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=env,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        # Its Dask workers, when it was killed (none left when it ended by itself).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def counts(stderr: str) -> dict[str, int]:
    """``{"statements": S, "commits": C}`` from a clean run's stderr."""
    line = next(x for x in reversed(stderr.splitlines()) if x.startswith("statements="))
    return {k: int(v) for k, v in (part.split("=") for part in line.split())}


def _install(fault: str) -> None:
    kind, _, rest = fault.partition(":")
    number, _, program = rest.partition(":")
    limit = int(number or 0)
    seen = {"statement": 0, "commit": 0}

    def _count(what: str) -> None:
        seen[what] += 1
        if kind == "call" and what == "commit" and seen[what] == limit:
            subprocess.run(program.split(), check=True)
        elif kind == what and seen[what] == limit:
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(Engine, "before_cursor_execute", lambda *_: _count("statement"))
    event.listen(Engine, "commit", lambda *_: _count("commit"))
    atexit.register(
        lambda: print(f"statements={seen['statement']} commits={seen['commit']}", file=sys.stderr)
    )


def main() -> None:
    fault, separator, *arguments = sys.argv[1:]
    assert separator == "--", "usage: fault_injection.py FAULT -- HSTMON-ARGUMENTS"
    _install(fault)
    from models.cli import main as hstmon

    hstmon(arguments)


if __name__ == "__main__":
    main()
