"""The hstmon dashboard (Streamlit): `hstmon dashboard` runs `streamlit run` on this file.

One router: each page is a script in ``pages/`` and reads the store through ``dashboard.queries``
(cached, read-only). The store is $HSTMON_DATABASE_URL, which `hstmon dashboard --db` sets. With
a login configured (``[auth]`` in ``.streamlit/secrets.toml``) no page shows before it; every
page sees only the programs its viewer may see.
"""

from __future__ import annotations

import streamlit as st

from dashboard.pages import _common as ui

st.set_page_config(page_title="hstmon", page_icon=":material/satellite_alt:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/trends.py", title="Trends", icon=":material/trending_up:", url_path="trends"),
    st.Page(
        "pages/programs.py", title="Programs", icon=":material/folder_open:", url_path="programs"
    ),
    st.Page("pages/exposure.py", title="Exposure", icon=":material/search:", url_path="exposure"),
    st.Page("pages/sql.py", title="SQL", icon=":material/terminal:", url_path="sql"),
]

# The router always runs, with only the login page until the person has logged in: without a
# router, Streamlit would serve the scripts of pages/ by their names, each one on its own.
if ui.needs_login():
    st.navigation([st.Page(ui.login_page, title="Log in", icon=":material/login:")]).run()
else:
    ui.signed_in_sidebar()
    st.navigation(PAGES).run()
