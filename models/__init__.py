"""Tables, engines and sessions of the hstmon store; nothing here reads FITS or draws."""

from models.database import default_database_url, make_engine, resolve_database_url, upgrade
from models.tables import (
    JIT_COLUMNS,
    Association,
    Base,
    Exposure,
    FitsHeader,
    IngestRun,
    JitterSample,
    SourceFile,
)

__all__ = [
    "JIT_COLUMNS",
    "Association",
    "Base",
    "Exposure",
    "FitsHeader",
    "IngestRun",
    "JitterSample",
    "SourceFile",
    "default_database_url",
    "make_engine",
    "resolve_database_url",
    "upgrade",
]
