"""The MAST source: find HST products with astroquery, download them verified onto an archive tree.

Discovery runs on the calling process (``find_products``): of everything MAST lists it keeps
the instrument's calibrated pipeline FITS products of each exposure, and counts what it passed
over and why. Downloads run as Dask tasks (``download_products``), one small batch of files per
task, each file fetched into ``<name>.part`` and renamed into place only once verified, so ingest
(which globs ``*.fits`` and ``*.fits.gz``) never sees a partial file. A failed download says
whether asking again soon can help (``DownloadOutcome.permanent``).
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import re
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import numpy as np
import requests
from astropy.io import fits
from astropy.table import Row, Table, vstack
from astropy.utils.exceptions import AstropyUserWarning
from astroquery.exceptions import (
    InvalidQueryError,
    LoginError,
    NoResultsWarning,
    RemoteServiceError,
)
from astroquery.mast import Mast, Observations
from astroquery.mast import conf as mast_conf
from dask.distributed import Client, Future, as_completed
from requests.adapters import HTTPAdapter
from tqdm import tqdm

from ingest.reader import FITS_BLOCK

__all__ = [
    "DOWNLOAD_URL_ENV",
    "PIPELINE_PROJECTS",
    "SKIP_REASONS",
    "TOKEN_ENV",
    "Discovery",
    "DownloadOutcome",
    "MastError",
    "MastProduct",
    "MastSelection",
    "download_product",
    "download_products",
    "download_url",
    "find_products",
    "from_mjd",
    "mast_criteria",
    "resolve_token",
    "split_present",
    "to_mjd",
    "verify_fits",
]

DOWNLOAD_URL_ENV = "HSTMON_MAST_DOWNLOAD_URL"
TOKEN_ENV = "MAST_API_TOKEN"  # astroquery's own convention
DATE_COLUMNS = {"release": "t_obs_release", "observation": "t_min"}
# Each instrument's calibration pipeline as MAST's product column `project` names it. The same
# exposures' HAP copies (project HAP-SVM, HAP-MVM) and HLA products carry their own project, and
# would be a second copy of every FLT/FLC. WFC3 and ACS are in the recorded answers; STIS and COS
# follow the same pattern (unconfirmed: MastSelection.projects overrides).
PIPELINE_PROJECTS = {"WFC3": "CALWF3", "ACS": "CALACS", "STIS": "CALSTIS", "COS": "CALCOS"}
# Why discovery passed over a product row MAST listed, in the order the reasons are tested.
SKIP_REASONS = {
    "other_project": "not the instrument's calibration pipeline (HAP and HLA products)",
    "preview": "preview images (JPG, PNG), not data",
    "not_fits": "not FITS files",
    "other_product_type": "product types not asked for (RAW, SPT, DRZ, DRC...)",
    "not_public": "not public yet (EXCLUSIVE_ACCESS, PROPRIETARY) and no MAST token given",
    "no_observation": "rows that could not be tied to their observation (see the warnings)",
}
FITS_EXTENSIONS = (".fits", ".fits.gz")
PREVIEW_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif")
PUBLIC_DATA_RIGHTS = "PUBLIC"
TOKEN_COOKIE = "mast_token"  # the cookie astroquery's login puts on its session

_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
# MAST needs both ends of a range; an open end is MJD 0 (1858) or 100000 (2132).
_MJD_OPEN_LOW, _MJD_OPEN_HIGH = 0.0, 100_000.0
# Observations per products query: an HST visit has tens of products, so a chunk stays far
# below MAST's 50,000-row page, and each chunk is paged anyway.
_OBSERVATIONS_PER_PRODUCT_QUERY = 500
# Guards against a server that ignores page numbers (50 million rows at the default page size).
_MAX_PAGES = 1000
_PRODUCTS_SERVICE = "Mast.Caom.Products"
# A task is a batch of files fetched a few at a time: downloads wait on the network, so each
# worker keeps several streams open (2 workers x 4 = 8 at once, a polite load on MAST).
_FILES_PER_TASK = 16
_STREAMS_PER_TASK = 4
_BLOCK_BYTES = 1 << 16
_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S = 30.0, 300.0
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class MastError(RuntimeError):
    """A MAST query failed: the message says what was asked, what MAST said and what to do."""


@dataclass(frozen=True)
class MastSelection:
    """Which HST products to fetch: CAOM criteria plus filters on the products MAST lists.

    ``since`` (inclusive) and ``until`` (exclusive) are UTC datetimes (naive ones are taken as
    UTC) compared with ``date_field``: the release date (``t_obs_release``) or the observation
    start (``t_min``). ``programs`` and ``obs_ids`` may hold one MAST wildcard (``*``) each.
    Products are kept when their ``project`` is one of ``projects`` (default: the instruments'
    calibration pipelines, `PIPELINE_PROJECTS`), their file is FITS, their sub-group is one of
    ``product_types``, and, when ``public_only``, their ``dataRights`` is PUBLIC.
    """

    programs: tuple[str, ...] = ()
    obs_ids: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ("WFC3/UVIS", "WFC3/IR")
    date_field: Literal["release", "observation"] = "release"
    since: datetime | None = None
    until: datetime | None = None
    product_types: tuple[str, ...] = ("FLT", "FLC", "IMA", "JIF", "JIT", "ASN")
    projects: tuple[str, ...] = ()
    public_only: bool = True

    @property
    def pipeline_projects(self) -> tuple[str, ...]:
        """The MAST projects whose products are kept: ``projects``, else the instruments'."""
        if self.projects:
            return self.projects
        if not self.instruments:
            return tuple(sorted(set(PIPELINE_PROJECTS.values())))
        families = dict.fromkeys(i.split("/")[0].strip().upper() for i in self.instruments)
        return tuple(PIPELINE_PROJECTS[f] for f in families if f in PIPELINE_PROJECTS)

    def __post_init__(self) -> None:
        if self.date_field not in DATE_COLUMNS:
            msg = f"date_field must be one of {sorted(DATE_COLUMNS)}, got {self.date_field!r}"
            raise ValueError(msg)
        if self.since and self.until and _utc(self.since) >= _utc(self.until):
            msg = f"since ({self.since}) must be before until ({self.until})"
            raise ValueError(msg)
        if not self.product_types:
            msg = "product_types is empty: no product would be selected"
            raise ValueError(msg)
        for name in ("programs", "obs_ids"):
            wildcards = [v for v in getattr(self, name) if "*" in v or "%" in v]
            if len(wildcards) > 1:  # astroquery would keep the first and drop the rest
                msg = f"{name}: MAST takes one wildcard value per criterion, got {wildcards}"
                raise ValueError(msg)
        unknown = [
            i for i in self.instruments if i.split("/")[0].strip().upper() not in PIPELINE_PROJECTS
        ]
        if unknown and not self.projects:
            msg = (
                f"no calibration pipeline known for {', '.join(unknown)}: name the MAST project "
                f"of its pipeline products (projects=, --project), e.g. one of "
                f"{sorted(PIPELINE_PROJECTS.values())}"
            )
            raise ValueError(msg)

    def as_json(self) -> dict[str, Any]:
        """The selection as JSON-ready values, for run bookkeeping."""
        return {
            "programs": list(self.programs),
            "obs_ids": list(self.obs_ids),
            "instruments": list(self.instruments),
            "date_field": self.date_field,
            "since": _utc(self.since).isoformat() if self.since else None,
            "until": _utc(self.until).isoformat() if self.until else None,
            "product_types": list(self.product_types),
            "projects": list(self.pipeline_projects),
            "public_only": self.public_only,
        }

    def describe(self) -> str:
        """The selection in words, for messages."""
        words = [f"HST {', '.join(self.instruments) or 'any instrument'} observations"]
        if self.programs:
            words.append(f"of programs {', '.join(self.programs)}")
        if self.obs_ids:
            words.append(f"with obs ids {', '.join(self.obs_ids)}")
        if self.since or self.until:
            words.append("released" if self.date_field == "release" else "observed")
        if self.since:
            words.append(f"from {_utc(self.since):%Y-%m-%d %H:%M} UTC")
        if self.until:
            words.append(f"until {_utc(self.until):%Y-%m-%d %H:%M} UTC")
        return " ".join(words)


