"""A labelled corpus of observing situations, written as edited copies of the genuine HST files.

Each case is one visit (``ipppss``) built from the files in tests/data/real (header and table
edits with astropy, never new data): the COS visit ldfd01010 (JIF, JIT, ASN; four nominal
exposures) renamed and given a WFC3 configuration, the WFC3/UVIS FLC ib4606c5q, and the COS
acquisition jitter log ldngz2szj. Each case names the flags above info every exposure must get
(no more, no fewer), every exposure's verdict and the visit's.

Run it to look at the files:  python tests/domain_corpus.py OUTDIR  (writes OUTDIR/<case>/...).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

REAL = Path(__file__).resolve().parent / "data" / "real"
BASE = "ldfd01"  # the genuine visit the jitter cases start from
MEMBERS = ("vn", "vp", "vr", "vt")  # its four exposures, in JIF order
FILL = np.float32(1.6e38)
SENTINEL = -32767
FLC_ROOT = "ib4606c5"  # the genuine WFC3/UVIS FLC: observed 2011, reprocessed 2023-12-15
# Columns EDPS fills when the FGS does not guide: FGS positions, SI jitter, aperture pointing.
GUIDING_COLUMNS = (
    "V2_dom", "V3_dom", "V2_roll", "V3_roll", "SI_V2_AVG", "SI_V2_RMS", "SI_V2_P2P",
    "SI_V3_AVG", "SI_V3_RMS", "SI_V3_P2P", "RA", "DEC", "Roll",
)  # fmt: skip

Edit = Callable[[fits.HDUList], None]


@dataclass(frozen=True)
class Case:
    """One visit of the corpus: how it is built and what hstmon must say about it."""

    name: str
    visit: str  # ipppss
    story: str  # the situation, in an instrument scientist's words
    build: Callable[[Path, str], None]  # writes the case's files into a folder
    verdicts: dict[str, str]  # exposure id -> verdict
    visit_verdict: str
    flags: dict[str, set[str]] = field(default_factory=dict)  # rules above info, exactly
    info: dict[str, set[str]] = field(default_factory=dict)  # info flags that must fire too
    says: str = ""  # words the visit's summary must contain
    delivered_on: date | None = None  # the visit's first delivery, when the case is about it


def exposure(visit: str, number: int) -> str:
    """The exposure id of member ``number`` (1-4) of a visit built from ldfd01010."""
    return f"{visit}{MEMBERS[number - 1]}"


# --- Editing the genuine files --------------------------------------------------------------


def _rename(hdul: fits.HDUList, old: str, new: str) -> None:
    """Every header string and association-table name that holds ``old`` now holds ``new``."""
    for hdu in hdul:
        for card in list(hdu.header.cards):
            value = card.value
            if card.keyword and isinstance(value, str) and old in value.lower():
                hdu.header[card.keyword] = value.replace(old, new).replace(old.upper(), new.upper())
        if isinstance(hdu, fits.BinTableHDU) and "MEMNAME" in hdu.columns.names:
            names = np.char.replace(hdu.data["MEMNAME"], old.upper(), new.upper())
            hdu.data["MEMNAME"] = names


def _wfc3(hdul: fits.HDUList) -> None:
    hdul[0].header["CONFIG"] = "WFC3/UVIS"
    if "PRIMESI" in hdul[0].header:
        hdul[0].header["PRIMESI"] = "WFC3"


def _jitter_files(folder: Path, visit: str, *, jif: Edit | None = None, jit: Edit | None = None,
                  asn: Edit | None = None, kinds: tuple[str, ...] = ("jif", "jit", "asn"),
                  drop: tuple[int, ...] = ()) -> None:  # fmt: skip
    """ldfd01010's JIF, JIT and ASN as visit ``visit`` of WFC3/UVIS, edited, members in
    ``drop`` (1-4) left out of the jitter files."""
    edits = {"jif": jif, "jit": jit, "asn": asn}
    for kind in kinds:
        with fits.open(REAL / f"{BASE}010_{kind}.fits.gz") as hdul:
            hdul.verify("silentfix")
            _rename(hdul, BASE, visit)
            if kind != "asn":
                _wfc3(hdul)
                for number in sorted(drop, reverse=True):
                    del hdul[number]
                hdul[0].header["NEXTEND"] = len(hdul) - 1
            if edits[kind]:
                edits[kind](hdul)
            hdul.writeto(folder / f"{visit}010_{kind}.fits")


def _extension(hdul: fits.HDUList, number: int) -> fits.Header:
    return hdul[number].header


def _mjd(hst_time: str) -> float:
    """An HST 'YYYY.DDD:HH:MM:SS' time as an MJD."""
    moment = datetime.strptime(hst_time.strip(), "%Y.%j:%H:%M:%S").replace(tzinfo=UTC)
    return float(Time(moment).mjd)


def _flc(folder: Path, rootname: str, asn_id: str | None, edits: dict[str, object],
         attach_to: tuple[str, int] | None = None) -> None:  # fmt: skip
    """The genuine FLC as exposure ``rootname``; with ``attach_to`` (visit, member) its start,
    program and target agree with that member's JIF, as a real pair does."""
    with fits.open(REAL / "sample_ipppssoot_flc.fits") as hdul:
        _rename(hdul, FLC_ROOT, rootname[:8])
        header = hdul[0].header
        header["ASN_ID"] = (asn_id or "NONE").upper()
        if attach_to is not None:
            visit, number = attach_to
            with fits.open(folder / f"{visit}010_jif.fits") as jif:
                ext = jif[number].header
                start = _mjd(ext["STARTIME"]) + 60.0 / 86400.0
                header["EXPSTART"] = start
                header["EXPEND"] = start + float(header["EXPTIME"]) / 86400.0
                header["RA_TARG"], header["DEC_TARG"] = ext["RA_AVG"], ext["DEC_AVG"]
                header["PROPOSID"] = jif[0].header["PROPOSID"]
        for keyword, value in edits.items():
            header[keyword] = value
        hdul.writeto(folder / f"{rootname}_flc.fits")


