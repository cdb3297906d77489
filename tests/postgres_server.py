"""A throwaway PostgreSQL server of the tests' own: a real one, in a temporary folder.

Used where no server is given (``HSTMON_TEST_POSTGRES_URL`` unset) but PostgreSQL's server
programs are installed, and by the tests that stop and restart a server under a running job (so
they never disturb a shared one). PostgreSQL refuses to run as root: under root the programs run
as the ``postgres`` system user, which owns the folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "server_programs_missing"]


def _bin_dir() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/VERSION/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _run_as() -> list[str]:
    """The prefix that runs a server program as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def server_programs_missing() -> str | None:
    """Why no throwaway server can start here, or None when one can."""
    if _bin_dir() is None:
        return "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to start the server as 'postgres'"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A PostgreSQL server in a temporary folder, on a free port of 127.0.0.1, trust auth."""

    def __init__(self) -> None:
        reason = server_programs_missing()
        if reason:
            raise RuntimeError(reason)
        self._bin = _bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="hstmon-pg-"))
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._pg(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync", "--no-instructions"])  # fmt: skip

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        """The admin URL (database ``postgres``), for the suite's scratch databases."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _argv(self, command: list[str]) -> list[str]:
        return [*_run_as(), str(self._bin / command[0]), *command[1:]]

    def _pg(self, command: list[str]) -> None:
        result = subprocess.run(
            self._argv(command), capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            msg = f"{command[0]} failed ({result.returncode}): {result.stderr.strip()}"
            raise RuntimeError(msg)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        log = self.folder / "server.log"
        self._pg(["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start"])

    def stop_command(self, mode: str = "fast") -> list[str]:
        """The command that stops the server, for another process to run."""
        return self._argv(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` disconnects clients cleanly, ``immediate`` is a crash."""
        self._pg(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
