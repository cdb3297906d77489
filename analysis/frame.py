"""Load what the rules need from the store into one pandas DataFrame, one row per exposure."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Connection, select

from models.tables import AnalysisState, Association, Exposure

__all__ = ["EXPOSURE_COLUMNS", "load_exposures", "stale_exposure_ids"]

EXPOSURE_COLUMNS = (
    "exposure_id", "asn_id", "asn_member_index", "proposid", "config", "jitter_name",
    "rootname", "window_start", "window_end", "proctime", "guideact", "gsacq", "gsfail",
    "tdf_down", "gsseprms_mas", "nlosses", "lockloss_s", "nrecent", "recentr_s", "v2_rms_mas",
    "v3_rms_mas", "jit_n_samples", "jit_n_fill", "jit_takedata_frac", "jit_duration_s",
    "si_rms_p95_mas", "drift_v2_mas", "drift_v3_mas", "drift_trend_v2_mas", "drift_trend_v3_mas",
    "jif_file_id", "jit_file_id",
)  # fmt: skip
# Science-file columns the rules use when a later schema has them (FLT/FLC/IMA ingest).
OPTIONAL_EXPOSURE_COLUMNS = (
    "exptime_s", "expflag", "fgslock", "scan_typ", "mtflag", "date_delivered",
    "fwhm_median_pix", "fwhm_nominal_pix", "elongation_median", "median_snr",
)  # fmt: skip
ASSOCIATION_COLUMNS = ("guidecmd", "t_gsfail", "t_ntmgap", "t_tmgap", "t_notlm", "t_tlmprb")


def load_exposures(connection: Connection) -> pd.DataFrame:
    """Every exposure with its association's guiding context; missing science columns absent."""
    columns = [getattr(Exposure, name) for name in EXPOSURE_COLUMNS]
    columns += [getattr(Exposure, n) for n in OPTIONAL_EXPOSURE_COLUMNS if hasattr(Exposure, n)]
    columns += [getattr(Association, name) for name in ASSOCIATION_COLUMNS]
    query = select(*columns).outerjoin(Association, Association.asn_id == Exposure.asn_id)
    frame = pd.DataFrame(connection.execute(query).all(), columns=[c.key for c in columns])
    for name in ("window_start", "window_end", "proctime", "gsacq"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame.set_index("exposure_id", drop=False)


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
