"""The one map of JIF keywords: FITS keyword, store column, type, unit and the row that holds it.

The JIF parser reads exactly these keywords, the writer clears exactly these columns when a JIF
changes (they are the columns the JIF owns), and the report and the dashboard draw their keyword
tables from here: a keyword added to this map reaches every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "JIF_KEYWORDS",
    "JifKeyword",
    "checklist_columns",
    "checklist_keywords",
    "jif_columns",
    "problem_flags",
]

ValueType = Literal["str", "int", "float", "bool", "time"]
_UNIT_LABELS = {"arcsec": "″", "mas": "mas", "s": "s", "deg": "deg"}


@dataclass(frozen=True)
class JifKeyword:
    """One keyword of a `_jif.fits` file and where its value lives in the store.

    ``table`` is ``association`` for the primary header (one row per jitter file set) and
    ``exposure`` for the per-exposure extensions. ``ok`` is the value of a problem flag when all
    is well (None for keywords that are not problem flags). ``absent`` is the value a keyword
    stands for when the file omits it: EDPS writes TDF-DOWN only when the flag was down.
    ``checklist`` marks the per-exposure keywords of the observer's checklist table.
    """

    keyword: str
    column: str
    type: ValueType
    unit: str
    table: Literal["association", "exposure"]
    meaning: str
    ok: Any = None
    absent: Any = None
    checklist: bool = False

    @property
    def label(self) -> str:
        """The keyword with its unit, as a table heading: 'V2_RMS mas', 'ACTGSSEP ″'."""
        unit = _UNIT_LABELS.get(self.unit, "")
        return f"{self.keyword} {unit}".strip()


def _association(keyword: str, column: str, kind: ValueType, unit: str, meaning: str,
                 ok: Any = None) -> JifKeyword:  # fmt: skip
    return JifKeyword(keyword, column, kind, unit, "association", meaning, ok=ok)


def _exposure(keyword: str, column: str, kind: ValueType, unit: str, meaning: str, *,
              absent: Any = None, checklist: bool = False) -> JifKeyword:  # fmt: skip
    return JifKeyword(keyword, column, kind, unit, "exposure", meaning, None, absent, checklist)


JIF_KEYWORDS: tuple[JifKeyword, ...] = (
    # Primary header: the association's identity, pointing control and jitter summary.
    _association("ASN_STAT", "asn_stat", "str", "", "COMPLETE or INCOMPLETE"),
    _association("OPUS_VER", "opus_ver", "str", "", "processing system version"),
    _association("TSTRTIME", "window_start", "time", "", "predicted association window start"),
    _association("TENDTIME", "window_end", "time", "", "predicted association window end"),
    _association("GUIDECMD", "guidecmd", "str", "", "commanded guiding mode"),
    _association("GSD_ID", "gsd_id", "str", "", "dominant guide star id"),
    _association("GSR_ID", "gsr_id", "str", "", "roll guide star id"),
    _association("GS_PRIM", "gs_prim", "str", "", "primary guide star (DOMINANT or ROLL)"),
    _association("PREDGSEP", "predgsep_arcsec", "float", "arcsec", "predicted GS separation"),
    _association("MGSSPRMS", "mgssprms_mas", "float", "mas", "max GS separation RMS"),
    _association("TNLOSSES", "tnlosses", "int", "", "loss-of-lock events"),
    _association("TLOCKLOS", "tlocklos_s", "float", "s", "total loss-of-lock time"),
    _association("TNRECENT", "tnrecent", "int", "", "recentering events"),
    _association("TRECENTR", "trecentr_s", "float", "s", "total recentering time"),
    _association("TV2_RMS", "tv2_rms_mas", "float", "mas", "association V2 RMS jitter"),
    _association("TV3_RMS", "tv3_rms_mas", "float", "mas", "association V3 RMS jitter"),
    _association("MV2_P2P", "mv2_p2p_mas", "float", "mas", "max V2 peak-to-peak"),
    _association("MV3_P2P", "mv3_p2p_mas", "float", "mas", "max V3 peak-to-peak"),
    _association("TRA_AVG", "tra_avg", "float", "deg", "average RA"),
    _association("TDEC_AVG", "tdec_avg", "float", "deg", "average Dec"),
    _association("TROLLAVG", "trollavg", "float", "deg", "average roll"),
    # Problem flags and warnings: the complete EDPS set.
    _association("T_GDACT", "t_gdact", "bool", "", "guide mode same in all exposures", True),
    _association("T_ACTGSP", "t_actgsp", "bool", "", "GS separation same in all exposures", True),
    _association("T_GSFAIL", "t_gsfail", "bool", "", "GS acquisition failed in an exposure", False),
    _association("T_SGSTAR", "t_sgstar", "bool", "", "guided on a single guide star", False),
    _association("T_TLMPRB", "t_tlmprb", "bool", "", "engineering-telemetry problem", False),
    _association("T_NOTLM", "t_notlm", "bool", "", "no telemetry in the exposures", False),
    _association("T_NTMGAP", "t_ntmgap", "int", "", "telemetry gaps", 0),
    _association("T_TMGAP", "t_tmgap", "float", "s", "missing-telemetry time", 0.0),
    _association("T_GSGAP", "t_gsgap", "bool", "", "telemetry missing during GS acq.", False),
    _association("T_SLEWNG", "t_slewng", "bool", "", "slewing occurred", False),
    _association("T_TDFDWN", "t_tdfdwn", "bool", "", "take-data flag not up throughout", False),
    # Extensions: one per exposure.
    _exposure("ASN_MTYP", "asn_mtyp", "str", "", "member role"),
    _exposure("STARTIME", "window_start", "time", "", "predicted observation window start"),
    _exposure("ENDTIME", "window_end", "time", "", "predicted observation window end"),
    _exposure("APERTURE", "aperture", "str", "", "aperture"),
    _exposure("GUIDEACT", "guideact", "str", "", "actual guiding mode", checklist=True),
    _exposure("GSACQ", "gsacq", "time", "", "GS acquisition completed", checklist=True),
    _exposure("GSFAIL", "gsfail", "str", "", "GS acquisition failure code", checklist=True),
    _exposure("TDF-DOWN", "tdf_down", "bool", "", "take-data flag down", absent=False,
              checklist=True),
    _exposure("ACTGSSEP", "actgssep_arcsec", "float", "arcsec", "actual GS separation",
              checklist=True),
    _exposure("GSSEPRMS", "gsseprms_mas", "float", "mas", "GS separation RMS", checklist=True),
    _exposure("NLOSSES", "nlosses", "int", "", "loss-of-lock events", checklist=True),
    _exposure("LOCKLOSS", "lockloss_s", "float", "s", "loss-of-lock time", checklist=True),
    _exposure("NRECENT", "nrecent", "int", "", "recentering events"),
    _exposure("RECENTR", "recentr_s", "float", "s", "recentering time"),
    _exposure("V2_RMS", "v2_rms_mas", "float", "mas", "V2 RMS jitter", checklist=True),
    _exposure("V3_RMS", "v3_rms_mas", "float", "mas", "V3 RMS jitter", checklist=True),
    _exposure("V2_P2P", "v2_p2p_mas", "float", "mas", "V2 peak-to-peak"),
    _exposure("V3_P2P", "v3_p2p_mas", "float", "mas", "V3 peak-to-peak"),
    _exposure("RA_AVG", "ra_avg", "float", "deg", "average RA"),
    _exposure("DEC_AVG", "dec_avg", "float", "deg", "average Dec"),
    _exposure("ROLL_AVG", "roll_avg", "float", "deg", "average roll"),
)  # fmt: skip


def jif_columns(table: Literal["association", "exposure"]) -> tuple[str, ...]:
    """The store columns a JIF fills on ``table``: the columns the JIF owns."""
    return tuple(k.column for k in JIF_KEYWORDS if k.table == table)


def problem_flags() -> tuple[JifKeyword, ...]:
    """The JIF primary header's problem flags and warnings (T_*), in file order."""
    return tuple(k for k in JIF_KEYWORDS if k.ok is not None)


def checklist_keywords() -> tuple[JifKeyword, ...]:
    """The per-exposure keywords an observer reads first: guiding mode, acquisition, jitter."""
    return tuple(k for k in JIF_KEYWORDS if k.checklist)


def checklist_columns() -> tuple[tuple[str, str], ...]:
    """(heading, column) of the observer's per-exposure table: the exposure's place in its
    association, the checklist keywords, and what its JIT table holds."""
    return (
        ("#", "asn_member_index"),
        ("exposure", "exposure_id"),
        ("rootname", "rootname"),
        *((k.label, k.column) for k in checklist_keywords()),
        ("JIT rows", "jit_n_samples"),
        ("fill rows", "jit_n_fill"),
        ("TakeData=1", "jit_takedata_frac"),
    )
