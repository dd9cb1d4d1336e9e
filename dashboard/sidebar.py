"""The sidebar every page shows: where storage stands and which model is served."""

from __future__ import annotations

import streamlit as st

from dashboard.resources import recognizer_resource, store_resource


def render_sidebar() -> None:
    """Storage status and model version, shown on every page."""
    with st.sidebar:
        status = store_resource().status()
        if status.connected:
            st.success("Cassandra connected", icon=":material/database:")
        elif status.state == "connecting":
            st.info("Connecting to Cassandra…", icon=":material/database:")
        else:
            st.warning(f"Storage degraded: {status.pending} prediction(s) waiting", icon=":material/cloud_off:")
            st.caption(status.message)
        try:
            version = recognizer_resource().model_version
        except (OSError, ValueError) as error:
            st.error(f"Model not loaded: {error}")
        else:
            st.caption(f"Model version: `{version}`")