@dataclass(frozen=True)
class MastProduct:
    """One file MAST holds, as its product list describes it.

    ``size_bytes`` is the size MAST lists (None when it lists none), which can be out of date:
    a download is judged by its FITS structure, not by this. ``data_rights`` (PUBLIC,
    EXCLUSIVE_ACCESS...) and ``released_at`` (the observation's public release, UTC) are
    MAST's, kept for whoever decides who may see a program's data.
    """

    uri: str
    filename: str
    obs_id: str
    proposal_id: str
    product_type: str
    size_bytes: int | None
    project: str | None = None
    data_rights: str | None = None
    released_at: datetime | None = None

    def __post_init__(self) -> None:
        # These become directory and file names: nothing from MAST may climb out of the archive.
        for name in ("filename", "obs_id", "proposal_id"):
            value = getattr(self, name)
            if not _SAFE_NAME.fullmatch(value):
                msg = f"{self.uri}: {name} {value!r} is not a plain file name"
                raise ValueError(msg)

    def local_path(self, archive_root: Path) -> Path:
        """Where the file lives in the archive: ``<root>/<proposal_id>/<obs_id>/<filename>``."""
        return Path(archive_root) / self.proposal_id / self.obs_id / self.filename


@dataclass(frozen=True)
class Discovery:
    """What discovery found: the products to fetch, and how many listed rows it passed over.

    ``skipped`` counts rows by reason (the keys of `SKIP_REASONS`); ``warnings`` say which rows
    should have been kept but could not be (a product not tied to its observation).
    ``not_public`` are the products passed over only because they are not public yet and no
    token was given: what MAST says of their rights and release, for whoever keeps track of
    proprietary programs.
    """

    products: list[MastProduct]
    skipped: dict[str, int]
    warnings: list[str]
    not_public: list[MastProduct] = field(default_factory=list)


