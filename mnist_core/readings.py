"""One path from a picture to a stored prediction.

The Draw page, the upload box and the REST API all call :func:`predict_and_store`, so every
input goes through the same preprocessing, the same model and the same record; the upload
limits live here because every way in refuses the same pictures. What the History page and
``/api/stats`` show from the stored predictions is :mod:`mnist_core.history_figures`; how the
Draw page words an answer is :mod:`mnist_core.answer_wording`.
"""

from __future__ import annotations

import typing

from mnist_core.inference import Reading, Recognizer
from mnist_core.storage import PredictionRecord, PredictionStore, StoreOutcome
from mnist_core.storage.records import SOURCES

# Uploads and API bodies above this size are refused before decoding (matches server.maxUploadSize = 2 MB).
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
ACCEPTED_IMAGE_TYPES = ("png", "jpg", "jpeg")


class StoredReading(typing.NamedTuple):
    """What one picture gave: the reading, and for a non-blank picture the record and where it went."""

    reading: Reading
    record: PredictionRecord | None
    outcome: StoreOutcome | None


def predict_and_store(image, *, source: str, recognizer: Recognizer, store: PredictionStore,
                      strokes=None) -> StoredReading:
    """Read a picture and store the prediction; a blank picture or one that is not a digit
    is answered and nothing is stored.

    ``image`` is anything :meth:`Recognizer.read` takes (canvas RGBA array, bytes, PIL image,
    path); ``strokes``, the canvas's pen paths in drawing order, help tell overlapping digits
    apart. Raises ImageDecodeError (a ValueError with a sentence) for unreadable images and
    ValueError for an unknown source; storage outages never raise (the record is queued).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}.")
    reading = recognizer.read(image, strokes=strokes)
    return store_reading(reading, source=source, model_version=recognizer.model_version, store=store)


def store_reading(reading: Reading, *, source: str, model_version: str, store: PredictionStore) -> StoredReading:
    """Store a reading made earlier (the Draw page shows an answer before it stores it); a
    reading without digits is stored as nothing. Storage outages never raise."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}.")
    if not reading.has_digits:
        return StoredReading(reading=reading, record=None, outcome=None)
    record = record_for_reading(reading, source=source, model_version=model_version)
    return StoredReading(reading=reading, record=record, outcome=store.store(record))


def record_for_reading(reading: Reading, *, source: str, model_version: str) -> PredictionRecord:
    """The record stored for a reading with digits: its first digit's probabilities and 28x28 input, and the number."""
    if not reading.has_digits:
        raise ValueError("A reading without digits has nothing to store.")
    return PredictionRecord.new(
        digit=reading.digit,
        confidence=reading.confidence,
        probabilities=reading.probabilities,
        model_input=reading.model_input_bytes(0),
        source=source,
        model_version=model_version,
        latency_ms=reading.latency_ms,
        number=reading.number,
    )
