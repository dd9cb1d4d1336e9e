"""The model and the storage, loaded once per server process and shared by every session and the API.

``st.cache_resource`` keeps one recognizer and one store per process; the REST API calls the
same functions, so a request and a browser session use the very same objects.
"""

from __future__ import annotations

import streamlit as st

from mnist_core import inference, settings, storage


@st.cache_resource(show_spinner="Loading the model...")
def recognizer_resource() -> inference.Recognizer:
    """The recognizer from settings.model_path (raises FileNotFoundError/ValueError if it cannot be loaded)."""
    return inference.load_recognizer(settings.get_settings().model_path)


@st.cache_resource(show_spinner=False)
def store_resource() -> storage.PredictionStore:
    """The process-wide prediction store (connects lazily; outages queue writes instead of raising)."""
    return storage.get_storage()


def render_sidebar() -> None:
    """Storage status and model version, shown on every page."""
    with st.sidebar:
        status = store_resource().status()
        if status.connected:
            st.success("Cassandra connected", icon=":material/database:")
        else:
            st.warning(f"Storage degraded: {status.pending} prediction(s) waiting", icon=":material/cloud_off:")
            st.caption(status.message)
        try:
            version = recognizer_resource().model_version
        except (OSError, ValueError) as error:
            st.error(f"Model not loaded: {error}")
        else:
            st.caption(f"Model version: `{version}`")
