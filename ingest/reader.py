"""Turn one file on disk into a FileOutcome: identify, hash, parse, and explain any failure.

This is the function Dask workers run; it reads each file exactly once (bytes in memory, parsed
in place) and never raises for a bad file: the reason becomes the outcome.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest.fits_blocks import FileFormatError, FitsHDU, read_hdus
from ingest.jitter_files import parse_asn, parse_jif, parse_jit
from ingest.records import SCIENCE_KINDS, FileOutcome, FileRecord

__all__ = ["PARSERS", "StoredFile", "product_kind", "read_file", "unchanged_on_disk"]

FITS_BLOCK = 2880
PARSERS: dict[str, Callable[[list[FitsHDU], str], FileRecord]] = {
    "jif": parse_jif,
    "jit": parse_jit,
    "asn": parse_asn,
}
_PRODUCT_SUFFIX = re.compile(r"_(?P<kind>[a-z0-9]+)\.fits(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class StoredFile:
    """What the store knows of a file from an earlier run, to decide whether to read it again."""

    size_bytes: int
    mtime_ns: int
    sha256: str | None
    status: str


def product_kind(path: str | Path) -> str | None:
    """'jif', 'jit', 'asn', another product suffix ('flt', 'spt'...), or None if not a FITS name."""
    match = _PRODUCT_SUFFIX.search(Path(path).name)
    return match["kind"].lower() if match else None


def _fits_bytes(raw: bytes, name: str) -> bytes:
    """The FITS bytes of a plain or gzipped file, with a readable error when they cannot be."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            msg = f"{name}: corrupt or truncated gzip stream ({exc})"
            raise FileFormatError(msg) from exc
    if not raw.startswith(b"SIMPLE  ="):
        msg = f"{name}: not a FITS file (it does not begin with a SIMPLE card)"
        raise FileFormatError(msg)
    if len(raw) % FITS_BLOCK:
        msg = (
            f"{name}: truncated: {len(raw)} bytes is not a whole number of "
            f"{FITS_BLOCK}-byte FITS blocks"
        )
        raise FileFormatError(msg)
    return raw


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_science(path: Path, kind: str) -> FileRecord:
    """A science file through astropy; a short or cut file fails with a reason that says so."""
    size = path.stat().st_size
    if not path.name.endswith(".gz") and size % FITS_BLOCK:
        msg = (
            f"{path.name}: truncated: {size} bytes is not a whole number of "
            f"{FITS_BLOCK}-byte FITS blocks"
        )
        raise FileFormatError(msg)
    # Imported here: photutils and scipy cost a worker ~1.5 s, paid only if it meets an image.
    from ingest.science_files import parse_science_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            record = parse_science_file(path, kind)
        except (TypeError, ValueError) as exc:
            if "too small" not in str(exc) and "truncated" not in str(exc):
                raise
            # numpy's words for a memory map that ends before the data does
            msg = f"{path.name}: truncated: the file ends inside its data ({exc})"
            raise FileFormatError(msg) from exc
    truncated = [w for w in caught if "truncated" in str(w.message)]
    if truncated:
        msg = f"{path.name}: truncated: {truncated[0].message}"
        raise FileFormatError(msg)
    return record


def unchanged_on_disk(stored: StoredFile | None, size: int, mtime_ns: int) -> bool:
    """Size and mtime equal to an ingested file's: a nightly run need not even read it."""
    return (
        stored is not None
        and stored.status == "ingested"
        and stored.size_bytes == size
        and stored.mtime_ns == mtime_ns
    )


def read_file(
    path: str, stored: StoredFile | None = None, *, retry_failed: bool = False
) -> FileOutcome:
    """Read, hash and parse one file; every problem becomes a 'failed' outcome with its reason."""
    name = Path(path).name
    kind = product_kind(path) or "other"
    stat = os.stat(path)
    outcome = FileOutcome(path, kind, stat.st_size, stat.st_mtime_ns, None, "unchanged")
    if unchanged_on_disk(stored, stat.st_size, stat.st_mtime_ns):
        outcome.sha256 = stored.sha256 if stored else None
        return outcome
    science = kind in SCIENCE_KINDS
    # A science file can be 168 MB: hash it in chunks and let astropy memory-map it.
    raw = b"" if science else Path(path).read_bytes()
    outcome.sha256 = _file_sha256(path) if science else hashlib.sha256(raw).hexdigest()
    # Same bytes as last time: an ingested or failed file would give the same answer again; a
    # skipped one is looked at anew, since a newer hstmon may read its kind.
    same_bytes = stored is not None and stored.sha256 == outcome.sha256
    if same_bytes and (
        stored.status == "ingested" or (stored.status == "failed" and not retry_failed)
    ):
        return outcome
    if kind not in PARSERS and not science:
        outcome.status = "skipped"
        outcome.error = (
            f"{name}: '{kind}' products are not ingested "
            "(hstmon reads jif, jit, asn, flt, flc, ima)"
        )
        return outcome
    try:
        if science:
            outcome.record = _parse_science(Path(path), kind)
        else:
            outcome.record = PARSERS[kind](read_hdus(_fits_bytes(raw, name), name), name)
        outcome.status = "ingested"
    except FileFormatError as exc:
        outcome.status, outcome.error = "failed", str(exc)
    except Exception as exc:  # a file astropy cannot read at all: record why, keep the run going
        outcome.status = "failed"
        outcome.error = f"{name}: unreadable as a {kind} file: {type(exc).__name__}: {exc}"
    return outcome
