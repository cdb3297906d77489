"""Typed values from FITS headers: sentinels to NULL, HST times to UTC, readable errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from astropy.io.fits.card import Undefined

from ingest.fits_blocks import FileFormatError

__all__ = [
    "JIF_SENTINEL",
    "FileFormatError",
    "KeywordReader",
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


class KeywordReader:
    """Typed access to one HDU's keywords; errors name the file, the HDU and the keyword."""

    def __init__(self, keywords: Mapping[str, Any], file_name: str, hdu_index: int) -> None:
        self._keywords = keywords
        self.where = f"{file_name} HDU {hdu_index}"

    def _raw(self, keyword: str) -> Any:
        value = self._keywords.get(keyword)
        return None if isinstance(value, Undefined) else value

    def _fail(self, keyword: str, expected: str, value: Any) -> FileFormatError:
        return FileFormatError(f"{self.where}: keyword {keyword} = {value!r}, expected {expected}")

    def required_str(self, keyword: str) -> str:
        value = self._raw(keyword)
        if value is None or not str(value).strip():
            msg = f"{self.where}: required keyword {keyword} is missing or blank"
            raise FileFormatError(msg)
        return str(value).strip()

    def required_int(self, keyword: str) -> int:
        value = self.optional_int(keyword)
        if value is None:
            msg = f"{self.where}: required keyword {keyword} is missing"
            raise FileFormatError(msg)
        return value

    def optional_str(self, keyword: str) -> str | None:
        value = self._raw(keyword)
        if value is None:
            return None
        text = str(value).strip()
        return text or None

    def optional_float(self, keyword: str) -> float | None:
        value = self._raw(keyword)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(keyword, "a number", value)
        if value == JIF_SENTINEL:
            return None
        return float(value)

    def optional_int(self, keyword: str) -> int | None:
        value = self.optional_float(keyword)
        if value is None:
            return None
        if value != int(value):
            raise self._fail(keyword, "an integer", value)
        return int(value)

    def optional_bool(self, keyword: str) -> bool | None:
        value = self._raw(keyword)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._fail(keyword, "T or F", value)
        return value

    def optional_time(self, keyword: str) -> datetime | None:
        value = self._raw(keyword)
        if value is None:
            return None
        try:
            return parse_hst_time(str(value))
        except ValueError as exc:
            raise self._fail(keyword, "'YYYY.DDD:HH:MM:SS' or blank", value) from exc
