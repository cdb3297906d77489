"""Bulk inserts: COPY on PostgreSQL, executemany elsewhere; the same rows either way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Connection, Table, insert

__all__ = ["bulk_insert"]


def _copy_value(value: Any, is_json: bool) -> Any:
    return Jsonb(value) if is_json and value is not None else value


def bulk_insert(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in the connection's transaction.

    On PostgreSQL, COPY is several times faster than executemany for the hundreds of thousands
    of rows an archive-wide analysis writes.
    """
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table), rows)
        return
    columns = list(rows[0])
    is_json = [isinstance(table.c[c].type, JSON) for c in columns]
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    names = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([_copy_value(row[c], j) for c, j in zip(columns, is_json, strict=True)])
