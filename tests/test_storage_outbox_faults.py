"""The outbox against the real node under the faults that used to jam it or send writes to the wrong place.

A backlog of 100,000 entries replayed while new predictions keep arriving, an entry that can
never be written, entries pending for one keyspace while the settings name another, a
correction sent before its prediction is visible, and a keyspace whose replication drifted
from the settings. Speed figures for the backlog live in ``bench/storage.py``; here only what
must hold: every entry lands exactly once and nothing waits behind a bad one.
"""

from __future__ import annotations

import dataclasses
import datetime
import time

import pytest

from harness.stored_rows import day_slots
from mnist_core.storage import PredictionStore, outbox
from mnist_core.storage.connection import target_name

pytestmark = pytest.mark.cassandra

UTC = datetime.timezone.utc


def _ids_on(raw_session, keyspace: str, days) -> list:
    return [row.id for day in days for row in raw_session.execute(
        f"SELECT id FROM {keyspace}.predictions_by_slot WHERE slot_start IN %s", (day_slots(day),))]


def _with_data_dir(settings, name: str):
    return dataclasses.replace(settings, data_dir=settings.data_dir.with_name(name))


def test_entries_pending_for_one_keyspace_wait_for_it_and_never_land_in_another(settings_for, make_record,
                                                                                raw_session, module_keyspace):
    first = settings_for()
    moment = datetime.datetime(2013, 5, 6, 7, 8, tzinfo=UTC)
    records = [make_record(digit=digit, created_at=moment) for digit in range(3)]
    queued = PredictionStore(first, background=False)
    queued.store_many(records)
    queued.close()  # stopped before its writer ran: three entries wait for keyspace one

    other_keyspace = f"{module_keyspace}_b"
    switched = PredictionStore(settings_for(MNIST_CASSANDRA_KEYSPACE=other_keyspace), background=False)
    try:
        switched.connect()
        assert switched.flush() == 0
        status = switched.status()
        assert status.pending == 0 and status.other_target_pending == 3
        assert "another Cassandra target" in status.message
        counts = switched.history_counts(start=moment.date(), end=moment.date(), timezone="UTC")
        assert counts.totals_per_digit == (0,) * 10
        assert _ids_on(raw_session, other_keyspace, [moment.date()]) == []
    finally:
        switched.close()
        raw_session.execute(f"DROP KEYSPACE IF EXISTS {other_keyspace}", timeout=60)

    back = PredictionStore(first, background=False)
    try:
        back.connect()
        assert back.flush() == 3
        assert sorted(_ids_on(raw_session, module_keyspace, [moment.date()])) == sorted(record.id for record in records)
        assert back.status().other_target_pending == 0
    finally:
        back.close()


def test_an_entry_that_can_never_be_written_is_set_aside_and_nothing_waits_behind_it(settings_for, make_record,
                                                                                     raw_session, monkeypatch):
    settings = settings_for()
    # What an older version (or a damaged file) may leave: an entry this version cannot read.
    earlier = outbox.Outbox(settings.outbox_path, target=target_name(settings))
    earlier.add(outbox.PREDICTION, {"id": "not-a-uuid", "digit": 3, "created_at": "2015-01-01T00:00:00+00:00"})
    earlier.close()
    monkeypatch.setattr(outbox, "FIRST_RETRY_DELAY_SECONDS", 0.0)
    store = PredictionStore(settings, background=False)
    try:
        store.connect()
        moment = datetime.datetime(2015, 1, 1, 0, 5, tzinfo=UTC)
        good = [make_record(digit=digit, created_at=moment) for digit in range(4)]
        store.store_many(good)
        store.flush()  # the good ones go out on the first round
        assert sorted(_ids_on(raw_session, settings.cassandra_keyspace, [moment.date()])) == sorted(
            record.id for record in good)
        for _ in range(outbox.MAX_ATTEMPTS):
            store.flush()
        status = store.status()
        assert status.pending == 0 and status.dead_letters == 1, status
        assert "dead_letter" in status.message
        # Reads keep working; the bad entry is neither counted nor listed.
        counts = store.history_counts(start=moment.date(), end=moment.date(), timezone="UTC")
        assert counts.totals_per_digit == (1, 1, 1, 1) + (0,) * 6
        assert {record.id for record in store.latest(10, max_days=10_000)} >= {record.id for record in good}
    finally:
        store.close()


def test_a_keyspace_replicated_otherwise_than_the_settings_ask_is_reported(store, settings_for) -> None:
    assert store.status().warnings == ()  # made by these settings: one replica, as asked
    drifted = PredictionStore(_with_data_dir(settings_for(MNIST_CASSANDRA_REPLICATION="3"), "drifted"),
                              background=False)
    try:
        drifted.connect()
        status = drifted.status()
        assert len(status.warnings) == 1
        assert "'replication_factor': 1" in status.warnings[0] and "'replication_factor': 3" in status.warnings[0]
        assert status.warnings[0] in status.message
    finally:
        drifted.close()


@pytest.mark.slow
def test_a_backlog_of_100000_entries_drains_under_load_and_lands_exactly_once(settings_for, make_record,
                                                                              raw_session):
    settings = settings_for()
    start = datetime.datetime(2016, 2, 28, 22, 0, tzinfo=UTC)
    backlog = [make_record(digit=index % 10, created_at=start + datetime.timedelta(seconds=index * 1.7))
               for index in range(100_000)]
    left_behind = PredictionStore(settings, background=False)
    left_behind.store_many(backlog)  # a long outage's worth, on disk
    left_behind.close()

    app_store = PredictionStore(settings, background=True)
    arrivals = []
    try:
        assert app_store.status().pending == 100_000
        app_store.connect()
        deadline = time.monotonic() + 600
        while app_store.status().pending > 50 and time.monotonic() < deadline:
            record = make_record(digit=7, created_at=start - datetime.timedelta(hours=1, seconds=len(arrivals)))
            app_store.store(record)
            arrivals.append(record)
            time.sleep(0.01)
        assert app_store.status().pending <= 50, "the backlog did not drain"
        app_store.flush(timeout_seconds=60)
        assert app_store.status().pending == 0
        assert len(arrivals) > 10, "the backlog drained before any load arrived"
        last_day = (start + datetime.timedelta(seconds=100_000 * 1.7)).date()
        days = [start.date() - datetime.timedelta(days=1) + datetime.timedelta(days=offset)
                for offset in range((last_day - start.date()).days + 2)]
        stored = _ids_on(raw_session, settings.cassandra_keyspace, days)
        wanted = {record.id for record in backlog + arrivals}
        assert len(stored) == len(set(stored)) == len(wanted) and set(stored) == wanted
        counts = app_store.history_counts(start=days[0], end=days[-1], timezone="UTC")
        assert counts.totals_per_digit == tuple(10_000 + (len(arrivals) if digit == 7 else 0) for digit in range(10))
    finally:
        app_store.close()
