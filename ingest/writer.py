"""The one writer: puts batches of FileOutcomes into the store, one transaction per batch.

A batch commits its files' rows together with their ``source_file`` status, so a run killed at any
point leaves each file either wholly written or untouched, and a re-run finishes the job.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ingest.reader import StoredFile
from ingest.records import (
    OWNED_COLUMNS,
    RANKED_COLUMNS,
    SCIENCE_KINDS,
    FileOutcome,
    SampleBlock,
)
from models.locks import serialize_transaction
from models.tables import (
    JIT_COLUMNS,
    Association,
    Exposure,
    FileWarning,
    FitsHeader,
    ImageMetric,
    ImagePreview,
    JitterSample,
    PsfMeasurement,
    SourceFile,
)

__all__ = [
    "StoreWriter",
    "encode_copy_binary",
    "encode_copy_rows",
    "load_stored_files",
    "with_copy_rows",
]

_SAMPLE_COLUMNS = ("exposure_id", "sample_index", *(sql for _, sql, _, _ in JIT_COLUMNS))
_FILE_ID_COLUMN = {
    "jif": "jif_file_id",
    "jit": "jit_file_id",
    "flc": "sci_file_id",
    "flt": "sci_file_id",
    "ima": "sci_file_id",
}
_WRITE_ORDER = ("asn", "jit", "jif", *SCIENCE_KINDS)
# Set when a row is first inserted and never updated: when the store first knew the exposure.
_FIRST_SEEN = "first_ingested_at"


def load_stored_files(connection: Connection) -> dict[str, StoredFile]:
    """What the store knows of every file it has seen, keyed by path."""
    rows = connection.execute(
        select(
            SourceFile.path,
            SourceFile.size_bytes,
            SourceFile.mtime_ns,
            SourceFile.sha256,
            SourceFile.status,
        )
    )
    return {
        row.path: StoredFile(row.size_bytes, row.mtime_ns, row.sha256, row.status) for row in rows
    }


def _insert(connection: Connection, table: Table):  # type: ignore[no-untyped-def]
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _last_by_key(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    # One statement may not touch a key twice (PostgreSQL refuses); the later file wins.
    return list({row[key]: row for row in rows}.values())


def _upsert(
    connection: Connection,
    table: Table,
    key: str,
    rows: list[dict[str, Any]],
    owned: Sequence[str],
    ranked: Sequence[str] = (),
) -> None:
    """Insert or update ``rows``: owned columns overwrite, shared identity columns fill gaps,
    ranked columns change only for a row whose ``sci_rank`` is at least the stored one."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in _last_by_key(rows, key):
        by_columns.setdefault(tuple(sorted(row)), []).append(row)
    for columns, group in by_columns.items():
        statement = _insert(connection, table)
        excluded = statement.excluded
        outranks = excluded["sci_rank"] >= func.coalesce(table.c["sci_rank"], 0) if ranked else None
        updates = {
            column: (
                case((outranks, excluded[column]), else_=table.c[column])
                if column in ranked
                else excluded[column]
                if column in owned or column.endswith("_file_id") or column == "updated_at"
                else func.coalesce(excluded[column], table.c[column])
            )
            for column in columns
            if column not in (key, _FIRST_SEEN)
        }
        connection.execute(
            statement.on_conflict_do_update(index_elements=[key], set_=updates), group
        )


def _concatenated(blocks: Sequence[SampleBlock]) -> dict[str, np.ndarray]:
    """All blocks' samples as one array per column (plus exposure_id and sample_index)."""
    lengths = [block.n_rows for block in blocks]
    columns = {
        "exposure_id": np.repeat(np.array([b.exposure_id for b in blocks], dtype="S8"), lengths),
        "sample_index": np.concatenate([np.arange(n) for n in lengths]),
    }
    for _, sql_name, _, _ in JIT_COLUMNS:
        columns[sql_name] = np.concatenate([block.columns[sql_name] for block in blocks])
    return columns


def _sample_rows(blocks: Sequence[SampleBlock]) -> list[tuple[Any, ...]]:
    """Samples as DBAPI tuples, NaN as None (NULL)."""
    lists: list[list[Any]] = []
    for values in _concatenated(blocks).values():
        if values.dtype.kind == "S":
            values = values.astype(str)
        as_list = values.tolist()
        if values.dtype.kind == "f":
            for index in np.flatnonzero(np.isnan(values)).tolist():
                as_list[index] = None
        lists.append(as_list)
    return list(zip(*lists, strict=True))


_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PG_COPY_TRAILER = struct.pack(">h", -1)


def _copy_layout() -> np.dtype:
    """One binary COPY tuple of jitter_sample: field count, then (length, value) per column."""
    fields: list[tuple[str, str]] = [("n_fields", ">i2"), ("len_exposure_id", ">i4")]
    fields += [("exposure_id", "S8"), ("len_sample_index", ">i4"), ("sample_index", ">i4")]
    for _, sql_name, _, sql_type in JIT_COLUMNS:
        fields += [(f"len_{sql_name}", ">i4"), (sql_name, ">i2" if sql_type == "int" else ">f8")]
    return np.dtype(fields)