@dataclass(frozen=True)
class DownloadOutcome:
    """What became of one product: ``size_bytes`` of the file in place (0 if none), ``seconds``
    of wall time, ``attempts`` HTTP requests made (0 when the file was already present).

    A failure is ``permanent`` when asking again soon will not help: MAST refused or does not
    have the file (a 4xx answer), or what it sent was still not whole FITS after the retries.
    Otherwise (5xx, timeouts, connections lost, the local disk, a refused login) it is
    transient. ``warning`` says what was odd about a good file (MAST's listed size differs).
    """

    uri: str
    path: str
    status: Literal["downloaded", "present", "failed"]
    error: str | None
    size_bytes: int
    seconds: float
    attempts: int
    permanent: bool = False
    warning: str | None = None


# --- discovery ----------------------------------------------------------------------------


def to_mjd(moment: datetime) -> float:
    """A datetime (naive = UTC) as a Modified Julian Date, the time unit of MAST's CAOM fields."""
    return (_utc(moment) - _MJD_EPOCH) / timedelta(days=1)


def from_mjd(mjd: float) -> datetime:
    """A Modified Julian Date as a UTC datetime (to the microsecond)."""
    return _MJD_EPOCH + timedelta(days=float(mjd))


def _caom_obs_id(obs_id: str) -> str:
    """An obs id as CAOM spells it: pipeline ids (IEPP01010) upper case, HAP ids (hst_...)
    lower case."""
    return obs_id.lower() if obs_id.lower().startswith("hst_") else obs_id.upper()


def mast_criteria(selection: MastSelection) -> dict[str, Any]:
    """The ``Observations.query_criteria`` keywords for a selection."""
    criteria: dict[str, Any] = {"obs_collection": "HST"}
    if selection.instruments:
        criteria["instrument_name"] = list(selection.instruments)
    if selection.programs:
        criteria["proposal_id"] = [str(p) for p in selection.programs]
    if selection.obs_ids:
        criteria["obs_id"] = [_caom_obs_id(o) for o in selection.obs_ids]
    if selection.since or selection.until:
        low = to_mjd(selection.since) if selection.since else _MJD_OPEN_LOW
        high = to_mjd(selection.until) if selection.until else _MJD_OPEN_HIGH
        criteria[DATE_COLUMNS[selection.date_field]] = [low, high]
    return criteria


def find_products(
    selection: MastSelection, *, page_size: int = 50_000, progress: bool | None = None
) -> Discovery:
    """The products of the selection MAST lists, once each by URI, sorted by location, and
    what was passed over and why.

    Observations and products are both fetched page by page (``page_size`` rows; MAST caps a
    page at 50,000) and a page that comes back full is always followed by the next, so no
    result is cut at the cap silently. Nothing found is an empty discovery. Raises `MastError`.
    """
    _give_queries_a_timeout()
    observations = _within_dates(_query_observations(selection, page_size), selection)
    if not len(observations):
        return Discovery([], {}, [])
    by_obsid = {str(row["obsid"]): row for row in observations}
    obsids = sorted(by_obsid)
    step = _OBSERVATIONS_PER_PRODUCT_QUERY
    show = sys.stderr.isatty() if progress is None else progress
    tables = []
    with tqdm(total=len(obsids), unit="obs", disable=not show, leave=False) as bar:
        for start in range(0, len(obsids), step):
            chunk = obsids[start : start + step]
            tables.append(_query_products(chunk, selection, page_size))
            bar.update(len(chunk))
    found = [t for t in tables if len(t)]
    if not found:
        return Discovery([], {}, [])
    with _mast_query(f"the product list of {selection.describe()}"):
        wanted, not_public, skipped = _wanted_products(vstack(found), selection)
    products, warnings = _products(wanted, by_obsid)
    if warnings:
        skipped["no_observation"] = len(warnings)
    withheld, _ = _products(not_public, by_obsid)  # counted as not public already
    return Discovery(_unique_sorted(products), skipped, warnings, _unique_sorted(withheld))


