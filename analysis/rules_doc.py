"""The rules reference (docs/rules.md), written from the rules file so it cannot drift."""

from __future__ import annotations

from typing import Any

from analysis.config import RuleConfig, RuleSet

__all__ = ["rules_markdown"]

_KINDS = {
    "internal": "IMAGETYP other than EXT, or an internal target name (see below): not guided.",
    "acquisition": "the science header's OBSMODE or EXPTYPE names an acquisition (ACQ...), for "
    "the instruments that have them.",
    "spatial_scan": "SCAN_TYP C or D: the telescope moves on purpose.",
    "moving_target": "MTFLAG = T: the telescope tracks a solar-system target.",
}
_VERDICTS = (
    ("hopr", "a high flag of a HOPR rule: science was lost to the telescope. File a HOPR within "
     "the limit after the first delivery; past the limit it stays a HOPR, shown apart."),
    ("helpdesk", "a medium flag, or a HOPR-class failure where a repeat is unlikely (the visit "
     "obtained more than the repeat fraction) or the exposure may be an acquisition whose "
     "science header is not in the store."),
    ("not_repeatable", "a HOPR-class failure in a SNAP program: failed SNAPs are never repeated."),
    ("incomplete", "the observing logs (JIF and JIT) of an external exposure are not in the "
     "store, or its association table marks it not present: it cannot be judged."),
    ("ok", "nothing above info; an internal exposure is always ok (HOPRs never apply)."),
)  # fmt: skip


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _rule_section(rule: RuleConfig) -> list[str]:
    lines = [f"## `{rule.rule_id}` (version {rule.version})", "", f"{rule.description}.", ""]
    lines.append(f"- **Severity:** {rule.severity}" + (" (HOPR rule)" if rule.hopr else ""))
    lines.append(f"- **Reads:** {', '.join(f'`{item}`' for item in rule.reads) or '—'}")
    lines.append(f"- **Exempt:** {', '.join(rule.exempt) or 'none'}")
    if rule.params:
        settings = "; ".join(f"`{k}` = {_value(v)}" for k, v in rule.params.items())
        lines.append(f"- **Thresholds:** {settings}")
    lines += ["", f"Why: {rule.why}", ""]
    return lines


def rules_markdown(rules: RuleSet) -> str:
    """Each rule with what it reads, its thresholds, exemptions, severity and domain reason."""
    lines = [
        "# hstmon rules",
        "",
        "Generated from `analysis/rules.toml` by `python docs/update_docs.py`; a test keeps it",
        "current. `hstmon analyze --rules FILE` overrides any setting; a changed `version`",
        "re-judges every exposure at the next analysis.",
        "",
        "Rules judge against what was commanded (GUIDECMD: FINE LOCK > FINE LOCK/GYRO > GYRO):",
        "on a visit commanded on gyros a blank GSACQ, -32767 RMS and FGS columns at fill are",
        "what was asked for. A visit is `ipppss`: its associations and lone exposures are judged",
        "together.",
        "",
        "## Exposure kinds",
        "",
        "Read from the science header (FLT/FLC/IMA); a rule does not judge the kinds it exempts.",
        "",
    ]
    lines += [f"- **{kind}**: {words}" for kind, words in _KINDS.items()]
    lines += [
        "",
        f"Internal targets: {_value(rules.kinds.get('internal_targets', []))}. Instruments with "
        f"acquisitions: {_value(rules.kinds.get('acquisition_instruments', []))}; a short "
        "exposure of any other instrument is not an acquisition.",
        "",
        "## Verdicts",
        "",
    ]
    lines += [f"- **{name}**: {words}" for name, words in _VERDICTS]
    policy = rules.policy
    lines += [
        "",
        f"The HOPR limit is {policy.get('hopr_limit_days')} days from the first delivery: the "
        "earliest date the store knows (the observing log's PROCTIME, the science file's "
        "PROCTIME, the first ingest). A product made "
        f"{policy.get('first_delivery_within_days')} days or more after the observation is a "
        "reprocessing, so the observation's end is taken instead. A visit that obtained more "
        f"than {float(policy.get('repeat_unlikely_fraction', 0)):.0%} of its data goes to the "
        f"help desk. SNAP programs: {_value(policy.get('snap_programs', []))}.",
        "",
        "Pixel scales by detector (mas/px): "
        + ", ".join(f"{k} {v:g}" for k, v in rules.pixel_scale_mas.items())
        + ".",
        "",
    ]
    for rule in rules.rules.values():
        lines += _rule_section(rule)
    lines += ["## Read by no rule", "", "| keyword or column | why |", "|---|---|"]
    lines += [f"| `{name}` | {why} |" for name, why in rules.not_judged.items()]
    return "\n".join(lines) + "\n"
