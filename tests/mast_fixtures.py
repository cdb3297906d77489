"""Stand-ins for MAST in tests: its portal API replayed from recorded JSON, its download server.

`MastPortalReplay` is a requests transport adapter mounted on astroquery's sessions, so
astroquery's own request, paging and parsing code runs against MAST's recorded answers
(``tests/data/mast``). `MastDownloadServer` is a real HTTP server on 127.0.0.1 serving files
at MAST's download path, honouring Range, with faults to inject per file; it stands in for a
mirror at its own address, or for MAST itself (`MastDownloadServer.answer_for_mast`).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
from astroquery.mast import Mast, Observations
from astroquery.mast.discovery_portal import PortalAPI
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict

DATA = Path(__file__).resolve().parent / "data" / "mast"
MAST_SERVER = "https://mast.stsci.edu"
DOWNLOAD_PATH = "/api/v0.1/Download/file"
_COLUMNS_CONFIGS = {
    "Mast.Caom.Cone": "columnsconfig_caom_cone.json",
    "Mast.Caom.Products": "columnsconfig_caom_products.json",
}


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


@dataclass(frozen=True)
class PortalCall:
    """One request astroquery made to MAST's portal API (``/api/v0/invoke``)."""

    service: str
    params: dict[str, Any]
    page: int
    pagesize: int

    @property
    def is_count(self) -> bool:
        return self.params.get("columns") == "COUNT_BIG(*)"

    def filter(self, name: str) -> dict[str, Any] | None:
        return next((f for f in self.params.get("filters", []) if f["paramName"] == name), None)


class MastPortalReplay(BaseAdapter):
    """MAST's portal API, answering from recorded rows the way the portal filters and pages.

    ``faults[service]`` is a list of faults the next calls of that service meet, in order:
    ``"error"`` (MAST's ERROR status), ``"http500"``, ``"timeout"``, ``"connection"``, or
    ``"lose_row"`` (a page comes back one row short).
    """

    def __init__(self) -> None:
        super().__init__()
        self.observations = recorded("caom_filtered.json")
        self.products = recorded("caom_products.json")
        self.calls: list[PortalCall] = []
        self.faults: dict[str, list[str]] = {}

    def calls_to(self, service: str, *, counts: bool = False) -> list[PortalCall]:
        return [c for c in self.calls if c.service == service and c.is_count == counts]

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body or ""
        if request.url.endswith("/columnsconfig"):
            name = parse_qs(body)["colConfigId"][0]
            return _response(request, 200, recorded(_COLUMNS_CONFIGS[name]))
        mashup = json.loads(unquote(body.removeprefix("request=")))
        call = PortalCall(mashup["service"], mashup["params"], mashup["page"], mashup["pagesize"])
        self.calls.append(call)
        fault = self.faults.get(call.service, []) and self.faults[call.service].pop(0)
        if fault == "timeout":
            raise requests.ReadTimeout("HTTPSConnectionPool(host='mast.stsci.edu'): read timed out")
        if fault == "connection":
            raise requests.ConnectionError("Failed to resolve 'mast.stsci.edu'")
        if fault == "http500":
            return _response(request, 500, {"error": "Internal Server Error"})
        if fault == "error":
            return _response(request, 200, recorded("error.json"))
        rows = self._rows(call)
        if call.is_count:
            count = recorded("count.json")
            count["data"] = [{"Column1": len(rows)}]
            return _response(request, 200, count)
        return _response(request, 200, self._page(call, rows, lose_row=fault == "lose_row"))

    def close(self) -> None:
        """Nothing to release."""

    def _rows(self, call: PortalCall) -> list[dict[str, Any]]:
        if call.service == "Mast.Caom.Products":
            wanted = set(call.params["obsid"].split(","))
            return [r for r in self.products["data"] if r["parent_obsid"] in wanted]
        return [
            row
            for row in self.observations["data"]
            if all(_matches(row, f) for f in call.params["filters"])
        ]

    def _page(self, call: PortalCall, rows: list[dict], *, lose_row: bool) -> dict[str, Any]:
        source = self.products if call.service == "Mast.Caom.Products" else self.observations
        start = (call.page - 1) * call.pagesize
        data = rows[start : start + call.pagesize]
        if lose_row:
            data = data[:-1]
        paging = {
            "page": call.page,
            "pageSize": call.pagesize,
            "pagesFiltered": max(1, math.ceil(len(rows) / call.pagesize)),
            "rows": len(data),
            "rowsFiltered": len(rows),
            "rowsTotal": len(rows),
        }
        return {**source, "data": data, "paging": paging}


