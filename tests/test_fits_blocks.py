"""The lean FITS reader returns exactly what astropy.io.fits reads, on every genuine file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.card import Undefined
from tests_support import REAL_FILES

from ingest.fits_blocks import FileFormatError, read_hdus


def _astropy_cards(header: fits.Header) -> list[tuple[str, object]]:
    cards = []
    for card in header.cards:
        value = None if isinstance(card.value, Undefined) else card.value
        cards.append((card.keyword, value.rstrip() if isinstance(value, str) else value))
    return cards


@pytest.mark.parametrize("name", REAL_FILES)
def test_every_header_and_table_matches_astropy(real_data: Path, name: str) -> None:
    raw = (real_data / name).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    hdus = read_hdus(raw, name)
    with fits.open(real_data / name) as hdul:
        assert len(hdus) == len(hdul)
        for ours, theirs in zip(hdus, hdul, strict=True):
            expected = _astropy_cards(theirs.header)
            got = [(k, v.rstrip() if isinstance(v, str) else v) for k, v in ours.cards]
            assert got == expected, f"{name} HDU {ours.index}"
            if isinstance(theirs, fits.BinTableHDU):
                assert ours.table is not None
                assert list(ours.table) == theirs.columns.names
                for column in theirs.columns.names:
                    np.testing.assert_array_equal(ours.table[column], theirs.data[column])
                    assert ours.table[column].dtype.kind == theirs.data[column].dtype.kind
            else:
                assert ours.table is None


def test_a_header_without_end_is_reported(real_data: Path) -> None:
    raw = gzip.decompress((real_data / "ldfd01010_jit.fits.gz").read_bytes())
    with pytest.raises(FileFormatError, match="HDU 1: truncated: the header has no END card"):
        read_hdus(raw[: 2880 + 1440], "x_jit.fits")


def test_a_table_cut_short_is_reported(real_data: Path) -> None:
    raw = gzip.decompress((real_data / "ldfd01010_jit.fits.gz").read_bytes())
    with pytest.raises(FileFormatError, match=r"HDU 4: truncated: the data needs \d+ bytes"):
        read_hdus(raw[: -2880 * 4], "x_jit.fits")
