"""Anomaly rules: each reads the exposure frame and its settings, and says where it fires and why.

A rule returns one row per exposure it flags (severity, a sentence, the evidence as JSON-ready
values and thresholds), or None when the store lacks the columns it needs. Thresholds live in
rules.toml, never here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from analysis.config import RuleConfig, RuleSet

__all__ = ["RULES", "evaluate", "exemption_masks", "exposure_seconds"]

FLAG_COLUMNS = ["severity", "message", "evidence"]
RuleFunction = Callable[[pd.DataFrame, RuleConfig, RuleSet], pd.DataFrame | None]


def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _is_true(frame: pd.DataFrame, column: str) -> pd.Series:
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


def exposure_seconds(frame: pd.DataFrame) -> pd.Series:
    """EXPTIME when a science file gave it, else the jitter log's length, else the window's."""
    window = (frame["window_end"] - frame["window_start"]).dt.total_seconds()
    seconds = _num(frame, "jit_duration_s").fillna(window)
    if "exptime_s" in frame:
        seconds = _num(frame, "exptime_s").fillna(seconds)
    return seconds


def gs_acq_failure(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    has_jif = frame["jif_file_id"].notna()
    gsfail = frame["gsfail"].notna()
    gsacq_blank = has_jif & frame["gsacq"].isna()
    no_rms = has_jif & frame[["v2_rms_mas", "v3_rms_mas", "gsseprms_mas"]].isna().all(axis=1)
    samples = _num(frame, "jit_n_samples")
    all_fill = (samples > 0) & (_num(frame, "jit_n_fill") == samples)
    signs = pd.DataFrame(
        {"c_gsfail": gsfail, "c_gsacq": gsacq_blank, "c_rms": no_rms, "c_fill": all_fill}
    )
    fired = frame.join(signs)[signs.any(axis=1)]

    def message(row: Any) -> str:
        found = [
            f"GSFAIL={row.gsfail}" if row.c_gsfail else "",
            "GSACQ blank" if row.c_gsacq else "",
            "V2/V3 RMS -32767" if row.c_rms else "",
            f"all {row.jit_n_samples:.0f} JIT rows fill" if row.c_fill else "",
        ]
        signs_text = ", ".join(sign for sign in found if sign)
        return f"Guide-star acquisition failed ({signs_text}): the exposure was not guided."

    def evidence(row: Any) -> dict:
        return {
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


def loss_of_lock(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    losses = _num(frame, "nlosses").fillna(0)
    seconds = exposure_seconds(frame)
    fraction = _num(frame, "lockloss_s").fillna(0) / seconds
    threshold = float(rule.param("lockloss_fraction"))
    severity = pd.Series(
        np.where(fraction > threshold, rule.severity, rule.param("minor_severity")),
        index=frame.index,
    )
    fired = frame.assign(fraction=fraction, seconds=seconds)[losses > 0]
    return _flags(
        fired,
        severity,
        lambda r: (
            f"Lost lock {_n(r.nlosses, '.0f')} time(s) for {_n(r.lockloss_s, '.0f')} s "
            f"({_n(r.fraction, '.0%')} of the {_n(r.seconds, '.0f')} s exposure; "
            f"limit {threshold:.0%})."
        ),
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
    fired = frame.assign(c_tdf=flagged)[flagged | (takedata < minimum)]

    def message(row: Any) -> str:
        parts = ["TDF-DOWN set"] if row.c_tdf else []
        if pd.notna(row.jit_takedata_frac):
            rows = _n(row.jit_n_samples, ".0f")
            parts.append(f"TakeData=1 in {row.jit_takedata_frac:.0%} of {rows} JIT rows")
        return f"Take-data flag down ({'; '.join(parts)}; limit {minimum:.0%})."

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
    both = frame["guideact"].notna() & frame["guidecmd"].notna()
    differs = both & (frame["guideact"] != frame["guidecmd"])
    fgslock = frame["fgslock"] if "fgslock" in frame else pd.Series(None, index=frame.index)
    not_fine = fgslock.notna() & (fgslock != "FINE")
    # FGSLOCK not FINE alone is how the visit was planned: worth a note, not a HOPR (DOMAIN 6).
    severity = pd.Series(
        np.where(differs, rule.severity, rule.param("fgslock_severity")), index=frame.index
    )
    fired = frame.assign(c_differs=differs, fgslock_value=fgslock)[differs | not_fine]

    def message(row: Any) -> str:
        if row.c_differs:
            return f"Guided in {row.guideact} though {row.guidecmd} was commanded."
        return f"The science header says FGSLOCK={row.fgslock_value}, not FINE."

    return _flags(
        fired,
        severity,
        message,
        lambda r: {"GUIDEACT": r.guideact, "GUIDECMD": r.guidecmd, "FGSLOCK": r.fgslock_value},
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
    scale = frame["config"].map(rules.pixel_scale_mas).astype(float)
    drift_mas = np.fmax(_num(frame, "drift_trend_v2_mas"), _num(frame, "drift_trend_v3_mas"))
    drift_pix = drift_mas / scale
    fired = frame.assign(drift_pix=drift_pix, scale=scale, drift=drift_mas)[drift_pix > limit]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"Pointing drifted {r.drift:.0f} mas ({r.drift_pix:.2f} px of {r.config}) "
            f"during the exposure; limit {limit} px."
        ),
        lambda r: {
            "drift_v2_mas": r.drift_v2_mas,
            "drift_v3_mas": r.drift_v3_mas,
            "pixel_scale_mas": r.scale,
            "drift_pix": r.drift_pix,
            "threshold_pix": limit,
        },
    )


def recentering(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    fired = frame[_num(frame, "nrecent").fillna(0) > 0]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"The FGS re-centred {_n(r.nrecent, '.0f')} time(s) ({_n(r.recentr_s, '.0f')} s)."
        ),
        lambda r: {"NRECENT": r.nrecent, "RECENTR_s": r.recentr_s},
    )


def telemetry_gaps(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame:
    gaps = _num(frame, "t_ntmgap").fillna(0) > 0
    missing = _num(frame, "t_tmgap").fillna(0) > 0
    fired = frame[gaps | missing | _is_true(frame, "t_notlm") | _is_true(frame, "t_tlmprb")]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"Telemetry problems in the visit: {_n(r.t_ntmgap, '.0f')} gap(s), "
            f"{_n(r.t_tmgap, '.0f')} s missing."
        ),
        lambda r: {
            "T_NTMGAP": r.t_ntmgap,
            "T_TMGAP_s": r.t_tmgap,
            "T_NOTLM": r.t_notlm,
            "T_TLMPRB": r.t_tlmprb,
        },
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


def degraded_psf(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame | None:
    if "fwhm_median_pix" not in frame or "fwhm_nominal_pix" not in frame:
        return None
    ratio = _num(frame, "fwhm_median_pix") / _num(frame, "fwhm_nominal_pix")
    elongation = _num(frame, "elongation_median")
    max_ratio, max_elongation = (
        float(rule.param("max_fwhm_ratio")),
        float(rule.param("max_elongation")),
    )
    fired = frame.assign(ratio=ratio)[(ratio > max_ratio) | (elongation > max_elongation)]
    return _flags(
        fired,
        rule.severity,
        lambda r: (
            f"PSF FWHM {_n(r.fwhm_median_pix, '.2f')} px is {_n(r.ratio, '.2f')}x nominal; "
            f"elongation {_n(r.elongation_median, '.2f')}."
        ),
        lambda r: {
            "fwhm_median_pix": r.fwhm_median_pix,
            "fwhm_nominal_pix": r.fwhm_nominal_pix,
            "elongation_median": r.elongation_median,
            "max_fwhm_ratio": max_ratio,
            "max_elongation": max_elongation,
        },
    )


def low_snr(frame: pd.DataFrame, rule: RuleConfig, rules: RuleSet) -> pd.DataFrame | None:
    if "median_snr" not in frame:
        return None
    minimum = float(rule.param("min_median_snr"))
    fired = frame[_num(frame, "median_snr") < minimum]
    return _flags(
        fired,
        rule.severity,
        lambda r: f"Median S/N of detected sources {r.median_snr:.1f} is below {minimum}.",
        lambda r: {"median_snr": r.median_snr, "threshold": minimum},
    )


RULES: dict[str, RuleFunction] = {
    "gs_acq_failure": gs_acq_failure,
    "loss_of_lock": loss_of_lock,
    "take_data_down": take_data_down,
    "guiding_degraded": guiding_degraded,
    "high_jitter": high_jitter,
    "pointing_drift": pointing_drift,
    "recentering": recentering,
    "telemetry_gaps": telemetry_gaps,
    "trend_outlier": trend_outlier,
    "exposure_interrupted": exposure_interrupted,
    "degraded_psf": degraded_psf,
    "low_snr": low_snr,
}


def exemption_masks(frame: pd.DataFrame, rules: RuleSet) -> dict[str, pd.Series]:
    """Which exposures each exemption kind covers (DOMAIN.md 6)."""
    longest = float(rules.exemptions.get("acquisition_max_duration_s", 0))
    masks = {"acquisition": _num(frame, "jit_duration_s") < longest}
    masks["spatial_scan"] = (
        frame["scan_typ"].fillna("N").str.strip() != "N" if "scan_typ" in frame else False
    )
    masks["moving_target"] = _is_true(frame, "mtflag") if "mtflag" in frame else False
    return {kind: pd.Series(mask, index=frame.index).astype(bool) for kind, mask in masks.items()}


def evaluate(frame: pd.DataFrame, rules: RuleSet) -> tuple[pd.DataFrame, list[str]]:
    """Every flag the rules raise on ``frame`` and the rules that could not be evaluated."""
    exempt = exemption_masks(frame, rules)
    results, not_evaluated = [], []
    for rule_id, config in rules.rules.items():
        function = RULES.get(rule_id)
        if function is None:
            msg = f"rules file names rule {rule_id!r}, which hstmon does not implement"
            raise KeyError(msg)
        covered = np.zeros(len(frame), dtype=bool)
        for kind in config.exempt:
            covered |= exempt[kind].to_numpy()
        flags = function(frame[~covered], config, rules)
        if flags is None:
            not_evaluated.append(rule_id)
            continue
        results.append(flags.assign(rule=rule_id, rule_version=config.version))
    if not results:
        return pd.DataFrame(columns=["rule", "rule_version", *FLAG_COLUMNS]), not_evaluated
    return pd.concat(results), not_evaluated