def _products(rows: Table, observations: dict[str, Row]) -> tuple[list[MastProduct], list[str]]:
    """The products of some rows, and a warning for each row that cannot be filed."""
    products, warnings = [], []
    for row in rows:
        try:
            products.append(_product(row, observations))
        except ValueError as exc:
            warnings.append(f"MAST listed a product hstmon cannot file, skipped: {exc}")
    return products, warnings


def _wanted_products(
    products: Table, selection: MastSelection
) -> tuple[Table, Table, dict[str, int]]:
    """The rows of the selection's pipeline FITS products, those of them withheld as not
    public, and how many rows were passed over why.

    Each test is astroquery's ``filter_products``, in the order of `SKIP_REASONS`, so a row
    counts under the first reason it meets (a HAP preview is a HAP product).
    """
    keep = Observations.filter_products
    skipped: dict[str, int] = {}

    def count(reason: str, rows: int) -> None:
        if rows:
            skipped[reason] = rows

    pipeline = keep(products, project=list(selection.pipeline_projects))
    count("other_project", len(products) - len(pipeline))
    fits_files = keep(pipeline, extension=list(FITS_EXTENSIONS))
    # Previews are never FITS: of the rows the FITS test drops, they are counted apart.
    previews = len(keep(pipeline, extension=list(PREVIEW_EXTENSIONS)))
    count("preview", previews)
    count("not_fits", len(pipeline) - len(fits_files) - previews)
    asked = keep(fits_files, productSubGroupDescription=list(selection.product_types))
    count("other_product_type", len(fits_files) - len(asked))
    if not selection.public_only:
        return asked, asked[:0], skipped
    public = keep(asked, dataRights=PUBLIC_DATA_RIGHTS)
    count("not_public", len(asked) - len(public))
    withheld = keep(asked, dataRights=f"!{PUBLIC_DATA_RIGHTS}")
    return public, withheld, skipped


class _TimeoutAdapter(HTTPAdapter):
    """requests' adapter with a default timeout: astroquery's portal queries send none, so a
    connection MAST stops answering would hang a nightly run for ever."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S)
        return super().send(request, **kwargs)


def _give_queries_a_timeout() -> None:
    """Mount the timeout adapter on astroquery's MAST sessions (once per process, workers too:
    a login is a request on the same session; more specific mounts, such as a test's replay of
    MAST, still take precedence)."""
    for session in (Observations._session, Mast._session):
        for scheme in ("https://", "http://"):
            if not isinstance(session.adapters.get(scheme), _TimeoutAdapter):
                session.mount(scheme, _TimeoutAdapter())


def _query_observations(selection: MastSelection, page_size: int) -> Table:
    """Every observation of the selection, checked against the number MAST counts."""
    criteria = mast_criteria(selection)
    what = selection.describe()
    with _mast_query(f"the number of {what}"):
        expected = int(Observations.query_criteria_count(**criteria))
    if expected == 0:
        return Table()

    def fetch(page: int) -> Table:
        return Observations.query_criteria(pagesize=page_size, page=page, **criteria)

    observations = _unique_rows(_all_pages(fetch, page_size, what), "obsid")
    if len(observations) < expected:
        msg = (
            f"MAST counted {expected} {what} but its pages held {len(observations)} "
            "(the results changed during the query, or MAST cut them short). Run again; if it "
            "persists, narrow the selection (a shorter date range, fewer programs)."
        )
        raise MastError(msg)
    return observations


def _query_products(obsids: list[str], selection: MastSelection, page_size: int) -> Table:
    """Every product of some observations.

    ``Observations.get_product_list`` asks for one page of astroquery's fixed size, so this asks
    the same MAST service (``Mast.Caom.Products``) through astroquery's public
    ``Mast.service_request``, which takes a page size and a page number.
    """

    def fetch(page: int) -> Table:
        params = {"obsid": ",".join(obsids)}
        return Mast.service_request(_PRODUCTS_SERVICE, params, pagesize=page_size, page=page)

    return _all_pages(fetch, page_size, f"products of {len(obsids)} {selection.describe()}")


def _all_pages(fetch: Callable[[int], Table], page_size: int, what: str) -> Table:
    """Pages 1, 2, ... of a query until one comes back short: a full page may have more behind."""
    pages = []
    for page in itertools.count(1):
        with _mast_query(f"{what} (page {page})"):
            table = fetch(page)
        if len(table):
            pages.append(table)
        if len(table) < page_size:
            break
        if page == _MAX_PAGES:
            msg = (
                f"MAST query for {what} still returned full pages of {page_size} rows after "
                f"{page} pages: MAST is ignoring the page number. Narrow the selection."
            )
            raise MastError(msg)
    return vstack(pages) if pages else Table()


@contextmanager
def _mast_query(what: str) -> Iterator[None]:
    """Run one astroquery call; whatever MAST or the network answers becomes a MastError."""
    try:
        with warnings.catch_warnings():
            # An empty answer is an answer here, not something to warn about.
            warnings.simplefilter("ignore", NoResultsWarning)
            yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        advice = (
            "check the selection"
            if 400 <= status < 500
            else "MAST may be down or busy: try again later"
        )
        msg = f"MAST query for {what} failed: HTTP {status} ({exc}). {advice}."
        raise MastError(msg) from exc
    except (requests.ConnectionError, requests.Timeout, TimeoutError) as exc:
        msg = (
            f"MAST query for {what} failed: could not reach MAST ({type(exc).__name__}: {exc}). "
            "Check the network, or try again later (https://mast.stsci.edu)."
        )
        raise MastError(msg) from exc
    except (RemoteServiceError, InvalidQueryError) as exc:
        msg = f"MAST query for {what} failed: MAST said: {exc}. Check the selection."
        raise MastError(msg) from exc
    except (requests.RequestException, KeyError) as exc:
        msg = (
            f"MAST query for {what} failed: MAST's answer could not be read "
            f"({type(exc).__name__}: {exc}). Try again later."
        )
        raise MastError(msg) from exc


def _within_dates(observations: Table, selection: MastSelection) -> Table:
    """The rows inside [since, until): MAST's ranges include both ends, ``until`` must not."""
    if not len(observations) or not (selection.since or selection.until):
        return observations
    values = np.ma.filled(observations[DATE_COLUMNS[selection.date_field]], np.nan)
    low = to_mjd(selection.since) if selection.since else _MJD_OPEN_LOW
    high = to_mjd(selection.until) if selection.until else _MJD_OPEN_HIGH
    return observations[(values >= low) & (values < high)]


