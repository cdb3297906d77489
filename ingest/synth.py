"""Seeded synthetic archive of WFC3 jitter file sets (JIF/JIT/ASN) with labelled failures."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from gzip import compress as gzip_compress
from itertools import pairwise
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
    # What a science file of this exposure must agree with (its jitter files say so too):
    window_start_mjd: float  # STARTIME as an MJD (UTC)
    window_s: int  # observation window length, s
    guideact: str  # GUIDEACT: the guiding obtained
    proctime_mjd: float  # PROCTIME of the jitter files as an MJD (UTC)
    ra_targ: float  # the program's target, deg
    dec_targ: float


# --- constants of the format -------------------------------------------------------------

_FILL = 1.6e38  # EDPS fill for "no guiding data"; float32 columns hold 1.59999999e38
_TERM_NA = np.float32(1.6e36)  # TermAng when the terminator angle does not apply
_SENTINEL = -32767.0  # GSSEPRMS / V2_RMS / V3_RMS after a guide-star acquisition failure
_PIX_MAS = 2.0  # jitter image plate scale (XPIXINC/YPIXINC)
_IMG = 64
_SAMPLES_PER_S = 15.0  # jitter-image counts per second, as in the real ldfd01010 images
_ORBIT_S = 5730.0  # HST orbital period
_EPOCH = datetime(2019, 1, 1)
_EPOCH_MJD = 58484.0  # 2019-01-01 as a Modified Julian Date
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
# Keywords, comments, padding widths and section cards are those of the real EDPS files
# (TARGNAME padded to 31 as EDPS has done since 2018; the 2017 ldfd01010 files pad to 30).

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
TARGNAME S31 proposer's target name
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

_Card = tuple[str, str, str]  # keyword, format code, comment


def _parse_cards(spec: str) -> tuple[_Card, ...]:
    """Turn a template (see above) into (keyword, format, comment) triples."""
    cards: list[_Card] = []
    for line in filter(None, spec.splitlines()):
        if line == "-":
            cards.append(("", "-", ""))
        elif line.startswith("/ "):
            cards.append(("", "/", line[2:]))
        else:
            key, fmt, comment = line.split(None, 2)
            cards.append((key, fmt, comment))
    return tuple(cards)


def _column_cards() -> tuple[tuple[_Card, ...], dict[str, str]]:
    cards: list[_Card] = []
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
_JIF_PRIMARY_CARDS = _parse_cards(_PRIMARY_HEAD + _JIF_PRIMARY_BODY)
_JIT_PRIMARY_CARDS = _parse_cards(_PRIMARY_HEAD + _JIT_PRIMARY_BODY)
_JIF_EXT_CARDS = _parse_cards(_JIF_EXT)
_COLUMN_CARDS, _COLUMN_VALUES = _column_cards()
_JIT_EXT_CARDS = _parse_cards(_JIT_EXT_HEAD) + _COLUMN_CARDS
_ASN_PRIMARY_CARDS = _parse_cards(_ASN_PRIMARY)
_ASN_EXT_CARDS = _parse_cards(_ASN_EXT)
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


def _render(cards: tuple[_Card, ...], values: dict[str, Any]) -> list[str]:
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


def _fresh_code(rng: np.random.Generator, used: set[str]) -> str:
    code = _IEPP[1:4]
    while code in used:
        code = "".join(rng.choice(list(_B36), size=3))
    used.add(code)
    return code


def _fresh_proposid(frac: float, ids: set[int]) -> int:
    """PEP ids grow with time, as cycles do: 15500 (2019) to 17999 (2026)."""
    pid = 15500 + int(frac * 2500)
    while pid in ids:
        pid = 15500 + (pid - 15500 + 1) % 2500
    ids.add(pid)
    return pid


def _program(rng: np.random.Generator, code: str, pid: int) -> _Program:
    """A program whose visits start near the date its PEP id implies."""
    frac = (pid - 15500) / 2500.0
    start = min(max(frac * _SPAN_S + rng.normal(0, 0.03 * _SPAN_S), 0.0), 0.85 * _SPAN_S)
    target = f"{rng.choice(_TARGETS)}{int(rng.integers(1, 9999))}"
    dec = float(np.degrees(np.arcsin(rng.uniform(-0.98, 0.98))))
    pi = (str(rng.choice(_SURNAMES)), str(rng.choice(_FIRSTNAMES)))
    return _Program(code, pid, start, pi, target, float(rng.uniform(0, 360)), dec)


def _obs_codes(rng: np.random.Generator, n: int) -> list[str]:
    """Consecutive observation ids of one visit (step 1 or 2 in base 36, like vn, vp, vr)."""
    step = int(rng.integers(1, 3))
    first = int(rng.integers(36 * 10, 36 * 36 - 2 * n - 1))
    return [_B36[(first + step * i) // 36] + _B36[(first + step * i) % 36] for i in range(n)]


def _iepp_set(rng: np.random.Generator) -> _Set:
    """The IEPP01010 pattern: 7 UVIS exposures, guide-star acquisition fails for 4-7."""
    prog = _program(rng, _IEPP[1:4], 16748)
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
    # 'epp' / 16748 belong to the real IEPP01010 pattern, used only when it fits.
    used: set[str] = {_IEPP[1:4]}
    ids: set[int] = {16748}
    sets: list[_Set] = []
    remaining = n
    if n >= 7:
        sets.append(_iepp_set(rng))
        remaining -= 7
    # Golden-ratio steps spread even a few programs evenly over 2019-2026.
    frac = rng.random()
    while remaining > 0:
        frac = (frac + 0.6180339887) % 1.0
        prog = _program(rng, _fresh_code(rng, used), _fresh_proposid(frac, ids))
        config_bias = rng.uniform(0.4, 0.9)
        for visit in range(1, int(rng.integers(2, 7)) + 1):
            if remaining == 0:
                break
            # Every archive gets at least one lone exposure (like ldngz2szj), then 15% of sets.
            lone = not any(x.lone for x in sets) or rng.random() < 0.15
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
        # A 1-5 mas/s gyro drift that adds up to tens of mas needs a short exposure.
        e.window_s = int(np.clip(rng.uniform(30, 150) / rng.uniform(1, 5), 20, 120))
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
    orbit = int(min(t0, _SPAN_S - 6 * 86400))  # files processed by the end of 2026
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


# --- per-set context: guide stars, aperture, orbit geometry, processing time -------------


def _offset_star(ra: float, dec: float, rng: np.random.Generator) -> tuple[float, float]:
    """A guide star 8-14 arcmin from the target, in a random direction (small-angle)."""
    r, pa = rng.uniform(8, 14) / 60.0, rng.uniform(0, 2 * np.pi)
    star_dec = dec + r * math.cos(pa)
    return (ra + r * math.sin(pa) / math.cos(math.radians(star_dec))) % 360.0, star_dec


def _separation_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    d1, d2, dra = math.radians(dec1), math.radians(dec2), math.radians(ra2 - ra1)
    hav = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin(dra / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(hav))) * 3600.0


def _guide_star_id(rng: np.random.Generator) -> str:
    """GSC-2-like id, e.g. 'S6VG000068'."""
    head = "".join(rng.choice(list(_B36.upper()), size=4))
    return f"{head}{int(rng.integers(0, 1000)):06d}"


def _set_context(s: _Set, rng: np.random.Generator) -> dict[str, Any]:
    """Keywords and parameters shared by every exposure of a set."""
    prog = s.program
    dom, rol = (str(f) for f in rng.permutation(["1", "2", "3"])[:2])
    gsd, gsr = _offset_star(prog.ra, prog.dec, rng), _offset_star(prog.ra, prog.dec, rng)
    aperture, v2, v3 = _APERTURES[s.config][int(rng.integers(len(_APERTURES[s.config])))]
    end = max(e.start_s + e.window_s for e in s.members)
    proc = int(end + rng.uniform(0.3, 3.0) * 86400)
    proc_dt = _EPOCH + timedelta(seconds=proc)
    letter = "ab"[int(rng.integers(2))]
    return {
        "GSD_ID": _guide_star_id(rng), "GSD_RA": gsd[0], "GSD_DEC": gsd[1],
        "GSD_MAG": rng.uniform(10.0, 14.5), "GSD_FGS": dom,
        "GSR_ID": _guide_star_id(rng), "GSR_RA": gsr[0], "GSR_DEC": gsr[1],
        "GSR_MAG": rng.uniform(10.0, 14.5), "GSR_FGS": rol,
        "PREDGSEP": _separation_arcsec(*gsd, *gsr),
        "APERTURE": aperture, "APER_V2": v2, "APER_V3": v3,
        "PROCTIME": _hst_time(proc), "proc_s": proc, "DATE": proc_dt.strftime("%Y-%m-%d"),
        "OPUS_VER": f"HSTDP {proc_dt.year}_{(proc_dt.month - 1) // 3 + 1}{letter}",
        "fgs_dom": _fgs_position(dom, rng), "fgs_roll": _fgs_position(rol, rng),
        "geo": _geometry_params(rng), "gssep_bias": rng.uniform(0.05, 0.3),
    }  # fmt: skip


def _fgs_position(fgs: str, rng: np.random.Generator) -> tuple[float, float]:
    """Guide-star position in the V2/V3 frame (arcsec), somewhere in that FGS's pickle."""
    v2, v3 = _FGS_V[fgs]
    return v2 + rng.uniform(-60, 60), v3 + rng.uniform(-60, 60)


