"""Anomaly rules: each reads the exposure frame and its settings, and says where it fires and why.

A rule returns one row per exposure it flags (severity, a sentence, the evidence as JSON-ready
values and thresholds), or None when the store lacks the columns it needs. Thresholds live in
rules.toml, never here. Rules judge against what was commanded: GUIDECMD sets what counts as a
failure, and the exposure's kind (internal, acquisition, scan, moving target) which rules apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from astropy.coordinates import angular_separation

from analysis.config import RuleConfig, RuleSet
from analysis.kinds import (
    actual_mode,
    commanded_mode,
    detector,
    exposure_kinds,
    fgslock_mode,
    mode_rank,
    text,
)

__all__ = ["RULES", "evaluate", "exposure_seconds", "exposure_span_s"]

FLAG_COLUMNS = ["severity", "message", "evidence"]
RuleFunction = Callable[[pd.DataFrame, RuleConfig, RuleSet], pd.DataFrame | None]
_GYRO = "GYRO"
_FINE_LOCK = "FINE LOCK"


def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _is_true(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return frame[column].map(lambda v: v is True or v == 1).astype(bool)


def _n(value: Any, spec: str = ".1f") -> str:
    """A number for a sentence; '?' where the file gave none (None or NaN)."""
    return "?" if value is None or pd.isna(value) else format(value, spec)


def _json(value: Any) -> Any:
    """A value as JSON: NaN and missing as None, numpy scalars as Python, times as ISO text."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        return _json(value.item())
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value


# Columns are added to the whole frame before filtering: assigning a Series to an empty
# selection would make rows out of the Series' index.
def _flags(
    rows: pd.DataFrame,
    severity: str | pd.Series,
    message: Callable[[Any], str],
    evidence: Callable[[Any], dict],
) -> pd.DataFrame:
    """The flag rows of the exposures in ``rows``, built one sentence at a time."""
    records = [
        (message(row), {k: _json(v) for k, v in evidence(row).items()})
        for row in rows.itertuples(index=False)
    ]
    result = pd.DataFrame(records, columns=["message", "evidence"], index=rows.index)
    result.insert(0, "severity", severity if isinstance(severity, str) else severity[rows.index])
    return result


def _choose(condition: pd.Series, when_true: str, when_false: str) -> pd.Series:
    return pd.Series(np.where(condition, when_true, when_false), index=condition.index)


def _gyro_commanded(frame: pd.DataFrame) -> pd.Series:
    return commanded_mode(frame) == _GYRO


def _listed(test: Callable[[list[str]], bool]) -> Callable[[Any], bool]:
    """A test of a list cell that is False for an empty cell (None or NaN)."""
    return lambda cell: isinstance(cell, list) and bool(cell) and test(cell)


def _warned(frame: pd.DataFrame, *keywords: str) -> pd.Series:
    """Exposures with a keyword among ``keywords`` that could not be read (file_warning)."""
    if "warned_keywords" not in frame:
        return pd.Series(False, index=frame.index)
    wanted = set(keywords)
    return (
        frame["warned_keywords"].map(_listed(lambda found: bool(wanted & set(found)))).astype(bool)
    )


def _seconds_between(later: pd.Series, earlier: pd.Series) -> pd.Series:
    return (pd.to_datetime(later, utc=True) - pd.to_datetime(earlier, utc=True)).dt.total_seconds()


def exposure_seconds(frame: pd.DataFrame) -> pd.Series:
    """EXPTIME when a science file gave it, else the jitter log's length, else the window's."""
    window = _seconds_between(frame["window_end"], frame["window_start"])
    seconds = _num(frame, "jit_duration_s").fillna(window)
    return _num(frame, "exptime_s").fillna(seconds)


def exposure_span_s(frame: pd.DataFrame) -> pd.Series:
    """How long the exposure lasted, s: EXPSTART to EXPEND, else EXPTIME, else the JIT's span."""
    if "expstart" in frame and "expend" in frame:
        span = _seconds_between(frame["expend"], frame["expstart"])
        return span.where(span > 0).fillna(exposure_seconds(frame))
    return exposure_seconds(frame)


