"""Bounded partitions, retention and the move from day partitions (schema 005), on the real node."""

from __future__ import annotations

import datetime
import shutil
import time

import pytest

from harness.stored_rows import slot_of
from mnist_core.settings import settings_from_mapping
from mnist_core.storage import migrations, partition_move, range_reads
from mnist_core.storage.retention import Retention
from tests.conftest import plain_cluster

pytestmark = pytest.mark.cassandra
UTC = datetime.timezone.utc


def test_a_prediction_lives_in_its_slot_partition_and_reads_walk_only_slots_that_exist(store, make_record,
                                                                                      raw_session) -> None:
    keyspace = store.settings.cassandra_keyspace
    base = datetime.datetime(2011, 5, 6, 0, 0, tzinfo=UTC)
    # Three slots over two days, with a gap of empty slots between them.
    moments = [base + datetime.timedelta(minutes=3), base + datetime.timedelta(minutes=14),
               base + datetime.timedelta(hours=5, minutes=20), base + datetime.timedelta(days=1, hours=2)]
    records = [make_record(digit=index, created_at=moment) for index, moment in enumerate(moments)]
    store.store_many(records)
    store.flush()
    for record in records:
        row = raw_session.execute(f"SELECT digit FROM {keyspace}.predictions_by_slot WHERE slot_start = %s "
                                  "AND created_at = %s AND id = %s",
                                  (slot_of(record.created_at), record.created_at, record.id)).one()
        assert row is not None and row.digit == record.digit
    indexed = {(row.day, row.slot_start.replace(tzinfo=UTC)) for row in raw_session.execute(
        f"SELECT day, slot_start FROM {keyspace}.prediction_slots_by_day")}
    assert {slot for _, slot in indexed} == {slot_of(moment) for moment in moments}
    newest_first = store.records_between(since=base, until=base + datetime.timedelta(days=2), limit=10)
    assert [record.id for record in newest_first] == [record.id for record in reversed(records)]
    assert [record.id for record in store.records_between(since=base, until=base + datetime.timedelta(days=2), limit=3)] == \
        [record.id for record in reversed(records)][:3]
    window = store.records_between(since=base + datetime.timedelta(minutes=10), until=base + datetime.timedelta(hours=6),
                           limit=10)
    assert [record.id for record in window] == [records[2].id, records[1].id]


def test_range_reads_sized_from_the_rollups_return_exactly_the_newest_readings(store, make_record, raw_session,
                                                                                monkeypatch) -> None:
    """Dense and sparse slots over three days, read in rounds the per-slot counts size, also when the
    counts are missing (a slot not recounted yet): always exactly the newest ``limit``, in order."""
    keyspace = store.settings.cassandra_keyspace
    base = datetime.datetime(2011, 7, 1, 0, 0, tzinfo=UTC)
    moments = [base + datetime.timedelta(days=2, hours=23, minutes=50, seconds=second) for second in range(0, 240, 2)]
    moments += [base + datetime.timedelta(days=day, minutes=15 * slot + 1) for day in range(3) for slot in range(0, 90, 3)]
    records = [make_record(digit=index % 10, created_at=moment) for index, moment in enumerate(moments)]
    store.store_many(records)
    store.flush()
    expected = sorted(records, key=lambda record: (record.created_at, record.id.int), reverse=True)
    since, until = base, base + datetime.timedelta(days=3)
    # Small requests and rounds, so a few hundred readings take several of each.
    monkeypatch.setattr(range_reads, "ROWS_PER_RANGE_REQUEST", 25)
    monkeypatch.setattr(range_reads, "SLOTS_PER_RANGE_REQUEST", 4)
    monkeypatch.setattr(range_reads, "SLOTS_PER_RANGE_ROUND", 16)
    monkeypatch.setattr(range_reads, "INDEX_DAYS_PER_READ", 2)
    for limit in (1, 119, 120, 121, 150, len(records), len(records) + 5):
        found = store.records_between(since=since, until=until, limit=limit)
        assert [record.id for record in found] == [record.id for record in expected[:limit]], limit
    # Without any rollup row every slot counts as one reading: more rounds, the same answer.
    for day in range(3):
        raw_session.execute(f"DELETE FROM {keyspace}.digit_counts_by_day WHERE day = %s",
                            ((base + datetime.timedelta(days=day)).date(),))
    for limit in (5, 130, len(records)):
        found = store.records_between(since=since, until=until, limit=limit)
        assert [record.id for record in found] == [record.id for record in expected[:limit]], limit
    stored = store.records_between(since=since, until=until, limit=1)[0]
    assert stored == expected[0], "a record read back equals the one written, field for field"