def _unique_rows(table: Table, column: str) -> Table:
    """The first row of each value of ``column`` (pages of a changing result can overlap)."""
    if not len(table):
        return table
    _, first = np.unique(np.asarray(table[column]).astype(str), return_index=True)
    return table[np.sort(first)]


def _text(row: Row | None, column: str) -> str | None:
    """A cell as stripped text; None when the row or column is absent or the cell is masked."""
    if row is None or column not in row.colnames:
        return None
    value = row[column]
    if value is None or value is np.ma.masked:
        return None
    return str(value).strip() or None


def _number(row: Row | None, column: str) -> float | None:
    """A cell as a finite float; None when absent, masked or not a number."""
    text = _text(row, column)
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _product(row: Row, observations: dict[str, Row]) -> MastProduct:
    """A MastProduct from a product row; its parent observation fills what the row lacks."""
    parent = observations.get(_text(row, "parent_obsid") or "") or observations.get(
        _text(row, "obsID") or ""
    )
    obs_id = _text(row, "obs_id") or _text(parent, "obs_id") or ""
    size = _text(row, "size")
    released = _number(parent, "t_obs_release")
    return MastProduct(
        uri=_text(row, "dataURI") or "",
        filename=_text(row, "productFilename") or "",
        obs_id=obs_id.lower(),
        proposal_id=_text(row, "proposal_id") or _text(parent, "proposal_id") or "",
        product_type=(_text(row, "productSubGroupDescription") or "").upper(),
        # MAST lists 0 for some files it has not measured: unknown, not empty.
        size_bytes=int(size) if size and int(size) > 0 else None,
        project=_text(row, "project"),
        data_rights=_text(row, "dataRights") or _text(parent, "dataRights"),
        released_at=from_mjd(released) if released is not None else None,
    )


def _unique_sorted(products: Iterable[MastProduct]) -> list[MastProduct]:
    """One product per URI (MAST can list a file under more than one observation), sorted."""
    unique: dict[str, MastProduct] = {}
    for product in sorted(products, key=lambda p: (p.uri, p.obs_id)):
        unique.setdefault(product.uri, product)
    return sorted(unique.values(), key=lambda p: (p.proposal_id, p.obs_id, p.filename))


# --- download -----------------------------------------------------------------------------


def resolve_token(token: str | None) -> str | None:
    """The MAST API token given, else ``$MAST_API_TOKEN``, else None (anonymous)."""
    return token or os.environ.get(TOKEN_ENV) or None


def split_present(
    products: Iterable[MastProduct], archive_root: Path
) -> tuple[list[MastProduct], list[MastProduct]]:
    """(to download, already present): present means the file is in place.

    Files are only ever renamed into place after their download was verified, and MAST's
    listed sizes can be out of date, so a file in place is not fetched again whatever size MAST
    lists (ingest reads it and records it failed, with its reason, if it is not whole).
    """
    to_download, present = [], []
    for product in products:
        target = product.local_path(Path(archive_root))
        (present if target.is_file() else to_download).append(product)
    return to_download, present


