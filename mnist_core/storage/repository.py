"""The CQL side of storage: statements prepared once per session, and one method per question the app asks.

Writes are INSERTs (or a plain column UPDATE) keyed by the client-generated prediction id and
marked idempotent, so the driver may retry them and the outbox may replay them without ever
counting a prediction twice. Counts never scan predictions: each 15-minute slot's per-digit
counts are recounted from a narrow table and stored as one rollup row (see 001_predictions.cql).
Every per-prediction row lives in the partition of its 15-minute UTC slot, and with a retention
it is written with a TTL ending that many days after the prediction (005_slot_partitions_and_retention.cql).
The writes, corrections and one-row reads are here; range reads (range_reads.py), rollup reads
(rollup_reads.py) and recounts (recounts.py) have modules of their own, behind these methods.
Driver exceptions pass through; :mod:`mnist_core.storage.service` decides what they mean.
"""

from __future__ import annotations

import datetime
import uuid
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType, PreparedStatement

from mnist_core.settings import KEYSPACE_NAME_PATTERN
from mnist_core.storage import buckets, migrations, range_reads, recounts, retention, rollup_reads
from mnist_core.storage.errors import PredictionExpired, PredictionNotFound
from mnist_core.storage.records import AccuracyReport, HistoryCounts, PredictionRecord, SlotFigures, uuid_time


# Predictions per request in bulk writes: about 20 KiB, within the batch thresholds we configure.
BULK_BATCH_RECORDS = 20