_COPY_LAYOUT = _copy_layout()


def encode_copy_rows(blocks: Sequence[SampleBlock]) -> bytes:
    """The samples as PostgreSQL binary COPY tuples, built with numpy rather than row by row.

    Every field has a fixed width, so each tuple is a record of _COPY_LAYOUT; a NULL field has
    length -1 and no value bytes, which are cut out with a byte mask.
    """
    columns = _concatenated(blocks)
    n_total = len(columns["exposure_id"])
    records = np.zeros(n_total, dtype=_COPY_LAYOUT)
    records["n_fields"] = len(_SAMPLE_COLUMNS)
    records["len_exposure_id"] = 8
    records["len_sample_index"] = 4
    for name, values in columns.items():
        records[name] = values
    keep = np.ones((n_total, _COPY_LAYOUT.itemsize), dtype=bool)
    for _, sql_name, _, sql_type in JIT_COLUMNS:
        if sql_type == "int":
            records[f"len_{sql_name}"] = 2
            continue
        null = np.isnan(records[sql_name])
        records[f"len_{sql_name}"] = np.where(null, -1, 8)
        if null.any():
            offset = _COPY_LAYOUT.fields[sql_name][1]
            keep[null, offset : offset + 8] = False
    return records.view(np.uint8).reshape(n_total, _COPY_LAYOUT.itemsize)[keep].tobytes()


def with_copy_rows(block: SampleBlock) -> SampleBlock:
    """The block with its binary COPY encoding attached (run on a worker)."""
    return replace(block, copy_rows=encode_copy_rows([block]))


def encode_copy_binary(blocks: Sequence[SampleBlock]) -> bytes:
    """A complete binary COPY stream of the samples, reusing encodings made on the workers."""
    parts = [block.copy_rows or encode_copy_rows([block]) for block in blocks]
    return _PG_COPY_HEADER + b"".join(parts) + _PG_COPY_TRAILER


def _insert_samples(connection: Connection, blocks: Sequence[SampleBlock]) -> None:
    if not blocks:
        return
    names = ", ".join(_SAMPLE_COLUMNS)
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY jitter_sample ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(encode_copy_binary(blocks))
        return
    marks = ", ".join("?" * len(_SAMPLE_COLUMNS))
    sql = f"INSERT INTO jitter_sample ({names}) VALUES ({marks})"
    connection.connection.dbapi_connection.executemany(sql, _sample_rows(blocks))  # type: ignore[union-attr]


def _known_file_ids(connection: Connection, paths: list[str]) -> dict[str, int]:
    if not paths:
        return {}
    found = connection.execute(
        select(SourceFile.path, SourceFile.file_id).where(SourceFile.path.in_(paths))
    )
    return {row.path: row.file_id for row in found}


def _release(connection: Connection, files: list[tuple[str, int]], now: datetime) -> None:
    """Forget what earlier versions of these files said, before their new content lands.

    A file's headers go; for jitter files, the columns it owns (and a JIT's samples) are cleared
    on the rows it filled, so an exposure that vanished from a changed file keeps nothing stale.
    """
    if not files:
        return
    all_ids = [file_id for _, file_id in files]
    for model in (FitsHeader, FileWarning, ImageMetric, PsfMeasurement, ImagePreview):
        connection.execute(delete(model).where(model.file_id.in_(all_ids)))
    for kind, id_column in _FILE_ID_COLUMN.items():
        ids = [file_id for file_kind, file_id in files if file_kind == kind]
        if not ids:
            continue
        if kind in SCIENCE_KINDS:
            cleared_science: dict[str, Any] = dict.fromkeys(RANKED_COLUMNS) | {"updated_at": now}
            connection.execute(
                update(Exposure).where(Exposure.sci_file_id.in_(ids)).values(cleared_science)
            )
            continue
        if kind == "jit":
            owned = select(Exposure.exposure_id).where(Exposure.jit_file_id.in_(ids))
            connection.execute(delete(JitterSample).where(JitterSample.exposure_id.in_(owned)))
        for model in (Association, Exposure):
            table = model.__table__
            cleared: dict[str, Any] = dict.fromkeys((*OWNED_COLUMNS[kind][table.name], id_column))
            if "updated_at" in table.c:
                cleared["updated_at"] = now
            connection.execute(update(table).where(table.c[id_column].in_(ids)).values(cleared))


def _written_meanwhile(connection: Connection, outcomes: Sequence[FileOutcome]) -> set[str]:
    """Paths another run has written, with these very bytes, since this run read the store."""
    candidates = [o for o in outcomes if o.status == "ingested" and o.sha256]
    if not candidates:
        return set()
    stored = connection.execute(
        select(SourceFile.path, SourceFile.sha256, SourceFile.status).where(
            SourceFile.path.in_([o.path for o in candidates])
        )
    )
    done = {(row.path, row.sha256) for row in stored if row.status == "ingested"}
    return {o.path for o in candidates if (o.path, o.sha256) in done}


