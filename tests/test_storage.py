"""Storage against the real node: every field survives, nothing is duplicated or lost, counts are exact."""

from __future__ import annotations

import collections
import datetime
import time
import uuid
import zoneinfo

import pytest

from harness.stored_rows import day_slots
from mnist_core.storage import PredictionStore, StoreOutcome

pytestmark = pytest.mark.cassandra

UTC = datetime.timezone.utc


def _rows_in_day(raw_session, keyspace: str, day: datetime.date) -> list:
    return list(raw_session.execute(f"SELECT id, digit FROM {keyspace}.predictions_by_slot WHERE slot_start IN %s", (day_slots(day),)))


def test_every_field_round_trips(store, make_record) -> None:
    with_everything = make_record(digit=4, number="42", true_label=2, source="api", latency_ms=12.5,
                                  confidence=0.5, probabilities=(0.5, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.1))
    with_nothing_optional = make_record(digit=9)
    assert store.store(with_everything) is StoreOutcome.ACCEPTED
    assert store.store(with_nothing_optional) is StoreOutcome.ACCEPTED

    latest = {record.id: record for record in store.latest(50)}

    assert latest[with_everything.id] == with_everything
    assert latest[with_nothing_optional.id] == with_nothing_optional
    assert latest[with_everything.id].model_input == with_everything.model_input
    assert latest[with_everything.id].probabilities == with_everything.probabilities


def test_latest_is_newest_first_and_limited(store, make_record) -> None:
    base = datetime.datetime.now(UTC) + datetime.timedelta(minutes=5)
    newest = [make_record(digit=index, created_at=base + datetime.timedelta(seconds=index)) for index in range(5)]
    for record in newest:
        store.store(record)
    latest = store.latest(3)
    assert [record.id for record in latest] == [record.id for record in reversed(newest)][:3]


def test_a_thousand_predictions_in_the_same_millisecond_are_all_kept(store, make_record, raw_session) -> None:
    same_moment = datetime.datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    records = [make_record(digit=index % 10, created_at=same_moment) for index in range(1000)]
    assert len({record.id for record in records}) == 1000

    assert store.store_many(records) is StoreOutcome.ACCEPTED
    store.flush()

    stored = _rows_in_day(raw_session, store.settings.cassandra_keyspace, same_moment.date())
    assert len(stored) == 1000
    assert {row.id for row in stored} == {record.id for record in records}
    counts = store.history_counts(start=same_moment.date(), end=same_moment.date(), timezone="UTC")
    assert counts.totals_per_digit == (100,) * 10


def test_the_same_prediction_written_twice_is_stored_once(store, make_record, raw_session) -> None:
    moment = datetime.datetime(2002, 6, 7, 8, 9, 10, tzinfo=UTC)
    record = make_record(digit=6, created_at=moment)
    store.store(record)
    store.store(record)
    store.store_many([record, record])
    store.flush()

    stored = _rows_in_day(raw_session, store.settings.cassandra_keyspace, moment.date())
    assert [row.id for row in stored] == [record.id]
    counts = store.history_counts(start=moment.date(), end=moment.date(), timezone="UTC")
    assert counts.totals_per_digit == tuple(1 if digit == 6 else 0 for digit in range(10))


def _expected_counts(created_ats_and_digits, zone):
    daily = collections.defaultdict(lambda: [0] * 10)
    hourly = collections.defaultdict(lambda: [0] * 10)
    for created_at, digit in created_ats_and_digits:
        local = created_at.astimezone(zone)
        daily[local.date()][digit] += 1
        hourly[local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)][digit] += 1
    return daily, hourly


