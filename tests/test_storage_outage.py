"""Never lose a prediction: with the node stopped, predictions go to the outbox and the caller still succeeds;
once the node is back they are all in Cassandra, exactly once."""

from __future__ import annotations

import dataclasses
import datetime
import time

import pytest

from harness.stored_rows import day_slots
from mnist_core.storage import PredictionRecord, PredictionStore, StorageUnavailable, StoreOutcome

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]

UTC = datetime.timezone.utc
FLUSH_WAIT_SECONDS = 120


def _stored_ids(raw_session, keyspace: str, day: datetime.date) -> list:
    return [row.id for row in raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot WHERE slot_start IN %s", (day_slots(day),))]


def test_predictions_made_during_an_outage_arrive_exactly_once(settings_for, make_record, node_control, plain_cluster):
    # The app's store: connected before the outage, with its background flusher running.
    store = PredictionStore(settings_for(), background=True)
    store.connect()
    # Predictions made in the outage, stamped on a day no other test uses.
    outage_day = datetime.datetime(2010, 7, 14, 23, 50, tzinfo=UTC)
    try:
        node_control.stop()

        started = time.monotonic()
        outcomes = [
            store.store(make_record(digit=index % 10, created_at=outage_day + datetime.timedelta(seconds=index * 7)))
            for index in range(100)
        ]
        elapsed = time.monotonic() - started

        # The caller got its answer every time, quickly, and nothing is in Cassandra yet. The first
        # answers may still say "accepted" (kept on disk) until the store notices the outage.
        assert set(outcomes) <= {StoreOutcome.ACCEPTED, StoreOutcome.QUEUED}
        assert elapsed < 30, f"100 queued predictions took {elapsed:.1f} s"
        deadline = time.monotonic() + 30
        while store.status().state != "degraded" and time.monotonic() < deadline:
            time.sleep(0.2)
        status = store.status()
        assert status.state == "degraded"
        assert status.pending == 100
        assert "100" in status.message
        # Once it has noticed, a new prediction is answered as queued.
        late_record = make_record(digit=0, created_at=outage_day + datetime.timedelta(seconds=701))
        assert store.store(late_record) is StoreOutcome.QUEUED
        assert store.status().pending == 101

        # A process that starts during the outage (with its own data directory: this one's is taken)
        # is degraded too, and its reads say why.
        late_settings = settings_for(MNIST_CASSANDRA_CONNECT_ATTEMPTS="1")
        late_settings = dataclasses.replace(late_settings, data_dir=late_settings.data_dir.with_name("late-data"))
        late_store = PredictionStore(late_settings, background=False)
        try:
            assert late_store.status().state == "degraded"
            with pytest.raises(StorageUnavailable, match="scripts/cassandra start"):
                late_store.latest(5)
        finally:
            late_store.close()

        node_control.start()

        deadline = time.monotonic() + FLUSH_WAIT_SECONDS
        while store.status().pending and time.monotonic() < deadline:
            time.sleep(0.5)
        assert store.status().pending == 0, "the background flusher did not empty the outbox"
        assert store.status().connected

        keyspace = store.settings.cassandra_keyspace
        # Checked through a connection made after the outage, independent of the store under test.
        checking_cluster = plain_cluster()
        try:
            checking_session = checking_cluster.connect()
            stored = _stored_ids(checking_session, keyspace, outage_day.date()) + _stored_ids(
                checking_session, keyspace, outage_day.date() + datetime.timedelta(days=1)
            )
        finally:
            checking_cluster.shutdown()
        assert len(stored) == 101
        assert len(set(stored)) == 101
        counts = store.history_counts(
            start=outage_day.date(), end=outage_day.date() + datetime.timedelta(days=1), timezone="UTC"
        )
        assert counts.totals_per_digit == (11,) + (10,) * 9
    finally:
        store.close()


def test_replaying_the_same_outbox_entries_again_adds_nothing(settings_for, make_record, raw_session):
    """An entry replayed twice (a crash after writing, before removing it) is still stored once."""
    store = PredictionStore(settings_for(), background=False)
    try:
        store.connect()
        moment = datetime.datetime(2011, 1, 2, 3, 4, tzinfo=UTC)
        records = [make_record(digit=index % 10, created_at=moment) for index in range(20)]
        for _ in range(2):
            store.store_many(records)
            assert store.flush() == 20
        stored = _stored_ids(raw_session, store.settings.cassandra_keyspace, moment.date())
        assert sorted(stored) == sorted(record.id for record in records)
        counts = store.history_counts(start=moment.date(), end=moment.date(), timezone="UTC")
        assert counts.totals_per_digit == (2,) * 10
    finally:
        store.close()


def test_outbox_survives_the_process(settings_for, make_record):
    """Entries are on disk: a new store on the same data directory sees and replays them."""
    settings = settings_for()
    first = PredictionStore(settings, background=False)
    record = make_record(digit=1)
    first.store(record)
    first.close()  # before the writer ever ran

    second = PredictionStore(settings, background=False)
    try:
        assert second.status().pending == 1
        assert second.flush() == 1
        assert record.id in {stored.id for stored in second.latest(200)}
        assert isinstance(record, PredictionRecord)
    finally:
        second.close()
