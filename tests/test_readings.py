"""The one path from a picture to a stored prediction, and the History figures, against the real node.

The recognizer is the shipped model; pictures are MNIST test digits redrawn as canvas strokes
(train/drawings.py), so these are the same inputs the Draw page gets.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from mnist_core import readings
from mnist_core.storage import StoreOutcome
from mnist_core.storage.records import time_uuid
from train.drawings import CANVAS_SIDE, redraw
from tests.stored_rows import slot_of

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
    assert readings.answer_text(result.reading).startswith(result.reading.number)


def test_answer_text_and_not_sure_state(drawn, recognizer):
    reading = recognizer.read(drawn[3][0])
    assert readings.answer_text(reading).startswith(str(reading.digit))
    assert f"{reading.overall_confidence:.0%}" in readings.answer_text(reading)
    assert readings.is_unsure(reading, threshold=1.01)
    assert not readings.is_unsure(reading, threshold=0.0)
    with pytest.raises(ValueError):
        readings.answer_text(recognizer.read(np.zeros((50, 50, 4), dtype=np.uint8)))


def test_history_summary_counts_today_confidence_and_feedback(make_record, store):
    now = datetime.datetime.now(datetime.timezone.utc)
    three_days_ago = now - datetime.timedelta(days=3)
    outside_range = now - datetime.timedelta(days=20)
    records = [
        make_record(digit=4, confidence=0.8, created_at=now - datetime.timedelta(seconds=5)),
        make_record(digit=4, confidence=0.6, created_at=now - datetime.timedelta(seconds=4)),
        make_record(digit=9, confidence=0.4, created_at=three_days_ago),
        make_record(digit=1, confidence=0.9, created_at=outside_range),
    ]
    for record in records:
        store.store(record)
    store.record_correction(records[0].id, 4)  # right
    store.record_correction(records[2].id, 7)  # wrong: it was a 7
    store.flush()

    today = now.date()
    summary = readings.history_summary(store, start=today - datetime.timedelta(days=6), end=today, timezone="UTC")

    ids = {record.id for record in summary.records}
    assert {records[0].id, records[1].id, records[2].id} <= ids
    assert records[3].id not in ids
    assert summary.counts.totals_per_digit[4] >= 2 and summary.counts.totals_per_digit[9] >= 1
    assert summary.today_count >= 2
    assert summary.accuracy.corrections >= 2
    assert summary.accuracy.confusion[7][9] >= 1
    assert summary.accuracy.confusion[4][4] >= 1
    expected_mean = sum(record.confidence for record in summary.records) / len(summary.records)
    assert summary.mean_confidence == pytest.approx(expected_mean)
    assert not summary.is_empty


def test_records_in_range_uses_the_local_day(make_record, store):
    """23:30 UTC is already the next day in Paris: the range follows the chosen zone."""
    yesterday = datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)
    late_evening = datetime.datetime.combine(yesterday, datetime.time(23, 30), tzinfo=datetime.timezone.utc)
    record = make_record(digit=2, created_at=late_evening, identifier=time_uuid(late_evening))
    store.store(record)

    in_utc, _ = readings.records_in_range(store, start=yesterday, end=yesterday, timezone="UTC")
    in_paris, _ = readings.records_in_range(store, start=yesterday, end=yesterday, timezone="Europe/Paris")
    assert record.id in {item.id for item in in_utc}
    assert record.id not in {item.id for item in in_paris}


def test_records_in_range_says_when_it_was_cut(make_record, store):
    now = datetime.datetime.now(datetime.timezone.utc)
    for offset in range(5):
        store.store(make_record(digit=offset, created_at=now - datetime.timedelta(seconds=offset + 1)))
    records, truncated = readings.records_in_range(store, start=now.date(), end=now.date(), timezone="UTC", limit=3)
    assert len(records) == 3 and truncated
    assert [record.created_at for record in records] == sorted((record.created_at for record in records), reverse=True)


def test_a_past_range_shows_its_own_records_under_6000_newer_ones(make_record, store):
    """Once the newest 5,001 rows counting back from today, filtered: a past range showed none."""
    now = datetime.datetime.now(datetime.timezone.utc)
    past_day = (now - datetime.timedelta(days=3)).date()
    noon = datetime.datetime.combine(past_day, datetime.time(12), tzinfo=datetime.timezone.utc)
    past = [make_record(digit=7, created_at=noon + datetime.timedelta(minutes=minute),
                        identifier=time_uuid(noon + datetime.timedelta(minutes=minute)))
            for minute in range(4)]
    store.store_many(past)
    newer = [make_record(digit=1, created_at=now - datetime.timedelta(milliseconds=10 * index))
             for index in range(6000)]
    store.store_many(newer)

    records, truncated = readings.records_in_range(store, start=past_day, end=past_day, timezone="UTC")
    identifiers = [record.id for record in records]
    past_ids = {record.id for record in past}
    # Other tests of this module may have written on that day too; none of the newer ones is here.
    assert [identifier for identifier in identifiers if identifier in past_ids] == [
        record.id for record in reversed(past)]
    assert not set(identifiers) & {record.id for record in newer}
    assert not truncated
    assert all(record.created_at.date() == past_day for record in records)


def test_a_reversed_range_or_unknown_zone_is_a_value_error(store):
    today = datetime.date.today()
    with pytest.raises(ValueError, match="before it starts"):
        readings.records_in_range(store, start=today, end=today - datetime.timedelta(days=1), timezone="UTC")
    with pytest.raises(ValueError, match="time zone"):
        readings.records_in_range(store, start=today, end=today, timezone="Mars/Olympus")
