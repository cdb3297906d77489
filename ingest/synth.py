"""Seeded synthetic archive of WFC3 jitter file sets (JIF/JIT/ASN) with labelled guiding failures."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from gzip import compress as gzip_compress
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["FAILURE_MODES", "SyntheticExposure", "read_truth", "write_archive"]

FAILURE_MODES: tuple[str, ...] = (
    "nominal",
    "gs_acq_failure",
    "loss_of_lock",
    "tdf_down",
    "gyro_drift",
    "high_jitter",
)


@dataclass(frozen=True)
class SyntheticExposure:
    """Ground truth of one synthetic exposure, as written to truth.csv."""

    exposure_id: str  # first 8 chars, lowercase, e.g. 'iepp01uv'
    asn_id: str  # lowercase; a lone exposure's set uses its 9-char jitter name
    jitter_name: str  # EXPNAME, e.g. 'iepp01uvj'
    rootname: str | None  # science rootname from the asn table, None for lone exposures
    proposid: int
    config: str  # 'WFC3/UVIS' | 'WFC3/IR'
    mode: str  # one of FAILURE_MODES
    member_index: int  # 1-based extension number in its jitter files
    n_samples: int  # JIT rows
    n_fill: int  # JIT rows holding 1.6e38 fill


# --- constants of the format -------------------------------------------------------------

FILL = 1.6e38  # EDPS fill for "no guiding data"; float32 columns hold 1.59999999e38
TERM_NA = np.float32(1.6e36)  # TermAng when the terminator angle does not apply
SENTINEL = -32767.0  # GSSEPRMS / V2_RMS / V3_RMS after a guide-star acquisition failure
_PIX_MAS = 2.0  # jitter image plate scale (XPIXINC/YPIXINC)
_IMG = 64
_SAMPLES_PER_S = 15.0  # jitter-image counts per second, as in the real ldfd01010 images
_ORBIT_S = 5730.0  # HST orbital period
_EPOCH = datetime(2019, 1, 1)
_SPAN_S = (datetime(2026, 12, 31) - _EPOCH).total_seconds()
_IEPP = "iepp01010"

# Failure rates per exposure; everything else is nominal.
_MODE_RATES = {
    "gs_acq_failure": 0.03,
    "loss_of_lock": 0.03,
    "tdf_down": 0.02,
    "gyro_drift": 0.03,
    "high_jitter": 0.04,
}

# --- header templates --------------------------------------------------------------------
# One line per card, in the order EDPS writes them: "KEY FORMAT comment", "-" for a blank
# card, "/ TITLE" for a section title card.  FORMAT: L logical, I integer, S<n> string padded
# to n characters, F<d> fixed with d decimals, E<d> exponential, G Fortran-like general.
# Keywords, comments, padding widths and section cards are those of the real EDPS files.

_PRIMARY_HEAD = """
SIMPLE L data conform to FITS standard
BITPIX I bits per data value
NAXIS I number of data axes
EXTEND L File may contain standard extensions
NEXTEND I Number of standard extensions
GROUPS L image is in group format
DATE S10 date this file was written (yyyy-mm-dd)
FILENAME S18 name of file
FILETYPE S9 type of data found in data file
-
TELESCOP S3 telescope used to acquire data
INSTRUME S6 identifier for instrument used to acquire data
EQUINOX F1 equinox of celestial coord. system
OPUS_VER S18 data processing software system version
PDB_VER S18 Project Database version in use
ROOTNAME S9 rootname of the observation set
TARGNAME S30 proposer's target name
PROC_TYP S12 type of pipeline processing
CONFIG S15 proposed instrument configuration
PROPOSID I PEP proposal identifier
PROGRMID S3 program id (base 36)
"""

_JIF_PRIMARY_BODY = """
PARALLEL S13 indicates if observation taken in parallel
PRIMESI S6 instrument designated as prime
TSTRTIME S20 Predicted Association Window Start Time
TENDTIME S17 Predicted Association Window End Time
-
/ POINTING CONTROL DATA
-
GUIDECMD S20 Commanded Guiding mode
GSD_ID S10 Dominant Guide Star ID
GSD_RA F6 Dominant Guide Star RA (deg)
GSD_DEC F6 Dominant Guide Star DEC (deg)
GSD_MAG F6 Dominant Guide Star Magnitude
GSD_FGS S1 Dominant GS Fine Guidance Sensor Number
GSR_ID S10 Roll Guide Star ID
GSR_RA F6 Roll Guide Star RA (deg)
GSR_DEC F6 Roll Guide Star DEC (deg)
GSR_MAG F6 Roll Guide Star Magnitude
GSR_FGS S1 Roll GS Fine Guidance Sensor Number
GS_PRIM S8 Guide star that is primary (dominant or roll)
PREDGSEP F3 Predicted Guide Star Separation (arcsec)
MGSSPRMS F1 maximum Guide Star Separation RMS in assoc.
TNLOSSES I Number of loss of lock events
TLOCKLOS G Total loss of lock time
TNRECENT I Number of recentering events
TRECENTR G Total recentering time
-
/ LINE OF SIGHT JITTER SUMMARY
-
TV2_RMS G total association V2 Axis RMS
MV2_P2P F1 maximum association V2 Axis peak to peak
TV3_RMS G total association V3 Axis RMS
MV3_P2P F1 maximum total association V3 Axis peak to peak
TRA_AVG G total association Average RA
TDEC_AVG G total association Average DEC
TROLLAVG G total association Average Roll
-
/ PROBLEM FLAGS and WARNINGS
-
T_GDACT L Actual guiding mode same for all exposures
T_ACTGSP L Actual Guide Star Separation same in all exps.
T_GSFAIL L Guide star acquisition failure in any exposure
T_SGSTAR L Failed to single star fine lock
T_TLMPRB L problem with the engineering telemetry in any e
T_NOTLM L no engineering telemetry available in all exps.
T_NTMGAP I total number of telemetry gaps in association
T_TMGAP F6 total duration of missing telemetry in asn. (s)
T_GSGAP L missing telemetry during GS acq. in any exp.
T_SLEWNG L Slewing occurred during observations
T_TDFDWN L Take Data Flag NOT on throughout observations
-
/ ASSOCIATION KEYWORDS
-
ASN_ID S9 unique identifier assigned to association
ASN_TAB S18 name of the association table
ASN_STAT S8 status of association (COMPLETE/INCOMPLETE)
ASN_PROD L product created (T/F)
"""

_JIT_PRIMARY_BODY = """
-
/ ASSOCIATION KEYWORDS
-
ASN_ID S9 unique identifier assigned to association
ASN_TAB S18 name of the association table
"""

_JIF_EXT = """
XTENSION S8 extension type
BITPIX I bits per data value
NAXIS I number of data axes
NAXIS1 I length of first data axis
NAXIS2 I length of second data axis
PCOUNT I number of group parameters
GCOUNT I number of groups
INHERIT L inherit the primary header
EXTNAME S8 extension name
EXTVER I extension version number
ROOTNAME S9 rootname of the observation set
EXPNAME S25 exposure identifier
DATAMIN F1 the minimum value of the data
DATAMAX F1 the maximum value of the data
ASN_MTYP S8 Role of the Member in the Association
-
/ World Coordinate System and Related Parameters
-
WCSAXES I number of World Coordinate System axes
CRPIX1 F1 x-coordinate of reference pixel
CRPIX2 F1 y-coordinate of reference pixel
CRVAL1 F7 first axis value at reference pixel
CRVAL2 F7 second axis value at reference pixel
CTYPE1 S8 the coordinate type for the first axis
CTYPE2 S8 the coordinate type for the second axis
CD1_1 E7 partial of first axis coordinate w.r.t. x
CD1_2 E7 partial of first axis coordinate w.r.t. y
CD2_1 E7 partial of second axis coordinate w.r.t. x
CD2_2 E7 partial of second axis coordinate w.r.t. y
-
/ IMAGE PARAMETERS
-
COORDSYS S18 Image coordinate system
XPIXINC F1 Plate scale along X in mas per pixel
YPIXINC F1 Plate scale along Y in mas per pixel
BETA_1 F2 Angle from +V3 to image +x(toward +V2)
BETA_2 F2 Angle from +V3 to image +y(toward +V2)
-
/ OBSERVATION DATA
-
OBSET_ID S2 observation set id
OBSERVTN S3 observation number (base 36)
PROCTIME S20 Date-Time When Observation Processed
/ Date-Time Format is YYYY.DDD:HH:MM:SS
STARTIME S20 Predicted Observation Window Start Time
ENDTIME S20 Predicted Observation Window End Time
-
/ SCIENTIFIC INSTRUMENT DATA
-
TLMFORM S18 Telemetry Format
APERTURE S10 Aperture
APER_V2 F3 V2 Aperture position in Vehicle frame (arcsec)
APER_V3 F3 V3 Aperture position in Vehicle frame (arcsec)
-
/ SPACECRAFT DATA
-
ALTITUDE F2 Average altitude during observation (km)
LOS_SUN F2 Minimum Line Of Sight to Sun (deg)
LOS_MOON F2 Minimum Line Of Sight to Moon (deg)
SHADOENT S20 Earth shadow last entry (predicted)
SHADOEXT S20 Earth shadow last exit (predicted)
LOS_SCV F2 Minimum line of sight to S/C veloc. (deg)
LOS_LIMB F1 Average line of sight to Earth limb (deg)
-
/ POINTING CONTROL DATA
-
GUIDEACT S20 Actual Guiding mode at end of GS acquisition
GSACQ S20 Actual time of GS Acquisition Completion
ACTGSSEP F3 Actual Guide Star Separation (arcsec)
GSSEPRMS F1 RMS of Guide Star Separation (milli-arcsec)
NLOSSES I Number of loss of lock events
LOCKLOSS F6 Total loss of lock time (sec)
NRECENT I Number of recentering events (sec)
RECENTR F6 Total recentering time
-
/ LINE OF SIGHT JITTER SUMMARY
-
V2_RMS F1 dominant guide star V2 axis RMS (mas)
V2_P2P F1 dominant guide star V2 axis peak to peak (mas)
V3_RMS F1 dominant guide star V3 axis RMS (mas)
V3_P2P F1 dominant guide star V3 axis peak to peak (mas)
RA_AVG F7 Average RA (deg)
DEC_AVG F7 Average DEC (deg)
ROLL_AVG F7 Average Roll (deg)
-
/ PROBLEM FLAGS and WARNINGS (present only if problem exists)
"""

# Cards EDPS appends after the last title card only when the problem occurred.
_PROBLEM_CARDS = """
GSFAIL S8 guide star acquisition failure
TDF-DOWN L take-data-flag not up during entire exposure
"""

_JIT_EXT_HEAD = """
XTENSION S8 extension type
BITPIX I bits per data value
NAXIS I number of data axes
NAXIS1 I length of first data axis
NAXIS2 I length of second data axis
PCOUNT I number of group parameters
GCOUNT I number of groups
TFIELDS I number of fields in each table row
INHERIT L inherit the primary header
EXTNAME S8 extension name
EXTVER I extension version number
ROOTNAME S9 rootname of the observation set
EXPNAME S25 exposure identifier
OBSET_ID S2 observation set id
PROCTIME S20 Date-Time When Observation Processed
-
/ JITTER TABLE COLUMNS
-
"""

_ASN_PRIMARY = """
SIMPLE L data conform to FITS standard
BITPIX I bits per data value
NAXIS I number of data axes
EXTEND L File may contain standard extensions
NEXTEND I Number of standard extensions
GROUPS L image is in group format
DATE S10 date this file was written (yyyy-mm-dd)
FILENAME S39 name of file
FILETYPE S9 type of data found in data file
-
TELESCOP S3 telescope used to acquire data
INSTRUME S6 identifier for instrument used to acquire data
EQUINOX F1 equinox of celestial coord. system
-
/ DATA DESCRIPTION KEYWORDS
-
ROOTNAME S34 rootname of the observation set
PRIMESI S6 instrument designated as prime
-
/ TARGET INFORMATION
-
TARGNAME S30 proposer's target name
RA_TARG E12 right ascension of the target (deg) (J2000)
DEC_TARG E12 declination of the target (deg) (J2000)
-
/ PROPOSAL INFORMATION
-
PROPOSID I PEP proposal identifier
LINENUM S15 proposal logsheet line number
PR_INV_L S30 last name of principal investigator
PR_INV_F S20 first name of principal investigator
PR_INV_M S20 middle name / initial of principal investigat
-
/ SCIENCE INSTRUMENT CONFIGURATION
-
DETECTOR S4 detector in use: UVIS or IR
-
/ ASSOCIATION KEYWORDS
-
ASN_ID S10 unique identifier assigned to association
ASN_TAB S23 name of the association table
ASN_STAT S12 status of association (COMPLETE/INCOMPLETE)
ASN_PROD L product created (T/F)
"""

_ASN_EXT = """
XTENSION S8 extension type
BITPIX I bits per data value
NAXIS I number of data axes
NAXIS1 I length of first data axis
NAXIS2 I length of second data axis
PCOUNT I number of group parameters
GCOUNT I number of groups
TFIELDS I number of fields in each table row
INHERIT L inherit the primary header
EXTNAME S8 extension name
EXTVER I extension version number
ROOTNAME S34 rootname of the observation set
EXPNAME S25 exposure identifier
-
/ ASSOCIATION TABLE COLUMNS
-
TTYPE1 S8 name of association member
TFORM1 S8 format in which field 1 is coded
TDISP1 S8 format in which field 1 is displayed
TTYPE2 S8 type of association member
TFORM2 S8 format in which field 2 is coded
TDISP2 S8 format in which field 2 is displayed
TTYPE3 S8 flag to indicate if member is present (T/F)
TFORM3 S8 format in which field 3 is coded
TDISP3 S8 format in which field 3 is displayed
"""

# (TTYPE, TFORM, TUNIT, TTYPE comment) of the 28 JIT columns, in file order.
_JIT_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("Seconds", "E", "seconds", "three second intervals from start"),
    ("V2_dom", "E", "arcsec", "dominant FGS V2 coordinate"),
    ("V3_dom", "E", "arcsec", "dominant FGS V3 coordinate"),
    ("V2_roll", "E", "arcsec", "roll FGS V2 coordinate"),
    ("V3_roll", "E", "arcsec", "roll FGS V3 coordinate"),
    ("SI_V2_AVG", "E", "arcsec", "mean jitter in V2 over 3 seconds"),
    ("SI_V2_RMS", "E", "arcsec", "rms jitter in V2 over 3 seconds"),
    ("SI_V2_P2P", "E", "arcsec", "peak jitter in V2 over 3 seconds"),
    ("SI_V3_AVG", "E", "arcsec", "mean jitter in V3 over 3 seconds"),
    ("SI_V3_RMS", "E", "arcsec", "rms jitter in V3 over 3 seconds"),
    ("SI_V3_P2P", "E", "arcsec", "peak jitter in V3 over 3 seconds"),
    ("RA", "D", "degrees", "Right Ascension of aperture reference"),
    ("DEC", "D", "degrees", "declination of aperture reference"),
    ("Roll", "D", "degrees", "position angle between north and +V3"),
    ("LimbAng", "E", "degrees", "angle between V1 axis and Earth limb"),
    ("TermAng", "E", "degrees", "angle between V1 axis and terminator"),
    ("LOS_Zenith", "E", "degrees", "angle between HST zenith and target"),
    ("Latitude", "E", "degrees", "HST subpoint latitude"),
    ("Longitude", "E", "degrees", "HST subpoint longitude"),
    ("Mag_V1", "E", "Gauss", "magnetic field along V1"),
    ("Mag_V2", "E", "Gauss", "magnetic field along V2"),
    ("Mag_V3", "E", "Gauss", "magnetic field along V3"),
    ("BrightLimb", "I", "", "Earth limb of LimbAng is bright (1 or 0)"),
    ("FGS_flags", "E", "", "FGS status flags"),
    ("DayNight", "I", "", "observation taken during day (1) or night (0)"),
    ("Recenter", "I", "", "recentering status flag, event in progress = 1"),
    ("TakeData", "I", "", "vehicle guiding status, nominal GS tracking = 1"),
    ("SlewFlag", "I", "", "vehicle slewing status, slewing = 1"),
)
_JIT_DTYPE = np.dtype(
    [(name, {"E": ">f4", "D": ">f8", "I": ">i2"}[form]) for name, form, _, _ in _JIT_COLUMNS]
)
# Columns that hold 1.6e38 when the FGS is not guiding (TermAng has its own 1.6e36 flag).
_FILLED_COLUMNS = (
    "V2_dom", "V3_dom", "V2_roll", "V3_roll", "SI_V2_AVG", "SI_V2_RMS", "SI_V2_P2P",
    "SI_V3_AVG", "SI_V3_RMS", "SI_V3_P2P", "RA", "DEC", "Roll",
)  # fmt: skip
_ASN_DTYPE = np.dtype([("MEMNAME", "S14"), ("MEMTYPE", "S14"), ("MEMPRSNT", "S1")])

Card = tuple[str, str, str]  # keyword, format code, comment


def _parse_cards(spec: str) -> tuple[Card, ...]:
    """Turn a template (see above) into (keyword, format, comment) triples."""
    cards: list[Card] = []
    for line in spec.strip().splitlines():
        if line == "-":
            cards.append(("", "-", ""))
        elif line.startswith("/ "):
            cards.append(("", "/", line[2:]))
        else:
            key, fmt, comment = line.split(None, 2)
            cards.append((key, fmt, comment))
    return tuple(cards)


def _column_cards() -> tuple[tuple[Card, ...], dict[str, str]]:
    cards: list[Card] = []
    values: dict[str, str] = {}
    for i, (name, form, unit, comment) in enumerate(_JIT_COLUMNS, start=1):
        cards += [
            (f"TTYPE{i}", "S10", comment),
            (f"TUNIT{i}", "S8", f"units of field {i}"),
            (f"TFORM{i}", "S8", f"format in which field {i} is coded"),
        ]
        values |= {f"TTYPE{i}": name, f"TUNIT{i}": unit, f"TFORM{i}": form}
    return tuple(cards), values


# Templates are parsed once at import; each file then only formats values into them.
JIF_PRIMARY_CARDS = _parse_cards(_PRIMARY_HEAD + _JIF_PRIMARY_BODY)
JIT_PRIMARY_CARDS = _parse_cards(_PRIMARY_HEAD + _JIT_PRIMARY_BODY)
JIF_EXT_CARDS = _parse_cards(_JIF_EXT)
_COLUMN_CARDS, _COLUMN_VALUES = _column_cards()
JIT_EXT_CARDS = _parse_cards(_JIT_EXT_HEAD) + _COLUMN_CARDS
ASN_PRIMARY_CARDS = _parse_cards(_ASN_PRIMARY)
ASN_EXT_CARDS = _parse_cards(_ASN_EXT)
_PROBLEM = {card[0]: card for card in _parse_cards(_PROBLEM_CARDS)}

_PRIMARY_CONST: dict[str, Any] = {
    "SIMPLE": True, "BITPIX": 32, "NAXIS": 0, "EXTEND": True, "GROUPS": False,
    "TELESCOP": "HST", "INSTRUME": "FGS", "EQUINOX": 2000.0, "PDB_VER": "CCS",
    "PROC_TYP": "NORMAL", "PARALLEL": "NO", "PRIMESI": "WFC3", "GUIDECMD": "FINE LOCK",
    "GS_PRIM": "DOMINANT", "T_SGSTAR": False, "T_TLMPRB": False, "T_NOTLM": False,
    "T_NTMGAP": 0, "T_TMGAP": 0.0, "T_GSGAP": False, "T_SLEWNG": False,
}  # fmt: skip
_EXT_CONST: dict[str, Any] = {
    "PCOUNT": 0, "GCOUNT": 1, "INHERIT": True, "EXTNAME": "jit", "WCSAXES": 2,
    "CRPIX1": 32.0, "CRPIX2": 32.0, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
    "COORDSYS": "WFC3", "XPIXINC": _PIX_MAS, "YPIXINC": _PIX_MAS, "BETA_1": 135.0,
    "BETA_2": 45.0, "TLMFORM": "HN",
}  # fmt: skip
_JIF_EXT_CONST = _EXT_CONST | {"XTENSION": "IMAGE", "BITPIX": 32, "NAXIS": 2,
                               "NAXIS1": _IMG, "NAXIS2": _IMG}  # fmt: skip
_JIT_EXT_CONST = (
    _EXT_CONST
    | _COLUMN_VALUES
    | {"XTENSION": "BINTABLE", "BITPIX": 8, "NAXIS": 2, "TFIELDS": len(_JIT_COLUMNS),
       "NAXIS1": _JIT_DTYPE.itemsize}
)  # fmt: skip
_ASN_PRIMARY_CONST: dict[str, Any] = {
    "SIMPLE": True, "BITPIX": 8, "NAXIS": 0, "EXTEND": True, "NEXTEND": 1, "GROUPS": False,
    "FILETYPE": "ASN_TABLE", "TELESCOP": "HST", "INSTRUME": "WFC3", "EQUINOX": 2000.0,
    "PRIMESI": "WFC3", "PR_INV_M": "", "ASN_STAT": "COMPLETE", "ASN_PROD": True,
}  # fmt: skip
_ASN_EXT_CONST: dict[str, Any] = {
    "XTENSION": "BINTABLE", "BITPIX": 8, "NAXIS": 2, "NAXIS1": _ASN_DTYPE.itemsize,
    "PCOUNT": 0, "GCOUNT": 1, "TFIELDS": 3, "INHERIT": True, "EXTNAME": "ASN", "EXTVER": 1,
    "TTYPE1": "MEMNAME", "TFORM1": "14A", "TDISP1": "A14",
    "TTYPE2": "MEMTYPE", "TFORM2": "14A", "TDISP2": "A14",
    "TTYPE3": "MEMPRSNT", "TFORM3": "L", "TDISP3": "L6",
}  # fmt: skip


# --- card and file encoding --------------------------------------------------------------


def _fortran_g(value: float) -> str:
    """EDPS writes some floats like Fortran list output: '0.' and '3.60277670693036'."""
    text = f"{value:.15g}"
    return text if any(c in text for c in ".eE") else text + "."


def _value_field(fmt: str, value: Any) -> str:
    kind = fmt[0]
    if kind == "S":
        quoted = "'" + str(value).ljust(int(fmt[1:])).replace("'", "''") + "'"
        return f"{quoted:<20}"
    if kind == "L":
        text = "T" if value else "F"
    elif kind == "I":
        text = str(int(value))
    elif kind == "F":
        text = f"{value:.{fmt[1:]}f}"
    elif kind == "E":
        text = f"{value:.{fmt[1:]}E}"
    else:
        text = _fortran_g(float(value))
    return f"{text:>20}"


def _render(cards: tuple[Card, ...], values: dict[str, Any]) -> list[str]:
    """Format values into 80-character card images following a template."""
    images = []
    for key, fmt, comment in cards:
        if fmt == "-":
            images.append(" " * 80)
        elif fmt == "/":
            images.append(f"{'':14}/ {comment}".ljust(80))
        else:
            if key not in values:
                msg = f"synthetic header: no value for keyword {key!r}"
                raise KeyError(msg)
            text = f"{key:<8}= {_value_field(fmt, values[key])} / {comment}"
            images.append(text[:80].ljust(80))
    return images


def _hdu_bytes(cards: list[str], data: bytes = b"") -> bytes:
    """One HDU: header padded with blanks and data padded with zeros to 2880-byte blocks."""
    head = "".join(cards) + "END".ljust(80)
    head += " " * (-len(head) % 2880)
    return head.encode("ascii") + data + b"\0" * (-len(data) % 2880)


def _write_file(path: Path, blob: bytes, compress: bool) -> None:
    if compress:
        # mtime=0 and no file name in the gzip header keep the bytes a function of the seed.
        path = path.with_name(path.name + ".gz")
        blob = gzip_compress(blob, compresslevel=6, mtime=0)
    path.write_bytes(blob)


def _hst_time(seconds: float) -> str:
    """Seconds after 2019-01-01 as the EDPS time string 'YYYY.DDD:HH:MM:SS'."""
    t = _EPOCH + timedelta(seconds=int(seconds))
    return f"{t.year}.{t.timetuple().tm_yday:03d}:{t.hour:02d}:{t.minute:02d}:{t.second:02d}"


# --- the plan: programs, visits, exposures -----------------------------------------------

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_SURNAMES = ("Alvarez", "Bergstrom", "Chen", "Dubois", "Eriksen", "Fujita", "Garcia",
             "Haddad", "Ivanova", "Jansen", "Kowalski", "Larsen", "Moreau", "Nakamura")  # fmt: skip
_FIRSTNAMES = ("Ana", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines")
_TARGETS = ("NGC-", "M31-FIELD-", "HD-", "SDSSJ", "GAL-CLUS-", "SN20", "QSO-J", "LMC-FIELD-")
_APERTURES = {
    "WFC3/UVIS": (("UVIS", -27.5, -33.2), ("UVIS-CENTER", -27.3, -33.1),
                  ("UVIS2-C512C-SUB", -51.9, -50.7), ("UVIS1-2K2A-SUB", -2.4, -14.9)),
    "WFC3/IR": (("IR", -1.0, 0.6), ("IR-FIX", -1.2, 0.5), ("IRSUB256", -1.0, 0.6),
                ("GRISM256", -1.0, 0.6)),
}  # fmt: skip
# Nominal FGS positions in the V2/V3 frame (arcsec): FGS1 on +V2, FGS2 on -V3, FGS3 on -V2.
_FGS_V = {"1": (715.0, 5.0), "2": (-92.0, -685.0), "3": (-700.0, -30.0)}


@dataclass
class _Program:
    code: str  # 3-char base-36, lowercase
    proposid: int
    start_s: float  # seconds after 2019-01-01 of its first visit
    pi: tuple[str, str]
    targname: str
    ra: float
    dec: float


@dataclass
class _Exposure:
    obs: str  # 2-char base-36 observation id
    mode: str = "nominal"
    cadence_s: float = 3.0
    window_s: int = 0
    start_s: int = 0
    gsacq_s: int | None = None
    orbit_start_s: int = 0


@dataclass
class _Set:
    program: _Program
    visit: str
    config: str
    lone: bool
    members: list[_Exposure]
    fixed: bool = False  # the iepp01010 visit keeps its prescribed modes
    roll: float = 0.0
    dither: list[tuple[float, float]] = field(default_factory=list)

    @property
    def asn_id(self) -> str:
        if self.lone:
            return f"i{self.program.code}{self.visit}{self.members[0].obs}j"
        return f"i{self.program.code}{self.visit}010"


def _program(rng: np.random.Generator, used: set[str], ids: set[int]) -> _Program:
    """A program with a fresh base-36 code and PEP id; ids grow with time, as cycles do."""
    code = _IEPP[1:4]
    while code in used:
        code = "".join(rng.choice(list(_B36), size=3))
    used.add(code)
    pid = 16748
    while pid in ids:
        pid = int(rng.integers(15500, 18000))
    ids.add(pid)
    frac = (pid - 15500) / 2500.0
    start = min(max(frac * _SPAN_S + rng.normal(0, 0.05 * _SPAN_S), 0.0), 0.85 * _SPAN_S)
    target = f"{rng.choice(_TARGETS)}{int(rng.integers(1, 9999))}"
    dec = float(np.degrees(np.arcsin(rng.uniform(-0.98, 0.98))))
    pi = (str(rng.choice(_SURNAMES)), str(rng.choice(_FIRSTNAMES)))
    return _Program(code, pid, start, pi, target, float(rng.uniform(0, 360)), dec)


def _obs_codes(rng: np.random.Generator, n: int) -> list[str]:
    """Consecutive observation ids of one visit (step 1 or 2 in base 36, like vn, vp, vr)."""
    step = int(rng.integers(1, 3))
    first = int(rng.integers(36 * 10, 36 * 36 - 2 * n - 1))
    return [_B36[(first + step * i) // 36] + _B36[(first + step * i) % 36] for i in range(n)]


def _iepp_set(rng: np.random.Generator, used: set[str], ids: set[int]) -> _Set:
    """The IEPP01010 pattern: 7 UVIS exposures, guide-star acquisition fails for 4-7."""
    prog = _program(rng, used, ids)
    # NGC 1898 in the LMC, the target of the real IEPP01010 visit.
    prog.targname, prog.ra, prog.dec = "NGC-1898", 79.1750, -69.6567
    prog.pi = ("Niederhofer", "Florian")
    obs = ["uv", "uw", "ux", "uy", "uz", "v0", "v1"]
    modes = ["nominal"] * 3 + ["gs_acq_failure"] * 4
    members = [_Exposure(o, m) for o, m in zip(obs, modes, strict=True)]
    return _Set(prog, "01", "WFC3/UVIS", False, members, fixed=True)


_SIZE_P = np.array([0.06, 0.2, 0.2, 0.2, 0.12, 0.08, 0.07, 0.07])  # 1..8 members


def _plan_sets(n: int, rng: np.random.Generator) -> list[_Set]:
    """Programs with several visits each; exactly n exposures in total."""
    used: set[str] = set()
    ids: set[int] = set()
    sets: list[_Set] = []
    remaining = n
    if n >= 7:
        sets.append(_iepp_set(rng, used, ids))
        remaining -= 7
    else:
        used.add(_IEPP[1:4])  # keep 'epp' / 16748 reserved for the real pattern
        ids.add(16748)
    while remaining > 0:
        prog = _program(rng, used, ids)
        config_bias = rng.uniform(0.4, 0.9)
        for visit in range(1, int(rng.integers(2, 7)) + 1):
            if remaining == 0:
                break
            # The first generated set is lone so every archive has one, as in ldngz2szj.
            lone = len(sets) <= 1 or rng.random() < 0.15
            size = 1 if lone else int(rng.choice(8, p=_SIZE_P)) + 1
            size = min(size, remaining)
            config = "WFC3/UVIS" if rng.random() < config_bias else "WFC3/IR"
            members = [_Exposure(o) for o in _obs_codes(rng, size)]
            sets.append(_Set(prog, f"{visit:02d}", config, lone, members))
            remaining -= size
    return sets


def _assign_modes(sets: list[_Set], rng: np.random.Generator) -> None:
    """Failure labels at fixed rates; acquisition failures end a visit, as at IEPP01010."""
    free = [(s, e) for s in sets if not s.fixed for e in s.members]
    quotas = {m: round(r * len(free)) for m, r in _MODE_RATES.items()}
    if len(free) >= 10:  # large enough to show every failure mode at least once
        quotas = {m: max(1, q) for m, q in quotas.items()}
    left = quotas.pop("gs_acq_failure")
    candidates = [s for s in sets if not s.fixed]
    for i in rng.permutation(len(candidates)):
        if left == 0:
            break
        members = candidates[i].members
        k = min(left, int(rng.integers(1, len(members) + 1)))
        for e in members[len(members) - k :]:
            e.mode = "gs_acq_failure"
        left -= k
    pool = [e for _, e in free if e.mode == "nominal"]
    order = iter(rng.permutation(len(pool)))
    for mode, quota in quotas.items():
        for _ in range(quota):
            pool[next(order)].mode = mode


def _window(e: _Exposure, lone: bool, rng: np.random.Generator) -> None:
    """Observation-window length and JIT cadence for the exposure's mode."""
    if e.mode == "gyro_drift":
        # A 1-5 mas/s gyro drift that adds up to tens of mas: short exposures.
        e.window_s = int(np.clip(rng.uniform(20, 90) / rng.uniform(1, 5), 12, 90))
    elif lone and e.mode == "nominal" and rng.random() < 0.25:
        # Acquisition-like exposure: 0.05-s rows, as in ldngz2szj_jit.
        e.cadence_s, e.window_s = 0.05, int(rng.integers(1, 3))
    else:
        e.window_s = int(np.exp(rng.uniform(np.log(100), np.log(1500))))


