"""The storage service the app uses: one session per process, writes that are never lost, reads that see them.

Every write (app, API, scripts, tests) is appended to the durable local outbox and returns at
once; :class:`~mnist_core.storage.writer.OutboxWriter` sends it (on its thread in the app, or in
:meth:`PredictionStore.flush`). Reads add this process's pending entries to Cassandra's answer,
so a reading is visible as soon as ``store`` returns. ``status()`` answers from memory, and no
thread waits for another's connection attempt: a reader arriving meanwhile is told at once.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from cassandra import DriverException
from cassandra.cluster import Cluster

from mnist_core import time_zones
from mnist_core.settings import Settings, get_settings
from mnist_core.storage import buckets, connection, outbox
from mnist_core.storage.errors import StorageError, StorageUnavailable
from mnist_core.storage.records import (AccuracyReport, HistoryCounts, PredictionRecord, StorageStatus, StoreOutcome,
                                        uuid_time)
from mnist_core.storage.repository import PredictionRepository
from mnist_core.storage.writer import UNAVAILABLE_ERRORS, OutboxWriter

logger = logging.getLogger(__name__)

# Writes younger than this, with the writer answering, count as on their way rather than as a backlog.
IN_FLIGHT_SECONDS = 5.0
# A count read retries this often when the writer moved a group from the outbox to the rollups
# meanwhile, pausing between tries so the group can finish: three back-to-back tries could all
# land inside groups when the writer drains a burst on a busy machine, and then count the group
# twice (seen in CI: 6 of a digit instead of 5).
CONSISTENT_READ_ATTEMPTS = 20
CONSISTENT_READ_PAUSE_SECONDS = 0.01


class PredictionStore:
    """Stores predictions and answers the dashboard's questions; one per process (see :func:`get_storage`).

    ``background=True`` (the app) runs the writer on its thread; otherwise :meth:`flush` runs it (same path).
    """

    def __init__(self, settings: Settings, *, background: bool = True) -> None:
        self.settings = settings
        self._hosts = connection.describe_hosts(settings)
        self._outbox = outbox.Outbox(settings.outbox_path, target=connection.target_name(settings))
        self._connect_lock = threading.Lock()
        # Set once the first connection attempt has ended, whichever way it went.
        self._first_attempt_ended = threading.Event()
        self._cluster: Cluster | None = None
        self._repository: PredictionRepository | None = None
        self._last_failure: str | None = None
        self._last_attempt_at = float("-inf")
        self._warnings: tuple[str, ...] = ()
        self.writer = OutboxWriter(self._outbox, settings, self._repository_or_none, self._hosts)
        if background:
            self.writer.start()

    # Connection -------------------------------------------------------------------------

    def connect(self, *, attempts: int | None = None) -> PredictionRepository:
        """Connect (bounded retry), apply the schema and prepare statements; a no-op once connected.

        Raises StorageUnavailable, StorageAuthenticationError or SchemaMigrationError with a sentence.
        """
        if self._repository is not None:
            return self._repository
        if not self._connect_lock.acquire(blocking=not self.writer.running):
            # The writer is connecting. A reader at start-up waits for that first attempt (it is
            # bounded by the connect and request timeouts); later ones are told at once, so a
            # hung node never holds a page.
            if not self._first_attempt_ended.is_set() and self._first_attempt_ended.wait(
                    self.settings.cassandra_connect_timeout_seconds
                    + 2 * self.settings.cassandra_request_timeout_seconds) and self._repository is not None:
                return self._repository
            raise StorageUnavailable(self._last_failure or f"Connecting to Cassandra at {self._hosts}; try again shortly.")
        try:
            if self._repository is not None:
                return self._repository
            self._last_attempt_at = time.monotonic()
            try:
                cluster, session = connection.connect(self.settings, attempts=attempts)
            except StorageError as error:
                self._last_failure = str(error)
                raise
            try:
                repository, drift = PredictionRepository.open(cluster, session, self.settings)
            except (*UNAVAILABLE_ERRORS, DriverException) as error:
                cluster.shutdown()
                self._last_failure = f"Cassandra at {self._hosts} stopped answering while the schema was checked: {error}"
                raise StorageUnavailable(self._last_failure) from error
            except BaseException:
                cluster.shutdown()
                raise
            if drift:
                logger.warning(drift)
            self._warnings = (drift,) if drift else ()
            cluster.register_listener(self.writer.node_watch)
            self._cluster, self._repository = cluster, repository
            self._last_failure = None
            self.writer.wake()
            return repository
        finally:
            self._first_attempt_ended.set()
            self._connect_lock.release()

    def _repository_or_none(self) -> PredictionRepository | None:
        """For the writer: the repository, or None after one quick attempt (at most one per flush interval)."""
        if self._repository is not None:
            return self._repository
        if time.monotonic() - self._last_attempt_at < self.settings.outbox_flush_interval_seconds:
            return None
        try:
            return self.connect(attempts=1)
        except StorageError as error:
            self._last_failure = str(error)  # wrong credentials too: predictions wait, status() says why
            return None

    def _require_repository(self) -> PredictionRepository:
        """For reads: the repository, or StorageUnavailable (one attempt when the writer keeps trying anyway)."""
        return self._repository or self.connect(attempts=1 if self.writer.running else None)

    def _hosts_up(self) -> bool:
        cluster = self._cluster
        return cluster is not None and any(host.is_up for host in cluster.metadata.all_hosts())

    # Writes -----------------------------------------------------------------------------

    def store(self, record: PredictionRecord) -> StoreOutcome:
        """Store one prediction: durable in the outbox when this returns, sent by the writer; never waits on the network."""
        return self.store_many([record])

    def store_many(self, records: Sequence[PredictionRecord]) -> StoreOutcome:
        """Store many predictions in one outbox transaction (bulk loads, benchmarks)."""
        for record in records:
            if not isinstance(record, PredictionRecord):
                raise ValueError(f"store() takes a PredictionRecord; got {type(record).__name__}.")
        return self._queue([(outbox.PREDICTION, record.to_json_dict()) for record in records])

    def record_correction(self, prediction_id, true_label: int) -> StoreOutcome:
        """Record the digit the user wrote for a prediction (retried while its prediction is not visible yet)."""
        if isinstance(true_label, bool) or not isinstance(true_label, int) or not 0 <= true_label <= 9:
            raise ValueError(f"true_label must be a digit from 0 to 9; got {true_label!r}.")
        corrected_at = datetime.datetime.now(buckets.UTC).isoformat()
        return self._queue([(outbox.CORRECTION, {"prediction_id": str(prediction_id), "true_label": true_label,
                                                 "corrected_at": corrected_at})])

    def store_answered(self, record: PredictionRecord, *, key_hash: str, body_fingerprint: str,
                       answer_of: Callable[[StoreOutcome], str]) -> tuple[StoreOutcome, str]:
        """Store one prediction and the answer given for it under an Idempotency-Key, in one outbox
        transaction: a crash never keeps one without the other. ``answer_of`` makes the answer
        (JSON text) from where the prediction went; returns both."""
        outcome = self._outcome()
        answer = answer_of(outcome)
        self._outbox.add_many([(outbox.PREDICTION, record.to_json_dict()),
                               (outbox.ANSWER, {"key_hash": key_hash, "body_fingerprint": body_fingerprint,
                                                "prediction_id": str(record.id), "answer": answer})])
        self.writer.wake()
        return outcome, answer

    def _queue(self, entries) -> StoreOutcome:
        self._outbox.add_many(entries)
        self.writer.wake()
        return self._outcome()

    def _outcome(self) -> StoreOutcome:
        taking_writes = self._repository is not None and self.writer.answering and self._hosts_up()
        return StoreOutcome.ACCEPTED if taking_writes else StoreOutcome.QUEUED

    def flush(self, *, timeout_seconds: float = 60.0) -> int:
        """Run the writer until nothing is due; returns entries sent, or raises StorageUnavailable after the timeout."""
        deadline = time.monotonic() + timeout_seconds
        sent = 0
        while True:
            sent += self.writer.run_once()
            if not self._outbox.peek(1):
                return sent
            if time.monotonic() >= deadline:
                raise StorageUnavailable(
                    f"Cassandra at {self._hosts} did not take the {self._outbox.pending_count()} queued write(s) "
                    f"within {timeout_seconds:.0f} s; they stay in {self._outbox.path} and will be written later.")
            time.sleep(min(0.2, self.settings.outbox_flush_interval_seconds))

    # Reads ------------------------------------------------------------------------------

    def latest(self, limit: int = 20, *, max_days: int = 31) -> list[PredictionRecord]:
        """The newest ``limit`` predictions (newest first), looking back at most ``max_days`` UTC days."""
        today = datetime.datetime.now(buckets.UTC).date()
        since = datetime.datetime.combine(today - datetime.timedelta(days=max_days - 1), datetime.time.min, buckets.UTC)
        until = datetime.datetime.combine(today + datetime.timedelta(days=2), datetime.time.min, buckets.UTC)
        return self.records_between(since=since, until=until, limit=limit)

    def records_between(self, *, since: datetime.datetime, until: datetime.datetime,
                        limit: int) -> list[PredictionRecord]:
        """The newest ``limit`` predictions made in [since, until) (aware datetimes), newest first, pending ones included."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1; got {limit}.")
        repository = self._require_repository()
        # Pending first: an entry acknowledged between the two reads is then seen twice, never missed.
        pending = self._outbox.pending_records(since=since.timestamp(), until=until.timestamp(), limit=limit)
        stored = self._read(lambda: repository.between(since=since, until=until, limit=limit))
        by_id = {record.id: record for record in pending}
        by_id.update((record.id, record) for record in stored)
        return sorted(by_id.values(), key=lambda record: (record.created_at, record.id.int), reverse=True)[:limit]

    def history_counts(self, *, start: datetime.date, end: datetime.date, timezone: str | None = None) -> HistoryCounts:
        """Counts per digit per hour and day, and confidence figures, for local days start..end (pending included)."""
        zone = time_zones.zone(timezone or self.settings.display_timezone)
        utc_start, utc_end = buckets.local_dates_to_utc_range(start, end, zone)
        repository = self._require_repository()
        for _ in range(CONSISTENT_READ_ATTEMPTS):
            generation = self.writer.generation
            pending = self._outbox.pending_slot_figures(since=utc_start.timestamp(), until=utc_end.timestamp())
            counts = self._read(lambda: repository.history_counts(start=start, end=end, zone=zone, pending=pending))
            if generation % 2 == 0 and generation == self.writer.generation:
                break
            time.sleep(CONSISTENT_READ_PAUSE_SECONDS)
        return counts

    def accuracy(self, *, start: datetime.date, end: datetime.date, timezone: str | None = None) -> AccuracyReport:
        """Accuracy and confusion matrix from the corrections (sent ones) of predictions made on local days start..end."""
        zone = time_zones.zone(timezone or self.settings.display_timezone)
        repository = self._require_repository()
        return self._read(lambda: repository.accuracy(start=start, end=end, zone=zone))

    def accuracy_by_version(self, *, start: datetime.date, end: datetime.date,
                            timezone: str | None = None) -> dict[str, tuple[int, int]]:
        """(corrections, correct) per model version, from the sent corrections of predictions made on local days start..end."""
        zone = time_zones.zone(timezone or self.settings.display_timezone)
        repository = self._require_repository()
        return self._read(lambda: repository.accuracy_by_version(start=start, end=end, zone=zone))

    def remembered_answer(self, key_hash: str) -> tuple[str, str] | None:
        """The (body fingerprint, answer JSON) given under an Idempotency-Key in the last day, by this
        process (its outbox, even with Cassandra away) or another replica (Cassandra), or None.

        Cassandra is asked only while the writer finds it answering, so a hung node never holds a
        request; when it cannot say, the key counts as new (the README says so).
        """
        remembered = self._outbox.answer(key_hash)
        repository = self._repository
        if remembered is not None or repository is None or not self.writer.answering:
            return remembered
        try:
            return repository.answer(key_hash)
        except (*UNAVAILABLE_ERRORS, DriverException) as error:
            logger.warning("Cassandra could not say whether an Idempotency-Key was answered before: %s", error)
            return None

    def prediction_known(self, prediction_id: uuid.UUID) -> bool | None:
        """Whether a prediction with this id exists: waiting in this process's outbox or stored in
        Cassandra (True), known to be absent (False), or None when Cassandra cannot say right now.

        Cassandra is asked only while the writer finds it answering, as for remembered answers,
        so a hung node never holds the caller.
        """
        if prediction_id.version != 1:
            return False  # prediction ids are time-based; no other UUID can name one
        if self._outbox.holds_prediction(prediction_id, uuid_time(prediction_id).timestamp()):
            return True
        repository = self._repository
        if repository is None or not self.writer.answering:
            return None
        try:
            return repository.prediction_exists(prediction_id)
        except (*UNAVAILABLE_ERRORS, DriverException) as error:
            logger.warning("Cassandra could not say whether prediction %s exists: %s", prediction_id, error)
            return None

    def rows_for_export(self, *, since: datetime.datetime, until: datetime.datetime) -> Iterator:
        """The stored predictions made in [since, until), oldest first, a page at a time (see the
        repository); a fault on the way is StorageUnavailable, like every other read."""
        rows = self._require_repository().rows_for_export(since=since, until=until)
        while True:
            try:
                row = self._read(lambda: next(rows, None))
            except StorageUnavailable:
                rows.close()
                raise
            if row is None:
                return
            yield row

    def refresh_marked_slots(self, *, days: int = 2) -> int:
        """Recount slots marked dirty on the last ``days`` UTC days by any process (a crashed one included)."""
        repository = self._require_repository()
        today = datetime.datetime.now(buckets.UTC).date()
        return self._read(lambda: repository.refresh_marked_slots(
            today - datetime.timedelta(days=offset) for offset in range(days)))

    def _read(self, query):
        try:
            return query()
        except (*UNAVAILABLE_ERRORS, DriverException) as error:
            raise StorageUnavailable(f"Cassandra at {self._hosts} did not answer the query ({error}). "
                                     "Predictions are still being kept; try again in a moment.") from error

    # Status -----------------------------------------------------------------------------

    def status(self) -> StorageStatus:
        """Connected, or degraded with the writes waiting locally; from memory, never contacting Cassandra."""
        pending = self._outbox.pending_count()
        answering = self._repository is not None and self._hosts_up() and self.writer.answering
        on_their_way = pending == 0 or (self.writer.running and answering
                                        and self._outbox.oldest_age_seconds() <= IN_FLIGHT_SECONDS)
        return StorageStatus.describe(
            answering=answering, on_their_way=on_their_way, pending=pending,
            connecting=(self._repository is None and self._connect_lock.locked()
                        and not self._first_attempt_ended.is_set()),
            failure=self._last_failure if self._repository is None else self.writer.last_failure,
            dead_letters=self._outbox.dead_letter_count(), other_target_pending=self._outbox.other_target_count(),
            outbox_path=self._outbox.path, warnings=self._warnings)

    def close(self) -> None:
        """Stop the writer and the driver (tests and clean shutdowns); what is queued stays in the outbox."""
        self.writer.stop()
        with self._connect_lock:
            if self._cluster is not None:
                self._cluster.shutdown()
            self._cluster = self._repository = None
        self._outbox.close()


# Whether the process-wide store makes its first connection attempt on the writer's thread
# (the server, see start_storage) or before get_storage returns (scripts, tests, pages run alone).
_connect_on_the_writer_thread = False


@functools.lru_cache(maxsize=1)
def get_storage() -> PredictionStore:
    """The process-wide store from the settings; one connection attempt at once (the writer keeps trying after)."""
    store = PredictionStore(get_settings())
    if _connect_on_the_writer_thread:
        store.writer.wake()
        return store
    try:
        store.connect(attempts=1)
    except StorageError as error:
        logger.warning("Starting without Cassandra for now: %s", error)
    return store


def start_storage() -> PredictionStore:
    """The process-wide store for a server that is starting: built at once, connected by its writer.

    Connecting means applying the schema (about 1.7 s when the tables are created on a first
    launch): the server answers meanwhile, predictions go to the outbox as always, the status
    says "connecting", and a read waits for that first attempt to end.
    """
    global _connect_on_the_writer_thread
    _connect_on_the_writer_thread = True
    return get_storage()
