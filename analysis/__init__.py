"""Anomaly rules, flags and HOPR verdicts computed from the store."""
