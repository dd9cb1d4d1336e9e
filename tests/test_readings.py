"""The one path from a picture to a stored prediction, and how its answer is worded, against the real node.

The History figures are tests/test_history_figures.py.

The recognizer is the shipped model; pictures are MNIST test digits redrawn as canvas strokes
(evaluation/drawings.py), so these are the same inputs the Draw page gets.
"""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.drawings import CANVAS_SIDE, redraw
from harness.stored_rows import slot_of
from mnist_core import answer_wording, readings
from mnist_core.storage import StoreOutcome

pytestmark = pytest.mark.cassandra


@pytest.fixture(scope="module")
def drawn(mnist):
    """A few MNIST test digits redrawn on a 280x280 canvas, with their labels."""
    random = np.random.default_rng(4)
    return [(redraw(mnist.test_images[index], "fill", random), int(mnist.test_labels[index])) for index in range(6)]


def two_digit_canvas(left, right):
    """Two canvas drawings squeezed side by side on one wide canvas: a number."""
    canvas = np.zeros((CANVAS_SIDE, CANVAS_SIDE * 2, 4), dtype=np.uint8)
    canvas[:, :CANVAS_SIDE] = left
    canvas[:, CANVAS_SIDE:] = right
    return canvas


def test_a_drawing_is_read_and_stored_with_what_the_model_saw(drawn, recognizer, store, raw_session):
    picture, label = drawn[0]
    result = readings.predict_and_store(picture, source="canvas", recognizer=recognizer, store=store)

    assert result.outcome is StoreOutcome.ACCEPTED
    store.flush()
    assert result.reading.digit == label
    row = raw_session.execute(
        f"SELECT digit, source, model_version, model_input, confidence FROM {store.settings.cassandra_keyspace}.predictions_by_slot "
        "WHERE slot_start = %s AND created_at = %s AND id = %s",
        (slot_of(result.record.created_at), result.record.created_at, result.record.id),
    ).one()
    assert row is not None, "the prediction is not in Cassandra"
    assert (row.digit, row.source, row.model_version) == (label, "canvas", recognizer.model_version)
    assert bytes(row.model_input) == result.reading.model_input_bytes(0)
    assert row.confidence == pytest.approx(result.reading.confidence)


def test_a_blank_canvas_stores_nothing(recognizer, store):
    before = len(store.latest(100))
    result = readings.predict_and_store(
        np.zeros((CANVAS_SIDE, CANVAS_SIDE, 4), dtype=np.uint8), source="canvas", recognizer=recognizer, store=store
    )
    assert result.reading.is_blank
    assert result.record is None and result.outcome is None
    assert len(store.latest(100)) == before


def test_an_unknown_source_is_refused_before_anything_is_stored(drawn, recognizer, store):
    before = len(store.latest(100))
    with pytest.raises(ValueError, match="source must be one of"):
        readings.predict_and_store(drawn[0][0], source="fax", recognizer=recognizer, store=store)
    assert len(store.latest(100)) == before


def test_a_number_is_stored_with_all_its_digits(drawn, recognizer, store):
    (left, left_label), (right, right_label) = drawn[1], drawn[2]
    result = readings.predict_and_store(two_digit_canvas(left, right), source="upload", recognizer=recognizer, store=store)
    assert result.reading.number == f"{left_label}{right_label}"
    stored = next(record for record in store.latest(50) if record.id == result.record.id)
    assert stored.number == result.reading.number
    assert stored.digit == left_label
    assert answer_wording.answer_text(result.reading).startswith(result.reading.number)


def test_answer_text_and_not_sure_state(drawn, recognizer):
    reading = recognizer.read(drawn[3][0])
    assert answer_wording.answer_text(reading).startswith(str(reading.digit))
    assert f"{reading.overall_confidence:.0%}" in answer_wording.answer_text(reading)
    assert answer_wording.is_unsure(reading, threshold=1.01)
    assert not answer_wording.is_unsure(reading, threshold=0.0)
    with pytest.raises(ValueError):
        answer_wording.answer_text(recognizer.read(np.zeros((50, 50, 4), dtype=np.uint8)))
