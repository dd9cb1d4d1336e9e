"""The digit a person says they drew: one way in for the Draw page and `POST /api/feedback`.

Feedback is what turns stored readings into a labelled data set (see mnist_core.dataset_export),
so both ways in check it alike: the label is a digit, the id names a prediction that exists (or
may, while Cassandra cannot say), and the correction goes through the outbox like every write,
so a fault of Cassandra never loses it. Sending a label again replaces the earlier one.
"""

from __future__ import annotations

import uuid

from mnist_core.storage import PredictionStore, StoreOutcome
from mnist_core.storage.records import uuid_time


class FeedbackRefused(ValueError):
    """Feedback that cannot be taken as sent (a malformed id or label); nothing was stored."""


class UnknownPrediction(LookupError):
    """No prediction has this id (checked in the outbox and in Cassandra); nothing was stored."""


def prediction_id_from(value) -> uuid.UUID:
    """The prediction id in a request (a UUID or its text), or FeedbackRefused with a sentence."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise FeedbackRefused("id must be the prediction's id as text (a UUID, as /api/predict answers it).")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise FeedbackRefused(f"id {value[:80]!r} is not a prediction id (a UUID).") from None


def true_label_from(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise FeedbackRefused(f"true_label must be a whole number from 0 to 9; got {value!r}.")
    return value


def record_feedback(store: PredictionStore, prediction_id, true_label) -> StoreOutcome:
    """Queue the true label of a stored (or still queued) prediction; the latest label wins.

    Raises FeedbackRefused for a malformed id or label and UnknownPrediction when no prediction
    has the id. While Cassandra cannot say whether it exists, the label is queued: the writer
    tries it again while the prediction is not visible, and after its last try sets it aside
    with the dead letters that the storage status reports.
    """
    identifier = prediction_id_from(prediction_id)
    label = true_label_from(true_label)
    try:
        uuid_time(identifier)
    except (ValueError, OverflowError):
        raise UnknownPrediction(f"No prediction has the id {identifier}: prediction ids are time-based UUIDs.") from None
    if store.prediction_known(identifier) is False:
        raise UnknownPrediction(f"No prediction has the id {identifier}.")
    return store.record_correction(identifier, label)