def download_url(uri: str) -> str:
    """The URL of a product: ``$HSTMON_MAST_DOWNLOAD_URL`` (a mirror) or MAST's download API."""
    base = os.environ.get(DOWNLOAD_URL_ENV) or Observations._portal_api_connection.MAST_DOWNLOAD_URL
    return f"{base}?uri={quote(uri, safe=':/')}"


def verify_fits(path: Path) -> str | None:
    """Why ``path`` is not a whole FITS file, or None when it is.

    Plain: it starts with a SIMPLE card, and its size is what its HDUs' headers add up to
    (every header and data block present, nothing after the last). Gzipped: the same of the
    decompressed bytes, and the gzip CRC checks. MAST publishes no checksum for HST products
    and its listed sizes can be out of date, so the file's own structure (and the gzip CRC,
    where there is one) is what a download is held to.
    """
    with path.open("rb") as raw:
        head = raw.read(FITS_BLOCK)
    size = path.stat().st_size
    if head[:2] == b"\x1f\x8b":
        try:
            head, size = _gunzipped_head_and_size(path)
        except (EOFError, OSError, zlib.error) as exc:
            return f"corrupt or truncated gzip stream ({exc})"
    if not head.startswith(b"SIMPLE  ="):
        return "not a FITS file (it does not begin with a SIMPLE card)"
    if size % FITS_BLOCK:
        return f"truncated: {size} bytes is not a whole number of {FITS_BLOCK}-byte FITS blocks"
    try:
        expected = _size_by_headers(path)
    except (OSError, ValueError, IndexError) as exc:
        return f"not a whole FITS file: {exc}"
    if size < expected:
        return f"truncated: its HDU headers add up to {expected} bytes, it has {size}"
    if size > expected:
        return f"{size - expected} bytes after the last HDU its headers describe ({expected} bytes)"
    return None


def _size_by_headers(path: Path) -> int:
    """The bytes a FITS file's HDUs take by their headers (astropy reads every header, and no
    data); raises what astropy raises for a header it cannot read."""
    with warnings.catch_warnings():
        # A short file is what this measures: astropy's warning about it would say it twice.
        warnings.simplefilter("ignore", AstropyUserWarning)
        with fits.open(path, lazy_load_hdus=False, memmap=False) as hdus:
            last = hdus.fileinfo(len(hdus) - 1)
    return int(last["datLoc"]) + int(last["datSpan"])


def _gunzipped_head_and_size(path: Path) -> tuple[bytes, int]:
    """The first FITS block and the length of a gzip file's content; reading to the end is
    what makes gzip check the CRC."""
    with gzip.open(path, "rb") as stream:
        head = stream.read(FITS_BLOCK)
        size = len(head)
        while block := stream.read(1 << 20):
            size += len(block)
    return head, size


def download_product(
    product: MastProduct,
    archive_root: str,
    *,
    token: str | None = None,
    retries: int = 3,
    backoff_s: float = 2.0,
) -> DownloadOutcome:
    """Fetch one product into ``product.local_path(archive_root)``; never raises.

    The file is streamed into ``<name>.part`` (resuming a partial one with an HTTP Range
    request), verified (the length HTTP announced, FITS structure, gzip CRC) and only then
    renamed into place; a size other than MAST lists is a ``warning``, not a failure (MAST's
    sizes can be out of date). Connection errors, 5xx answers, bodies cut short and files that
    fail verification are retried ``retries`` more times, waiting ``backoff_s`` seconds,
    doubling. ``token`` logs this process into MAST first (needed for proprietary data); its
    cookie goes to MAST's own hosts only, and it is never written into the outcome.
    """
    started = time.monotonic()
    target = product.local_path(Path(archive_root))
    try:
        result = _download(product, target, token, max(0, retries), backoff_s)
    except OSError as exc:  # the local disk: full, read-only, a file where a folder should be
        result = _Result("failed", f"cannot write {target}: {exc}", 0)
    error = _scrub(result.error, token) if result.error else None
    return replace(
        _outcome(product, target, result.status, error, started, result.attempts),
        permanent=result.permanent,
        warning=result.warning,
    )


@dataclass(frozen=True)
class _Result:
    status: Literal["downloaded", "present", "failed"]
    error: str | None
    attempts: int
    permanent: bool = False
    warning: str | None = None


def _download(
    product: MastProduct, target: Path, token: str | None, retries: int, backoff_s: float
) -> _Result:
    """What fetching one product came to; raises OSError for the local disk."""
    if target.is_file():
        return _Result("present", None, 0)
    if token and (reason := _login(token)):
        return _Result("failed", reason, 0)  # the token or the network: not the file's fault
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    url = download_url(product.uri)
    attempts = 1
    while (failure := _attempt(url, part, target)) is not None:
        if not failure.retry or attempts > retries:
            break
        time.sleep(backoff_s * 2 ** (attempts - 1))
        attempts += 1
    if failure is None:
        return _Result("downloaded", None, attempts, warning=_size_warning(product, target))
    tries = f"gave up after {attempts} attempt{'s' * (attempts > 1)}"
    return _Result("failed", f"{failure.reason} ({tries})", attempts, failure.permanent)


