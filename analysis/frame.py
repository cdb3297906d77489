"""Load what the rules need from the store into one pandas DataFrame, one row per exposure."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Connection, select

from analysis.kinds import with_normalized_text
from models.tables import AnalysisState, Association, Exposure, FileWarning

__all__ = ["EXPOSURE_COLUMNS", "load_exposures", "stale_exposure_ids"]

EXPOSURE_COLUMNS = (
    "exposure_id", "asn_id", "asn_member_index", "asn_memprsnt", "proposid", "config",
    "jitter_name", "rootname", "window_start", "window_end", "proctime", "guideact", "gsacq",
    "gsfail", "tdf_down", "actgssep_arcsec", "gsseprms_mas", "nlosses", "lockloss_s", "nrecent",
    "recentr_s", "v2_rms_mas", "v3_rms_mas", "ra_avg", "dec_avg", "jit_n_samples", "jit_n_fill",
    "jit_takedata_frac", "jit_duration_s", "si_rms_p95_mas", "drift_v2_mas", "drift_v3_mas",
    "drift_trend_v2_mas", "drift_trend_v3_mas", "drift_rate_mas_s", "jit_n_slew",
    "jit_n_slew_guided", "jit_n_recenter", "jif_file_id", "jit_file_id", "sci_file_id",
    "first_ingested_at",
    # From the science file (FLT/FLC/IMA), when one is in the store.
    "instrument", "detector", "filter", "targname", "ra_targ", "dec_targ", "expstart", "expend",
    "exptime_s", "expflag", "fgslock", "imagetyp", "obsmode", "exptype", "scan_typ", "mtflag",
    "postarg1_arcsec", "postarg2_arcsec", "date_delivered", "fwhm_median_pix",
    "fwhm_nominal_pix", "elongation_median", "median_snr",
)  # fmt: skip
ASSOCIATION_COLUMNS = (
    "guidecmd", "predgsep_arcsec", "t_gdact", "t_actgsp", "t_gsfail", "t_sgstar", "t_tlmprb",
    "t_notlm", "t_ntmgap", "t_tmgap", "t_gsgap", "t_slewng", "t_tdfdwn",
)  # fmt: skip
_TIMES = ("window_start", "window_end", "proctime", "gsacq", "expstart", "expend",
          "first_ingested_at")  # fmt: skip


def _warnings(connection: Connection, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per exposure: the unread keywords' messages and names (file_warning), as lists or None.

    A warning of a whole file (a JIF primary header) belongs to every exposure the file filled.
    """
    rows = connection.execute(
        select(
            FileWarning.file_id, FileWarning.exposure_id, FileWarning.keyword, FileWarning.message
        )
    ).all()
    whole_files = {file_id for file_id, exposure_id, _, _ in rows if exposure_id is None}
    filled_by: dict[int, list[str]] = {}
    for column in ("jif_file_id", "jit_file_id", "sci_file_id") if whole_files else ():
        found = frame[frame[column].isin(whole_files)]
        for exposure_id, file_id in zip(found.index, found[column], strict=True):
            filled_by.setdefault(int(file_id), []).append(exposure_id)
    messages: dict[str, list[str]] = {}
    keywords: dict[str, list[str]] = {}
    for file_id, exposure_id, keyword, message in rows:
        for target in [exposure_id] if exposure_id else filled_by.get(file_id, []):
            messages.setdefault(target, []).append(message)
            keywords.setdefault(target, []).append(keyword)

    def per_exposure(found: dict[str, list[str]]) -> pd.Series:
        return pd.Series([found.get(e) for e in frame.index], index=frame.index, dtype=object)

    return per_exposure(messages), per_exposure(keywords)


def load_exposures(connection: Connection) -> pd.DataFrame:
    """Every exposure with its association's guiding context and its unread keywords; text
    columns the rules compare are stripped and upper-cased."""
    columns = [getattr(Exposure, name) for name in EXPOSURE_COLUMNS]
    columns += [getattr(Association, name) for name in ASSOCIATION_COLUMNS]
    columns.append(Association.targname.label("asn_targname"))
    query = select(*columns).outerjoin(Association, Association.asn_id == Exposure.asn_id)
    names = [*EXPOSURE_COLUMNS, *ASSOCIATION_COLUMNS, "asn_targname"]
    frame = pd.DataFrame(connection.execute(query).all(), columns=names)
    for name in _TIMES:
        frame[name] = pd.to_datetime(frame[name], utc=True)
    frame = with_normalized_text(frame.set_index("exposure_id", drop=False))
    frame["warnings"], frame["warned_keywords"] = _warnings(connection, frame)
    return frame


def stale_exposure_ids(connection: Connection, signature: str) -> set[str]:
    """Exposures never analysed, changed by an ingest since, or analysed under other rules."""
    state = AnalysisState
    query = (
        select(Exposure.exposure_id)
        .outerjoin(state, state.exposure_id == Exposure.exposure_id)
        .where(
            (state.exposure_id.is_(None))
            | (Exposure.updated_at > state.analyzed_at)
            | (state.rules_signature != signature)
        )
    )
    return set(connection.execute(query).scalars())