class StoreWriter:
    """Writes outcomes for one ingest run; call ``write`` with each batch."""

    def __init__(self, engine: Engine, run_id: int) -> None:
        self.engine = engine
        self.run_id = run_id

    def write(self, outcomes: Sequence[FileOutcome]) -> None:
        """Write one batch in one transaction."""
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            # Any number of ingests may parse at once; their batches commit one at a time, so two
            # runs over one file never insert its samples twice nor deadlock on its exposures.
            serialize_transaction(connection, "ingest-writer")
            meanwhile = _written_meanwhile(connection, outcomes)
            unchanged = [o for o in outcomes if o.status == "unchanged" or o.path in meanwhile]
            self._touch_unchanged(connection, unchanged)
            written = [o for o in outcomes if o.status != "unchanged" and o.path not in meanwhile]
            known = _known_file_ids(connection, [o.path for o in written])
            _release(connection, [(o.kind, known[o.path]) for o in written if o.path in known], now)
            file_ids = self._upsert_source_files(connection, written, now)
            self._write_records(connection, [o for o in written if o.record], file_ids, now)

    def _touch_unchanged(self, connection: Connection, outcomes: list[FileOutcome]) -> None:
        # Same bytes, new mtime (a copy or a touch): remember the mtime so the next run can trust
        # size + mtime and skip reading the file at all.
        if outcomes:
            connection.execute(
                update(SourceFile)
                .where(SourceFile.path == bindparam("b_path"))
                .values(mtime_ns=bindparam("b_mtime")),
                [{"b_path": o.path, "b_mtime": o.mtime_ns} for o in outcomes],
            )

    def _upsert_source_files(
        self, connection: Connection, outcomes: list[FileOutcome], now: datetime
    ) -> dict[str, int]:
        if not outcomes:
            return {}
        rows = [
            {
                "path": o.path,
                "kind": o.kind,
                "size_bytes": o.size_bytes,
                "mtime_ns": o.mtime_ns,
                "sha256": o.sha256,
                "status": o.status,
                "error": o.error,
                "n_exposures": len(o.record.exposures) if o.record else None,
                "ingest_run_id": self.run_id,
                "ingested_at": now,
            }
            for o in outcomes
        ]
        statement = _insert(connection, SourceFile.__table__)
        statement = statement.on_conflict_do_update(
            index_elements=["path"],
            set_={c: statement.excluded[c] for c in rows[0] if c != "path"},
        )
        connection.execute(statement, rows)
        return _known_file_ids(connection, [o.path for o in outcomes])

    def _write_records(
        self,
        connection: Connection,
        outcomes: list[FileOutcome],
        file_ids: dict[str, int],
        now: datetime,
    ) -> None:
        stamp = {"updated_at": now}
        associations: list[tuple[str, dict[str, Any]]] = []
        warnings: list[dict[str, Any]] = []
        exposures: list[tuple[str, dict[str, Any]]] = []
        samples: dict[str, SampleBlock] = {}
        headers: list[dict[str, Any]] = []
        science: dict[type, list[dict[str, Any]]] = {
            ImageMetric: [],
            PsfMeasurement: [],
            ImagePreview: [],
        }
        for outcome in outcomes:
            record = outcome.record
            assert record is not None
            file_id = file_ids[outcome.path]
            id_column = _FILE_ID_COLUMN.get(record.kind)
            extra = {id_column: file_id} if id_column else {}
            associations += [(record.kind, row | extra) for row in record.associations]
            exposures += [
                (record.kind, row | extra | stamp | {_FIRST_SEEN: now}) for row in record.exposures
            ]
            warnings += [row | {"file_id": file_id} for row in record.warnings]
            samples.update((block.exposure_id, block) for block in record.samples)
            for model, rows in ((ImageMetric, record.image_metrics), (PsfMeasurement, record.psf),
                                (ImagePreview, record.previews)):  # fmt: skip
                science[model] += [row | {"file_id": file_id} for row in rows]
            headers += [
                {
                    "file_id": file_id,
                    "hdu_index": h.hdu_index,
                    "extname": h.extname,
                    "exposure_id": h.exposure_id,
                    "header": h.header,
                }
                for h in record.headers
            ]
        for kind in _WRITE_ORDER:
            owned = OWNED_COLUMNS.get(kind, {})
            ranked = RANKED_COLUMNS if kind in SCIENCE_KINDS else ()
            rows = [row for k, row in associations if k == kind]
            _upsert(connection, Association.__table__, "asn_id", rows, owned.get("association", ()))
            rows = [row for k, row in exposures if k == kind]
            _upsert(
                connection,
                Exposure.__table__,
                "exposure_id",
                rows,
                owned.get("exposure", ()),
                ranked,
            )
        for model, rows in science.items():
            if rows:
                connection.execute(insert(model), rows)
        if samples:
            connection.execute(
                delete(JitterSample).where(JitterSample.exposure_id.in_(list(samples)))
            )
            _insert_samples(connection, list(samples.values()))
        if headers:
            connection.execute(FitsHeader.__table__.insert(), headers)
        if warnings:
            # One row per (file, HDU, keyword): a header repeating a keyword warns once.
            unique = {(w["file_id"], w["hdu_index"], w["keyword"]): w for w in warnings}
            connection.execute(FileWarning.__table__.insert(), list(unique.values()))
