"""The dashboard's pages (scripts run by st.navigation) and the helpers they share."""