def _schedule(s: _Set, rng: np.random.Generator) -> None:
    """Observation windows in orbits: a new orbit re-acquires the guide stars."""
    prog = s.program
    if s.fixed:
        t0 = (datetime(2022, 3, 1) - _EPOCH).total_seconds() + rng.uniform(0, 40 * 86400)
    else:
        t0 = prog.start_s + rng.uniform(0, 400 * 86400)
    orbit = int(min(t0, _SPAN_S - 2 * 86400))
    vis_end = orbit + rng.uniform(2900, 3300)
    t = orbit + rng.uniform(200, 420)
    acq: int | None = int(t)
    t += rng.uniform(60, 500)
    for i, e in enumerate(s.members):
        _window(e, s.lone, rng)
        failed_now = e.mode == "gs_acq_failure" and (i == 0 or s.members[i - 1].mode != e.mode)
        if i > 0 and (t + e.window_s > vis_end or failed_now):
            orbit += int(_ORBIT_S * math.ceil((t - orbit) / _ORBIT_S))
            vis_end = orbit + rng.uniform(2900, 3300)
            t = orbit + rng.uniform(200, 420)
            acq = int(t)
            t += rng.uniform(60, 300)
        e.orbit_start_s = orbit
        e.gsacq_s = None if e.mode == "gs_acq_failure" else acq
        e.start_s = int(t)
        t = e.start_s + e.window_s + rng.uniform(40, 240)
    s.roll = float(rng.uniform(0, 360))
    s.dither = [(float(x), float(y)) for x, y in rng.normal(0, 0.5, (len(s.members), 2))]