class PredictionRepository:
    """Reads and writes predictions through one session; build it once per session (it prepares statements)."""

    def __init__(self, session: Session, *, keyspace: str, request_timeout_seconds: float,
                 retention_days: int | None = None) -> None:
        if not KEYSPACE_NAME_PATTERN.match(keyspace):
            raise ValueError(f"{keyspace!r} is not a valid keyspace name.")
        self._session = session
        self._keyspace = keyspace
        self._retention = retention.Retention(retention_days)
        # A dirty marker must outlive any recount that could have missed the write it marks:
        # such a recount starts before the write is acknowledged, at most one request timeout
        # after it was sent. Markers are therefore written with a timestamp this far ahead.
        self._marker_lead_microseconds = int(2 * request_timeout_seconds * 1_000_000)
        self._request_timeout_microseconds = int(request_timeout_seconds * 1_000_000)
        self._marker_written_until: dict[datetime.datetime, int] = {}
        prepare = self._prepare
        self._insert_prediction = prepare(
            "INSERT INTO {keyspace}.predictions_by_slot (slot_start, created_at, id, digit, number, confidence, "
            "probabilities, model_input, source, model_version, latency_ms, true_label) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
        )
        self._insert_slot_digit = prepare(
            "INSERT INTO {keyspace}.prediction_digits_by_slot (slot_start, digit, id, confidence) "
            "VALUES (?, ?, ?, ?) USING TTL ?"
        )
        self._insert_marker = prepare(
            "INSERT INTO {keyspace}.count_slots_to_refresh_by_day (day, slot_start, requested_at) VALUES (?, ?, ?) "
            "USING TIMESTAMP ?"
        )
        self._insert_slot_index = prepare(
            "INSERT INTO {keyspace}.prediction_slots_by_day (day, slot_start) VALUES (?, ?) USING TTL ?"
        )
        self._select_prediction_key = prepare(
            "SELECT digit, model_version FROM {keyspace}.predictions_by_slot WHERE slot_start = ? AND created_at = ? "
            "AND id = ?"
        )
        # A correction's cells carry its own time as their write time: the latest label wins
        # whatever order retries and replays deliver them in. Its TTL ends with the prediction's.
        self._update_true_label = prepare(
            "UPDATE {keyspace}.predictions_by_slot USING TTL ? AND TIMESTAMP ? SET true_label = ? "
            "WHERE slot_start = ? AND created_at = ? AND id = ?"
        )
        self._insert_correction = prepare(
            "INSERT INTO {keyspace}.corrections_by_slot (slot_start, prediction_id, created_at, predicted_digit, "
            "true_label, model_version, corrected_at) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
        )
        self._insert_correction_at = prepare(
            "INSERT INTO {keyspace}.corrections_by_slot (slot_start, prediction_id, created_at, predicted_digit, "
            "true_label, model_version, corrected_at) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
        )
        self._insert_answer = prepare(
            "INSERT INTO {keyspace}.answers_by_idempotency_key (key_hash, body_fingerprint, prediction_id, answer) "
            "VALUES (?, ?, ?, ?)"
        )
        self._select_answer = prepare(
            "SELECT body_fingerprint, answer FROM {keyspace}.answers_by_idempotency_key WHERE key_hash = ?"
        )
        self._select_replication = prepare(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?"
        )
        self._select_release_version = prepare("SELECT release_version FROM system.local")
        self._ranges = range_reads.RangeReader(session, prepare)
        self._rollups = rollup_reads.RollupReader(session, prepare)
        self._recounts = recounts.SlotRecounter(session, prepare, self._retention)

    @classmethod
    def open(cls, cluster, session: Session, settings) -> tuple[PredictionRepository, str | None]:
        """Apply the schema, prepare the statements, and check the keyspace's replication against the settings.

        Returns the repository and a warning when the replication drifted (None when it agrees).
        """
        keyspace = settings.cassandra_keyspace
        migrations.apply_migrations(cluster, keyspace=keyspace, replication=settings.cassandra_replication,
                                    retention_days=settings.retention_days)
        repository = cls(session, keyspace=keyspace, request_timeout_seconds=settings.cassandra_request_timeout_seconds,
                         retention_days=settings.retention_days)
        return repository, migrations.replication_drift(keyspace, repository.replication(),
                                                        settings.cassandra_replication)

    def ping(self, timeout_seconds: float) -> None:
        """One tiny read, to tell a node that answers from one that hangs (TCP open, nothing back)."""
        self._session.execute(self._select_release_version, timeout=timeout_seconds)

    def _prepare(self, query: str) -> PreparedStatement:
        """Prepare with keyspace-qualified table names ({keyspace}.table is the only formatting ever done)."""
        statement = self._session.prepare(query.format(keyspace=self._keyspace))
        # Every statement here can be sent twice safely: inserts and updates set values keyed by id.
        statement.is_idempotent = True
        return statement

    # Writing predictions ----------------------------------------------------------------

    def _prediction_statements(self, record: PredictionRecord, time_to_live: int) -> list[tuple[PreparedStatement, tuple]]:
        """The rows of one prediction, all in its 15-minute slot partition (one atomic mutation).

        Absent optional values are left unset (not null), so replaying a prediction never
        erases a correction recorded since.
        """
        slot = buckets.slot_start(record.created_at)
        statements: list[tuple[PreparedStatement, tuple]] = [
            (
                self._insert_prediction,
                (
                    slot,
                    record.created_at,
                    record.id,
                    record.digit,
                    UNSET_VALUE if record.number is None else record.number,
                    record.confidence,
                    list(record.probabilities),
                    record.model_input,
                    record.source,
                    record.model_version,
                    record.latency_ms,
                    UNSET_VALUE if record.true_label is None else record.true_label,
                    time_to_live,
                ),
            ),
            (self._insert_slot_digit, (slot, record.digit, record.id, record.confidence, time_to_live)),
        ]
        if record.true_label is not None:
            statements.append(
                (
                    self._insert_correction,
                    (slot, record.id, record.created_at, record.digit, record.true_label, record.model_version,
                     record.created_at, time_to_live),
                )
            )
        return statements

    def _marker_statements(self, slots: Iterable[datetime.datetime]) -> list[tuple[PreparedStatement, tuple]]:
        """Dirty markers and day-index rows for the slots that need them, grouped as one unlogged
        batch per UTC day (both tables are keyed by the day: one mutation each).

        One marker per slot covers every write sent within a request timeout of it (see __init__);
        the index row rides with it, so every slot this process writes to is indexed.
        """
        now = recounts.now_microseconds()
        if len(self._marker_written_until) > 10_000:
            self._marker_written_until = {
                marked_slot: until for marked_slot, until in self._marker_written_until.items() if until > now
            }
        by_day: dict[datetime.date, BatchStatement] = {}
        for slot in sorted(set(slots)):
            if self._marker_written_until.get(slot, 0) >= now + self._request_timeout_microseconds:
                continue
            index_time_to_live = self._retention.slot_time_to_live(slot)
            if index_time_to_live is None:
                continue
            marked_until = now + self._marker_lead_microseconds
            day = buckets.utc_day(slot)
            batch = by_day.setdefault(day, BatchStatement(batch_type=BatchType.UNLOGGED))
            batch.add(self._insert_marker, (day, slot, slot, marked_until))
            batch.add(self._insert_slot_index, (day, slot, index_time_to_live))
            self._marker_written_until[slot] = marked_until
        for batch in by_day.values():
            batch.is_idempotent = True
        return [(batch, None) for batch in by_day.values()]

    def _batches(self, records: Sequence[PredictionRecord], *, size: int) -> list[tuple[BatchStatement, None]]:
        """Predictions grouped by slot, ``size`` per unlogged batch: a single-partition batch is one
        atomic mutation. Predictions already past the retention are left out: they would expire at once."""
        by_slot: dict[datetime.datetime, list[tuple[PredictionRecord, int]]] = {}
        for record in records:
            time_to_live = self._retention.time_to_live(record.created_at)
            if time_to_live is not None:
                by_slot.setdefault(buckets.slot_start(record.created_at), []).append((record, time_to_live))
        batches = []
        for slot_records in by_slot.values():
            for index in range(0, len(slot_records), size):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for record, time_to_live in slot_records[index:index + size]:
                    for statement, parameters in self._prediction_statements(record, time_to_live):
                        batch.add(statement, parameters)
                batch.is_idempotent = True
                batches.append((batch, None))
        return batches

    def _forget_markers(self, records: Iterable[PredictionRecord]) -> None:
        """After a failed write its markers may not exist: let the retry or replay write them again."""
        for record in records:
            self._marker_written_until.pop(buckets.slot_start(record.created_at), None)

    def write_predictions(self, records: Sequence[PredictionRecord], *, concurrency: int = 8,
                          batch_records: int = BULK_BATCH_RECORDS) -> set[datetime.datetime]:
        """Write many predictions: grouped by slot, ``batch_records`` per request, ``concurrency`` requests in flight.

        The slots' markers (and day-index rows) are written first, so an acknowledged prediction
        is always marked and indexed; a failure after them leaves only a harmless extra recount.
        Grouping cuts the per-request cost that dominates a Python client; the groups stay
        below the batch size thresholds of cassandra/conf/cassandra.yaml. Returns the slots to recount.
        """
        slots = {buckets.slot_start(record.created_at) for record in records}
        try:
            for step in (self._marker_statements(slots), self._batches(records, size=batch_records)):
                for result in execute_concurrent(self._session, step, concurrency=concurrency,
                                                 raise_on_first_error=True, results_generator=True):
                    del result
        except BaseException:
            self._forget_markers(records)
            raise
        return slots

    # Counting ---------------------------------------------------------------------------

    def refresh_slots(self, slots: Iterable[datetime.datetime]) -> None:
        """Recount these slots' digit rollups (see recounts)."""
        self._recounts.refresh_slots(slots)

    def refresh_correction_slots(self, slots: Iterable[datetime.datetime]) -> None:
        """Recount these slots' correction rollups (see recounts)."""
        self._recounts.refresh_correction_slots(slots)

    def slots_marked_for_refresh(self, days: Iterable[datetime.date]) -> dict[datetime.datetime, int]:
        """Slots with a dirty marker on those UTC days, with the time each marker stays valid until."""
        return self._recounts.slots_marked_for_refresh(days)

    def refresh_marked_slots(self, days: Iterable[datetime.date]) -> int:
        """Recount every marked slot on those days (see recounts); returns how many were marked."""
        return self._recounts.refresh_marked_slots(days)

    # Reading rollups --------------------------------------------------------------------

    def history_counts(self, *, start: datetime.date, end: datetime.date, zone: zoneinfo.ZoneInfo,
                       pending: Iterable[SlotFigures] = ()) -> HistoryCounts:
        """Per-digit counts per local hour and day, and the confidence figures (see rollup_reads)."""
        return self._rollups.history_counts(start=start, end=end, zone=zone, pending=pending)

    def accuracy(self, *, start: datetime.date, end: datetime.date, zone: zoneinfo.ZoneInfo) -> AccuracyReport:
        """Accuracy and confusion matrix of predictions made on local days start..end (see rollup_reads)."""
        return self._rollups.accuracy(start=start, end=end, zone=zone)

    def accuracy_by_version(self, *, start: datetime.date, end: datetime.date,
                            zone: zoneinfo.ZoneInfo) -> dict[str, tuple[int, int]]:
        """(corrections, correct) per model version (see rollup_reads)."""
        return self._rollups.accuracy_by_version(start=start, end=end, zone=zone)

    # Keyspace ---------------------------------------------------------------------------

    def replication(self) -> dict[str, str] | None:
        """The keyspace's replication options as Cassandra reports them (None if it does not exist)."""
        row = self._session.execute(self._select_replication, (self._keyspace,)).one()
        return None if row is None else dict(row.replication)

    # Reading predictions ----------------------------------------------------------------

    def between(self, *, since: datetime.datetime, until: datetime.datetime, limit: int) -> list[PredictionRecord]:
        """The newest ``limit`` predictions made in [since, until), newest first (see range_reads)."""
        return self._ranges.newest(since=since, until=until, limit=limit)

    def rows_for_export(self, *, since: datetime.datetime, until: datetime.datetime,
                        page_size: int = range_reads.EXPORT_PAGE_SIZE) -> Iterator:
        """Every stored prediction made in [since, until), oldest first, a page at a time (see range_reads)."""
        return self._ranges.rows_for_export(since=since, until=until, page_size=page_size)

    def prediction_exists(self, prediction_id: uuid.UUID) -> bool:
        """Whether Cassandra holds a prediction with this (time-based) id: one single-row read."""
        created_at = _milliseconds(uuid_time(prediction_id))
        return self._session.execute(
            self._select_prediction_key, (buckets.slot_start(created_at), created_at, prediction_id)).one() is not None

    # Corrections ------------------------------------------------------------------------

    def write_correction(self, prediction_id: uuid.UUID, true_label: int, *, corrected_at: datetime.datetime) -> None:
        """Record the true label of a stored prediction (a later correction replaces an earlier one).

        The id's own time gives the prediction's partition and clustering key, so no lookup
        table is needed; both rows are written in one single-partition batch, and expire with
        the prediction. A prediction past the retention counts as gone.
        """
        created_at = _milliseconds(uuid_time(prediction_id))
        slot = buckets.slot_start(created_at)
        time_to_live = self._retention.time_to_live(created_at)
        if time_to_live is None:
            raise PredictionExpired(f"Prediction {prediction_id} is older than the retention of "
                                    f"{self._retention.days} days; its rows are gone.")
        key = self._session.execute(self._select_prediction_key, (slot, created_at, prediction_id)).one()
        if key is None:
            raise PredictionNotFound(f"No stored prediction has the id {prediction_id}.")
        written_at = int(buckets.as_utc(corrected_at).timestamp() * 1_000_000)
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.add(self._update_true_label, (time_to_live, written_at, true_label, slot, created_at, prediction_id))
        batch.add(self._insert_correction_at,
                  (slot, prediction_id, created_at, key.digit, true_label, key.model_version, corrected_at,
                   time_to_live, written_at))
        batch.is_idempotent = True
        self._session.execute(batch)

    # Answers remembered for Idempotency-Key ----------------------------------------------

    def write_answer(self, *, key_hash: str, body_fingerprint: str, prediction_id: uuid.UUID, answer: str) -> None:
        """Remember the answer given under an Idempotency-Key (the table's TTL forgets it after a day)."""
        self._session.execute(self._insert_answer, (key_hash, body_fingerprint, prediction_id, answer))

    def answer(self, key_hash: str) -> tuple[str, str] | None:
        """The (body fingerprint, answer JSON) remembered for a key, or None."""
        row = self._session.execute(self._select_answer, (key_hash,)).one()
        return None if row is None else (row.body_fingerprint, row.answer)


def _milliseconds(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)
