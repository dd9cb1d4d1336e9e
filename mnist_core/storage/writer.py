"""The one way a write reaches Cassandra: the writer sends the outbox, oldest first, and keeps the rollups true.

Every caller of :class:`~mnist_core.storage.service.PredictionStore` (the app, the API, tests and
benchmarks) appends to the outbox; :class:`OutboxWriter` sends it. Its :meth:`OutboxWriter.run_once`
is synchronous, so tests and scripts drive it directly; the app runs it on a thread that
wakes on every write and at least once per flush interval.

One round sends every due entry in groups: it writes each chunk of a group (predictions, then
corrections), recounts the 15-minute slots the group touched, and only then acknowledges the
group in the outbox. So "still in the outbox" always means "not yet in the rollups", and readers
add the outbox's pending entries to what Cassandra returns (see ``PredictionStore``), with
:attr:`OutboxWriter.generation` telling them when a group moved between the two mid-read.

An entry that fails for a reason an outage does not explain (unreadable after an upgrade, a
correction whose prediction is not visible yet, a statement the schema refuses) is deferred and
retried with a growing delay, then dead-lettered; it never blocks the entries behind it.
"""

from __future__ import annotations

import datetime
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable

from cassandra import DriverException, OperationTimedOut, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.policies import HostStateListener

from mnist_core.settings import Settings
from mnist_core.storage import buckets, outbox
from mnist_core.storage.errors import PredictionExpired, PredictionNotFound
from mnist_core.storage.records import PredictionRecord, uuid_time
from mnist_core.storage.repository import PredictionRepository

logger = logging.getLogger(__name__)

# Failures that mean "Cassandra cannot take this write right now": keep it queued and try again.
UNAVAILABLE_ERRORS = (NoHostAvailable, OperationTimedOut, RequestExecutionException, ConnectionException, OSError)
REPLAY_CHUNK = 1000
# The interpreter's thread switch interval while a writer thread runs (CPython's default is 5 ms).
SWITCH_INTERVAL_SECONDS = 0.0005
# Batches in flight while a chunk is written.
WRITE_CONCURRENCY = 16
# While draining a backlog on its thread, the writer pauses this share of each chunk's time between chunks.
BACKLOG_PAUSE_SHARE = 1.0
# Entries written between two recounts (and acknowledged together after the recount).
RECOUNT_GROUP = 5000
# The liveness probe gives up after this long (a hung node keeps TCP open and answers nothing).
PROBE_TIMEOUT_SECONDS = 2.0
# How often the writer looks for dirty markers left by other (or crashed) processes.
MARKER_SCAN_INTERVAL_SECONDS = 30.0
MARKER_SCAN_DAYS_AT_START = 7


class NodeWatch(HostStateListener):
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


