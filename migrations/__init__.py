"""Alembic migrations: the only way hstmon's schema changes."""
