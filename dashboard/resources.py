"""The model and the storage, loaded once per server process and shared by every session and the API.

``st.cache_resource`` keeps one recognizer and one store per process; the REST API calls the
same functions, so a request and a browser session use the very same objects.
"""

from __future__ import annotations

import logging

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


def shut_down() -> None:
    """Stop the store's writer and the driver cleanly; what is still queued stays in the outbox for the next start."""
    store_resource().close()
