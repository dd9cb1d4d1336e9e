"""The model and the storage, loaded once per server process and shared by every session and the API.

``st.cache_resource`` keeps one recognizer and one store per process; the REST API calls the
same functions, so a request and a browser session use the very same objects.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

import streamlit as st

from mnist_core import inference, settings, storage


@st.cache_resource(show_spinner=False)
def recognizer_resource() -> inference.Recognizer:
    """The recognizer from settings.model_path (raises FileNotFoundError/ValueError if it cannot be loaded)."""
    return inference.load_recognizer(settings.get_settings().model_path)


@st.cache_resource(show_spinner=False)
def store_resource() -> storage.PredictionStore:
    """The process-wide prediction store (connects lazily; outages queue writes instead of raising)."""
    return storage.get_storage()


# After the warm-up, the heap is frozen again this long after start (the pages' own first runs
# have loaded what they need by then), and then at this interval.
FIRST_REFREEZE_SECONDS = 60.0
REFREEZE_INTERVAL_SECONDS = 600.0


def _freeze_heap() -> None:
    """Collect everything once, then exempt what survives from later collections.

    Unfreezing first lets that one collection find cycles among objects frozen earlier (a
    closed session's, say), so nothing is kept for ever; it is the only slow one in the interval.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _refreeze_heap_forever() -> None:
    time.sleep(FIRST_REFREEZE_SECONDS)
    while True:
        _freeze_heap()
        time.sleep(REFREEZE_INTERVAL_SECONDS)


def load_at_start() -> None:
    """Build the store and load the model before the server takes its first request.

    Loading the LiteRT model takes milliseconds, so the first visitor and the first API call
    find it ready; building the store at start lets its writer send an outbox left by the
    previous process without waiting for a visitor. The store connects on its writer's thread
    (storage.start_storage): the server does not wait for the schema to be checked or created.
    """
    # A secrets file that exists but cannot be read stops the start here (SecretsFileError).
    settings.get_settings()
    storage.start_storage()
    store_resource()
    try:
        recognizer_resource()
    except (OSError, ValueError) as error:
        # The pages and /api/health say what is wrong; the store keeps working without a model.
        logging.getLogger(__name__).error("The model could not be loaded at start: %s", error)


def freeze_after_warm_up() -> None:
    """Load what the pages use on first view, then take it all out of the collector's sight.

    A full collection (Python's own, or one a library asks for) walks every tracked object:
    with pandas and Altair loaded, well over 100,000 long-lived ones, holding the GIL long
    enough to stall every session and the API. Frozen objects are never walked, so
    collections only see what is new; a thread freezes again now and then.
    """
    # Altair's classes and, once a chart is validated, its Vega-Lite schema.
    from dashboard import charts

    charts.probabilities_chart([0.1] * 10, predicted=0).to_dict()
    _freeze_heap()
    threading.Thread(target=_refreeze_heap_forever, name="mnist-heap", daemon=True).start()


def shut_down() -> None:
    """Stop the store's writer and the driver cleanly; what is still queued stays in the outbox for the next start."""
    store_resource().close()


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