def test_a_slot_at_a_million_readings_a_day_stays_far_below_100_megabytes(make_record) -> None:
    """The computed bound behind the schema: a 15-minute slot at 1,000,000 readings a day."""
    record = make_record(digit=7)
    per_row_bytes = (len(record.model_input) + 8 * len(record.probabilities) + 16 + 8 + 8 + 8 + 4 * 2
                     + len(record.source) + len(record.model_version) + 64)  # 64: cell and row overhead, generous
    rows_per_slot = 1_000_000 / 96
    assert rows_per_slot < 100_000
    assert rows_per_slot * per_row_bytes < 15 * 1024 * 1024


def test_retention_keeps_rows_as_long_as_their_prediction_allows_and_the_rollups_longer(settings_for, make_record,
                                                                                       raw_session, monkeypatch) -> None:
    from mnist_core.storage import PredictionStore, retention


    settings = settings_for(MNIST_RETENTION_DAYS="1")
    assert settings.retention_days == 1
    store = PredictionStore(settings, background=False)
    store.connect()
    try:
        keyspace = settings.cassandra_keyspace
        now = datetime.datetime.now(UTC)
        # Made almost a day ago: 8 more seconds to live. Made two days ago: past the retention.
        expiring = make_record(digit=2, created_at=now - datetime.timedelta(days=1) + datetime.timedelta(seconds=8))
        # The recount guard 3 s before this reading expires instead of an hour before its slot's
        # first row may, so the reading is counted first and then expires.
        monkeypatch.setattr(retention, "RECOUNT_MARGIN",
                            slot_of(expiring.created_at) - expiring.created_at + datetime.timedelta(seconds=3))
        too_old = make_record(digit=3, created_at=now - datetime.timedelta(days=2))
        fresh = make_record(digit=4, created_at=now)
        store.store_many([expiring, too_old, fresh])
        store.flush()
        ttl = raw_session.execute(f"SELECT TTL(digit) AS ttl FROM {keyspace}.predictions_by_slot WHERE slot_start = %s "
                                  "AND created_at = %s AND id = %s",
                                  (slot_of(fresh.created_at), fresh.created_at, fresh.id)).one().ttl
        assert 86_390 <= ttl <= 86_400
        assert raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot WHERE slot_start = %s",
                                   (slot_of(too_old.created_at),)).one() is None
        start, end = (now - datetime.timedelta(days=2)).date(), now.date()
        seen = {record.id for record in store.records_between(since=now - datetime.timedelta(days=3),
                                                      until=now + datetime.timedelta(seconds=1), limit=10)}
        assert seen == {expiring.id, fresh.id}
        counted_before = store.history_counts(start=start, end=end).totals_per_digit
        assert counted_before[2] == 1, "counted while its rows were all there"
        time.sleep(max(0.0, (expiring.created_at + datetime.timedelta(days=1, seconds=2)
                             - datetime.datetime.now(UTC)).total_seconds()))
        seen = {record.id for record in store.records_between(since=now - datetime.timedelta(days=3),
                                                      until=now + datetime.timedelta(seconds=1), limit=10)}
        assert seen == {fresh.id}
        # Its rows are gone from reads; a recount of the expired slot is refused, so History still counts it.
        store.store_many([make_record(digit=2, created_at=expiring.created_at + datetime.timedelta(microseconds=5))])
        store.flush()
        assert store.history_counts(start=start, end=end).totals_per_digit == counted_before
        assert counted_before[4] == 1 and counted_before[3] == 0
        # A correction queued for a prediction past the retention is done with at once, not retried
        # into the dead letters: its rows are gone for good.
        store.record_correction(too_old.id, 5)
        store.flush(timeout_seconds=5)
        assert (store.status().pending, store.status().dead_letters) == (0, 0)
        assert raw_session.execute(f"SELECT prediction_id FROM {keyspace}.corrections_by_slot WHERE slot_start = %s",
                                   (slot_of(too_old.created_at),)).one() is None
        # The rollups carry no TTL: History's counts of a period outlive its rows.
        rollup_ttls = {row.ttl for row in raw_session.execute(
            f"SELECT TTL(counts) AS ttl FROM {keyspace}.digit_counts_by_day WHERE day = %s", (fresh.created_at.date(),))}
        assert rollup_ttls == {None}
    finally:
        store.close()


