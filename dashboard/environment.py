"""What `hstmon dashboard` hands the Streamlit app it starts: the names of its variables."""

from __future__ import annotations

__all__ = ["ANONYMOUS_ENV", "GROUPS_CLAIM_ENV", "READER_URL_ENV"]

# Who an anonymous visitor is: "everything" for the store's operator at their own machine
# (`hstmon dashboard` on 127.0.0.1 without a login), anything else a member of the public.
ANONYMOUS_ENV = "HSTMON_DASHBOARD_ANONYMOUS"
READER_URL_ENV = "HSTMON_READER_DATABASE_URL"  # the SQL page's connection (--reader-db)
GROUPS_CLAIM_ENV = "HSTMON_GROUPS_CLAIM"  # the login claim that lists a person's groups
