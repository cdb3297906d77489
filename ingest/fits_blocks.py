"""A lean FITS reader for small HST tables: astropy parses the cards, numpy maps the data.

astropy's HDUList builds column objects and record arrays that cost ~10 ms per jitter table; a
jitter file's tables are plain fixed-width binary rows, so they are read here with one
``np.frombuffer`` each. Cards are parsed by astropy's ``Card``, cached by their 80-byte image since
most cards (column definitions, section titles) repeat in every jitter file. The tests check this
reader against ``astropy.io.fits.open`` on every genuine file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from astropy.io.fits import Card, Header
from astropy.io.fits.card import Undefined

__all__ = ["FileFormatError", "FitsHDU", "read_hdus"]

BLOCK = 2880
CARD = 80
_END = b"END" + b" " * 77
_COMMENTARY = ("COMMENT", "HISTORY", "")
# TFORM letter -> (big-endian numpy type, bytes per element).
_TFORM_TYPES = {
    "L": ("S1", 1),
    "B": ("u1", 1),
    "I": (">i2", 2),
    "J": (">i4", 4),
    "K": (">i8", 8),
    "E": (">f4", 4),
    "D": (">f8", 8),
    "A": ("S", 1),
}


class FileFormatError(ValueError):
    """A file is not what its name promises: the message names the file, HDU and keyword."""


@dataclass(frozen=True)
class FitsHDU:
    """One HDU: its cards (in order), keyword lookup, and for binary tables the columns.

    Numeric columns are big-endian views of the file's bytes; logical columns are bool and
    character columns are str with trailing blanks removed, as astropy returns them.
    """

    index: int
    cards: tuple[tuple[str, Any], ...]
    keywords: dict[str, Any]
    table: dict[str, np.ndarray] | None
    tforms: dict[str, str]

    @property
    def xtension(self) -> str:
        return "PRIMARY" if self.index == 0 else str(self.keywords.get("XTENSION", "")).strip()


@lru_cache(maxsize=65536)
def _parse_card(image: bytes) -> tuple[str, Any]:
    card = Card.fromstring(image.decode("ascii", errors="replace"))
    value = card.value
    if isinstance(value, Undefined):
        value = None
    elif isinstance(value, str):
        value = value.rstrip()
    return card.keyword, value


def _header_cards(raw: bytes, start: int, where: str) -> tuple[list[bytes], int]:
    """The card images of the header at ``start`` and the offset where its data begins."""
    images: list[bytes] = []
    position = start
    while True:
        block = raw[position : position + BLOCK]
        if len(block) < BLOCK:
            msg = f"{where}: truncated: the header has no END card before the file ends"
            raise FileFormatError(msg)
        position += BLOCK
        for offset in range(0, BLOCK, CARD):
            image = block[offset : offset + CARD]
            if image == _END:
                return images, position
            images.append(image)


def _cards(images: list[bytes]) -> tuple[tuple[str, Any], ...]:
    if any(image.startswith(b"CONTINUE") for image in images):
        # Long strings span cards: let astropy assemble them.
        header = Header.fromstring(b"".join(images).decode("ascii", errors="replace"))
        return tuple(
            (c.keyword, None if isinstance(c.value, Undefined) else c.value) for c in header.cards
        )
    return tuple(_parse_card(image) for image in images)


def _data_size(keywords: dict[str, Any]) -> int:
    naxis = int(keywords.get("NAXIS") or 0)
    if naxis == 0:
        return 0
    elements = 1
    for axis in range(1, naxis + 1):
        elements *= int(keywords.get(f"NAXIS{axis}") or 0)
    bits = abs(int(keywords.get("BITPIX") or 8))
    groups = int(keywords.get("GCOUNT") or 1)
    return bits // 8 * groups * (int(keywords.get("PCOUNT") or 0) + elements)


def _table_dtype(keywords: dict[str, Any], where: str) -> tuple[np.dtype, dict[str, str]]:
    names, formats, tforms = [], [], {}
    for column in range(1, int(keywords.get("TFIELDS") or 0) + 1):
        name = str(keywords.get(f"TTYPE{column}") or f"col{column}").strip()
        tform = str(keywords.get(f"TFORM{column}") or "").strip().upper()
        repeat_text, letter = tform[:-1], tform[-1:]
        if letter not in _TFORM_TYPES:
            msg = f"{where}: column {name!r} has TFORM {tform!r}, which this reader does not know"
            raise FileFormatError(msg)
        repeat = int(repeat_text or 1)
        numpy_type, _ = _TFORM_TYPES[letter]
        if letter == "A":
            formats.append(f"S{repeat}")
        else:
            formats.append(numpy_type if repeat == 1 else (numpy_type, (repeat,)))
        names.append(name)
        tforms[name] = tform
    dtype = np.dtype({"names": names, "formats": formats})
    if dtype.itemsize != int(keywords.get("NAXIS1") or 0):
        msg = f"{where}: the columns' widths add up to {dtype.itemsize}, NAXIS1 says otherwise"
        raise FileFormatError(msg)
    return dtype, tforms


def _column(values: np.ndarray, tform: str) -> np.ndarray:
    if tform.endswith("L"):
        return values == b"T"
    if tform.endswith("A"):
        return np.char.rstrip(np.char.decode(values, "ascii"))
    return values


def read_hdus(raw: bytes, name: str) -> list[FitsHDU]:
    """Every HDU of a FITS file held in memory; binary tables come with their rows."""
    hdus: list[FitsHDU] = []
    position = 0
    while position < len(raw):
        if hdus and not raw.startswith(b"XTENSION", position):
            break  # zero padding after the last HDU is allowed
        where = f"{name} HDU {len(hdus)}"
        images, data_start = _header_cards(raw, position, where)
        cards = _cards(images)
        keywords: dict[str, Any] = {}
        for keyword, value in cards:
            if keyword not in _COMMENTARY:
                keywords.setdefault(keyword, value)
        size = _data_size(keywords)
        data_end = data_start + size
        if data_end > len(raw):
            msg = (
                f"{where}: truncated: the data needs {size} bytes from offset {data_start}, "
                f"the file ends at {len(raw)}"
            )
            raise FileFormatError(msg)
        table, tforms = None, {}
        if hdus and str(keywords.get("XTENSION", "")).strip() == "BINTABLE":
            dtype, tforms = _table_dtype(keywords, where)
            rows = np.frombuffer(raw, dtype=dtype, count=int(keywords["NAXIS2"]), offset=data_start)
            table = {name: _column(rows[name], tforms[name]) for name in dtype.names or ()}
        hdus.append(FitsHDU(len(hdus), cards, keywords, table, tforms))
        position = data_start + -(-size // BLOCK) * BLOCK
    return hdus
