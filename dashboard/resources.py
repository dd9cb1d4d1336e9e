"""The model and the storage, loaded once per server process and shared by every session and the API.

``st.cache_resource`` keeps one recognizer and one store per process; the REST API calls the
same functions, so a request and a browser session use the very same objects.
"""

from __future__ import annotations

import gc
import logging

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


def warm_up() -> None:
    """Build the store and load the model when the server starts, then take them out of the collector's sight.

    Building the store at start lets its writer send an outbox left by the previous process
    without waiting for a first visitor. The freeze is for speed: after every rerun Keras'
    ``clear_session`` (called by Streamlit) runs a full collection, which with TensorFlow,
    pandas and Altair loaded walks some 400,000 long-lived objects and holds the GIL for a
    quarter of a second, stalling every session and the API. Frozen objects are never walked.
    """
    store_resource()
    try:
        recognizer_resource()
    except (OSError, ValueError) as error:
        # The pages and /api/health say what is wrong; the store keeps working without a model.
        logging.getLogger(__name__).error("The model could not be loaded at start: %s", error)
    gc.collect()
    gc.freeze()


def shut_down() -> None:
    """Stop the store's writer and the driver cleanly; what is still queued stays in the outbox for the next start."""
    store_resource().close()


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
