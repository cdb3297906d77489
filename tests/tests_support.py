"""Names and builders shared by several test modules."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

REAL_FILES = (
    "ldfd01010_jif.fits.gz",
    "ldfd01010_jit.fits.gz",
    "ldfd01010_asn.fits.gz",
    "ldngz2szj_jit.fits.gz",
    "ldxe02010_jit.fits.gz",
    "ibxy01z8q_ima.fits",
    "sample_ipppssoot_flc.fits",
    "sample_ipppssoot_flt.fits",
)
REAL_DATA = Path(__file__).resolve().parent / "data" / "real"
# The programs of the genuine files: ldfd01010 (JIF, JIT, ASN), the sample FLC/FLT (whose file
# names say nothing of their exposures), the IMA, and two lone JIT tables.
REAL_PROGRAMS = (14933, 11665, 13021, 15305, 15626)


def build_real_store(url: str, folder: Path, scheduler: str) -> None:
    """The genuine HST files, copied into ``folder``, ingested and analysed into ``url``."""
    from analysis.run import run_analysis
    from ingest.pipeline import run_ingest
    from models.database import upgrade

    folder.mkdir(parents=True, exist_ok=True)
    for name in REAL_FILES:
        shutil.copy(REAL_DATA / name, folder / name)
    upgrade(url)
    summary = run_ingest([folder], url, scheduler=scheduler)
    assert summary.failed == 0, summary.failures
    run_analysis(url, today=date(2026, 11, 26))
