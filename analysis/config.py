"""The rules file: thresholds, severities, versions and policy, read once and validated."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = ["EXEMPTION_KINDS", "SEVERITIES", "RuleConfig", "RuleSet", "RulesFileError", "load_rules"]

SEVERITIES = ("high", "medium", "info")
EXEMPTION_KINDS = ("internal", "acquisition", "spatial_scan", "moving_target")
_RULE_KEYS = {"version", "severity", "description", "exempt", "hopr", "reads", "why"}


class RulesFileError(ValueError):
    """The rules file is wrong: the message names the rule and the setting."""


@dataclass(frozen=True)
class RuleConfig:
    """One rule's settings: its identity, severity, and the thresholds its code reads."""

    rule_id: str
    version: int
    severity: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    exempt: tuple[str, ...] = ()
    hopr: bool = False  # a high flag of this rule is science lost to the telescope
    reads: tuple[str, ...] = ()  # the keywords and columns it reads, for the rules reference
    why: str = ""  # the domain reason, in a sentence or two

    def param(self, name: str) -> Any:
        if name not in self.params:
            msg = f"rule {self.rule_id}: setting {name!r} is missing from the rules file"
            raise RulesFileError(msg)
        return self.params[name]


@dataclass(frozen=True)
class RuleSet:
    """Every rule, the exemptions and the HOPR policy, as read from the rules file(s)."""

    rules: dict[str, RuleConfig]
    kinds: dict[str, Any]
    policy: dict[str, Any]
    pixel_scale_mas: dict[str, float]
    sources: tuple[str, ...]
    not_judged: dict[str, str] = field(default_factory=dict)  # keyword -> why no rule reads it

    @property
    def signature(self) -> str:
        """A hash of the rule ids and versions: analysis re-runs everything when it changes."""
        versions = sorted((rule.rule_id, rule.version) for rule in self.rules.values())
        return hashlib.sha256(json.dumps(versions).encode()).hexdigest()

    def versions(self) -> dict[str, int]:
        return {rule_id: rule.version for rule_id, rule in sorted(self.rules.items())}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _rule(rule_id: str, table: dict[str, Any]) -> RuleConfig:
    severity = table.get("severity")
    if severity not in SEVERITIES:
        msg = f"rule {rule_id}: severity {severity!r} is not one of {', '.join(SEVERITIES)}"
        raise RulesFileError(msg)
    version = table.get("version")
    if not isinstance(version, int) or version < 1:
        msg = f"rule {rule_id}: version must be a positive integer, got {version!r}"
        raise RulesFileError(msg)
    exempt = tuple(table.get("exempt", ()))
    unknown = [kind for kind in exempt if kind not in EXEMPTION_KINDS]
    if unknown:
        msg = f"rule {rule_id}: unknown exemption {unknown[0]!r} (known: {EXEMPTION_KINDS})"
        raise RulesFileError(msg)
    return RuleConfig(
        rule_id=rule_id,
        version=version,
        severity=severity,
        description=str(table.get("description", rule_id)),
        params={k: v for k, v in table.items() if k not in _RULE_KEYS},
        exempt=exempt,
        hopr=bool(table.get("hopr", False)),
        reads=tuple(str(item) for item in table.get("reads", ())),
        why=str(table.get("why", "")),
    )


def load_rules(override: Path | None = None) -> RuleSet:
    """The rules shipped with hstmon, with ``override``'s settings on top when given."""
    shipped = files("analysis") / "rules.toml"
    document = tomllib.loads(shipped.read_text())
    sources = [str(shipped)]
    if override is not None:
        try:
            document = _merge(document, tomllib.loads(Path(override).read_text()))
        except tomllib.TOMLDecodeError as exc:
            msg = f"{override}: not a valid TOML rules file: {exc}"
            raise RulesFileError(msg) from exc
        sources.append(str(override))
    rules = {rule_id: _rule(rule_id, table) for rule_id, table in document["rules"].items()}
    return RuleSet(
        rules=rules,
        kinds=document.get("kinds", {}),
        policy=document.get("policy", {}),
        pixel_scale_mas={k: float(v) for k, v in document.get("pixel_scale_mas", {}).items()},
        sources=tuple(sources),
        not_judged={str(k): str(v) for k, v in document.get("not_judged", {}).items()},
    )