def rows_beside_the_pipeline_files(visit_row: dict[str, Any], program: str, obs_id: str) -> list:
    """What MAST lists with a visit beside its pipeline files, none of it to be fetched: a HAP
    single-visit copy of an exposure's FLC (sub-group FLC, lower-case ``hst_`` obs id), the
    Hubble Legacy Archive's drizzled image, and a JPG preview whose sub-group reads FLC.
    ``visit_row`` is one of the visit's product rows (its ids and rights are kept)."""
    obs_id = obs_id.lower()
    hap = f"hst_{program}_{obs_id[4:6]}_wfc3_uvis_f606w_{obs_id[:6]}01"
    hla = f"hst_{program}_{obs_id[4:6]}_wfc3_uvis_f606w"
    rows = [
        (hap, "HAP-SVM", "FLC", "SCIENCE", f"{hap}_flc.fits"),
        (hla, "HLA", "DRZ", "SCIENCE", f"{hla}_drz.fits"),
        (obs_id.upper(), "CALWF3", "FLC", "PREVIEW", f"{obs_id[:6]}01q_flc.jpg"),
    ]
    return [
        visit_row
        | {"obs_id": row_obs_id, "project": project, "productSubGroupDescription": group,
           "productType": kind, "dataURI": f"mast:HST/product/{filename}",
           "productFilename": filename}
        for row_obs_id, project, group, kind, filename in rows
    ]  # fmt: skip


def _matches(row: dict[str, Any], mashup_filter: dict[str, Any]) -> bool:
    """How the portal applies one filter: a min/max range, a set of values, or a LIKE pattern."""
    value = row.get(mashup_filter["paramName"])
    values = mashup_filter["values"]
    if values and isinstance(values[0], dict):
        return value is not None and values[0]["min"] <= value <= values[0]["max"]
    text = str(value).lower()
    if text in (str(v).lower() for v in values):
        return True
    pattern = mashup_filter.get("freeText")
    return bool(pattern) and re.fullmatch(re.escape(pattern.lower()).replace("%", ".*"), text)


