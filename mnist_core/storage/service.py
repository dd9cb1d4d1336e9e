"""The storage service the app uses: one session per process, writes that are never lost, reads that see them.

Every write (app, API, scripts, tests) is appended to the durable local outbox and the call
returns at once; :class:`~mnist_core.storage.writer.OutboxWriter` sends it (on its thread in the
app, or when a script calls :meth:`PredictionStore.flush`). Reads ask Cassandra and add this
process's pending entries, so a reading is visible the moment ``store`` returns, and never
replay the outbox themselves. ``status()`` answers from memory. Connecting never makes another
thread wait: whoever connects holds the lock, and a reader arriving meanwhile is told at once.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
from collections.abc import Sequence

from cassandra import DriverException
from cassandra.cluster import Cluster, Session

from mnist_core.settings import Settings, get_settings
from mnist_core.storage import buckets, connection, migrations, outbox
from mnist_core.storage.errors import StorageError, StorageUnavailable
from mnist_core.storage.records import AccuracyReport, HistoryCounts, PredictionRecord, StorageStatus, StoreOutcome
from mnist_core.storage.repository import PredictionRepository
from mnist_core.storage.writer import UNAVAILABLE_ERRORS, OutboxWriter

logger = logging.getLogger(__name__)

# Writes younger than this, with the writer answering, count as on their way rather than as a backlog.
IN_FLIGHT_SECONDS = 5.0
# A count read retries this often when the writer moved a chunk from the outbox to the rollups meanwhile.
CONSISTENT_READ_ATTEMPTS = 3


def outbox_target(settings: Settings) -> str:
    """What an outbox entry is for: the contact points, port and keyspace of the configured Cassandra."""
    hosts = ",".join(sorted(settings.cassandra_contact_points))
    return f"{hosts}:{settings.cassandra_port}/{settings.cassandra_keyspace}"


class PredictionStore:
    """Stores predictions and answers the dashboard's questions; one per process (see :func:`get_storage`).

    ``background=True`` (the app) runs the writer on its own thread; without it, nothing is sent
    until :meth:`flush` drives the writer (scripts and tests: the same path, run synchronously).
    """

    def __init__(self, settings: Settings, *, background: bool = True) -> None:
        self.settings = settings
        self._hosts = connection.describe_hosts(settings)
        self._outbox = outbox.Outbox(settings.outbox_path, target=outbox_target(settings))
        self._connect_lock = threading.Lock()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
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
                keyspace = self.settings.cassandra_keyspace
                migrations.apply_migrations(cluster, keyspace=keyspace, replication=self.settings.cassandra_replication)
                repository = PredictionRepository(session, keyspace=keyspace,
                                                  request_timeout_seconds=self.settings.cassandra_request_timeout_seconds)
                drift = migrations.replication_drift(keyspace, repository.replication(),
                                                     self.settings.cassandra_replication)
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
            self._cluster, self._session, self._repository = cluster, session, repository
            self._last_failure = None
            self.writer.wake()
            return repository
        finally:
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
        """Record the digit the user actually wrote for a prediction; it goes the same way as predictions.

        A correction whose prediction Cassandra cannot show yet is retried, then dead-lettered (never
        dropped silently). ValueError when the label is not a digit.
        """
        if isinstance(true_label, bool) or not isinstance(true_label, int) or not 0 <= true_label <= 9:
            raise ValueError(f"true_label must be a digit from 0 to 9; got {true_label!r}.")
        corrected_at = datetime.datetime.now(buckets.UTC).isoformat()
        return self._queue([(outbox.CORRECTION, {"prediction_id": str(prediction_id), "true_label": true_label,
                                                 "corrected_at": corrected_at})])

    def _queue(self, entries) -> StoreOutcome:
        self._outbox.add_many(entries)
        self.writer.wake()
        taking_writes = self._repository is not None and self.writer.answering and self._hosts_up()
        return StoreOutcome.ACCEPTED if taking_writes else StoreOutcome.QUEUED

    def flush(self, *, timeout_seconds: float = 60.0) -> int:
        """Run the writer until nothing is due (deferred entries wait for their retry); returns entries sent.

        Raises StorageUnavailable if Cassandra does not take them within the timeout.
        """
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
        pending = self._outbox.pending_predictions(since=since.timestamp(), until=until.timestamp(), limit=limit)
        stored = self._read(lambda: repository.between(since=since, until=until, limit=limit))
        by_id = {record.id: record for record in map(_record_or_none, pending) if record is not None}
        by_id.update((record.id, record) for record in stored)
        return sorted(by_id.values(), key=lambda record: (record.created_at, record.id.int), reverse=True)[:limit]

    def history_counts(self, *, start: datetime.date, end: datetime.date, timezone: str | None = None) -> HistoryCounts:
        """Predictions per digit per hour and per day, and confidence figures, for local days start..end.

        The zone defaults to the display time zone setting; pending writes are counted too.
        """
        zone = buckets.zone(timezone or self.settings.display_timezone)
        utc_start, utc_end = buckets.local_dates_to_utc_range(start, end, zone)
        repository = self._require_repository()
        for _ in range(CONSISTENT_READ_ATTEMPTS):
            generation = self.writer.generation
            pending = self._outbox.pending_slot_figures(since=utc_start.timestamp(), until=utc_end.timestamp())
            counts = self._read(lambda: repository.history_counts(start=start, end=end, zone=zone, pending=pending))
            if generation % 2 == 0 and generation == self.writer.generation:
                break
        return counts

    def accuracy(self, *, start: datetime.date, end: datetime.date, timezone: str | None = None) -> AccuracyReport:
        """Accuracy and confusion matrix from the corrections (sent ones) of predictions made on local days start..end."""
        zone = buckets.zone(timezone or self.settings.display_timezone)
        repository = self._require_repository()
        return self._read(lambda: repository.accuracy(start=start, end=end, zone=zone))

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

    @property
    def resent_entries(self) -> int:
        return self.writer.resent_entries

    def status(self) -> StorageStatus:
        """Connected, or degraded with the writes waiting locally; from memory, never contacting Cassandra."""
        pending = self._outbox.pending_count()
        answering = self._repository is not None and self._hosts_up() and self.writer.answering
        on_their_way = pending == 0 or (self.writer.running and answering
                                        and self._outbox.oldest_age_seconds() <= IN_FLIGHT_SECONDS)
        if answering and on_their_way:
            message = "Connected to Cassandra."
        elif answering:
            message = f"Connected to Cassandra; writing {pending} queued prediction(s) from the local outbox."
        else:
            message = (f"Cassandra is unreachable; {pending} write(s) are kept in the local outbox and will be "
                       "written when it is back.")
            failure = self._last_failure if self._repository is None else self.writer.last_failure
            if failure:
                message += f" Last error: {failure}"
        dead, other = self._outbox.dead_letter_count(), self._outbox.other_target_count()
        warnings = list(self._warnings)
        if dead:
            warnings.append(f"{dead} write(s) failed repeatedly and were set aside in the dead_letter table of "
                            f"{self._outbox.path}.")
        if other:
            warnings.append(f"{other} write(s) queued for another Cassandra target are kept in {self._outbox.path} "
                            "and will be sent when the settings point there again.")
        return StorageStatus(state="connected" if answering and on_their_way else "degraded", pending=pending,
                             message=" ".join([message, *warnings]), dead_letters=dead, other_target_pending=other,
                             warnings=tuple(warnings))

    def close(self) -> None:
        """Stop the writer and the driver (tests and clean shutdowns); what is queued stays in the outbox."""
        self.writer.stop()
        with self._connect_lock:
            if self._cluster is not None:
                self._cluster.shutdown()
            self._cluster = self._session = self._repository = None
        self._outbox.close()


def _record_or_none(payload: dict) -> PredictionRecord | None:
    try:
        return PredictionRecord.from_json_dict(payload)
    except (KeyError, TypeError, ValueError):
        return None  # a malformed entry: the writer sets it aside


@functools.lru_cache(maxsize=1)
def get_storage() -> PredictionStore:
    """The process-wide store, built from :func:`mnist_core.settings.get_settings` on first call.

    It makes one bounded connection attempt at once, so the first answers already say
    "saved"; if Cassandra cannot be reached, the writer keeps trying in the background.
    """
    store = PredictionStore(get_settings())
    try:
        store.connect(attempts=1)
    except StorageError as error:
        logger.warning("Starting without Cassandra for now: %s", error)
    return store
