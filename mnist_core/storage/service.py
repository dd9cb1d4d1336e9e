"""The storage service the app uses: one lazily-built session per process, and writes that are never lost.

``PredictionStore`` connects on first use (a bounded retry, then a sentence the user can act
on), applies the schema, and prepares statements once. With its background thread (the app),
a prediction is first appended to the durable local outbox and the caller returns at once; the
background writer sends the outbox to Cassandra in order within milliseconds, or when
Cassandra is back after an outage. The user therefore never waits on the network, even when
a node hangs. Without the thread (scripts, tests), calls write through to Cassandra and fall
back to the outbox. Reads send this process's pending writes first, so they see them.
``status()`` tells the UI whether it is connected or degraded with N pending.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Sequence

from cassandra import DriverException, OperationTimedOut, RequestExecutionException
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.connection import ConnectionException
from cassandra.policies import HostStateListener

from mnist_core.settings import Settings, get_settings
from mnist_core.storage import buckets, connection, migrations, outbox
from mnist_core.storage.errors import PredictionNotFound, StorageAuthenticationError, StorageError, StorageUnavailable
from mnist_core.storage.records import (
    AccuracyReport,
    HistoryCounts,
    PredictionRecord,
    StorageStatus,
    StoreOutcome,
)
from mnist_core.storage.repository import PredictionRepository

logger = logging.getLogger(__name__)

# Failures that mean "Cassandra cannot take this write right now": queue it and replay later.
UNAVAILABLE_ERRORS = (NoHostAvailable, OperationTimedOut, RequestExecutionException, ConnectionException, OSError)
REPLAY_CHUNK = 200
# Writes younger than this, with the writer healthy, count as on their way rather than as a backlog.
IN_FLIGHT_SECONDS = 5.0
# A read first sends at most this many of this process's pending writes (the rest follow in the background).
CATCH_UP_LIMIT = 1000
# How often the background thread looks for dirty markers left by other (or crashed) processes.
MARKER_SCAN_INTERVAL_SECONDS = 30.0
MARKER_SCAN_DAYS_AT_START = 7
# The background writer's liveness probe gives up after this long.
PROBE_TIMEOUT_SECONDS = 2.0


class _NodeWatch(HostStateListener):
    """Notes when each node goes down and comes back, for the resend of writes a killed node may have lost.

    The driver calls these from its own threads, so they only set fields and wake the writer.
    """

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._down_since: dict[str, float] = {}
        self._returned_down_since: list[float] = []

    def on_down(self, host) -> None:
        with self._lock:
            self._down_since.setdefault(str(host.endpoint), time.time())

    def on_up(self, host) -> None:
        with self._lock:
            down_since = self._down_since.pop(str(host.endpoint), None)
            if down_since is not None:
                self._returned_down_since.append(down_since)
        self._wake.set()

    def on_add(self, host) -> None:
        pass

    def on_remove(self, host) -> None:
        with self._lock:
            self._down_since.pop(str(host.endpoint), None)

    def take_return(self) -> float | None:
        """The earliest moment a node that has since come back went down, once; None if none came back."""
        with self._lock:
            if not self._returned_down_since:
                return None
            earliest = min(self._returned_down_since)
            self._returned_down_since.clear()
            return earliest

    @property
    def all_up(self) -> bool:
        with self._lock:
            return not self._down_since and not self._returned_down_since


class PredictionStore:
    """Stores predictions and answers the dashboard's questions; one per process (see :func:`get_storage`)."""

    def __init__(self, settings: Settings, *, background: bool = True) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._repository: PredictionRepository | None = None
        self._last_failure: str | None = None
        self._last_attempt_at = 0.0
        self._outbox = outbox.Outbox(settings.outbox_path)
        self._slots_to_refresh: set[datetime.datetime] = set()
        self._slots_lock = threading.Lock()
        # One replay at a time (the background writer, flush() and reads catching up).
        self._replay_lock = threading.Lock()
        self._last_write_succeeded = True
        self._next_slot_refresh_at = 0.0
        self._next_marker_scan_at = 0.0
        self._marker_scan_days = MARKER_SCAN_DAYS_AT_START
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._node_watch = _NodeWatch(self._wake)
        self.resent_entries = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._background_loop, name="mnist-storage", daemon=True)
            self._thread.start()

    # Connection -------------------------------------------------------------------------

    def connect(self, *, attempts: int | None = None) -> PredictionRepository:
        """Connect (bounded retry), apply the schema and prepare statements; a no-op once connected.

        Raises StorageUnavailable or StorageAuthenticationError with a sentence for the user.
        """
        with self._lock:
            if self._repository is not None:
                return self._repository
            self._last_attempt_at = time.monotonic()
            try:
                cluster, session = connection.connect(self.settings, attempts=attempts)
            except StorageUnavailable as error:
                self._last_failure = str(error)
                raise
            try:
                migrations.apply_migrations(
                    cluster,
                    keyspace=self.settings.cassandra_keyspace,
                    replication=self.settings.cassandra_replication,
                )
                repository = PredictionRepository(
                    session,
                    keyspace=self.settings.cassandra_keyspace,
                    request_timeout_seconds=self.settings.cassandra_request_timeout_seconds,
                )
            except UNAVAILABLE_ERRORS as error:
                cluster.shutdown()
                self._last_failure = f"Cassandra stopped answering while the schema was being applied: {error}"
                raise StorageUnavailable(self._last_failure) from error
            except BaseException:
                cluster.shutdown()
                raise
            cluster.register_listener(self._node_watch)
            self._cluster, self._session, self._repository = cluster, session, repository
            self._last_failure = None
            self._wake.set()
            return repository

    def _repository_or_none(self) -> PredictionRepository | None:
        """The repository if connected; otherwise one quick connection attempt, at most once per flush interval."""
        if self._repository is not None:
            return self._repository
        with self._lock:
            if self._repository is not None:
                return self._repository
            if time.monotonic() - self._last_attempt_at < self.settings.outbox_flush_interval_seconds:
                return None
            try:
                return self.connect(attempts=1)
            except StorageUnavailable:
                return None
            except StorageAuthenticationError as error:
                # Wrong credentials: keep predictions in the outbox and say why in status().
                self._last_failure = str(error)
                return None

    def _require_repository(self) -> PredictionRepository:
        """For reads: the repository, or StorageUnavailable after the bounded retry.

        With the background writer (the app), a read makes one attempt only: the writer keeps
        trying anyway, and a page or /api/stats must answer within seconds, not after the
        whole retry schedule against a hung node.
        """
        if self._repository is not None:
            return self._repository
        return self.connect(attempts=1 if self._thread is not None else None)

    def _hosts_up(self) -> bool:
        cluster = self._cluster
        return cluster is not None and any(host.is_up for host in cluster.metadata.all_hosts())

    # Writes -----------------------------------------------------------------------------

    def store(self, record: PredictionRecord) -> StoreOutcome:
        """Store one prediction; never loses it, and with the background thread never waits on the network.

        With the background thread, the prediction is appended to the outbox (durable once this
        returns) and the writer sends it at once: ACCEPTED while Cassandra is connected, QUEUED
        while it is not. Without it, the call writes to Cassandra itself (STORED) and queues the
        prediction on any outage, timeout or rejected credential (QUEUED); status() says why.
        """
        if not isinstance(record, PredictionRecord):
            raise ValueError(f"store() takes a PredictionRecord; got {type(record).__name__}.")
        if self._thread is not None:
            return self._journal(outbox.PREDICTION, record.to_json_dict())
        return self._write_through_or_queue(
            lambda repository: self._note_slots({repository.write_prediction(record)}),
            lambda: [(outbox.PREDICTION, record.to_json_dict())],
        )

    def _write_through_or_queue(self, write: Callable[[PredictionRepository], object],
                                queued_entries: Callable[[], Iterable[tuple[str, dict]]]) -> StoreOutcome:
        """Without the background writer: write to Cassandra (STORED), or queue the entries on an outage (QUEUED).

        While older writes wait in the outbox, newer ones queue behind them to keep the order.
        Errors other than an outage (PredictionNotFound, say) reach the caller and queue nothing.
        """
        if self._outbox.pending_count() == 0:
            repository = self._repository_or_none()
            if repository is not None:
                try:
                    write(repository)
                except UNAVAILABLE_ERRORS as error:
                    self._last_failure = f"Cassandra did not take a write: {error}"
                    logger.warning("Queueing in the outbox: %s", error)
                else:
                    return StoreOutcome.STORED
        for kind, payload in queued_entries():
            self._outbox.add(kind, payload)
        self._wake.set()
        return StoreOutcome.QUEUED

    def _journal(self, kind: str, payload: dict) -> StoreOutcome:
        """Append a write to the outbox for the background writer; the answer says whether Cassandra is taking writes."""
        self._outbox.add(kind, payload)
        self._wake.set()
        return StoreOutcome.ACCEPTED if self._writer_healthy() else StoreOutcome.QUEUED

    def _writer_healthy(self) -> bool:
        return self._repository is not None and self._last_write_succeeded and self._hosts_up()

    def store_many(self, records: Sequence[PredictionRecord], *, concurrency: int = 8) -> StoreOutcome:
        """Store many predictions with concurrent requests (bulk loads, benchmarks); queued as a whole on failure."""
        return self._write_through_or_queue(
            lambda repository: self._note_slots(repository.write_predictions(records, concurrency=concurrency)),
            lambda: ((outbox.PREDICTION, record.to_json_dict()) for record in records),
        )

    def record_correction(self, prediction_id: uuid.UUID, true_label: int) -> StoreOutcome:
        """Record the digit the user actually wrote for a prediction; it goes the same way as predictions.

        Without the background thread, raises PredictionNotFound when Cassandra is reachable,
        nothing is queued, and no prediction has that id (with it, such a correction is logged
        and dropped when it is sent). ValueError when the label is not a digit.
        """
        if isinstance(true_label, bool) or not isinstance(true_label, int) or not 0 <= true_label <= 9:
            raise ValueError(f"true_label must be a digit from 0 to 9; got {true_label!r}.")
        corrected_at = datetime.datetime.now(buckets.UTC)
        correction = {"prediction_id": str(prediction_id), "true_label": true_label,
                      "corrected_at": corrected_at.isoformat()}
        if self._thread is not None:
            return self._journal(outbox.CORRECTION, correction)
        return self._write_through_or_queue(
            lambda repository: repository.write_correction(prediction_id, true_label, corrected_at=corrected_at),
            lambda: [(outbox.CORRECTION, correction)],
        )

    # Reads ------------------------------------------------------------------------------

    def latest(self, limit: int = 20, *, max_days: int = 31) -> list[PredictionRecord]:
        """The newest ``limit`` stored predictions (newest first), looking back at most ``max_days`` UTC days."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1; got {limit}.")
        repository = self._require_repository()
        self._catch_up(repository)
        today = datetime.datetime.now(buckets.UTC).date()
        return self._read(lambda: repository.latest(limit=limit, today=today, max_days=max_days))

    def records_between(self, *, since: datetime.datetime, until: datetime.datetime,
                        limit: int) -> list[PredictionRecord]:
        """The newest ``limit`` predictions made in [since, until) (aware datetimes), newest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1; got {limit}.")
        repository = self._require_repository()
        self._catch_up(repository)
        return self._read(lambda: repository.between(since=since, until=until, limit=limit))

    def history_counts(
        self, *, start: datetime.date, end: datetime.date, timezone: str | None = None
    ) -> HistoryCounts:
        """Predictions per digit per hour and per day for local days start..end (inclusive) in the zone.

        The zone defaults to the display time zone setting. Counts include this process's own
        writes (their slots are recounted first).
        """
        zone = self._zone(timezone)
        repository = self._require_repository()
        self._catch_up(repository)
        self._read(lambda: self._refresh_noted_slots(repository))
        return self._read(lambda: repository.history_counts(start=start, end=end, zone=zone))

    def accuracy(self, *, start: datetime.date, end: datetime.date, timezone: str | None = None) -> AccuracyReport:
        """Accuracy and confusion matrix from corrections of predictions made on local days start..end."""
        zone = self._zone(timezone)
        repository = self._require_repository()
        self._catch_up(repository)
        return self._read(lambda: repository.accuracy(start=start, end=end, zone=zone))

    def _catch_up(self, repository: PredictionRepository) -> None:
        """Send this process's pending writes before a read, so the read sees them (bounded: CATCH_UP_LIMIT)."""
        if not self._outbox.pending_count():
            return
        try:
            self._replay_outbox(repository, limit=CATCH_UP_LIMIT)
        except UNAVAILABLE_ERRORS as error:
            # The read that follows says what is wrong; the writes stay queued.
            self._last_failure = f"Outbox replay failed: {error}"

    def _read(self, query):
        try:
            return query()
        except UNAVAILABLE_ERRORS as error:
            raise StorageUnavailable(
                f"Cassandra at {connection.describe_hosts(self.settings)} did not answer the query ({error}). "
                "Predictions are still being kept; try again in a moment."
            ) from error

    def _zone(self, timezone: str | None) -> zoneinfo.ZoneInfo:
        name = timezone or self.settings.display_timezone
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not a known time zone; use an IANA name such as 'Europe/Paris'.") from None

    # Status -----------------------------------------------------------------------------

    def status(self) -> StorageStatus:
        """Connected, or degraded with the number of writes waiting in the outbox; never raises for an outage.

        Answered from what the store already knows, never by contacting Cassandra: the sidebar
        asks on every rerun and /api/health on every probe, and a hung node must not make either
        wait (the background writer does the connecting).
        """
        pending = self._outbox.pending_count()
        repository = self._repository
        # With the background writer, a few writes are always on their way: that is not degraded.
        in_flight = pending == 0 or (
            self._thread is not None and self._last_write_succeeded
            and self._outbox.oldest_age_seconds() <= IN_FLIGHT_SECONDS
        )
        # The writer's last round (a write, or its liveness probe) got an answer.
        answering = repository is not None and self._hosts_up() and (
            self._thread is None or self._last_write_succeeded)
        if answering and in_flight:
            return StorageStatus(state="connected", pending=pending, message="Connected to Cassandra.")
        if answering:
            message = f"Connected to Cassandra; writing {pending} queued prediction(s) from the local outbox."
        else:
            message = (
                f"Cassandra is unreachable; {pending} write(s) are kept in the local outbox and will be written "
                "when it is back."
            )
            if self._last_failure:
                message += f" Last error: {self._last_failure}"
        return StorageStatus(state="degraded", pending=pending, message=message)

    # Outbox replay and count refresh ----------------------------------------------------

    def flush(self, *, timeout_seconds: float = 60.0) -> int:
        """Replay the whole outbox now and bring the counts up to date; returns how many entries were replayed.

        Raises StorageUnavailable if Cassandra does not take them within the timeout.
        """
        deadline = time.monotonic() + timeout_seconds
        replayed = 0
        while True:
            repository = self._repository_or_none() if self._repository is None else self._repository
            if repository is not None:
                try:
                    replayed += self._replay_outbox(repository)
                    self._refresh_noted_slots(repository)
                    if self._outbox.pending_count() == 0:
                        self._forget_old_sends()
                        return replayed
                except UNAVAILABLE_ERRORS as error:
                    self._last_failure = f"Outbox replay failed: {error}"
            if time.monotonic() >= deadline:
                raise StorageUnavailable(
                    f"Cassandra at {connection.describe_hosts(self.settings)} did not take the "
                    f"{self._outbox.pending_count()} queued write(s) within {timeout_seconds:.0f} s; they stay in "
                    f"{self._outbox.path} and will be written later."
                )
            time.sleep(min(0.5, self.settings.outbox_flush_interval_seconds))

    def _replay_outbox(self, repository: PredictionRepository, *, limit: int | None = None) -> int:
        """Send entries oldest first; a chunk is removed only once all its writes succeeded.

        Predictions between two corrections go out as concurrent single-day batches; a
        correction is sent only after every prediction queued before it. The slots written are
        noted for a recount (their dirty markers went in the same batches, so a crash before
        the recount only delays it). Returns how many entries were sent.
        """
        replayed = 0
        with self._replay_lock:
            while limit is None or replayed < limit:
                entries = self._outbox.peek(REPLAY_CHUNK)
                if not entries:
                    break
                slots: set[datetime.datetime] = set()
                predictions: list[PredictionRecord] = []
                for entry in entries:
                    if entry.kind == outbox.PREDICTION:
                        predictions.append(PredictionRecord.from_json_dict(entry.payload))
                        continue
                    slots |= self._write_predictions_in_order(repository, predictions)
                    predictions = []
                    try:
                        repository.write_correction(
                            uuid.UUID(entry.payload["prediction_id"]),
                            entry.payload["true_label"],
                            corrected_at=datetime.datetime.fromisoformat(entry.payload["corrected_at"]),
                        )
                    except PredictionNotFound:
                        logger.error("Dropping a queued correction for unknown prediction %s.",
                                     entry.payload["prediction_id"])
                slots |= self._write_predictions_in_order(repository, predictions)
                self._outbox.remove_through(entries[-1].sequence)
                self._note_slots(slots, wake=False)
                replayed += len(entries)
        if replayed:
            self._last_write_succeeded = True
        return replayed

    @staticmethod
    def _write_predictions_in_order(repository: PredictionRepository,
                                    predictions: list[PredictionRecord]) -> set[datetime.datetime]:
        if not predictions:
            return set()
        if len(predictions) == 1:
            return {repository.write_prediction(predictions[0])}
        return repository.write_predictions(predictions)

    def _note_slots(self, slots, *, wake: bool = True) -> None:
        with self._slots_lock:
            self._slots_to_refresh.update(slots)
        if wake:
            self._wake.set()

    def _refresh_noted_slots(self, repository: PredictionRepository) -> None:
        with self._slots_lock:
            slots, self._slots_to_refresh = self._slots_to_refresh, set()
        try:
            repository.refresh_slots(slots)
        except BaseException:
            with self._slots_lock:
                self._slots_to_refresh.update(slots)
            raise

    def refresh_marked_slots(self, *, days: int = 2) -> int:
        """Recount slots marked dirty on the last ``days`` UTC days by any process (a crashed one included)."""
        repository = self._require_repository()
        today = datetime.datetime.now(buckets.UTC).date()
        return repository.refresh_marked_slots(today - datetime.timedelta(days=offset) for offset in range(days))

    def _resend_after_node_return(self) -> None:
        """After a node came back, queue again what was acknowledged in the window before it went down."""
        window = self.settings.outbox_resend_window_seconds
        down_since = self._node_watch.take_return()
        if down_since is not None and window > 0:
            # Under the replay lock: a replay in progress removes through its last entry, resent ones included.
            with self._replay_lock:
                resent = self._outbox.resend_since(down_since - window)
            self.resent_entries += resent
            if resent:
                logger.info("A Cassandra node came back: sending again the %d write(s) it acknowledged "
                            "in the %.0f s before it went down.", resent, window)

    def _forget_old_sends(self) -> None:
        """Drop acknowledged entries older than the resend window, unless a node is down and may need them."""
        if self._node_watch.all_up:
            self._outbox.forget_sent_before(time.time() - self.settings.outbox_resend_window_seconds)

    def _background_loop(self) -> None:
        """The writer: sends the outbox whenever a write arrives, recounts slots at most once per interval."""
        interval = self.settings.outbox_flush_interval_seconds
        while not self._stopping.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                repository = self._repository_or_none()
                if repository is None:
                    continue
                self._resend_after_node_return()
                if self._outbox.pending_count():
                    self._replay_outbox(repository)
                now = time.monotonic()
                if now >= self._next_slot_refresh_at:
                    # A hung node keeps its connections open and answers nothing; without this
                    # probe an idle app would report "connected" until the next write timed out.
                    repository.ping(min(PROBE_TIMEOUT_SECONDS, self.settings.cassandra_request_timeout_seconds))
                    self._forget_old_sends()
                    self._refresh_noted_slots(repository)
                    self._next_slot_refresh_at = now + interval
                if now >= self._next_marker_scan_at:
                    self.refresh_marked_slots(days=self._marker_scan_days)
                    self._marker_scan_days = 2
                    self._next_marker_scan_at = time.monotonic() + MARKER_SCAN_INTERVAL_SECONDS
                self._last_write_succeeded = True
            except (*UNAVAILABLE_ERRORS, DriverException) as error:
                self._last_write_succeeded = False
                if isinstance(error, OperationTimedOut):
                    self._last_failure = (f"Cassandra at {connection.describe_hosts(self.settings)} does not "
                                          f"answer (a request timed out: {error}).")
                else:
                    self._last_failure = f"Background storage work failed: {error}"
                logger.info("Storage background work will retry: %s", error)
                # New writes keep waking the thread; Cassandra still gets one try per interval.
                self._stopping.wait(interval)
            except Exception:  # noqa: BLE001 - the thread must outlive any one bad entry
                logger.exception("Unexpected error in the storage background thread.")
                self._stopping.wait(interval)

    def close(self) -> None:
        """Stop the background thread and the driver (tests and clean shutdowns)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if self._cluster is not None:
                self._cluster.shutdown()
            self._cluster = self._session = self._repository = None
        self._outbox.close()


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