def _response(request: requests.PreparedRequest, status: int, payload: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = {200: "OK", 500: "Internal Server Error"}[status]
    response._content = json.dumps(payload).encode()
    response.headers = CaseInsensitiveDict({"Content-Type": "application/json; charset=utf-8"})
    response.encoding = "utf-8"
    response.url = request.url
    response.request = request
    return response


def replay_mast_portal(monkeypatch: pytest.MonkeyPatch) -> MastPortalReplay:
    """MAST's portal replayed on astroquery's sessions (undone with ``monkeypatch``)."""
    replay = MastPortalReplay()
    for session in (Observations._session, Mast._session):
        adapters = OrderedDict([(MAST_SERVER, replay), *session.adapters.items()])
        monkeypatch.setattr(session, "adapters", adapters)
    # astroquery caches column configurations per class; each test fetches its own.
    monkeypatch.setattr(PortalAPI, "_column_configs", {})
    return replay


# --- downloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One request the download server answered."""

    name: str
    range: str | None
    status: int
    bytes_sent: int
    cookie: str | None


class MastDownloadServer:
    """Files of ``directory`` at ``<url>?uri=mast:HST/product/<name>``, with injectable faults.

    Faults, consumed one per GET of that file: ``"503"``; ``"404"``; ``"cut"`` (announce the
    whole length, send 60% of it and hang up); ``"short"`` (a whole response of the file less
    one FITS block); ``"ignore_range"`` (answer a Range request with the whole file, 200);
    ``"403_echo"`` (a 403 whose body and reason echo the request's Cookie header back).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.served: list[Served] = []
        self.valid_token: str | None = None
        # Seconds before each answer: a stand-in for the round trips to MAST over the internet.
        self.latency_s = 0.0
        self._faults: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}{DOWNLOAD_PATH}"

    @property
    def whoami_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}/whoami"

    def answer_for_mast(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Requests astroquery's session makes to MAST's download API and login check
        (https://mast.stsci.edu/...) reach this server, headers and cookies as sent to MAST."""
        forward = _ToLocalServer(f"http://127.0.0.1:{self._httpd.server_port}")
        session = Observations._session
        routes = [(MAST_SERVER + DOWNLOAD_PATH, forward), (MAST_SERVER + "/whoami", forward)]
        monkeypatch.setattr(session, "adapters", OrderedDict([*routes, *session.adapters.items()]))

    def inject(self, name: str, *faults: str) -> None:
        with self._lock:
            self._faults.setdefault(name, []).extend(faults)

    def requests_for(self, name: str) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.name == name]

    def next_fault(self, name: str) -> str | None:
        with self._lock:
            queue = self._faults.get(name)
            return queue.pop(0) if queue else None

    def record(self, served: Served) -> None:
        with self._lock:
            self.served.append(served)

    def __enter__(self) -> MastDownloadServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _handler_for(server: MastDownloadServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for
        # the client's delayed ACK (~40 ms a file). Real servers set TCP_NODELAY.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test asserts on ``server.served`` instead."""

        def do_GET(self) -> None:
            if server.latency_s:
                time.sleep(server.latency_s)
            url = urlsplit(self.path)
            if url.path == "/whoami":
                self._whoami()
            elif url.path != DOWNLOAD_PATH:
                self._send(404, b"no such endpoint", "?")
            else:
                uri = parse_qs(url.query).get("uri", [""])[0]
                self._file(uri.rsplit("/", 1)[-1])

        def do_HEAD(self) -> None:
            """What astroquery's download_file asks first: the file's length, no body."""
            if server.latency_s:
                time.sleep(server.latency_s)
            uri = parse_qs(urlsplit(self.path).query).get("uri", [""])[0]
            path = server.directory / uri.rsplit("/", 1)[-1]
            self.send_response(200 if path.is_file() else 404)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(path.stat().st_size if path.is_file() else 0))
            self.end_headers()

        def _whoami(self) -> None:
            """MAST's session info: who the ``mast_token`` cookie belongs to, or anonymous."""
            token = self._cookie_value("mast_token")
            known = token is not None and token == server.valid_token
            info = {"anon": not known, "attrib": {"display_name": "A. Tester"} if known else {}}
            self._send(200, json.dumps(info).encode(), "whoami", "application/json")

        def _file(self, name: str) -> None:
            path = server.directory / name
            if not name or not path.is_file():
                self._send(404, b"File not found", name)
                return
            data = path.read_bytes()
            fault = server.next_fault(name)
            if fault == "503":
                self._send(503, b"Service Unavailable", name)
            elif fault == "404":
                self._send(404, b"File not found", name)
            elif fault == "403_echo":
                cookie = self.headers.get("Cookie", "")
                self._send(403, f"Forbidden for {cookie}".encode(), name, reason=cookie)
            elif fault == "short":
                self._send(200, data[:-2880], name, "application/octet-stream")
            else:
                self._send_range(data, name, fault)

        def _send_range(self, data: bytes, name: str, fault: str | None) -> None:
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            start = int(match[1]) if match and fault != "ignore_range" else 0
            if start >= len(data) > 0:
                self._send(416, b"", name, extra={"Content-Range": f"bytes */{len(data)}"})
                return
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if fault == "cut":
                body = body[: int(len(body) * 0.6)]
                self.close_connection = True
            # Recorded before sending: the client may look as soon as the last byte arrives.
            server.record(Served(name, self.headers.get("Range"), 206 if start else 200,
                                 len(body), self.headers.get("Cookie")))  # fmt: skip
            self.wfile.write(body)
            self.wfile.flush()

        def _send(
            self,
            status: int,
            body: bytes,
            name: str,
            content_type: str = "text/plain",
            reason: str | None = None,
            extra: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status, reason)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            server.record(Served(name, self.headers.get("Range"), status, len(body),
                                 self.headers.get("Cookie")))  # fmt: skip
            self.end_headers()
            self.wfile.write(body)

        def _cookie_value(self, key: str) -> str | None:
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == key:
                    return value
            return None

    return Handler


class _ToLocalServer(BaseAdapter):
    """A transport for MAST's host that sends each request, as prepared for MAST (its Cookie
    header included), to a server on 127.0.0.1 instead."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self._http = HTTPAdapter()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url)
        forwarded = request.copy()
        forwarded.url = f"{self.base_url}{url.path}" + (f"?{url.query}" if url.query else "")
        return self._http.send(forwarded, **kwargs)

    def close(self) -> None:
        self._http.close()


# --- a night in a process of its own, to be killed -----------------------------------------


def _night_in_own_session(observations: dict, products: dict, options: object) -> None:
    """Child process: its own session (so the test can kill it with its Dask workers), the
    portal replayed with the given rows, then the night."""
    from analysis.nightly import run_nightly

    os.setsid()
    replay = replay_mast_portal(pytest.MonkeyPatch())
    replay.observations, replay.products = observations, products
    run_nightly(options)  # type: ignore[arg-type]


def start_night_in_own_session(
    replay: MastPortalReplay, options: object
) -> multiprocessing.process.BaseProcess:
    """Start ``run_nightly(options)`` in a new process and session, seeing ``replay``'s rows.

    The download server keeps running in this process; the child reaches it over HTTP, and its
    own local Dask workers inherit the environment (the download URL). Kill the whole night with
    ``os.killpg(process.pid, SIGKILL)``.
    """
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=_night_in_own_session, args=(replay.observations, replay.products, options)
    )
    process.start()
    return process