class OutboxWriter:
    """Sends one outbox to Cassandra; ``run_once`` for a synchronous round, ``start`` for the app's thread."""

    def __init__(self, queue: outbox.Outbox, settings: Settings,
                 repository_or_none: Callable[[], PredictionRepository | None], describe_target: str) -> None:
        self._outbox = queue
        self._settings = settings
        self._repository_or_none = repository_or_none
        self._describe_target = describe_target
        self.wake_event = threading.Event()
        self.node_watch = NodeWatch(self.wake_event)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # One round at a time (the thread and a caller's flush()).
        self._round_lock = threading.Lock()
        # Odd while a group is in the rollups but not yet acknowledged in the outbox (see the module docstring).
        self.generation = 0
        self.answering = True
        self.last_failure: str | None = None
        self.resent_entries = 0
        self._next_probe_at = 0.0
        self._next_checkpoint_at = 0.0
        self._next_marker_scan_at = 0.0
        self._marker_scan_days = MARKER_SCAN_DAYS_AT_START

    # The thread -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        # The writer's CPU work (decoding entries, building batches) would otherwise hold the GIL
        # for whole 5 ms switch intervals while a request thread waits to append to the outbox.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS))
        self._thread = threading.Thread(target=self._loop, name="mnist-storage-writer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self) -> None:
        self._stopping.set()
        self.wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        interval = self._settings.outbox_flush_interval_seconds
        while not self._stopping.is_set():
            self.wake_event.wait(interval)
            self.wake_event.clear()
            if self._stopping.is_set():
                return
            self.run_once()
            if not self.answering:
                # New writes keep waking the thread; Cassandra still gets one try per interval.
                self._stopping.wait(interval)

    # One round --------------------------------------------------------------------------

    def run_once(self) -> int:
        """Send every due entry, probe the node, keep the resend bookkeeping bounded; returns entries sent.

        Never raises for an outage: ``answering`` and ``last_failure`` say how the round went.
        """
        with self._round_lock:
            if time.monotonic() >= self._next_checkpoint_at:
                # Keeps the log short, outages included (appends never checkpoint).
                self._outbox.checkpoint()
                self._next_checkpoint_at = time.monotonic() + self._settings.outbox_flush_interval_seconds
            repository = self._repository_or_none()
            if repository is None:
                return 0  # not connected (yet): the store's status says so, with the connection's error
            try:
                self._resend_after_node_return()
                sent = self._send_due(repository)
                now = time.monotonic()
                if now >= self._next_probe_at:
                    # Without this probe an idle app would say "connected" to a hung node until the next write.
                    repository.ping(min(PROBE_TIMEOUT_SECONDS, self._settings.cassandra_request_timeout_seconds))
                    if self.node_watch.all_up:
                        self._outbox.forget_sent_before(time.time() - self._settings.outbox_resend_window_seconds)
                    self._outbox.bound_sent()
                    self._outbox.forget_old_answers()
                    self._next_probe_at = now + self._settings.outbox_flush_interval_seconds
                if now >= self._next_marker_scan_at:
                    today = datetime.datetime.now(buckets.UTC).date()
                    repository.refresh_marked_slots(
                        today - datetime.timedelta(days=offset) for offset in range(self._marker_scan_days))
                    self._marker_scan_days = 2
                    self._next_marker_scan_at = time.monotonic() + MARKER_SCAN_INTERVAL_SECONDS
            except (*UNAVAILABLE_ERRORS, DriverException) as error:
                self.answering = False
                if isinstance(error, OperationTimedOut):
                    self.last_failure = f"Cassandra at {self._describe_target} does not answer (a request timed out)."
                else:
                    self.last_failure = f"Cassandra at {self._describe_target} did not take a write: {error}"
                logger.info("The storage writer will retry: %s", error)
                return 0
            except Exception:  # noqa: BLE001 - the writer must outlive any one bad round
                logger.exception("Unexpected error in the storage writer.")
                self.answering = False
                self.last_failure = "The storage writer met an unexpected error (see the server log)."
                return 0
            self.answering = True
            self.last_failure = None
            return sent

    def _send_due(self, repository: PredictionRepository) -> int:
        """Send due entries in groups of at most RECOUNT_GROUP: write them chunk by chunk, recount, acknowledge.

        One recount per group, not per chunk: a backlog of 100,000 entries in a few slots would
        otherwise reread each slot hundreds of times.
        """
        sent = 0
        while True:
            written: list[outbox.OutboxEntry] = []
            prediction_slots: set[datetime.datetime] = set()
            correction_slots: set[datetime.datetime] = set()
            last_sequence = 0
            caught_up = False
            while not caught_up and len(written) < RECOUNT_GROUP:
                entries = self._outbox.peek(REPLAY_CHUNK, after=last_sequence)
                if not entries:
                    break
                # A chunk short of full means the backlog is sent: recount and acknowledge now, so
                # live readings never wait for a group to fill up.
                caught_up = len(entries) < REPLAY_CHUNK
                chunk_started = time.monotonic()
                last_sequence = entries[-1].sequence
                written += self._send_chunk(repository, entries, prediction_slots, correction_slots)
                if not caught_up and self.running:
                    # A backlog: leave the CPU (and the GIL) to request threads for part of the time.
                    time.sleep((time.monotonic() - chunk_started) * BACKLOG_PAUSE_SHARE)
            if not last_sequence:
                return sent
            self.generation += 1
            try:
                repository.refresh_slots(prediction_slots)
                repository.refresh_correction_slots(correction_slots)
                self._outbox.acknowledge(entry.sequence for entry in written)
            finally:
                self.generation += 1
            self._outbox.checkpoint()
            sent += len(written)

    def _send_chunk(self, repository: PredictionRepository, entries: list[outbox.OutboxEntry],
                    prediction_slots: set, correction_slots: set) -> list[outbox.OutboxEntry]:
        """Write one chunk (predictions first, then corrections and answers); returns the entries
        written, notes their slots."""
        predictions: list[tuple[outbox.OutboxEntry, PredictionRecord]] = []
        corrections: list[tuple[outbox.OutboxEntry, uuid.UUID, int, datetime.datetime]] = []
        answers: list[tuple[outbox.OutboxEntry, dict]] = []
        for entry in entries:
            try:
                if entry.kind == outbox.PREDICTION:
                    predictions.append((entry, PredictionRecord.from_json_dict(entry.payload)))
                elif entry.kind == outbox.ANSWER:
                    payload = entry.payload
                    answers.append((entry, {"key_hash": str(payload["key_hash"]),
                                            "body_fingerprint": str(payload["body_fingerprint"]),
                                            "prediction_id": uuid.UUID(payload["prediction_id"]),
                                            "answer": str(payload["answer"])}))
                else:
                    corrections.append((entry, uuid.UUID(entry.payload["prediction_id"]),
                                        int(entry.payload["true_label"]),
                                        datetime.datetime.fromisoformat(entry.payload["corrected_at"])))
            except (KeyError, TypeError, ValueError) as error:
                self._defer(entry, f"unreadable entry ({type(error).__name__}: {error})")
        written = []
        for entry, record in self._write_predictions(repository, predictions):
            written.append(entry)
            prediction_slots.add(buckets.slot_start(record.created_at))
            if record.true_label is not None:
                correction_slots.add(buckets.slot_start(record.created_at))
        for entry, prediction_id, true_label, corrected_at in corrections:
            try:
                repository.write_correction(prediction_id, true_label, corrected_at=corrected_at)
            except PredictionExpired as error:
                # Gone for good (past MNIST_RETENTION_DAYS): no retry can apply it, so it is done.
                logger.warning("Correction dropped from outbox entry %d: %s", entry.sequence, error)
                written.append(entry)
                continue
            except PredictionNotFound:
                # Not visible yet (a lagging replica, a node that lost its tail): retried, not dropped.
                self._defer(entry, f"prediction {prediction_id} is not visible in Cassandra yet")
                continue
            except UNAVAILABLE_ERRORS:
                raise
            except DriverException as error:
                self._defer(entry, f"Cassandra refused the correction: {error}")
                continue
            written.append(entry)
            correction_slots.add(buckets.slot_start(uuid_time(prediction_id)))
        for entry, answer in answers:
            try:
                repository.write_answer(**answer)
            except UNAVAILABLE_ERRORS:
                raise
            except DriverException as error:
                self._defer(entry, f"Cassandra refused the answer: {error}")
                continue
            written.append(entry)
        return written

    def _write_predictions(self, repository, predictions):
        """All predictions at once; if Cassandra refuses the group (not an outage), one by one to find the culprit."""
        if not predictions:
            return []
        try:
            repository.write_predictions([record for _, record in predictions], concurrency=WRITE_CONCURRENCY)
            return list(predictions)
        except UNAVAILABLE_ERRORS:
            raise
        except DriverException as error:
            if len(predictions) == 1:
                self._defer(predictions[0][0], f"Cassandra refused the prediction: {error}")
                return []
        written = []
        for entry, record in predictions:
            try:
                repository.write_predictions([record])
            except UNAVAILABLE_ERRORS:
                raise
            except DriverException as error:
                self._defer(entry, f"Cassandra refused the prediction: {error}")
            else:
                written.append((entry, record))
        return written

    def _defer(self, entry: outbox.OutboxEntry, reason: str) -> None:
        if self._outbox.defer(entry, reason):
            logger.error("Outbox entry %d moved to the dead-letter table after %d attempts: %s",
                         entry.sequence, entry.attempts + 1, reason)
        else:
            logger.warning("Outbox entry %d deferred (attempt %d): %s", entry.sequence, entry.attempts + 1, reason)

    def _resend_after_node_return(self) -> None:
        """After a node came back, queue again what was acknowledged in the window before it went down."""
        window = self._settings.outbox_resend_window_seconds
        down_since = self.node_watch.take_return()
        if down_since is not None and window > 0:
            resent = self._outbox.resend_since(down_since - window)
            self.resent_entries += resent
            if resent:
                logger.info("A Cassandra node came back: sending again the %d write(s) it acknowledged "
                            "in the %.0f s before it went down.", resent, window)