@pytest.mark.parametrize(
    ("zone_name", "first_day", "last_day"),
    [
        # +05:30: local midnight falls at 18:30 UTC, in the middle of a UTC hour.
        ("Asia/Kolkata", datetime.date(2003, 1, 30), datetime.date(2003, 2, 2)),
        # 2003-10-26 ends daylight saving time in New York: that local day has 25 hours.
        ("America/New_York", datetime.date(2003, 10, 25), datetime.date(2003, 10, 27)),
    ],
)
def test_counts_per_digit_per_day_and_hour_are_exact_in_a_non_utc_zone(
    store, make_record, zone_name: str, first_day: datetime.date, last_day: datetime.date
) -> None:
    zone = zoneinfo.ZoneInfo(zone_name)
    range_start = datetime.datetime.combine(first_day, datetime.time.min, tzinfo=zone).astimezone(UTC)
    range_end = datetime.datetime.combine(last_day + datetime.timedelta(days=1), datetime.time.min,
                                          tzinfo=zone).astimezone(UTC)
    # Predictions every 7 minutes 13 seconds from an hour before the range to an hour after it,
    # plus some on each side of every local and UTC midnight: the boundaries are where bugs live.
    moments = []
    moment = range_start - datetime.timedelta(hours=1)
    while moment < range_end + datetime.timedelta(hours=1):
        moments.append(moment)
        moment += datetime.timedelta(minutes=7, seconds=13)
    day = first_day
    while day <= last_day + datetime.timedelta(days=1):
        for midnight in (datetime.datetime.combine(day, datetime.time.min, tzinfo=zone),
                         datetime.datetime.combine(day, datetime.time.min, tzinfo=UTC)):
            moments += [midnight - datetime.timedelta(milliseconds=1), midnight, midnight + datetime.timedelta(milliseconds=1)]
        day += datetime.timedelta(days=1)
    records = [make_record(digit=(index * 7 + index // 3) % 10, created_at=moment) for index, moment in enumerate(moments)]
    for record in records[:50]:
        store.store(record)
    store.store_many(records[50:])
    store.flush()

    counts = store.history_counts(start=first_day, end=last_day, timezone=zone_name)

    in_range = [(record.created_at, record.digit) for record in records if range_start <= record.created_at < range_end]
    expected_daily, expected_hourly = _expected_counts(in_range, zone)
    assert [period.start.date() for period in counts.daily] == [
        first_day + datetime.timedelta(days=offset) for offset in range((last_day - first_day).days + 1)
    ]
    assert {period.start.date(): list(period.counts) for period in counts.daily} == dict(expected_daily)
    assert {period.start.astimezone(UTC): list(period.counts) for period in counts.hourly if period.total} == dict(
        expected_hourly
    )
    hours_in_range = int((range_end - range_start).total_seconds() // 3600)
    assert len(counts.hourly) == hours_in_range
    assert sum(period.total for period in counts.daily) == len(in_range)
    assert all(period.start.tzinfo is not None and period.start.utcoffset() == period.start.astimezone(zone).utcoffset()
               for period in counts.hourly)


def test_counts_follow_the_display_time_zone_setting(settings_for, make_record) -> None:
    from mnist_core.storage import PredictionStore

    tokyo_store = PredictionStore(settings_for(MNIST_DISPLAY_TIMEZONE="Asia/Tokyo"), background=False)
    try:
        # 2004-05-05 20:00 UTC is already 2004-05-06 in Tokyo.
        tokyo_store.store(make_record(digit=1, created_at=datetime.datetime(2004, 5, 5, 20, 0, tzinfo=UTC)))
        counts = tokyo_store.history_counts(start=datetime.date(2004, 5, 5), end=datetime.date(2004, 5, 6))
        assert counts.timezone == "Asia/Tokyo"
        assert [period.total for period in counts.daily] == [0, 1]
    finally:
        tokyo_store.close()


def test_corrections_feed_accuracy_and_the_confusion_matrix(store, make_record) -> None:
    moment = datetime.datetime(2005, 3, 31, 23, 0, tzinfo=UTC)
    predicted_three = make_record(digit=3, created_at=moment)
    predicted_eight = make_record(digit=8, created_at=moment + datetime.timedelta(hours=2))  # next month
    predicted_one_uncorrected = make_record(digit=1, created_at=moment)
    labelled_at_birth = make_record(digit=5, true_label=5, created_at=moment)
    for record in (predicted_three, predicted_eight, predicted_one_uncorrected, labelled_at_birth):
        store.store(record)

    assert store.record_correction(predicted_three.id, 3) is StoreOutcome.ACCEPTED
    assert store.record_correction(predicted_eight.id, 0) is StoreOutcome.ACCEPTED
    # A second correction replaces the first one instead of adding to it.
    assert store.record_correction(predicted_eight.id, 9) is StoreOutcome.ACCEPTED
    store.flush()  # accuracy counts corrections once sent (the app's writer sends them within milliseconds)

    report = store.accuracy(start=datetime.date(2005, 3, 1), end=datetime.date(2005, 4, 30), timezone="UTC")
    assert report.corrections == 3
    assert report.correct == 2
    assert report.accuracy == pytest.approx(2 / 3)
    assert report.confusion[3][3] == 1
    assert report.confusion[5][5] == 1
    assert report.confusion[9][8] == 1
    assert report.confusion[0][8] == 0
    assert sum(map(sum, report.confusion)) == 3
    march_only = store.accuracy(start=datetime.date(2005, 3, 1), end=datetime.date(2005, 3, 31), timezone="UTC")
    assert march_only.corrections == 2


def test_correction_is_visible_on_the_prediction_and_survives_a_replay(store, make_record) -> None:
    record = make_record(digit=2)
    store.store(record)
    store.record_correction(record.id, 7)
    # Replaying the original prediction (as the outbox may) must not erase the correction.
    store.store(record)
    store.flush()
    stored = {item.id: item for item in store.latest(100)}
    assert stored[record.id].true_label == 7


def test_a_correction_sent_before_its_prediction_is_visible_is_retried_not_dropped(store, make_record,
                                                                                  monkeypatch) -> None:
    monkeypatch.setattr(store._outbox, "first_retry_delay_seconds", 0.05)
    record = make_record(digit=2)
    store.record_correction(record.id, 8)  # its prediction is not in Cassandra yet
    store.flush()
    assert store.status().pending == 1, "the correction was dropped instead of kept for a retry"
    store.store(record)
    deadline = time.monotonic() + 10
    while store.status().pending and time.monotonic() < deadline:
        store.flush()
        time.sleep(0.05)
    assert store.status().pending == 0
    assert {item.id: item for item in store.latest(100)}[record.id].true_label == 8
    report = store.accuracy(start=record.created_at.date(), end=record.created_at.date(), timezone="UTC")
    assert report.confusion[8][2] == 1


def test_a_correction_of_an_unknown_prediction_ends_in_the_dead_letter_table_and_status_says_so(store) -> None:
    from mnist_core.storage import outbox

    store._outbox.first_retry_delay_seconds = 0.0
    store.record_correction(uuid.uuid1(), 3)
    for _ in range(outbox.MAX_ATTEMPTS):
        store.flush()
    status = store.status()
    assert status.pending == 0 and status.dead_letters == 1
    assert "dead_letter" in status.message
    with pytest.raises(ValueError, match="true_label"):
        store.record_correction(uuid.uuid1(), 12)


def test_status_is_connected_with_nothing_pending(store) -> None:
    status = store.status()
    assert status.connected
    assert status.pending == 0


def test_counts_written_by_another_process_are_refreshed_from_markers(settings_for, make_record, raw_session) -> None:
    """A process that dies before recounting leaves dirty markers; any other process repairs the counts."""
    from mnist_core.storage import PredictionStore

    # Yesterday (UTC): no other test in this module writes there, so its markers are all ours.
    now = datetime.datetime.now(UTC) - datetime.timedelta(days=1)
    writer = PredictionStore(settings_for(MNIST_CASSANDRA_REQUEST_TIMEOUT="0.2"), background=False)
    records = [make_record(digit=4, created_at=now) for _ in range(3)]
    # What the writer does first for a chunk; the process "crashes" before the recount that follows.
    writer.connect().write_predictions(records)
    writer.close()

    reader = PredictionStore(settings_for(), background=False)
    try:
        reader.connect()
        keyspace = reader.settings.cassandra_keyspace
        marked = raw_session.execute(
            f"SELECT slot_start FROM {keyspace}.count_slots_to_refresh_by_day WHERE day = %s", (now.date(),)
        ).all()
        assert marked, "the writer left no dirty marker"
        stale = reader.history_counts(start=now.date(), end=now.date(), timezone="UTC")
        assert stale.totals_per_digit == (0,) * 10, "the writer was not supposed to recount"
        time.sleep(0.5)  # past the markers' protection window (2 x the writer's 0.2 s request timeout)
        assert reader.refresh_marked_slots(days=2) >= 1
        counts = reader.history_counts(start=now.date(), end=now.date(), timezone="UTC")
        assert counts.totals_per_digit == tuple(3 if digit == 4 else 0 for digit in range(10))
        remaining = raw_session.execute(
            f"SELECT slot_start FROM {keyspace}.count_slots_to_refresh_by_day WHERE day = %s", (now.date(),)
        ).all()
        assert remaining == []
    finally:
        reader.close()


def test_the_app_store_keeps_writes_on_disk_first_and_sends_them_behind(settings_for, make_record, raw_session):
    """With the background writer (the app's store), store() only appends to the outbox; the writer sends
    every prediction once, and a read made right away already sees them."""
    app_store = PredictionStore(settings_for(), background=True)
    try:
        app_store.connect()
        moment = datetime.datetime(2012, 3, 4, 5, 6, tzinfo=UTC)
        records = [make_record(digit=index % 10, created_at=moment + datetime.timedelta(seconds=index))
                   for index in range(50)]
        outcomes = [app_store.store(record) for record in records]
        assert set(outcomes) == {StoreOutcome.ACCEPTED}

        # A read adds what is still pending, so it sees every write of this process.
        counts = app_store.history_counts(start=moment.date(), end=moment.date(), timezone="UTC")
        assert counts.totals_per_digit == (5,) * 10

        deadline = time.monotonic() + 30
        while app_store.status().pending and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app_store.status().pending == 0
        assert app_store.status().connected
        rows = raw_session.execute(
            f"SELECT id FROM {app_store.settings.cassandra_keyspace}.predictions_by_slot WHERE slot_start IN %s", (day_slots(moment.date()),)
        )
        assert sorted(row.id for row in rows) == sorted(record.id for record in records)
    finally:
        app_store.close()