def _geometry_params(rng: np.random.Generator) -> dict[str, float]:
    params = {
        "phase": rng.uniform(0, 2 * np.pi), "zen0": rng.uniform(40, 60),
        "zen_amp": rng.uniform(15, 30), "zen_phase": rng.uniform(0, 2 * np.pi),
        "lon0": rng.uniform(0, 360), "limb_phase": rng.uniform(0, 2 * np.pi),
    }  # fmt: skip
    for i in range(3):
        params[f"mag{i}"] = rng.uniform(-0.15, 0.15)
        params[f"magp{i}"] = rng.uniform(0, 2 * np.pi)
    return params


# --- per-exposure simulation -------------------------------------------------------------


@dataclass
class _Simulated:
    table: NDArray[Any]  # JIT rows, big-endian FITS record layout
    image: NDArray[np.int32]  # JIF 64x64 jitter histogram
    header: dict[str, Any]  # extension keywords shared by JIF and JIT
    problems: dict[str, Any]  # cards after the PROBLEM FLAGS title, only when present
    n_fill: int


def _seconds(e: _Exposure) -> NDArray[np.float32]:
    """Row times from the window start: 2.95, 5.95, ... and a short last row at W - 0.05 s."""
    if e.cadence_s < 1:
        return (np.arange(round(e.window_s / e.cadence_s) + 1) * e.cadence_s).astype(np.float32)
    last = e.window_s - 0.05
    secs = 2.95 + 3.0 * np.arange(int((last - 2.95) // 3.0) + 1)
    if last - secs[-1] > 1e-6:
        secs = np.append(secs, last)
    return secs.astype(np.float32)


def _wander(t: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    """Unit-variance slow wander: three random sinusoids plus white noise."""
    periods = rng.uniform(60, 900, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    wave = np.sin(2 * np.pi * t[:, None] / periods + phases).sum(axis=1) / math.sqrt(1.5)
    return 0.8 * wave + 0.6 * rng.standard_normal(t.size)


def _jitter(e: _Exposure, t: NDArray[np.float64], rng: np.random.Generator) -> dict[str, Any]:
    """Per-row SI_V2_* / SI_V3_* values, in mas."""
    n = t.size
    high = e.mode == "high_jitter"
    si: dict[str, Any] = {}
    for axis in ("V2", "V3"):
        amp = rng.uniform(4, 12) if high else rng.uniform(0.5, 2.0)
        base = rng.uniform(16, 30) if high else rng.uniform(2.0, 3.0)
        si[f"{axis}_AVG"] = rng.normal(0, 1.5) + amp * _wander(t, rng)
        rms = base * rng.lognormal(0, 0.15, n)
        if e.cadence_s < 1:
            # Rows of single 40-Hz samples: no spread within a row, ~2 mas between rows
            # (ldngz2szj_jit); the slow wander does not show within a second.
            si[f"{axis}_AVG"] = rng.normal(0, 1.5) + rng.normal(0, rng.uniform(1.0, 2.5), n)
            rms = np.zeros(n)
        si[f"{axis}_RMS"] = rms
        si[f"{axis}_P2P"] = rms * rng.uniform(3.5, 4.6, n)
    if e.mode == "gyro_drift":
        rate, angle = rng.uniform(1, 5), rng.uniform(0, 2 * np.pi)  # mas/s, drift direction
        si["V2_AVG"] = si["V2_AVG"] + rate * math.sin(angle) * (t - t.mean())
        si["V3_AVG"] = si["V3_AVG"] + rate * math.cos(angle) * (t - t.mean())
    return si


def _bad_rows(e: _Exposure, n: int, rng: np.random.Generator) -> tuple[Any, Any, list[int]]:
    """(rows holding fill, rows with TakeData=0, lengths of the loss-of-lock spans)."""
    fill = np.zeros(n, bool)
    down = np.zeros(n, bool)
    spans: list[int] = []
    if e.mode == "gs_acq_failure":
        fill[:] = True
    elif e.mode == "loss_of_lock":
        k = 2 if rng.random() < 0.2 and n >= 30 else 1
        edges = np.linspace(int(0.1 * n), int(0.9 * n), k + 1).astype(int)
        for a, b in pairwise(edges):
            length = max(2, int(n * rng.uniform(0.08, 0.25) / k))
            start = int(rng.integers(a, max(a + 1, b - length)))
            fill[start : start + length] = True
            spans.append(length)
    elif e.mode == "tdf_down":
        # The guide star is held, but the flag came up late or dropped early.
        length = max(2, int(n * rng.uniform(0.12, 0.4)))
        start = 0 if rng.random() < 0.5 else n - length
        down[start : start + length] = True
    return fill, down | fill, spans


def _geometry(t_abs: NDArray[np.float64], geo: dict[str, float]) -> dict[str, Any]:
    """Orbit-driven columns: limb and zenith angles, sub-satellite point, magnetic field."""
    phase = 2 * np.pi * t_abs / _ORBIT_S + geo["phase"]
    zenith = geo["zen0"] - geo["zen_amp"] * np.cos(phase - geo["zen_phase"])
    cols = {
        "LOS_Zenith": zenith,
        "LimbAng": 112.7 - zenith,  # the limb sits ~112.7 deg from zenith at 540 km
        "Latitude": 28.47 * np.sin(phase),
        "Longitude": (geo["lon0"] + 360.0 * t_abs * (1 / _ORBIT_S - 1 / 86164.1)) % 360.0,
        "BrightLimb": (np.cos(phase - geo["limb_phase"]) > 0).astype(np.int16),
    }
    for i, axis in enumerate(("V1", "V2", "V3")):
        mag = geo[f"mag{i}"] + 0.2 * np.sin(phase + geo[f"magp{i}"])
        cols[f"Mag_{axis}"] = np.round(mag / 0.0048) * 0.0048  # magnetometer quantum
    return cols


def _aperture_pointing(s: _Set, idx: int) -> tuple[float, float]:
    """Target position plus the member's dither offset (arcsec)."""
    dx, dy = s.dither[idx]
    dec = s.program.dec + dy / 3600.0
    return (s.program.ra + dx / 3600.0 / math.cos(math.radians(dec))) % 360.0, dec


def _positions(table: NDArray[Any], si: dict[str, Any], s: _Set, idx: int,
               ctx: dict[str, Any], rng: np.random.Generator) -> None:  # fmt: skip
    """FGS positions, SI jitter (arcsec) and aperture RA/DEC/Roll that follow the jitter."""
    n = table.size
    for axis in ("V2", "V3"):
        for stat in ("AVG", "RMS", "P2P"):
            table[f"SI_{axis}_{stat}"] = si[f"{axis}_{stat}"] / 1000.0
    for which in ("dom", "roll"):
        v2, v3 = ctx[f"fgs_{which}"]
        table[f"V2_{which}"] = v2 + (si["V2_AVG"] + rng.normal(0, 0.5, n)) / 1000.0
        table[f"V3_{which}"] = v3 + (si["V3_AVG"] + rng.normal(0, 0.5, n)) / 1000.0
    ra0, dec0 = _aperture_pointing(s, idx)
    roll = math.radians(s.roll)
    east = (si["V3_AVG"] * math.sin(roll) - si["V2_AVG"] * math.cos(roll)) / 3.6e6
    north = (si["V3_AVG"] * math.cos(roll) + si["V2_AVG"] * math.sin(roll)) / 3.6e6
    table["RA"] = ra0 + east / math.cos(math.radians(dec0))
    table["DEC"] = dec0 + north
    table["Roll"] = s.roll + rng.normal(0, 3e-5, n)


def _jit_table(s: _Set, idx: int, si: dict[str, Any], fill: Any, down: Any,
               ctx: dict[str, Any], rng: np.random.Generator) -> NDArray[Any]:  # fmt: skip
    e = s.members[idx]
    secs = _seconds(e)
    table = np.zeros(secs.size, _JIT_DTYPE)
    table["Seconds"] = secs
    _positions(table, si, s, idx, ctx, rng)
    for name, values in _geometry(e.start_s + secs.astype(np.float64), ctx["geo"]).items():
        table[name] = values
    # The terminator angle is only defined early on; afterwards EDPS writes 1.6e36.
    valid_term = int(secs.size * rng.uniform(0, 0.5))
    table["TermAng"] = _TERM_NA
    table["TermAng"][:valid_term] = table["LimbAng"][:valid_term] + 0.01
    table["TakeData"] = (~down).astype(np.int16)
    table["Recenter"][np.flatnonzero(np.diff(fill.astype(np.int8)) == -1) + 1] = 1
    for name in _FILLED_COLUMNS:
        table[name][fill] = _FILL  # the float32 columns round it to 1.59999999e38
    return table


def _jitter_image(si: dict[str, Any], good: Any, cadence: float,
                  rng: np.random.Generator) -> NDArray[np.int32]:  # fmt: skip
    """64x64 histogram of the jitter excursions about the mean, 2 mas per pixel."""
    image = np.zeros(_IMG * _IMG, np.int64)
    if not good.any():
        return image.reshape(_IMG, _IMG).astype(np.int32)
    per_row = max(1, round(_SAMPLES_PER_S * cadence))
    total = int(good.sum()) * per_row
    v = []
    for axis in ("V2", "V3"):
        avg, rms = si[f"{axis}_AVG"][good], si[f"{axis}_RMS"][good]
        v.append(np.repeat(avg - avg.mean(), per_row)
                 + np.repeat(rms, per_row) * rng.standard_normal(total))  # fmt: skip
    # Image +x lies 135 deg and +y 45 deg from +V3 towards +V2 (BETA_1, BETA_2).
    h = math.sqrt(0.5) / _PIX_MAS
    x = np.floor(31.5 + h * (v[0] - v[1])).astype(np.int64)
    y = np.floor(31.5 + h * (v[0] + v[1])).astype(np.int64)
    inside = (x >= 0) & (x < _IMG) & (y >= 0) & (y < _IMG)
    image += np.bincount(y[inside] * _IMG + x[inside], minlength=_IMG * _IMG)
    return image.reshape(_IMG, _IMG).astype(np.int32)


def _guide_act(mode: str, rng: np.random.Generator) -> str:
    if mode == "gs_acq_failure":
        return "GYRO"
    if mode == "gyro_drift":
        return "FINE LOCK/GYRO" if rng.random() < 0.6 else "GYRO"
    return "FINE LOCK"


def _jitter_summary(si: dict[str, Any], ok: Any, table: NDArray[Any], ctx: dict[str, Any],
                    rng: np.random.Generator) -> dict[str, Any]:  # fmt: skip
    """V2/V3 RMS and P2P (mas), guide-star separation and mean pointing of the guided rows."""
    values: dict[str, Any] = {}
    for axis in ("V2", "V3"):
        avg, rms, p2p = (si[f"{axis}_{k}"][ok] for k in ("AVG", "RMS", "P2P"))
        # EDPS works from the 40-Hz samples, so its value sits ~10% off this 3-s estimate.
        estimate = math.sqrt(avg.var() + np.mean(rms**2))
        values[f"{axis}_RMS"] = round(estimate * rng.uniform(0.95, 1.12), 1)
        spread = (avg + p2p / 2).max() - (avg - p2p / 2).min()
        values[f"{axis}_P2P"] = round(float(spread) * rng.uniform(1.0, 1.3), 1)
    high = max(values["V2_RMS"], values["V3_RMS"]) > 10
    values["GSSEPRMS"] = round(rng.uniform(2.0, 6.0) if high else rng.uniform(0.5, 1.2), 1)
    values["ACTGSSEP"] = ctx["PREDGSEP"] + ctx["gssep_bias"] + rng.normal(0, 0.002)
    values["RA_AVG"] = float(table["RA"][ok].mean())
    values["DEC_AVG"] = float(table["DEC"][ok].mean())
    values["ROLL_AVG"] = float(table["Roll"][ok].mean())
    return values


def _failed_summary(s: _Set, idx: int) -> dict[str, Any]:
    """No guide star, no jitter: EDPS writes -32767; pointing falls back to the plan."""
    ra0, dec0 = _aperture_pointing(s, idx)
    return {
        "GSSEPRMS": _SENTINEL, "V2_RMS": _SENTINEL, "V3_RMS": _SENTINEL,
        "V2_P2P": _SENTINEL, "V3_P2P": _SENTINEL, "ACTGSSEP": 0.0,
        "RA_AVG": ra0, "DEC_AVG": dec0, "ROLL_AVG": s.roll,
    }  # fmt: skip


def _cd_matrix(roll_deg: float) -> dict[str, float]:
    """2 mas/px image rotated by 315 deg - roll, the orientation of the real jitter images."""
    theta = math.radians(315.0 - roll_deg)
    scale = _PIX_MAS / 3.6e6
    c, s = scale * math.cos(theta), scale * math.sin(theta)
    return {"CD1_1": c, "CD1_2": -s, "CD2_1": s, "CD2_2": c}


def _ext_values(s: _Set, idx: int, table: NDArray[Any], spans: list[int],
                rng: np.random.Generator) -> dict[str, Any]:  # fmt: skip
    """Extension keywords that do not depend on the jitter statistics."""
    e = s.members[idx]
    year_s = 365.25 * 86400
    return {
        "EXTVER": idx + 1,
        "ROOTNAME": s.asn_id.ljust(34) if s.lone else s.asn_id,
        "EXPNAME": f"i{s.program.code}{s.visit}{e.obs}j",
        "ASN_MTYP": "NONE" if s.lone else "EXP-DTH",
        "OBSET_ID": s.visit.upper(),
        "OBSERVTN": e.obs.upper(),
        "STARTIME": _hst_time(e.start_s),
        "ENDTIME": _hst_time(e.start_s + e.window_s),
        "GSACQ": "" if e.gsacq_s is None else _hst_time(e.gsacq_s),
        "SHADOEXT": _hst_time(e.orbit_start_s - 2400 - e.orbit_start_s % 600),
        "SHADOENT": _hst_time(e.orbit_start_s + 1200 + e.orbit_start_s % 900),
        # HST's orbit decays by a few km a year: a slow trend for the monitor to show.
        "ALTITUDE": 541.0 - 4.5 * e.start_s / year_s + rng.uniform(-6, 6),
        "LOS_SUN": rng.uniform(50, 178),
        "LOS_MOON": rng.uniform(10, 170),
        "LOS_SCV": rng.uniform(0, 180),
        "LOS_LIMB": float(table["LimbAng"].mean()),
        "NLOSSES": len(spans),
        "LOCKLOSS": 3.0 * sum(spans),
        "NRECENT": len(spans),  # the FGS recentres after each re-acquisition
        "RECENTR": float(sum(rng.uniform(2, 6) for _ in spans)),
        "GUIDEACT": _guide_act(e.mode, rng),
    }


def _simulate(s: _Set, idx: int, ctx: dict[str, Any], rng: np.random.Generator) -> _Simulated:
    """JIT rows, JIF image and extension keywords of one exposure."""
    e = s.members[idx]
    t = _seconds(e).astype(np.float64)
    si = _jitter(e, t, rng)
    fill, down, spans = _bad_rows(e, t.size, rng)
    table = _jit_table(s, idx, si, fill, down, ctx, rng)
    header = _ext_values(s, idx, table, spans, rng)
    ok = ~fill
    header |= _jitter_summary(si, ok, table, ctx, rng) if ok.any() else _failed_summary(s, idx)
    header |= {"CRVAL1": header["RA_AVG"] + rng.normal(0, 2e-7),
               "CRVAL2": header["DEC_AVG"] + rng.normal(0, 2e-7)}  # fmt: skip
    header |= _cd_matrix(header["ROLL_AVG"])
    image = _jitter_image(si, ~down, e.cadence_s, rng)
    header |= {"DATAMIN": 0.0, "DATAMAX": float(image.max())}
    problems = {"gs_acq_failure": {"GSFAIL": "NOLOCK"}, "tdf_down": {"TDF-DOWN": True}}
    return _Simulated(table, image, header, problems.get(e.mode, {}), int(fill.sum()))


# --- per-set headers and files -----------------------------------------------------------


def _summary(sims: list[_Simulated]) -> dict[str, Any]:
    """Primary keywords that summarise the extensions, as EDPS does."""
    hdrs = [sim.header for sim in sims]
    guided = [h for h in hdrs if h["V2_RMS"] != _SENTINEL] or hdrs
    seps = [h["ACTGSSEP"] for h in hdrs]

    def worst(key: str) -> float:
        return max(h[key] for h in guided)

    def quadratic_mean(key: str) -> float:
        vals = [h[key] for h in guided]
        return _SENTINEL if _SENTINEL in vals else math.sqrt(sum(v * v for v in vals) / len(vals))

    return {
        "MGSSPRMS": worst("GSSEPRMS"), "MV2_P2P": worst("V2_P2P"), "MV3_P2P": worst("V3_P2P"),
        "TV2_RMS": quadratic_mean("V2_RMS"), "TV3_RMS": quadratic_mean("V3_RMS"),
        "TRA_AVG": round(sum(h["RA_AVG"] for h in guided) / len(guided), 9),
        "TDEC_AVG": round(sum(h["DEC_AVG"] for h in guided) / len(guided), 9),
        "TROLLAVG": round(sum(h["ROLL_AVG"] for h in guided) / len(guided), 9),
        "TNLOSSES": sum(h["NLOSSES"] for h in hdrs),
        "TLOCKLOS": sum(h["LOCKLOSS"] for h in hdrs),
        "TNRECENT": sum(h["NRECENT"] for h in hdrs),
        "TRECENTR": sum(h["RECENTR"] for h in hdrs),
        # T_GDACT: every exposure guided in the commanded mode (GUIDEACT == GUIDECMD).
        "T_GDACT": all(h["GUIDEACT"] == _PRIMARY_CONST["GUIDECMD"] for h in hdrs),
        "T_ACTGSP": max(seps) - min(seps) < 0.01,
        "T_GSFAIL": any("GSFAIL" in sim.problems for sim in sims),
        "T_TDFDWN": any("TDF-DOWN" in sim.problems for sim in sims),
    }  # fmt: skip


def _primary_values(s: _Set, ctx: dict[str, Any], sims: list[_Simulated]) -> dict[str, Any]:
    """Keywords of the JIF primary; the JIT primary uses the leading subset."""
    name = s.asn_id
    members = s.members
    values = _PRIMARY_CONST | {
        "NEXTEND": len(members), "DATE": ctx["DATE"], "OPUS_VER": ctx["OPUS_VER"],
        "TARGNAME": s.program.targname, "CONFIG": s.config, "PROPOSID": s.program.proposid,
        "PROGRMID": s.program.code.upper(),
        "TSTRTIME": _hst_time(members[0].start_s),
        "TENDTIME": _hst_time(members[-1].start_s + members[-1].window_s),
    }  # fmt: skip
    values |= {k: ctx[k] for k in ("GSD_ID", "GSD_RA", "GSD_DEC", "GSD_MAG", "GSD_FGS",
                                   "GSR_ID", "GSR_RA", "GSR_DEC", "GSR_MAG", "GSR_FGS",
                                   "PREDGSEP")}  # fmt: skip
    values |= _summary(sims)
    if s.lone:  # padding as in the real lone-exposure file ldngz2szj_jit
        values |= {"ROOTNAME": name.ljust(12), "ASN_ID": "NONE".ljust(10),
                   "ASN_TAB": "NONE".ljust(23), "ASN_STAT": "NONE", "ASN_PROD": False}  # fmt: skip
    else:
        values |= {"ROOTNAME": name, "ASN_ID": name, "ASN_TAB": f"{name}_asn.fits",
                   "ASN_STAT": "COMPLETE", "ASN_PROD": True}  # fmt: skip
    return values


def _filename(s: _Set, suffix: str) -> str:
    """Primary FILENAME: EDPS writes '_jif.fits' into association jit files too."""
    if s.lone:
        return f"{s.asn_id}_{suffix}.fits".ljust(39)
    return f"{s.asn_id}_jif.fits"


def _jif_bytes(s: _Set, primary: dict[str, Any], sims: list[_Simulated]) -> bytes:
    head = primary | {"FILETYPE": "JIM", "FILENAME": _filename(s, "jif")}
    parts = [_hdu_bytes(_render(_JIF_PRIMARY_CARDS, head))]
    for sim in sims:
        cards = _render(_JIF_EXT_CARDS, _JIF_EXT_CONST | sim.header)
        cards += _render(tuple(_PROBLEM[k] for k in sim.problems), sim.problems)
        parts.append(_hdu_bytes(cards, sim.image.astype(">i4").tobytes()))
    return b"".join(parts)


def _jit_bytes(s: _Set, primary: dict[str, Any], sims: list[_Simulated],
               ctx: dict[str, Any]) -> bytes:  # fmt: skip
    head = primary | {"FILETYPE": "JTB", "FILENAME": _filename(s, "jit")}
    parts = [_hdu_bytes(_render(_JIT_PRIMARY_CARDS, head))]
    for sim in sims:
        values = _JIT_EXT_CONST | sim.header | {"NAXIS2": sim.table.size,
                                                "PROCTIME": ctx["PROCTIME"]}  # fmt: skip
        parts.append(_hdu_bytes(_render(_JIT_EXT_CARDS, values), sim.table.tobytes()))
    return b"".join(parts)


def _asn_bytes(s: _Set, ctx: dict[str, Any]) -> bytes:
    """The association table: members as EXP-DTH, then the PROD-DTH product row."""
    name = s.asn_id
    prog = s.program
    primary = _ASN_PRIMARY_CONST | {
        "DATE": ctx["DATE"], "FILENAME": f"{name}_asn.fits".ljust(39),
        "ROOTNAME": name.ljust(34), "TARGNAME": prog.targname, "RA_TARG": prog.ra,
        "DEC_TARG": prog.dec, "PROPOSID": prog.proposid,
        "LINENUM": f"{s.visit}.{int(s.members[0].obs, 36) % 1000:03d}".ljust(15),
        "PR_INV_L": prog.pi[0], "PR_INV_F": prog.pi[1],
        "DETECTOR": s.config.split("/")[1], "ASN_ID": name.ljust(10),
        "ASN_TAB": f"{name}_asn.fits".ljust(23),
    }  # fmt: skip
    rows = np.zeros(len(s.members) + 1, _ASN_DTYPE)
    members = [f"i{prog.code}{s.visit}{e.obs}q" for e in s.members]
    rows["MEMNAME"] = [m.upper() for m in [*members, name]]
    rows["MEMTYPE"] = ["EXP-DTH"] * len(s.members) + ["PROD-DTH"]
    rows["MEMPRSNT"] = b"T"
    ext = _ASN_EXT_CONST | {"NAXIS2": rows.size, "ROOTNAME": name.ljust(34),
                            "EXPNAME": name.ljust(25)}  # fmt: skip
    return _hdu_bytes(_render(_ASN_PRIMARY_CARDS, primary)) + _hdu_bytes(
        _render(_ASN_EXT_CARDS, ext), rows.tobytes()
    )


def _write_set(s: _Set, out_dir: Path, compress: bool,
               rng: np.random.Generator) -> list[SyntheticExposure]:  # fmt: skip
    """Simulate one visit's exposures, write its files and return their truth."""
    ctx = _set_context(s, rng)
    sims = [_simulate(s, i, ctx, rng) for i in range(len(s.members))]
    for sim in sims:
        sim.header["PROCTIME"] = ctx["PROCTIME"]
        sim.header |= {k: ctx[k] for k in ("APERTURE", "APER_V2", "APER_V3")}
    primary = _primary_values(s, ctx, sims)
    folder = out_dir / str(s.program.proposid) / s.asn_id
    folder.mkdir(parents=True, exist_ok=True)
    _write_file(folder / f"{s.asn_id}_jif.fits", _jif_bytes(s, primary, sims), compress)
    _write_file(folder / f"{s.asn_id}_jit.fits", _jit_bytes(s, primary, sims, ctx), compress)
    if not s.lone:
        _write_file(folder / f"{s.asn_id}_asn.fits", _asn_bytes(s, ctx), compress)
    return [_truth(s, i, sim, ctx) for i, sim in enumerate(sims)]


def _mjd(seconds: float) -> float:
    """Seconds after 2019-01-01 as an MJD, to the second."""
    return round(_EPOCH_MJD + seconds / 86400.0, 8)


def _truth(s: _Set, idx: int, sim: _Simulated, ctx: dict[str, Any]) -> SyntheticExposure:
    member = s.members[idx]
    exposure_id = f"i{s.program.code}{s.visit}{member.obs}"
    return SyntheticExposure(
        exposure_id=exposure_id,
        asn_id=s.asn_id,
        jitter_name=exposure_id + "j",
        rootname=None if s.lone else exposure_id + "q",
        proposid=s.program.proposid,
        config=s.config,
        mode=member.mode,
        member_index=idx + 1,
        n_samples=int(sim.table.size),
        n_fill=sim.n_fill,
        window_start_mjd=_mjd(member.start_s),
        window_s=member.window_s,
        guideact=sim.header["GUIDEACT"],
        proctime_mjd=_mjd(ctx["proc_s"]),
        ra_targ=s.program.ra,
        dec_targ=s.program.dec,
    )


# --- public API --------------------------------------------------------------------------

_TRUTH_FIELDS = tuple(f.name for f in fields(SyntheticExposure))
_INT_FIELDS = ("proposid", "member_index", "n_samples", "n_fill", "window_s")
_FLOAT_FIELDS = ("window_start_mjd", "proctime_mjd", "ra_targ", "dec_targ")


def write_archive(
    out_dir: Path, n_exposures: int = 200, seed: int = 0, *, gzip: bool = True
) -> list[SyntheticExposure]:
    """Write exactly n_exposures exposures as JIF/JIT(/ASN) sets and their truth table.

    Files go to ``out_dir/<proposid>/<asn_id>/<asn_id>_{jif,jit,asn}.fits[.gz]`` (a lone
    exposure has no ``_asn`` file and its set is named by its 9-character jitter name), and
    ``out_dir/truth.csv`` holds one row per exposure with the `SyntheticExposure` fields.
    The same seed gives byte-identical files: nothing depends on the clock, and gzip members
    carry mtime 0 and no file name.
    """
    if n_exposures < 0:
        msg = f"n_exposures must be >= 0, got {n_exposures}"
        raise ValueError(msg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sets = _plan_sets(n_exposures, rng)
    _assign_modes(sets, rng)
    for s in sets:
        _schedule(s, rng)
    truth = [t for s in sets for t in _write_set(s, out_dir, gzip, rng)]
    with (out_dir / "truth.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(_TRUTH_FIELDS)
        for t in truth:
            row = (getattr(t, key) for key in _TRUTH_FIELDS)
            writer.writerow(["" if value is None else value for value in row])
    return truth


def read_truth(out_dir: Path) -> list[SyntheticExposure]:
    """Read ``out_dir/truth.csv`` back into `SyntheticExposure` records."""
    with (Path(out_dir) / "truth.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    result = []
    for row in rows:
        values: dict[str, Any] = dict(row)
        for key in _INT_FIELDS:
            values[key] = int(values[key])
        for key in _FLOAT_FIELDS:
            values[key] = float(values[key])
        values["rootname"] = values["rootname"] or None
        result.append(SyntheticExposure(**values))
    return result
