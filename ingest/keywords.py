"""Typed values from FITS headers: sentinels to NULL, HST times to UTC, readable errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from astropy.io.fits.card import Undefined

from ingest.fits_blocks import FileFormatError

__all__ = [
    "JIF_SENTINEL",
    "FileFormatError",
    "KeywordReader",
    "KeywordWarning",
    "header_to_json",
    "parse_hst_time",
]

# JIF headers write -32767 where a value could not be computed (e.g. V2_RMS after a guide star
# acquisition failure); it must never reach a typed column as a number.
JIF_SENTINEL = -32767
_COMMENTARY = ("COMMENT", "HISTORY", "")


def parse_hst_time(text: str) -> datetime | None:
    """Parse an HST 'YYYY.DDD:HH:MM:SS' time (day of year) as UTC; blank gives None."""
    text = text.strip()
    if not text:
        return None
    try:
        year_day, hours, minutes, seconds = text.split(":")
        year, day_of_year = year_day.split(".")
        start_of_year = datetime(int(year), 1, 1, tzinfo=UTC)
        return start_of_year + timedelta(
            days=int(day_of_year) - 1,
            hours=int(hours),
            minutes=int(minutes),
            seconds=float(seconds),
        )
    except ValueError as exc:
        msg = f"{text!r} is not an HST time of the form 'YYYY.DDD:HH:MM:SS'"
        raise ValueError(msg) from exc


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def header_to_json(cards: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Every card as {KEYWORD: value}; COMMENT, HISTORY and blank cards as lists of text.

    Values keep their raw form (sentinels included) so nothing a file says is lost.
    """
    result: dict[str, Any] = {}
    for keyword, value in cards:
        if keyword in _COMMENTARY:
            result.setdefault(keyword, []).append("" if value is None else str(value))
        else:
            result[keyword] = _json_value(value)
    return result


@dataclass(frozen=True)
class KeywordWarning:
    """A keyword whose value could not be read: its column stays NULL, the file is kept."""

    hdu_index: int
    keyword: str
    raw_value: str | None
    message: str


class _Unreadable(ValueError):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _as_str(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _as_float(value: Any) -> float | None:
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unreadable("a number")
    if value == JIF_SENTINEL or not math.isfinite(value):
        return None
    return float(value)


def _as_int(value: Any) -> int | None:
    number = _as_float(value)
    if number is None:
        return None
    if number != int(number):
        raise _Unreadable("an integer")
    return int(number)


def _as_bool(value: Any) -> bool | None:
    if not isinstance(value, bool):
        raise _Unreadable("T or F")
    return value


def _as_flag(value: Any) -> bool | None:
    """A logical written either as a FITS logical or as text ('T', 'F', blank), like MTFLAG."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().upper() if isinstance(value, str) else None
    if text in ("T", "F"):
        return text == "T"
    if text == "":
        return None
    raise _Unreadable("T, F or blank")


def _as_time(value: Any) -> datetime | None:
    try:
        return parse_hst_time(str(value))
    except ValueError as exc:
        raise _Unreadable("'YYYY.DDD:HH:MM:SS' or blank") from exc


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "str": _as_str,
    "float": _as_float,
    "int": _as_int,
    "bool": _as_bool,
    "flag": _as_flag,
    "time": _as_time,
}


class KeywordReader:
    """Typed access to one HDU's keywords; problems name the file, the HDU and the keyword.

    A required keyword that is missing or unreadable raises :class:`FileFormatError` (the file
    cannot be placed). An optional one that cannot be read gives None and a
    :class:`KeywordWarning` in ``warnings``, so one odd value costs that value, not the file.
    """

    def __init__(
        self,
        keywords: Mapping[str, Any],
        file_name: str,
        hdu_index: int,
        warnings: list[KeywordWarning] | None = None,
    ) -> None:
        self._keywords = keywords
        self.hdu_index = hdu_index
        self.where = f"{file_name} HDU {hdu_index}"
        self.warnings: list[KeywordWarning] = [] if warnings is None else warnings

    def _raw(self, keyword: str) -> Any:
        value = self._keywords.get(keyword)
        return None if isinstance(value, Undefined) else value

    def _sentence(self, keyword: str, expected: str, value: Any) -> str:
        return f"{self.where}: keyword {keyword} = {value!r}, expected {expected}"

    def _parsed(self, keyword: str, kind: str) -> Any:
        value = self._raw(keyword)
        return None if value is None else _PARSERS[kind](value)

    def value(self, keyword: str, kind: str, absent: Any = None) -> Any:
        """The keyword's value as ``kind`` (str, float, int, bool, flag or time).

        ``absent`` stands in when the header does not give the keyword (or leaves it
        undefined). An unreadable value is None, with a warning recorded.
        """
        if self._raw(keyword) is None:
            return absent
        try:
            return self._parsed(keyword, kind)
        except _Unreadable as exc:
            raw = self._raw(keyword)
            message = self._sentence(keyword, exc.expected, raw)
            self.warnings.append(KeywordWarning(self.hdu_index, keyword, str(raw), message))
            return None

    def _required(self, keyword: str, kind: str) -> Any:
        try:
            value = self._parsed(keyword, kind)
        except _Unreadable as exc:
            message = self._sentence(keyword, exc.expected, self._raw(keyword))
            raise FileFormatError(message) from exc
        if value is None:
            msg = f"{self.where}: required keyword {keyword} is missing or blank"
            raise FileFormatError(msg)
        return value

    def required_str(self, keyword: str) -> str:
        return str(self._required(keyword, "str"))

    def required_int(self, keyword: str) -> int:
        return int(self._required(keyword, "int"))

    def optional_str(self, keyword: str) -> str | None:
        return self.value(keyword, "str")

    def optional_float(self, keyword: str) -> float | None:
        return self.value(keyword, "float")

    def optional_int(self, keyword: str) -> int | None:
        return self.value(keyword, "int")

    def optional_bool(self, keyword: str) -> bool | None:
        return self.value(keyword, "bool")

    def optional_flag(self, keyword: str) -> bool | None:
        return self.value(keyword, "flag")

    def optional_time(self, keyword: str) -> datetime | None:
        return self.value(keyword, "time")