def _size_warning(product: MastProduct, target: Path) -> str | None:
    size = target.stat().st_size
    if product.size_bytes is None or size == product.size_bytes:
        return None
    return (
        f"MAST lists {product.size_bytes} bytes, the file has {size}; kept, as its FITS "
        "structure checks (MAST's listed sizes can be out of date)"
    )


def download_products(
    products: Iterable[MastProduct],
    archive_root: Path,
    *,
    client: Client,
    token: str | None = None,
    retries: int = 3,
    backoff_s: float = 2.0,
    progress: bool | None = None,
) -> list[DownloadOutcome]:
    """Download every product on the Dask cluster, a few files per task; one outcome each.

    Outcomes come back in the order of ``products`` (duplicates by URI dropped). ``token``
    defaults to ``$MAST_API_TOKEN`` of this process; workers log in with it.
    """
    unique = list({p.uri: p for p in products}.values())
    if not unique:
        return []
    root = Path(archive_root).resolve()
    batches = [unique[i : i + _FILES_PER_TASK] for i in range(0, len(unique), _FILES_PER_TASK)]
    secret = _Secret(resolved) if (resolved := resolve_token(token)) else None
    futures = client.map(
        _download_batch,
        batches,
        archive_root=str(root),
        token=secret,
        file_retries=retries,  # not `retries`: Client.map would take that as its own
        backoff_s=backoff_s,
        pure=False,
    )
    batch_of = {future.key: batch for future, batch in zip(futures, batches, strict=True)}
    show = sys.stderr.isatty() if progress is None else progress
    by_uri: dict[str, DownloadOutcome] = {}
    failed = fetched_bytes = 0
    with tqdm(total=len(unique), unit="file", disable=not show, leave=False) as bar:
        for future in as_completed(futures):
            outcomes = _batch_result(future, batch_of[future.key], root, secret)
            by_uri.update((o.uri, o) for o in outcomes)
            failed += sum(o.status == "failed" for o in outcomes)
            fetched_bytes += sum(o.size_bytes for o in outcomes if o.status == "downloaded")
            bar.update(len(outcomes))
            bar.set_postfix(failed=failed, MB=round(fetched_bytes / 1e6))
    return [by_uri[p.uri] for p in unique]


@dataclass(frozen=True)
class _Secret:
    """A token on its way to a worker: Dask logs a failed task's arguments by their repr."""

    value: str

    def __repr__(self) -> str:
        return "_Secret(<MAST token>)"


def _download_batch(
    products: list[MastProduct],
    archive_root: str,
    token: _Secret | None,
    file_retries: int,
    backoff_s: float,
) -> list[DownloadOutcome]:
    """The Dask task: a batch of downloads, a few at a time (they wait on the network, not
    on this worker's CPU). Paths and URIs in, outcomes out."""
    value = token.value if token else None
    if value and (reason := _login(value)):  # once, before the threads share the session
        started = time.monotonic()
        root = Path(archive_root)
        return [_outcome(p, p.local_path(root), "failed", reason, started, 0) for p in products]
    with ThreadPoolExecutor(_STREAMS_PER_TASK) as pool:
        return list(
            pool.map(
                lambda p: download_product(
                    p, archive_root, token=value, retries=file_retries, backoff_s=backoff_s
                ),
                products,
            )
        )


def _batch_result(
    future: Future, batch: list[MastProduct], archive_root: Path, token: _Secret | None
) -> list[DownloadOutcome]:
    """A task's outcomes; a task that died (its worker lost, say) fails each of its files."""
    if future.status == "finished":
        return future.result()
    if future.status == "error":
        exc = future.exception()
        reason = f"the Dask task failed: {type(exc).__name__}: {exc}"
    else:
        reason = f"the Dask task was {future.status}"
    reason = _scrub(reason, token.value if token else None)
    started = time.monotonic()
    return [_outcome(p, p.local_path(archive_root), "failed", reason, started, 0) for p in batch]


class _HttpFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _BadResume(Exception):
    """The server answered a Range request with some other part of the file."""


@dataclass(frozen=True)
class _Failure:
    """Why one try failed, whether another try now may help, and whether it is the file's own
    fault (``permanent``: retrying tonight, or tomorrow, will not change it)."""

    reason: str
    retry: bool
    permanent: bool


# 408 (timeout) and 429 (throttled) may pass; after a 416 the .part is gone and the next try
# starts over. Other 4xx (401, 403, 404, 410) will not change by asking again.
_TRANSIENT_4XX = (408, 416, 429)