def gs_acq_failure(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    has_jif = frame["jif_file_id"].notna()
    gsfail = frame["gsfail"].notna()
    # A GSACQ that could not be read is unknown, not blank: it is no sign of failure.
    gsacq_blank = has_jif & frame["gsacq"].isna() & ~_warned(frame, "GSACQ")
    no_rms = (
        has_jif
        & frame[["v2_rms_mas", "v3_rms_mas", "gsseprms_mas"]].isna().all(axis=1)
        & ~_warned(frame, "V2_RMS", "V3_RMS", "GSSEPRMS")
    )
    samples = _num(frame, "jit_n_samples")
    all_fill = (samples > 0) & (_num(frame, "jit_n_fill") == samples)
    signs = pd.DataFrame(
        {"c_gsfail": gsfail, "c_gsacq": gsacq_blank, "c_rms": no_rms, "c_fill": all_fill}
    )
    # On a visit commanded on gyros nothing was to be acquired: these are what was asked for.
    fired = frame.join(signs)[signs.any(axis=1) & ~_gyro_commanded(frame)]

    def message(row: Any) -> str:
        found = [
            f"GSFAIL={row.gsfail}" if row.c_gsfail else "",
            "GSACQ blank" if row.c_gsacq else "",
            "V2/V3 RMS -32767" if row.c_rms else "",
            f"all {row.jit_n_samples:.0f} JIT rows fill" if row.c_fill else "",
        ]
        signs_text = ", ".join(sign for sign in found if sign)
        commanded = row.guidecmd or "guiding (no JIF: GUIDECMD unknown)"
        return (
            f"Guide-star acquisition failed ({signs_text}) though {commanded} was commanded: "
            "the exposure was not guided."
        )

    def evidence(row: Any) -> dict:
        return {
            "GUIDECMD": row.guidecmd,
            "GSFAIL": row.gsfail,
            "GSACQ": row.gsacq,
            "V2_RMS_mas": row.v2_rms_mas,
            "V3_RMS_mas": row.v3_rms_mas,
            "GSSEPRMS_mas": row.gsseprms_mas,
            "jit_n_fill": row.jit_n_fill,
            "jit_n_samples": row.jit_n_samples,
            "T_GSFAIL": row.t_gsfail,
        }

    return _flags(fired, rule.severity, message, evidence)


def _loss_of_lock_sentence(row: Any, threshold: float) -> str:
    """What the logs say of the losses; a count or duration they did not record is said so."""
    times = "Lost lock" if pd.isna(row.nlosses) else f"Lost lock {row.nlosses:.0f} time(s)"
    if pd.isna(row.lockloss_s):
        return f"{times}; for how long is not recorded (LOCKLOSS blank)."
    share = "" if pd.isna(row.fraction) else f"{row.fraction:.0%} of "
    return (
        f"{times} for {row.lockloss_s:.0f} s ({share}the {_n(row.seconds, '.0f')} s exposure; "
        f"limit {threshold:.0%})."
    )


def loss_of_lock(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    losses = _num(frame, "nlosses").fillna(0)
    lockloss = _num(frame, "lockloss_s").fillna(0)
    seconds = exposure_seconds(frame)
    fraction = _num(frame, "lockloss_s") / seconds
    threshold = float(rule.param("lockloss_fraction"))
    severity = _choose(fraction > threshold, rule.severity, rule.param("minor_severity"))
    # NLOSSES blank with LOCKLOSS > 0 is a loss all the same.
    lost = ((losses > 0) | (lockloss > 0)) & ~_gyro_commanded(frame)
    fired = frame.assign(fraction=fraction, seconds=seconds)[lost]
    return _flags(
        fired,
        severity,
        lambda r: _loss_of_lock_sentence(r, threshold),
        lambda r: {
            "NLOSSES": r.nlosses,
            "LOCKLOSS_s": r.lockloss_s,
            "exposure_s": r.seconds,
            "lockloss_fraction": r.fraction,
            "threshold_fraction": threshold,
        },
    )


def take_data_down(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    minimum = float(rule.param("min_takedata_fraction"))
    takedata = _num(frame, "jit_takedata_frac")
    flagged = _is_true(frame, "tdf_down")
    # JIT TakeData means nominal guide-star tracking: on gyros, as commanded, it is not expected.
    low = (takedata < minimum) & ~_gyro_commanded(frame)
    fired = frame.assign(c_tdf=flagged, c_low=low)[flagged | low]

    def message(row: Any) -> str:
        parts = ["TDF-DOWN set"] if row.c_tdf else []
        if row.c_low:
            rows = _n(row.jit_n_samples, ".0f")
            parts.append(f"TakeData=1 in {row.jit_takedata_frac:.0%} of {rows} JIT rows")
        return f"Take-data flag down ({'; '.join(parts)}; limit {minimum:.0%}): data were lost."

    return _flags(
        fired,
        rule.severity,
        message,
        lambda r: {
            "TDF_DOWN": r.tdf_down,
            "takedata_fraction": r.jit_takedata_frac,
            "threshold_fraction": minimum,
        },
    )


def guiding_degraded(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    commanded, actual = commanded_mode(frame), actual_mode(frame)
    fgslock = text(frame, "fgslock")
    below = mode_rank(actual) < mode_rank(commanded)
    # FGSLOCK below FINE with no JIF to say what was commanded: how the visit was planned, a note.
    planned = commanded.isna() & fgslock.notna() & (fgslock != "FINE")
    severity = _choose(below, rule.severity, rule.param("planned_severity"))
    fired = frame.assign(c_below=below, commanded=commanded, actual=actual, fgs=fgslock)[
        below | planned
    ]

    def message(row: Any) -> str:
        if row.c_below:
            source = "" if row.guideact else f" (FGSLOCK={row.fgs})"
            return f"Guided in {row.actual}{source} though {row.commanded} was commanded."
        return (
            f"The science header says FGSLOCK={row.fgs}, not FINE; no JIF in the store says "
            "what was commanded, so this reads as planned."
        )

    return _flags(
        fired,
        severity,
        message,
        lambda r: {"GUIDECMD": r.commanded, "GUIDEACT": r.guideact, "FGSLOCK": r.fgs},
    )


def single_guide_star(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    commanded = commanded_mode(frame)
    two_stars_asked = commanded.isna() | (commanded == _FINE_LOCK)
    severity = _choose(two_stars_asked, rule.severity, rule.param("planned_severity"))
    fired = frame.assign(commanded=commanded, c_asked=two_stars_asked)[_is_true(frame, "t_sgstar")]

    def message(row: Any) -> str:
        if row.c_asked:
            return (
                "The visit was guided on a single guide star (T_SGSTAR): the roll drifts on "
                "gyros, usually harmless below ~500 s; check the PSF before filing anything."
            )
        return f"Guided on a single guide star as commanded ({row.commanded})."

    return _flags(
        fired, severity, message, lambda r: {"T_SGSTAR": r.t_sgstar, "GUIDECMD": r.commanded}
    )


def wrong_guide_star_pair(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    limit = float(rule.param("max_separation_error_arcsec"))
    both_fine = (commanded_mode(frame) == _FINE_LOCK) & (actual_mode(frame) == _FINE_LOCK)
    actual = _num(frame, "actgssep_arcsec")
    failed = frame["gsfail"].notna() | frame["gsacq"].isna() | ~(actual > 0)
    error = (actual - _num(frame, "predgsep_arcsec")).abs()
    fired = frame.assign(error=error)[both_fine & ~failed & (error > limit)]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f'Locked on a guide-star pair {r.actgssep_arcsec:.1f}" apart where the planned pair '
            f'is {r.predgsep_arcsec:.1f}" apart ({r.error:.1f}" off; limit {limit:g}"): '
            "the wrong pair, so the telescope pointed elsewhere."
        ),
        lambda r: {
            "PREDGSEP_arcsec": r.predgsep_arcsec,
            "ACTGSSEP_arcsec": r.actgssep_arcsec,
            "error_arcsec": r.error,
            "threshold_arcsec": limit,
            "T_ACTGSP": r.t_actgsp,
        },
    )


def pointing_offset(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame | None:
    if "ra_targ" not in frame:
        return None
    limit = float(rule.param("max_offset_arcsec"))
    ra, dec = np.radians(_num(frame, "ra_avg")), np.radians(_num(frame, "dec_avg"))
    ra_t, dec_t = np.radians(_num(frame, "ra_targ")), np.radians(_num(frame, "dec_targ"))
    offset = pd.Series(
        np.degrees(angular_separation(ra, dec, ra_t, dec_t)) * 3600.0, index=frame.index
    )
    planned = np.hypot(
        _num(frame, "postarg1_arcsec").fillna(0), _num(frame, "postarg2_arcsec").fillna(0)
    )
    excess = offset - planned
    severity = _choose(_gyro_commanded(frame), rule.param("planned_severity"), rule.severity)
    fired = frame.assign(offset=offset, planned=planned, excess=excess)[excess > limit]
    return _flags(
        fired,
        severity,
        lambda r: (
            f'The mean pointing was {r.offset:.0f}" from the target (POS TARG accounts for '
            f'{r.planned:.0f}"; limit {limit:g}" beyond it): the target may be off the aperture.'
        ),
        lambda r: {
            "RA_AVG_deg": r.ra_avg,
            "DEC_AVG_deg": r.dec_avg,
            "RA_TARG_deg": r.ra_targ,
            "DEC_TARG_deg": r.dec_targ,
            "offset_arcsec": r.offset,
            "postarg_arcsec": r.planned,
            "threshold_arcsec": limit,
        },
    )


def high_jitter(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    limit = float(rule.param("max_combined_rms_mas"))
    combined = np.hypot(_num(frame, "v2_rms_mas"), _num(frame, "v3_rms_mas"))
    fired = frame.assign(combined=combined)[combined > limit]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"Jitter {r.combined:.1f} mas RMS (V2 {r.v2_rms_mas:.1f}, V3 "
            f"{r.v3_rms_mas:.1f}) is above {limit:.0f} mas."
        ),
        lambda r: {
            "V2_RMS_mas": r.v2_rms_mas,
            "V3_RMS_mas": r.v3_rms_mas,
            "combined_rms_mas": r.combined,
            "threshold_mas": limit,
        },
    )


def pointing_drift(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    limit = float(rule.param("max_drift_pix"))
    scales = rules.pixel_scale_mas
    detectors = detector(frame)
    scale = detectors.map(lambda d: scales.get(d) if d else None).astype(float)
    scale = scale.fillna(float(scales.get("other", math.nan)))
    span = exposure_span_s(frame)
    drift_mas = _num(frame, "drift_rate_mas_s") * span
    drift_pix = drift_mas / scale
    severity = _choose(_gyro_commanded(frame), rule.param("planned_severity"), rule.severity)
    fired = frame.assign(
        drift_pix=drift_pix, scale=scale, drift=drift_mas, span=span, det=detectors
    )[drift_pix > limit]
    return _flags(
        fired,
        severity,
        lambda r: (
            f"The pointing drifted {r.drift:.0f} mas ({r.drift_rate_mas_s:.2f} mas/s over "
            f"{r.span:.0f} s; {r.drift_pix:.2f} px of {r.det or 'an unknown detector'}) during "
            f"the exposure; limit {limit} px."
        ),
        lambda r: {
            "drift_rate_mas_s": r.drift_rate_mas_s,
            "exposure_span_s": r.span,
            "drift_mas": r.drift,
            "detector": r.det,
            "pixel_scale_mas": r.scale,
            "drift_pix": r.drift_pix,
            "threshold_pix": limit,
        },
    )


def recentering(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    events = _num(frame, "nrecent").fillna(0)
    rows = _num(frame, "jit_n_recenter").fillna(0)
    fired = frame[(events > 0) | (rows > 0)]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"The FGS re-centred {_n(r.nrecent, '.0f')} time(s) ({_n(r.recentr_s, '.0f')} s; "
            f"{_n(r.jit_n_recenter, '.0f')} JIT rows with Recenter=1)."
        ),
        lambda r: {
            "NRECENT": r.nrecent,
            "RECENTR_s": r.recentr_s,
            "jit_n_recenter": r.jit_n_recenter,
        },
    )


def slewing(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    guided = _num(frame, "jit_n_slew_guided").fillna(0) > 0
    any_slew = _num(frame, "jit_n_slew").fillna(0) > 0
    severity = _choose(guided, rule.severity, rule.param("minor_severity"))
    fired = frame.assign(c_guided=guided)[any_slew]

    def message(row: Any) -> str:
        if row.c_guided:
            return (
                f"The telescope slewed in {row.jit_n_slew_guided:.0f} JIT rows while TakeData=1: "
                "data were taken while it moved; check the image for trailing."
            )
        return (
            f"The telescope slewed in {row.jit_n_slew:.0f} JIT rows, with the take-data flag "
            "down (a move between exposures)."
        )

    return _flags(
        fired,
        severity,
        message,
        lambda r: {"jit_n_slew": r.jit_n_slew, "jit_n_slew_guided": r.jit_n_slew_guided},
    )


def telemetry_gaps(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    gaps = _num(frame, "t_ntmgap").fillna(0) > 0
    missing = _num(frame, "t_tmgap").fillna(0) > 0
    no_telemetry = _is_true(frame, "t_notlm")
    problem = gaps | missing | no_telemetry | _is_true(frame, "t_tlmprb")
    problem |= _is_true(frame, "t_gsgap")
    severity = _choose(no_telemetry, rule.param("notlm_severity"), rule.severity)
    fired = frame.assign(c_none=no_telemetry)[problem]

    def message(row: Any) -> str:
        if row.c_none:
            return (
                "The observing logs hold no engineering telemetry (T_NOTLM): they cannot "
                "confirm the guiding."
            )
        return (
            f"Telemetry problems in the visit: {_n(row.t_ntmgap, '.0f')} gap(s), "
            f"{_n(row.t_tmgap, '.0f')} s missing; the logs are less complete, not the data worse."
        )

    return _flags(
        fired,
        severity,
        message,
        lambda r: {
            "T_NTMGAP": r.t_ntmgap,
            "T_TMGAP_s": r.t_tmgap,
            "T_NOTLM": r.t_notlm,
            "T_TLMPRB": r.t_tlmprb,
            "T_GSGAP": r.t_gsgap,
        },
    )


def _visit_evidence(frame: pd.DataFrame, spread_limit: float) -> pd.DataFrame:
    """Per association: whether its exposures in the store show each visit-level problem."""
    samples = _num(frame, "jit_n_samples")
    failed = (
        frame["gsfail"].notna()
        | (frame["jif_file_id"].notna() & frame["gsacq"].isna())
        | ((samples > 0) & (_num(frame, "jit_n_fill") == samples))
    )
    guideact = text(frame, "guideact")
    signs = pd.DataFrame(
        {
            "asn_id": frame["asn_id"],
            "gsfail": failed,
            "tdf": _is_true(frame, "tdf_down"),
            "mode_differs": guideact.notna() & (guideact != commanded_mode(frame)),
            "slew": _num(frame, "jit_n_slew").fillna(0) > 0,
            "guideact": guideact,
            "actgssep": _num(frame, "actgssep_arcsec").where(lambda s: s > 0),
        }
    )
    grouped = signs.groupby("asn_id")
    shown = grouped[["gsfail", "tdf", "mode_differs", "slew"]].any()
    shown["mode_differs"] |= grouped["guideact"].nunique() > 1
    spread = grouped["actgssep"].max() - grouped["actgssep"].min()
    # An exposure without a guide star has no separation: it changes the visit's as well.
    shown["separation_differs"] = (spread.fillna(0) > spread_limit) | shown["gsfail"]
    shown["mode_differs"] |= shown["gsfail"]
    return shown


_VISIT_FLAGS = (  # keyword, column, value when raised, evidence column, words, serious
    ("T_GSFAIL", "t_gsfail", True, "gsfail", "a guide-star acquisition failed", True),
    ("T_TDFDWN", "t_tdfdwn", True, "tdf", "the take-data flag was down", True),
    ("T_GDACT", "t_gdact", False, "mode_differs", "the guiding mode changed", False),
    ("T_ACTGSP", "t_actgsp", False, "separation_differs", "the guide-star pair changed", False),
    ("T_SLEWNG", "t_slewng", True, "slew", "the telescope slewed", False),
)


def visit_flags(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    shown = _visit_evidence(frame, float(rule.param("actgssep_spread_arcsec")))
    unexplained: dict[str, list[tuple[str, str, bool]]] = {}
    for keyword, column, raised, sign, words, serious in _VISIT_FLAGS:
        up = frame[column].map(lambda v, raised=raised: v is raised or v == raised)
        explained = frame["asn_id"].isin(shown.index[shown[sign].astype(bool)])
        for exposure_id in frame.index[up.astype(bool) & ~explained]:
            unexplained.setdefault(exposure_id, []).append((keyword, words, serious))
    found = pd.Series(unexplained, dtype=object)
    serious = found.map(lambda items: any(s for _, _, s in items)).astype(bool)
    severity = _choose(serious, rule.severity, rule.param("minor_severity"))
    fired = frame.loc[list(found.index)].assign(c_found=found)

    def message(row: Any) -> str:
        said = "; ".join(f"{keyword}: {words}" for keyword, words, _ in row.c_found)
        return (
            f"The visit's JIF says {said}, but no exposure of it in the store shows this: an "
            "exposure may be missing, or the logs disagree."
        )

    return _flags(
        fired,
        severity,
        message,
        lambda r: {keyword: getattr(r, keyword.lower()) for keyword, _, _ in r.c_found},
    )


def mismatched_pair(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame | None:
    if "expstart" not in frame:
        return None
    slack = pd.Timedelta(seconds=float(rule.param("window_slack_s")))
    start = pd.to_datetime(frame["expstart"], utc=True)
    end = pd.to_datetime(frame["expend"], utc=True).fillna(start)
    outside = start.notna() & frame["window_start"].notna() & frame["window_end"].notna()
    outside &= (start < frame["window_start"] - slack) | (end > frame["window_end"] + slack)
    fgs, commanded, guideact = fgslock_mode(frame), commanded_mode(frame), text(frame, "guideact")
    logs_say = commanded.notna() | guideact.notna()
    fgs_differs = fgs.notna() & logs_say & (fgs != commanded) & (fgs != guideact)
    fired = frame.assign(
        c_outside=outside, c_fgs=fgs_differs, commanded=commanded, fgs=text(frame, "fgslock")
    )[outside | fgs_differs]

    def message(row: Any) -> str:
        parts = []
        if row.c_outside:
            parts.append(
                f"EXPSTART {row.expstart:%Y-%m-%d %H:%M} lies outside the observation window "
                f"{row.window_start:%Y-%m-%d %H:%M} to {row.window_end:%Y-%m-%d %H:%M}"
            )
        if row.c_fgs:
            parts.append(
                f"FGSLOCK={row.fgs} names neither the commanded ({row.commanded}) nor the actual "
                f"({row.guideact}) guiding"
            )
        return (
            f"The science file and the observing log disagree: {'; '.join(parts)}. They may "
            "not belong together."
        )

    return _flags(
        fired,
        rule.severity,
        message,
        lambda r: {
            "EXPSTART": r.expstart,
            "EXPEND": r.expend,
            "STARTIME": r.window_start,
            "ENDTIME": r.window_end,
            "FGSLOCK": r.fgs,
            "GUIDECMD": r.commanded,
            "GUIDEACT": r.guideact,
        },
    )


def unreadable_keyword(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    if "warnings" not in frame:
        return _flags(frame.iloc[:0], rule.severity, str, dict)
    fired = frame[frame["warnings"].map(_listed(bool)).astype(bool)]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"Could not read {'; '.join(r.warnings)}. Those values are NULL and the exposure "
            "was judged without them."
        ),
        lambda r: {"warnings": list(r.warnings)},
    )


def trend_outlier(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    window, minimum = int(rule.param("window_exposures")), int(rule.param("min_exposures"))
    limit = float(rule.param("max_robust_z"))
    combined = np.hypot(_num(frame, "v2_rms_mas"), _num(frame, "v3_rms_mas"))
    ordered = frame.assign(combined=combined).sort_values("window_start")
    grouped = ordered.groupby("config")["combined"]
    median = grouped.transform(
        lambda s: s.rolling(window, center=True, min_periods=minimum).median()
    )
    deviation = (ordered["combined"] - median).abs()
    mad = deviation.groupby(ordered["config"]).transform(
        lambda s: s.rolling(window, center=True, min_periods=minimum).median()
    )
    z = (ordered["combined"] - median) / (1.4826 * mad.replace(0, np.nan))
    ordered = ordered.assign(z=z, baseline=median)
    fired = ordered[ordered["z"].abs() > limit]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"Jitter {r.combined:.1f} mas is {r.z:+.1f} robust sigma from the {r.config} "
            f"baseline of {r.baseline:.1f} mas."
        ),
        lambda r: {
            "combined_rms_mas": r.combined,
            "baseline_mas": r.baseline,
            "robust_z": r.z,
            "threshold_z": limit,
            "window_exposures": window,
        },
    )


def exposure_interrupted(
    frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet
) -> pd.DataFrame | None:
    if "expflag" not in frame:
        return None
    expflag = frame["expflag"]
    fired = frame[(expflag.notna() & (expflag != "NORMAL")) | (_num(frame, "exptime_s") == 0)]
    return _flags(
        fired,
        rule.severity,
        lambda r: f"Exposure interrupted: EXPFLAG={r.expflag}, EXPTIME={r.exptime_s} s.",
        lambda r: {"EXPFLAG": r.expflag, "EXPTIME_s": r.exptime_s},
    )


def _well_guided(frame: pd.DataFrame) -> pd.Series:
    """Exposures whose logs show two-star fine lock held throughout with nominal jitter."""
    combined = np.hypot(_num(frame, "v2_rms_mas"), _num(frame, "v3_rms_mas"))
    return (
        (text(frame, "guideact") == _FINE_LOCK)
        & frame["gsfail"].isna()
        & (_num(frame, "nlosses").fillna(0) == 0)
        & ~_is_true(frame, "tdf_down")
        & (combined <= 15.0)
    )


def _psf_baselines(frame: pd.DataFrame, rule: RuleConfig) -> pd.DataFrame:
    """Per exposure: the nominal FWHM and elongation of its detector and filter, and its basis.

    The median of the well-guided peers in the store once there are ``min_peers`` of them; the
    handbook FWHM after pixelation (and the elongation a round star measures in these pixels)
    before that.
    """
    minimum = int(rule.param("min_peers"))
    priors = {str(k).upper(): float(v) for k, v in rule.param("prior_elongation").items()}
    detectors, filters = detector(frame), text(frame, "filter")
    peers = frame.assign(det=detectors, filt=filters)[
        _well_guided(frame) & _num(frame, "fwhm_median_pix").notna()
    ]
    stats = peers.groupby(["det", "filt"]).agg(
        n=("fwhm_median_pix", "size"),
        fwhm=("fwhm_median_pix", "median"),
        elongation=("elongation_median", "median"),
    )
    keys = list(zip(detectors, filters, strict=True))
    learned = stats.reindex(keys)
    enough = (learned["n"] >= minimum).to_numpy()
    n_peers = learned["n"].fillna(0).astype(int).to_numpy()
    prior_elongation = detectors.map(lambda d: priors.get(d or "", np.nan)).to_numpy(float)
    return pd.DataFrame(
        {
            "nominal_fwhm": np.where(enough, learned["fwhm"], _num(frame, "fwhm_nominal_pix")),
            "nominal_elongation": np.where(enough, learned["elongation"], prior_elongation),
            "n_peers": n_peers,
            "basis": np.where(enough, "peers", "handbook prior"),
        },
        index=frame.index,
    )


def degraded_psf(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame | None:
    if "fwhm_median_pix" not in frame or "fwhm_nominal_pix" not in frame:
        return None
    max_ratio = float(rule.param("max_fwhm_ratio"))
    max_elongation = float(rule.param("max_elongation_ratio"))
    base = _psf_baselines(frame, rule)
    ratio = _num(frame, "fwhm_median_pix") / base["nominal_fwhm"]
    elongation = _num(frame, "elongation_median") / base["nominal_elongation"]
    fired = frame.join(base).assign(ratio=ratio, e_ratio=elongation)[
        (ratio > max_ratio) | (elongation > max_elongation)
    ]

    def basis(row: Any) -> str:
        if row.basis == "peers":
            return f"the median of {row.n_peers} well-guided peers"
        return f"the handbook prior ({row.n_peers} well-guided peers, too few to learn from)"

    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"PSF FWHM {_n(r.fwhm_median_pix, '.2f')} px is {_n(r.ratio, '.2f')}x nominal "
            f"({_n(r.nominal_fwhm, '.2f')} px); elongation {_n(r.elongation_median, '.2f')} is "
            f"{_n(r.e_ratio, '.2f')}x nominal ({_n(r.nominal_elongation, '.2f')}); nominal is "
            f"{basis(r)}."
        ),
        lambda r: {
            "fwhm_median_pix": r.fwhm_median_pix,
            "nominal_fwhm_pix": r.nominal_fwhm,
            "elongation_median": r.elongation_median,
            "nominal_elongation": r.nominal_elongation,
            "nominal_basis": r.basis,
            "n_peers": r.n_peers,
            "max_fwhm_ratio": max_ratio,
            "max_elongation_ratio": max_elongation,
        },
    )


RULES: dict[str, RuleFunction] = {
    "gs_acq_failure": gs_acq_failure,
    "loss_of_lock": loss_of_lock,
    "take_data_down": take_data_down,
    "guiding_degraded": guiding_degraded,
    "single_guide_star": single_guide_star,
    "wrong_guide_star_pair": wrong_guide_star_pair,
    "pointing_offset": pointing_offset,
    "high_jitter": high_jitter,
    "pointing_drift": pointing_drift,
    "recentering": recentering,
    "slewing": slewing,
    "telemetry_gaps": telemetry_gaps,
    "visit_flags": visit_flags,
    "mismatched_pair": mismatched_pair,
    "unreadable_keyword": unreadable_keyword,
    "trend_outlier": trend_outlier,
    "exposure_interrupted": exposure_interrupted,
    "degraded_psf": degraded_psf,
}


def evaluate(frame: pd.DataFrame, rules: RuleSet) -> tuple[pd.DataFrame, list[str]]:
    """Every flag the rules raise on ``frame`` and the rules that could not be evaluated.

    ``frame`` is as :func:`analysis.frame.load_exposures` gives it (text columns normalized).
    """
    kinds = exposure_kinds(frame, rules)
    results, not_evaluated = [], []
    for rule_id, config in rules.rules.items():
        function = RULES.get(rule_id)
        if function is None:
            msg = f"rules file names rule {rule_id!r}, which hstmon does not implement"
            raise KeyError(msg)
        covered = np.zeros(len(frame), dtype=bool)
        for kind in config.exempt:
            covered |= kinds[kind].to_numpy()
        flags = function(frame[~covered], config, rules)
        if flags is None:
            not_evaluated.append(rule_id)
            continue
        results.append(flags.assign(rule=rule_id, rule_version=config.version))
    if not results:
        return pd.DataFrame(columns=["rule", "rule_version", *FLAG_COLUMNS]), not_evaluated
    return pd.concat(results), not_evaluated
