"""A lock held for the length of a job, so two copies of it never run on one store at once.

PostgreSQL: a session-level advisory lock on a connection kept open for the job; the server frees
it when that connection ends, so a killed process never leaves it held. SQLite: an ``flock`` on a
file beside the database file, which the operating system frees when the process ends.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import DBAPIError

__all__ = ["LockBusyError", "job_lock", "serialize_transaction"]


class LockBusyError(RuntimeError):
    """Another process holds the job's lock."""


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(f"hstmon:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_file(engine: Engine, name: str) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(database).with_name(f"{Path(database).name}.{name}.lock")


@contextmanager
def job_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock called ``name`` on this store, or raise LockBusyError at once."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, name):
            yield
        return
    path = _lock_file(engine, name)
    if path is None:  # an in-memory database belongs to this process alone
        yield
        return
    with _file_lock(path, name):
        yield


@contextmanager
def _advisory_lock(engine: Engine, name: str) -> Iterator[None]:
    key = _advisory_key(name)
    with engine.connect() as connection:
        held = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        connection.commit()
        if not held:
            msg = f"another `hstmon {name}` is running on this database (advisory lock {key})"
            raise LockBusyError(msg)
        try:
            yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
            except DBAPIError:
                # The connection died with the server (a restart): the lock went with it.
                connection.invalidate()


@contextmanager
def _file_lock(path: Path, name: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            msg = f"another `hstmon {name}` is running on this database ({holder}; lock {path})"
            raise LockBusyError(msg) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def serialize_transaction(connection: Connection, name: str) -> None:
    """Make this transaction the only one called ``name`` on the store until it ends.

    Call it first thing in the transaction. PostgreSQL: a transaction-level advisory lock (the
    next one waits for the commit). SQLite: BEGIN IMMEDIATE takes the write lock before the
    transaction's first read, so what it reads is what it writes over (busy_timeout makes the
    other writer wait).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_advisory_key(name))))
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