def _fail_guide_star(hdul: fits.HDUList, numbers: tuple[int, ...]) -> None:
    """What EDPS writes when the guide-star acquisition of these exposures failed."""
    for number in numbers:
        ext = _extension(hdul, number)
        ext["GUIDEACT"] = "GYRO"
        ext["GSACQ"] = ""
        ext["GSFAIL"] = "NOLOCK"
        for keyword in ("V2_RMS", "V3_RMS", "GSSEPRMS", "V2_P2P", "V3_P2P"):
            ext[keyword] = SENTINEL
        ext["ACTGSSEP"] = 0.0
    hdul[0].header["T_GSFAIL"] = True
    hdul[0].header["T_GDACT"] = False
    hdul[0].header["T_ACTGSP"] = False


def _no_guiding_rows(
    hdul: fits.HDUList,
    numbers: tuple[int, ...],
    columns: tuple[str, ...] = GUIDING_COLUMNS,
    take_data: int = 0,
) -> None:
    for number in numbers:
        table = hdul[number].data
        for column in columns:
            table[column][:] = FILL
        table["TakeData"][:] = take_data


# --- The cases ------------------------------------------------------------------------------


def _nominal(folder: Path, visit: str) -> None:
    _jitter_files(folder, visit)


def _gyro(folder: Path, visit: str) -> None:
    def jif(hdul: fits.HDUList) -> None:
        hdul[0].header["GUIDECMD"] = "GYRO"
        for number in range(1, 5):
            ext = _extension(hdul, number)
            ext["GUIDEACT"] = "GYRO"
            ext["GSACQ"] = ""
            for keyword in ("V2_RMS", "V3_RMS", "GSSEPRMS", "V2_P2P", "V3_P2P"):
                ext[keyword] = SENTINEL

    _jitter_files(folder, visit, jif=jif, jit=lambda h: _no_guiding_rows(h, (1, 2, 3, 4)))


def _fine_lock_gyro(folder: Path, visit: str) -> None:
    def jif(hdul: fits.HDUList) -> None:
        hdul[0].header["GUIDECMD"] = "FINE LOCK/GYRO"
        for number in range(1, 5):
            _extension(hdul, number)["GUIDEACT"] = "FINE LOCK/GYRO"
            _extension(hdul, number)["GSSEPRMS"] = SENTINEL  # one star: no separation

    def jit(hdul: fits.HDUList) -> None:
        _no_guiding_rows(hdul, (1, 2, 3, 4), ("V2_roll", "V3_roll"), take_data=1)

    _jitter_files(folder, visit, jif=jif, jit=jit)


def _fine_lock_gyro_lost(folder: Path, visit: str) -> None:
    def jif(hdul: fits.HDUList) -> None:
        hdul[0].header["GUIDECMD"] = "FINE LOCK/GYRO"
        hdul[0].header["T_GDACT"] = False
        for number in range(1, 5):
            _extension(hdul, number)["GUIDEACT"] = "GYRO" if number == 2 else "FINE LOCK/GYRO"

    _jitter_files(folder, visit, jif=jif)


