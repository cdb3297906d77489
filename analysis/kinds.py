"""What kind of exposure each one is, and what guiding was commanded and obtained, from headers.

Kinds decide which rules judge an exposure (exemptions) and which verdicts it can get: internal
exposures are not guided, acquisitions slew by design, scans and moving targets move on purpose.
Guiding modes are ranked so that "less than commanded" has a meaning.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.config import RuleSet

__all__ = [
    "GUIDING_RANK",
    "TEXT_COLUMNS",
    "actual_mode",
    "commanded_mode",
    "detector",
    "exposure_kinds",
    "fgslock_mode",
    "instrument",
    "mode_rank",
    "text",
    "with_normalized_text",
]

# FINE LOCK: two guide stars; FINE LOCK/GYRO: one guide star, roll on gyros; GYRO: no guide star.
GUIDING_RANK = {"FINE LOCK": 2, "FINE LOCK/GYRO": 1, "GYRO": 0}
# The science header's FGSLOCK names the same modes in other words; COARSE (pre-1995) and
# UNKNOWN say nothing usable.
_FGSLOCK_MODE = {
    "FINE": "FINE LOCK",
    "FINE/GYRO": "FINE LOCK/GYRO",
    "GYROS": "GYRO",
    "GYRO": "GYRO",
}


# Text columns the rules compare: stripped and upper-cased once, when the frame is loaded.
TEXT_COLUMNS = (
    "guidecmd", "guideact", "fgslock", "imagetyp", "obsmode", "exptype", "scan_typ", "config",
    "detector", "instrument", "filter", "targname", "asn_targname", "expflag",
)  # fmt: skip


def normalized_text(values: pd.Series) -> pd.Series:
    """Text stripped and upper-cased; blank or missing as None."""
    values = values.astype("string").str.strip().str.upper()
    values = values.where(values.notna() & (values != ""))
    return values.astype(object).where(values.notna(), None)


def with_normalized_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its TEXT_COLUMNS normalized (see :func:`normalized_text`)."""
    present = [column for column in TEXT_COLUMNS if column in frame]
    return frame.assign(**{column: normalized_text(frame[column]) for column in present})


def text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A text column of a normalized frame (see :func:`with_normalized_text`); None where the
    frame lacks it."""
    if column not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame[column]


def _flag(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return frame[column].map(lambda v: v is True or v == 1).astype(bool)


def commanded_mode(frame: pd.DataFrame) -> pd.Series:
    """GUIDECMD of the exposure's association (None without a JIF)."""
    return text(frame, "guidecmd")


def fgslock_mode(frame: pd.DataFrame) -> pd.Series:
    """The science header's FGSLOCK as a GUIDECMD/GUIDEACT mode name (None if not one)."""
    return text(frame, "fgslock").map(
        lambda v: _FGSLOCK_MODE.get(v) if isinstance(v, str) else None
    )


def actual_mode(frame: pd.DataFrame) -> pd.Series:
    """GUIDEACT, else the mode FGSLOCK names."""
    return text(frame, "guideact").fillna(fgslock_mode(frame))


def mode_rank(modes: pd.Series) -> pd.Series:
    """FINE LOCK 2, FINE LOCK/GYRO 1, GYRO 0; NaN for anything else."""
    return modes.map(
        lambda v: GUIDING_RANK.get(v, np.nan) if isinstance(v, str) else np.nan
    ).astype(float)


def instrument(frame: pd.DataFrame) -> pd.Series:
    """INSTRUME of the science file, else the instrument CONFIG names (COS of 'COS/FUV')."""
    from_config = text(frame, "config").map(
        lambda v: v.split("/")[0] if isinstance(v, str) else None
    )
    return text(frame, "instrument").fillna(from_config)


def detector(frame: pd.DataFrame) -> pd.Series:
    """DETECTOR of the science file, else the detector CONFIG names (UVIS of 'WFC3/UVIS')."""
    from_config = text(frame, "config").map(
        lambda v: v.split("/")[-1] if isinstance(v, str) and "/" in v else None
    )
    return text(frame, "detector").fillna(from_config)


def _internal(frame: pd.DataFrame, rules: RuleSet) -> pd.Series:
    targets = {str(t).strip().upper() for t in rules.kinds.get("internal_targets", [])}
    imagetyp = text(frame, "imagetyp")
    not_external = imagetyp.notna() & (imagetyp != "EXT")
    target = text(frame, "targname").fillna(text(frame, "asn_targname"))
    return not_external | target.isin(targets)


def _acquisition_mode(frame: pd.DataFrame) -> pd.Series:
    names_acquisition = [
        text(frame, column).astype("string").str.startswith("ACQ").fillna(False).astype(bool)
        for column in ("obsmode", "exptype")
    ]
    return names_acquisition[0] | names_acquisition[1]


def exposure_kinds(frame: pd.DataFrame, rules: RuleSet) -> dict[str, pd.Series]:
    """Boolean masks per kind: the exemption kinds (config.EXEMPTION_KINDS) and
    ``possible_acquisition``.

    An acquisition is named by the science header's mode (OBSMODE or EXPTYPE ACQ...) for the
    instruments that have them, never inferred from an exposure's length. An exposure of such
    an instrument whose science header is not in the store may be one: ``possible_acquisition``.
    """
    has_acquisitions = instrument(frame).isin(
        {str(i).upper() for i in rules.kinds.get("acquisition_instruments", [])}
    )
    internal = _internal(frame, rules)
    mode_known = text(frame, "obsmode").notna() | text(frame, "exptype").notna()
    kinds = {
        "internal": internal,
        "acquisition": has_acquisitions & _acquisition_mode(frame) & ~internal,
        "spatial_scan": text(frame, "scan_typ").fillna("N") != "N",
        "moving_target": _flag(frame, "mtflag"),
        "possible_acquisition": has_acquisitions & ~mode_known & ~internal,
    }
    return {name: pd.Series(mask, index=frame.index).astype(bool) for name, mask in kinds.items()}