def test_retention_is_counted_from_the_prediction_and_guards_recounts() -> None:
    made = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    retention = Retention(10)
    assert retention.time_to_live(made, now=made) == 10 * 86_400
    assert retention.time_to_live(made, now=made + datetime.timedelta(days=10)) is None
    assert retention.may_recount(made, now=made + datetime.timedelta(days=9, hours=22))
    assert not retention.may_recount(made, now=made + datetime.timedelta(days=9, hours=23, minutes=30))
    assert Retention(None).time_to_live(made, now=made + datetime.timedelta(days=10_000)) == 0
    with pytest.raises(ValueError, match="between 1 and 7300"):
        Retention(0)
    for text, expected in (("", None), ("30", 30)):
        assert settings_from_mapping({"MNIST_RETENTION_DAYS": text}).retention_days == expected
    for text in ("0", "7301", "a week"):
        with pytest.raises(ValueError, match="MNIST_RETENTION_DAYS"):
            settings_from_mapping({"MNIST_RETENTION_DAYS": text})


def test_a_keyspace_of_day_partitions_is_moved_into_slots_when_schema_005_applies(cassandra_node, module_keyspace,
                                                                                 settings_for, make_record,
                                                                                 raw_session, tmp_path) -> None:
    from mnist_core.storage import PredictionStore

    keyspace = module_keyspace + "_old"
    older = tmp_path / "schema"
    older.mkdir()
    for path in migrations.SCHEMA_DIRECTORY.glob("*.cql"):
        if int(path.name[:3]) < 5:
            shutil.copy(path, older / path.name)
    settings = settings_for(MNIST_CASSANDRA_KEYSPACE=keyspace)
    from mnist_core.storage import connection

    cluster, _ = connection.connect(settings)
    try:
        migrations.apply_migrations(cluster, keyspace=keyspace, replication=settings.cassandra_replication,
                                    directory=older)
        made = datetime.datetime(2019, 3, 4, 10, 7, tzinfo=UTC)
        records = [make_record(digit=index % 10, created_at=made + datetime.timedelta(minutes=index * 11))
                   for index in range(12)]
        for record in records:
            raw_session.execute(
                f"INSERT INTO {keyspace}.predictions_by_day (day, created_at, id, digit, confidence, probabilities, "
                "model_input, source, model_version, latency_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (record.created_at.date(), record.created_at, record.id, record.digit, record.confidence,
                 list(record.probabilities), record.model_input, record.source, record.model_version,
                 record.latency_ms))
        corrected = records[3]
        raw_session.execute(
            f"INSERT INTO {keyspace}.corrections_by_day (day, prediction_id, created_at, predicted_digit, true_label, "
            "model_version, corrected_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (corrected.created_at.date(), corrected.id, corrected.created_at, corrected.digit, 8,
             corrected.model_version, corrected.created_at + datetime.timedelta(minutes=1)))
        applied = migrations.apply_migrations(cluster, keyspace=keyspace, replication=settings.cassandra_replication)
        assert applied == [5]
    finally:
        cluster.shutdown()
    store = PredictionStore(settings, background=False)
    store.connect()
    try:
        moved = store.records_between(since=made, until=made + datetime.timedelta(days=1), limit=100)
        assert [record.id for record in moved] == [record.id for record in reversed(records)]
        assert [(record.digit, record.model_input) for record in moved] == \
            [(record.digit, record.model_input) for record in reversed(records)]
        copied = raw_session.execute(f"SELECT true_label FROM {keyspace}.corrections_by_slot WHERE slot_start = %s "
                                     "AND prediction_id = %s", (slot_of(corrected.created_at), corrected.id)).one()
        assert copied.true_label == 8
        # Copying again (a start that died before 005 was recorded) writes the same cells: nothing doubles.
        session = plain_cluster().connect(keyspace)
        try:
            assert partition_move.move_day_partitions(session, retention_days=None) == (12, 1)
        finally:
            session.cluster.shutdown()
        again = store.records_between(since=made, until=made + datetime.timedelta(days=1), limit=100)
        assert [record.id for record in again] == [record.id for record in moved]
    finally:
        store.close()
        raw_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