def _single_star(folder: Path, visit: str) -> None:
    _jitter_files(folder, visit, jif=lambda h: h[0].header.set("T_SGSTAR", True))


def _gs_failure(folder: Path, visit: str) -> None:
    _jitter_files(
        folder,
        visit,
        jif=lambda h: _fail_guide_star(h, (3, 4)),
        jit=lambda h: _no_guiding_rows(h, (3, 4)),
    )


def _loss_of_lock(folder: Path, visit: str) -> None:
    def jif(hdul: fits.HDUList) -> None:
        del _extension(hdul, 2)["NLOSSES"]  # NLOSSES blank, LOCKLOSS 120 s
        _extension(hdul, 2)["LOCKLOSS"] = 120.0

    _jitter_files(folder, visit, jif=jif)


def _slew(folder: Path, visit: str) -> None:
    def jit(hdul: fits.HDUList) -> None:
        hdul[1].data["SlewFlag"][100:110] = 1  # TakeData stays 1: data taken while moving

    _jitter_files(folder, visit, jif=lambda h: h[0].header.set("T_SLEWNG", True), jit=jit)


def _wrong_pair(folder: Path, visit: str) -> None:
    def jif(hdul: fits.HDUList) -> None:
        _extension(hdul, 2)["ACTGSSEP"] = float(hdul[0].header["PREDGSEP"]) + 310.0
        hdul[0].header["T_ACTGSP"] = False

    _jitter_files(folder, visit, jif=jif)


def _internal_bias(folder: Path, visit: str) -> None:
    edits = {"IMAGETYP": "BIAS", "TARGNAME": "BIAS", "EXPTIME": 0.0}
    _flc(folder, f"{visit}a1q", f"{visit}010", edits)


def _moving_target(folder: Path, visit: str) -> None:
    _jitter_high_rms(folder, visit)
    _flc(folder, f"{exposure(visit, 1)}q", f"{visit}010", {"MTFLAG": "T"}, (visit, 1))


def _spatial_scan(folder: Path, visit: str) -> None:
    _jitter_high_rms(folder, visit)
    _flc(folder, f"{exposure(visit, 1)}q", f"{visit}010", {"SCAN_TYP": "C"}, (visit, 1))


def _jitter_high_rms(folder: Path, visit: str) -> None:
    def jif(hdul: fits.HDUList) -> None:
        _extension(hdul, 1)["V2_RMS"] = 250.0
        _extension(hdul, 1)["V3_RMS"] = 300.0

    _jitter_files(folder, visit, jif=jif)


def _odd_keyword(folder: Path, visit: str) -> None:
    _jitter_files(folder, visit, jif=lambda h: _extension(h, 2).set("GSACQ", "NONE"))


def _missing_log(folder: Path, visit: str) -> None:
    _flc(folder, f"{visit}a1q", f"{visit}010", {})


def _missing_member(folder: Path, visit: str) -> None:
    def asn(hdul: fits.HDUList) -> None:
        hdul[1].data["MEMPRSNT"][3] = False

    _jitter_files(folder, visit, asn=asn, drop=(4,))


def _late_reprocessing(folder: Path, visit: str) -> None:
    # EXPSTART 2011-02-19, PROCTIME 2023-12-15: the genuine file's dates.
    _flc(folder, f"{visit}a1q", f"{visit}010", {"EXPFLAG": "INTERRUPTED"})


def _tdf_down_short(folder: Path, visit: str) -> None:
    def jif(hdul: fits.HDUList) -> None:
        _extension(hdul, 1)["TDF-DOWN"] = True
        hdul[0].header["T_TDFDWN"] = True

    _jitter_files(folder, visit, jif=jif)
    _flc(folder, f"{exposure(visit, 1)}q", f"{visit}010", {"EXPTIME": 1.5}, (visit, 1))


def _cos_acquisition_log(folder: Path, visit: str) -> None:
    shutil.copy(REAL / "ldngz2szj_jit.fits.gz", folder)


def _telemetry_gaps(folder: Path, visit: str) -> None:
    def jif(hdul: fits.HDUList) -> None:
        hdul[0].header["T_NTMGAP"] = 2
        hdul[0].header["T_TMGAP"] = 30.0

    _jitter_files(folder, visit, jif=jif)


def _no_telemetry(folder: Path, visit: str) -> None:
    _jitter_files(folder, visit, jif=lambda h: h[0].header.set("T_NOTLM", True))