def _attempt(url: str, part: Path, target: Path) -> _Failure | None:
    """One try: fetch (resuming ``part``), verify, rename; why it failed, or None."""
    try:
        http_length = _fetch(url, part)
    except _HttpFailure as exc:
        transient = exc.status >= 500 or exc.status in _TRANSIENT_4XX
        return _Failure(str(exc), retry=transient, permanent=not transient)
    except _BadResume as exc:
        part.unlink(missing_ok=True)
        return _Failure(str(exc), retry=True, permanent=False)
    except requests.RequestException as exc:  # refused, reset, timed out, or body cut short
        reason = f"download interrupted: {type(exc).__name__}: {exc}"
        return _Failure(reason, retry=True, permanent=False)
    size = part.stat().st_size
    if http_length is not None and size != http_length:  # the transfer, not the file
        part.unlink(missing_ok=True)
        reason = f"received {size} bytes, the server announced {http_length}"
        return _Failure(reason, retry=True, permanent=False)
    if reason := verify_fits(part):  # what the server sends: wrong again after the retries
        part.unlink(missing_ok=True)
        return _Failure(reason, retry=True, permanent=True)
    os.replace(part, target)
    return None


def _fetch(url: str, part: Path) -> int | None:
    """Stream ``url`` into ``part``, resuming from the bytes it holds; the full length per HTTP.

    This does by hand what astroquery's ``BaseQuery._download_file(continuation=True)`` does,
    on the same session (``Observations._session``, which carries the login cookie), because
    that method (0.4.11) puts the Range header on the *shared* session and removes it only on
    success, so after one failed resume every later request of the worker asks for a stale
    range; it appends a 200 (Range ignored) reply to the partial file; and it does not report
    the length the server announced, which verification needs.
    """
    have = part.stat().st_size if part.exists() else 0
    # identity: the bytes as stored, so lengths and ranges count the file itself.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with Observations._session.get(
        url, headers=headers, stream=True, timeout=(_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S)
    ) as response:
        if response.status_code >= 400:
            if response.status_code == 416:
                part.unlink(missing_ok=True)  # the part is no prefix of the file: start over
            body = " ".join(response.text.split())[:200]
            message = f"HTTP {response.status_code} {response.reason}" + (
                f": {body}" if body else ""
            )
            raise _HttpFailure(response.status_code, message)
        resumed = bool(have) and response.status_code == 206
        length = _announced_length(response, have if resumed else 0)
        with part.open("ab" if resumed else "wb") as out:
            for block in response.iter_content(_BLOCK_BYTES):
                out.write(block)
    return length


def _announced_length(response: requests.Response, resume_from: int) -> int | None:
    """The whole file's length the server announced (Content-Range or Content-Length)."""
    if resume_from:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match or int(match[1]) != resume_from:
            got = response.headers.get("Content-Range")
            msg = f"asked to resume at byte {resume_from}, the server sent range {got!r}"
            raise _BadResume(msg)
        return None if match[3] == "*" else int(match[3])
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _login(token: str) -> str | None:
    """Log this process's astroquery session into MAST; why it failed, or None.

    The login's own request has the same timeout as every query. astroquery leaves the token
    as a cookie for any host; it is put back for MAST's own host and its subdomains, over
    HTTPS only, so a mirror or proxy in ``$HSTMON_MAST_DOWNLOAD_URL`` never receives it.
    """
    _give_queries_a_timeout()
    jar = Observations._session.cookies
    host = _mast_host()
    if any(c.name == TOKEN_COOKIE and c.value == token and c.domain == host for c in jar):
        return None  # this worker already logged in with it
    try:
        Observations.login(token=token)
    except (LoginError, requests.RequestException, ValueError) as exc:
        Observations.logout()  # astroquery leaves the refused token on the session
        return f"MAST login failed ({type(exc).__name__}: {exc}); check the MAST API token"
    jar.set(TOKEN_COOKIE, None)  # every copy, whatever its domain
    jar.set(TOKEN_COOKIE, token, domain=host, secure=True)
    return None


def _mast_host() -> str:
    """MAST's host (mast.stsci.edu), from astroquery's configuration of the MAST server."""
    return urlsplit(mast_conf.server).hostname or "mast.stsci.edu"


def _scrub(text: str, token: str | None) -> str:
    """Belt and braces: whatever a server echoed back, the token never reaches an outcome."""
    return text.replace(token, "<MAST token>") if token else text


def _outcome(
    product: MastProduct,
    target: Path,
    status: Literal["downloaded", "present", "failed"],
    error: str | None,
    started: float,
    attempts: int,
) -> DownloadOutcome:
    size = target.stat().st_size if status != "failed" else 0
    seconds = round(time.monotonic() - started, 3)
    return DownloadOutcome(product.uri, str(target), status, error, size, seconds, attempts)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
