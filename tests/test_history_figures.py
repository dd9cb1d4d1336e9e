"""The History figures (what the History page and /api/stats show) against the real node.

Predictions are written through the app's store (``make_record``), so the figures come from the
same rollups and range reads the History page uses.
"""

from __future__ import annotations

import datetime

import pytest

from mnist_core import history_figures
from mnist_core.storage.records import time_uuid

pytestmark = pytest.mark.cassandra


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
    summary = history_figures.history_summary(store, start=today - datetime.timedelta(days=6), end=today, timezone="UTC")

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

    in_utc, _ = history_figures.records_in_range(store, start=yesterday, end=yesterday, timezone="UTC")
    in_paris, _ = history_figures.records_in_range(store, start=yesterday, end=yesterday, timezone="Europe/Paris")
    assert record.id in {item.id for item in in_utc}
    assert record.id not in {item.id for item in in_paris}


def test_records_in_range_says_when_it_was_cut(make_record, store):
    now = datetime.datetime.now(datetime.timezone.utc)
    for offset in range(5):
        store.store(make_record(digit=offset, created_at=now - datetime.timedelta(seconds=offset + 1)))
    records, truncated = history_figures.records_in_range(store, start=now.date(), end=now.date(), timezone="UTC", limit=3)
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

    records, truncated = history_figures.records_in_range(store, start=past_day, end=past_day, timezone="UTC")
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
        history_figures.records_in_range(store, start=today, end=today - datetime.timedelta(days=1), timezone="UTC")
    with pytest.raises(ValueError, match="time zone"):
        history_figures.records_in_range(store, start=today, end=today, timezone="Mars/Olympus")