def _pointing_offset(folder: Path, visit: str) -> None:
    _jitter_files(folder, visit)
    rootname = f"{exposure(visit, 1)}q"
    _flc(folder, rootname, f"{visit}010", {}, (visit, 1))
    with fits.open(folder / f"{rootname}_flc.fits", mode="update") as hdul:
        hdul[0].header["DEC_TARG"] = hdul[0].header["DEC_TARG"] + 120.0 / 3600.0


def _mismatched_pair(folder: Path, visit: str) -> None:
    _jitter_files(folder, visit)
    rootname = f"{exposure(visit, 1)}q"
    _flc(folder, rootname, f"{visit}010", {}, (visit, 1))
    with fits.open(folder / f"{rootname}_flc.fits", mode="update") as hdul:
        hdul[0].header["EXPSTART"] = 55611.02640872  # the genuine 2011 start, years away
        hdul[0].header["EXPEND"] = 55611.02642


def _jit_without_jif(folder: Path, visit: str) -> None:
    _jitter_files(folder, visit, kinds=("jit", "asn"))


def _unexplained_gs_failure(folder: Path, visit: str) -> None:
    _jitter_files(folder, visit, jif=lambda h: h[0].header.set("T_GSFAIL", True))


def _all(visit: str, verdict: str) -> dict[str, str]:
    return {exposure(visit, n): verdict for n in range(1, 5)}


def _every(visit: str, rules: set[str]) -> dict[str, set[str]]:
    return {exposure(visit, n): set(rules) for n in range(1, 5)}


