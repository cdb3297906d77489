"""Plain records that parsers hand to the writer: no FITS objects, no database sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.jif_keywords import jif_columns

__all__ = [
    "JIT_STATISTIC_COLUMNS",
    "OWNED_COLUMNS",
    "RANKED_COLUMNS",
    "SCIENCE_KINDS",
    "SCIENCE_RANK",
    "FileOutcome",
    "FileRecord",
    "HeaderRecord",
    "SampleBlock",
]


@dataclass(frozen=True)
class HeaderRecord:
    """One HDU's full header as a JSON-ready dict."""

    hdu_index: int
    extname: str | None
    exposure_id: str | None
    header: dict[str, Any]


@dataclass(frozen=True)
class SampleBlock:
    """One exposure's JIT table: SQL column name -> array; NaN marks a NULL (fill) value.

    ``copy_rows`` optionally holds the same rows already encoded for PostgreSQL's binary COPY, so
    that work is spread over the Dask workers instead of the single writer.
    """

    exposure_id: str
    columns: dict[str, np.ndarray]
    copy_rows: bytes | None = None

    @property
    def n_rows(self) -> int:
        return len(self.columns["seconds"])


@dataclass
class FileRecord:
    """Everything one file says, as rows of the store (column -> value dicts)."""

    kind: str
    associations: list[dict[str, Any]] = field(default_factory=list)
    exposures: list[dict[str, Any]] = field(default_factory=list)
    samples: list[SampleBlock] = field(default_factory=list)
    headers: list[HeaderRecord] = field(default_factory=list)
    # Science files (FLT/FLC/IMA): rows of image_metric, psf_measurement and image_preview.
    image_metrics: list[dict[str, Any]] = field(default_factory=list)
    psf: list[dict[str, Any]] = field(default_factory=list)
    previews: list[dict[str, Any]] = field(default_factory=list)
    # Keyword values that could not be read: rows of file_warning (hdu_index, keyword, raw_value,
    # message, exposure_id); their columns are NULL and the rest of the file is kept.
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return sum(block.n_rows for block in self.samples)


@dataclass
class FileOutcome:
    """What happened to one file: its identity, status and (when ingested) its record."""

    path: str
    kind: str
    size_bytes: int
    mtime_ns: int
    sha256: str | None
    status: str  # ingested | failed | skipped | unchanged
    error: str | None = None
    record: FileRecord | None = None


# Per-exposure statistics computed from a JIT table (ingest.jitter_files.jit_statistics).
JIT_STATISTIC_COLUMNS: tuple[str, ...] = (
    "jit_n_samples",
    "jit_n_fill",
    "jit_takedata_frac",
    "jit_duration_s",
    "si_v2_avg_std_mas",
    "si_v3_avg_std_mas",
    "si_v2_rms_median_mas",
    "si_v3_rms_median_mas",
    "si_rms_p95_mas",
    "drift_v2_mas",
    "drift_v3_mas",
    "drift_trend_v2_mas",
    "drift_trend_v3_mas",
    "drift_rate_mas_s",
    "jit_n_slew",
    "jit_n_slew_guided",
    "jit_n_recenter",
)

# Columns each jitter file fills and therefore owns (tracked by jif_file_id / jit_file_id): when
# the file changes or goes bad they are cleared before its new values land, so a re-ingest leaves
# no stale value behind. Identity columns several kinds of file agree on (proposid, config,
# asn_id...) are not listed. A JIF owns exactly the columns of the JIF keyword map.
OWNED_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "jif": {"association": jif_columns("association"), "exposure": jif_columns("exposure")},
    "jit": {"association": (), "exposure": JIT_STATISTIC_COLUMNS},
}

SCIENCE_KINDS: tuple[str, ...] = ("flc", "flt", "ima")
# Which file's image metrics speak for the exposure: CTE-corrected FLC, then FLT, then IMA.
SCIENCE_RANK: dict[str, int] = {"flc": 3, "flt": 2, "ima": 1}

# Science files: the image-quality columns of the exposure come from its best-ranked science
# file (FLC over FLT over IMA); a lower-ranked file never overwrites them.
RANKED_COLUMNS: tuple[str, ...] = (
    "n_psf_stars",
    "fwhm_median_pix",
    "fwhm_p90_pix",
    "elongation_median",
    "fwhm_nominal_pix",
    "median_snr",
    "sci_file_id",
    "sci_rank",
)
