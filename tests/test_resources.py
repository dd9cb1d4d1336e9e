"""The app's process-wide resources: what they change in the libraries they host."""

from __future__ import annotations

import gc

from dashboard import resources


def test_the_keras_reset_after_each_rerun_keeps_its_reset_but_runs_no_full_collection():
    import keras

    resources.skip_collection_in_keras_clear_session()
    resources.skip_collection_in_keras_clear_session()  # a second call must not wrap the wrapper
    full_collections = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            full_collections.append(info)

    gc.callbacks.append(watch)
    gc.disable()  # only a collection the call itself asks for may show up
    try:
        keras.backend.get_uid("probe")
        before_reset = keras.backend.get_uid("probe")
        keras.backend.clear_session()  # what Streamlit calls after every script run
        after_reset = keras.backend.get_uid("probe")
        gc.collect()  # the watch itself works
    finally:
        gc.enable()
        gc.callbacks.remove(watch)
    assert before_reset >= 2 and after_reset == 1, "Keras' global state must still be reset"
    assert len(full_collections) == 1, "clear_session ran a full garbage collection"