CASES: tuple[Case, ...] = (
    Case("nominal", "ia0n01", "four well-guided WFC3 exposures", _nominal,
         _all("ia0n01", "ok"), "ok", says="all 4 exposures are nominal"),
    Case("gyro", "ia0g01",
         "a visit commanded on gyros: GSACQ blank, RMS -32767, FGS columns at fill", _gyro,
         _all("ia0g01", "ok"), "ok", says="all 4 exposures are nominal"),
    Case("fine_lock_gyro", "ia0h01",
         "single guide star commanded (FINE LOCK/GYRO), roll FGS at fill, as planned",
         _fine_lock_gyro, _all("ia0h01", "ok"), "ok"),
    Case("fine_lock_gyro_lost", "ia0i01",
         "FINE LOCK/GYRO commanded, exposure 2 fell to GYRO", _fine_lock_gyro_lost,
         _all("ia0i01", "ok") | {"ia0i01vp": "hopr"}, "hopr",
         flags={"ia0i01vp": {"guiding_degraded"}},
         says="exposure 2 was not guided as commanded; 1, 3-4 are nominal"),
    Case("single_star", "ia0s01", "two stars commanded, guided on one (T_SGSTAR)", _single_star,
         _all("ia0s01", "helpdesk"), "helpdesk", flags=_every("ia0s01", {"single_guide_star"})),
    Case("gs_failure", "ia0f01", "guide-star acquisition failed for exposures 3-4", _gs_failure,
         _all("ia0f01", "ok") | {"ia0f01vr": "hopr", "ia0f01vt": "hopr"}, "hopr",
         flags={e: {"gs_acq_failure", "guiding_degraded", "take_data_down"}
                for e in ("ia0f01vr", "ia0f01vt")},
         says="exposures 3-4 lost their guide star; 1-2 are nominal"),
    Case("loss_of_lock", "ia0l01", "exposure 2: NLOSSES blank, LOCKLOSS 120 s", _loss_of_lock,
         _all("ia0l01", "ok") | {"ia0l01vp": "hopr"}, "hopr",
         flags={"ia0l01vp": {"loss_of_lock"}}, says="exposure 2 lost lock"),
    Case("slew", "ia0w01", "slewing in 10 JIT rows of exposure 1 with TakeData=1", _slew,
         _all("ia0w01", "ok") | {"ia0w01vn": "helpdesk"}, "helpdesk",
         flags={"ia0w01vn": {"slewing"}}),
    Case("wrong_pair", "ia0p01", "exposure 2 locked on a pair 310\" wider than planned",
         _wrong_pair, _all("ia0p01", "ok") | {"ia0p01vp": "hopr"}, "hopr",
         flags={"ia0p01vp": {"wrong_guide_star_pair"}},
         says="exposure 2 was locked on the wrong guide-star pair"),
    Case("internal_bias", "ia0b01", "an internal bias: IMAGETYP=BIAS, EXPTIME=0, no logs",
         _internal_bias, {"ia0b01a1": "ok"}, "ok", says="internal"),
    Case("moving_target", "ia0m01", "MTFLAG=T with 250/300 mas RMS", _moving_target,
         _all("ia0m01", "ok"), "ok"),
    Case("spatial_scan", "ia0c01", "SCAN_TYP=C with 250/300 mas RMS", _spatial_scan,
         _all("ia0c01", "ok"), "ok"),
    Case("odd_keyword", "ia0k01", "exposure 2's GSACQ holds 'NONE'", _odd_keyword,
         _all("ia0k01", "ok"), "ok", info={"ia0k01vp": {"unreadable_keyword"}}),
    Case("missing_log", "ia0x01", "an external FLC whose JIF and JIT are not in the store",
         _missing_log, {"ia0x01a1": "incomplete"}, "incomplete",
         says="has no observing log in the store"),
    Case("missing_member", "ia0y01",
         "member 4 listed with MEMPRSNT=F and absent from the jitter files", _missing_member,
         _all("ia0y01", "ok") | {"ia0y01vt": "incomplete"}, "incomplete",
         says="exposure 4 has no observing log in the store; 1-3 are nominal"),
    Case("late_reprocessing", "ia0r01",
         "an interrupted exposure of 2011 whose FLC was reprocessed in 2023",
         _late_reprocessing, {"ia0r01a1": "hopr"}, "hopr",
         flags={"ia0r01a1": {"exposure_interrupted"}},
         says="90-day limit passed on 2011-05-20", delivered_on=date(2011, 2, 19)),
    Case("tdf_down_short", "ia0t01", "a 1.5 s WFC3 exposure with TDF-DOWN=T", _tdf_down_short,
         _all("ia0t01", "ok") | {"ia0t01vn": "hopr"}, "helpdesk",
         flags={"ia0t01vn": {"take_data_down"}}, says="of the visit's data were obtained"),
    Case("cos_acquisition_log", "ldngz2",
         "a 1-s COS exposure, TakeData=1 in 38% of rows, no JIF, no science header",
         _cos_acquisition_log, {"ldngz2sz": "helpdesk"}, "helpdesk",
         flags={"ldngz2sz": {"take_data_down"}}),
    Case("telemetry_gaps", "ia0z01", "two telemetry gaps, 30 s missing", _telemetry_gaps,
         _all("ia0z01", "ok"), "ok", info=_every("ia0z01", {"telemetry_gaps"})),
    Case("no_telemetry", "ia0u01", "no engineering telemetry (T_NOTLM)", _no_telemetry,
         _all("ia0u01", "helpdesk"), "helpdesk", flags=_every("ia0u01", {"telemetry_gaps"})),
    Case("pointing_offset", "ia0o01", "exposure 1 pointed 2' from its target",
         _pointing_offset, _all("ia0o01", "ok") | {"ia0o01vn": "helpdesk"}, "helpdesk",
         flags={"ia0o01vn": {"pointing_offset"}}),
    Case("mismatched_pair", "ia0q01", "exposure 1's FLC starts in 2011, its JIF in 2017",
         _mismatched_pair, _all("ia0q01", "ok") | {"ia0q01vn": "helpdesk"}, "helpdesk",
         flags={"ia0q01vn": {"mismatched_pair"}}),
    Case("jit_without_jif", "ia0j01", "the JIT and ASN without the JIF", _jit_without_jif,
         _all("ia0j01", "ok"), "ok"),
    Case("unexplained_gs_failure", "ia0v01",
         "T_GSFAIL=T but no exposure shows a failed acquisition", _unexplained_gs_failure,
         _all("ia0v01", "helpdesk"), "helpdesk", flags=_every("ia0v01", {"visit_flags"})),
)  # fmt: skip


def write_corpus(root: Path) -> list[Case]:
    """Every case's files in ``root/<case name>/``; returns the cases."""
    for case in CASES:
        folder = root / case.name
        folder.mkdir(parents=True, exist_ok=True)
        case.build(folder, case.visit)
    return list(CASES)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/domain_corpus.py OUTDIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    cases = write_corpus(root)
    labels = [
        {"case": c.name, "visit": c.visit, "story": c.story, "visit_verdict": c.visit_verdict,
         "verdicts": c.verdicts, "flags": {e: sorted(r) for e, r in c.flags.items()}}
        for c in cases
    ]  # fmt: skip
    (root / "cases.json").write_text(json.dumps(labels, indent=1) + "\n")
    print(f"{len(cases)} cases written to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
