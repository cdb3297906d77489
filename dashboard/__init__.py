"""Read-only views of the store: a query module and, on top of it, the Streamlit app."""
