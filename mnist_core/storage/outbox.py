"""A durable local queue of writes that Cassandra has not acknowledged yet: a SQLite file in the data directory.

Every write of the app goes through here first (see :mod:`mnist_core.storage.writer`), so the
person drawing never waits on the network and nothing is lost while Cassandra is away.

- **Order and durability.** Entries keep the order they were added in (an autoincrement
  sequence) and carry the full prediction with its client-generated id, so replaying one twice
  writes the same rows twice, never two predictions. WAL mode with full fsync: once ``add``
  returns, the entry survives a crash of the app.
- **One target.** Each entry records the Cassandra target it is for (contact points and
  keyspace); an outbox only hands out the entries of the target it was opened for. Entries of
  another target are kept, counted and reported until the settings point there again.
- **One process.** The outbox takes an exclusive lock on ``<file>.lock``; a second process on the
  same data directory gets :class:`OutboxInUse` instead of replaying the same entries.
- **No jam.** An entry that fails for a reason other than an outage is deferred with a growing
  delay; after ``MAX_ATTEMPTS`` it moves to the ``dead_letter`` table, which status reports.
- **Resend after a node kill.** A killed node can lose what it acknowledged since its last commit
  log sync (10 s by default), so acknowledged entries stay in ``sent`` for a while and can be
  queued again at their old positions. ``sent`` is bounded in rows (``SENT_ROW_LIMIT``) and in
  time (``SENT_MAX_AGE_SECONDS``), and is copied back in chunks so ``add`` never waits long.
- **O(1) status.** Pending, other-target and dead-letter counts are kept in memory.
- **Answers under an Idempotency-Key** are also kept in the ``answers`` table for a day, written
  in the same transaction as their prediction: a retry to this process finds its answer even
  while Cassandra is away, and after a restart.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import pathlib
import sqlite3
import threading
import uuid
import time
from collections.abc import Iterable
from typing import Any

from mnist_core.storage.errors import StorageError
from mnist_core.storage.records import CONFIDENCE_BINS, DIGIT_COUNT, PredictionRecord, SlotFigures

PREDICTION = "prediction"
CORRECTION = "correction"
# The answer given under an Idempotency-Key (see mnist_core.idempotency), queued with its prediction.
ANSWER = "answer"
KINDS = (PREDICTION, CORRECTION, ANSWER)
# Answers are remembered this long, here and in Cassandra (the table's TTL).
ANSWER_MAX_AGE_SECONDS = 86400.0
# A failing (not unavailable) entry is tried this many times before it goes to the dead-letter table.
MAX_ATTEMPTS = 6
FIRST_RETRY_DELAY_SECONDS = 2.0
# Bounds of the bookkeeping kept for resends after a node kill.
SENT_ROW_LIMIT = 20_000
SENT_MAX_AGE_SECONDS = 3600.0
RESEND_CHUNK = 1000
ACKNOWLEDGE_CHUNK = 100
SLOT_SECONDS = 900


class OutboxInUse(StorageError):
    """Another process holds this data directory's outbox."""


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """One queued write: its position in the queue, its kind, its JSON payload and how often it failed."""

    sequence: int
    kind: str
    payload: dict[str, Any]
    attempts: int = 0


# Columns added since the first version of the file, each with the statement that adds it.
_ADDED_COLUMNS = {
    "target": "ALTER TABLE outbox ADD COLUMN target TEXT",
    "created_at": "ALTER TABLE outbox ADD COLUMN created_at REAL",
    "digit": "ALTER TABLE outbox ADD COLUMN digit INTEGER",
    "confidence": "ALTER TABLE outbox ADD COLUMN confidence REAL",
    "attempts": "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
    "retry_at": "ALTER TABLE outbox ADD COLUMN retry_at REAL NOT NULL DEFAULT 0",
    "last_error": "ALTER TABLE outbox ADD COLUMN last_error TEXT",
    "resent": "ALTER TABLE outbox ADD COLUMN resent INTEGER NOT NULL DEFAULT 0",
}


def _facts(kind: str, payload: dict[str, Any]) -> tuple[float | None, int | None, float | None]:
    """The indexed columns of an entry: a prediction's time, digit and confidence (None for corrections)."""
    if kind != PREDICTION:
        return None, None, None
    try:
        created_at = datetime.datetime.fromisoformat(payload["created_at"]).timestamp()
        return created_at, int(payload["digit"]), float(payload["confidence"])
    except (KeyError, TypeError, ValueError):
        return None, None, None  # the writer will find it malformed and dead-letter it


class Outbox:
    """The SQLite-backed queue of one target; safe to share between threads.

    Two connections: appends on one, the writer's and readers' work on the other (``_lock``);
    write transactions of both take turns on ``_write_lock``, which also guards the counts.
    """

    def __init__(self, path: pathlib.Path, *, target: str,
                 first_retry_delay_seconds: float | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.target = target
        self.first_retry_delay_seconds = (FIRST_RETRY_DELAY_SECONDS if first_retry_delay_seconds is None
                                          else first_retry_delay_seconds)
        self._lock_file = _lock_data_directory(path)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._connection.execute("PRAGMA journal_mode=WAL")
        # This connection only moves entries the writer sent: losing its last transaction in a
        # power cut means sending those entries again, which is harmless, so it skips the fsync
        # per commit. Appends (below) fsync every commit: they hold the only copy of a reading.
        self._connection.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints run when the writer asks (checkpoint()), never inside a commit that an append waits for.
        self._connection.execute("PRAGMA wal_autocheckpoint=0")
        self._create_tables()
        # Appends use their own connection: in WAL mode they never wait for the writer's reads,
        # only for its short write transactions (see ACKNOWLEDGE_CHUNK).
        self._add_connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._add_connection.execute("PRAGMA synchronous=FULL")
        self._add_connection.execute("PRAGMA wal_autocheckpoint=0")
        # Write transactions of both connections take turns here, so an append waits for the
        # writer's short transaction to end instead of in SQLite's busy handler (sleeps of 25-100 ms).
        self._write_lock = threading.Lock()
        self._pending, self._other_targets, self._dead = self._count_rows()

    def _create_tables(self) -> None:
        execute = self._connection.execute
        execute("CREATE TABLE IF NOT EXISTS outbox (sequence INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
                " payload TEXT NOT NULL, enqueued_at REAL NOT NULL)")
        # Files written by earlier versions lack the newer columns: add them, and give their
        # entries to the target this process is configured for (the only one they could have meant).
        existing = {row[1] for row in execute("PRAGMA table_info(outbox)")}
        for name, statement in _ADDED_COLUMNS.items():
            if name not in existing:
                execute(statement)
        if "target" not in existing:
            rows = execute("SELECT sequence, kind, payload FROM outbox").fetchall()
            with self._connection:
                execute("BEGIN IMMEDIATE")
                for sequence, kind, payload in rows:
                    execute("UPDATE outbox SET target = ?, created_at = ?, digit = ?, confidence = ? WHERE sequence = ?",
                            (self.target, *_facts(kind, json.loads(payload)), sequence))
        execute("CREATE INDEX IF NOT EXISTS outbox_by_target ON outbox (target, sequence)")
        execute("CREATE INDEX IF NOT EXISTS outbox_by_time ON outbox (target, created_at)")
        # Entries Cassandra acknowledged, kept for resend_since().
        execute("CREATE TABLE IF NOT EXISTS sent (sequence INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
                " payload TEXT NOT NULL, enqueued_at REAL NOT NULL, sent_at REAL NOT NULL)")
        execute("CREATE INDEX IF NOT EXISTS sent_by_time ON sent (sent_at)")
        execute("CREATE TABLE IF NOT EXISTS dead_letter (sequence INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
                " payload TEXT NOT NULL, enqueued_at REAL NOT NULL, target TEXT, failed_at REAL NOT NULL,"
                " attempts INTEGER NOT NULL, error TEXT)")
        execute("CREATE TABLE IF NOT EXISTS answers (key_hash TEXT PRIMARY KEY, body_fingerprint TEXT NOT NULL,"
                " answer TEXT NOT NULL, answered_at REAL NOT NULL)")

    def _count_rows(self) -> tuple[int, int, int]:
        execute = self._connection.execute
        mine = execute("SELECT COUNT(*) FROM outbox WHERE target = ?", (self.target,)).fetchone()[0]
        everything = execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        dead = execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        return int(mine), int(everything - mine), int(dead)

    # Adding -----------------------------------------------------------------------------

    def add(self, kind: str, payload: dict[str, Any]) -> int:
        """Append one write durably; returns its sequence number."""
        return self.add_many([(kind, payload)])[-1]

    def add_many(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> list[int]:
        """Append writes in one transaction (one fsync); returns their sequence numbers."""
        rows, answers = [], []
        now = time.time()
        for kind, payload in entries:
            if kind not in KINDS:
                raise ValueError(f"Unknown outbox entry kind {kind!r}.")
            if kind == ANSWER:
                answers.append((payload["key_hash"], payload["body_fingerprint"], payload["answer"], now))
            rows.append((kind, json.dumps(payload, separators=(",", ":")), now, self.target, *_facts(kind, payload)))
        if not rows:
            return []
        with self._write_lock, self._add_connection:
            self._add_connection.execute("BEGIN IMMEDIATE")
            sequences = [
                int(self._add_connection.execute(
                    "INSERT INTO outbox (kind, payload, enqueued_at, target, created_at, digit, confidence)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", row).lastrowid)
                for row in rows
            ]
            self._add_connection.executemany(
                "INSERT OR REPLACE INTO answers (key_hash, body_fingerprint, answer, answered_at)"
                " VALUES (?, ?, ?, ?)", answers)
            self._pending += len(rows)
        return sequences

    def answer(self, key_hash: str) -> tuple[str, str] | None:
        """The (body fingerprint, answer JSON) this process gave under a key in the last day, or None."""
        with self._lock:
            row = self._connection.execute(
                "SELECT body_fingerprint, answer FROM answers WHERE key_hash = ? AND answered_at >= ?",
                (key_hash, time.time() - ANSWER_MAX_AGE_SECONDS)).fetchone()
        return None if row is None else (row[0], row[1])

    def forget_old_answers(self) -> None:
        """Drop answers older than a day: their keys may be used again."""
        with self._lock, self._write_lock:
            self._connection.execute("DELETE FROM answers WHERE answered_at < ?",
                                     (time.time() - ANSWER_MAX_AGE_SECONDS,))

    # The writer's side ------------------------------------------------------------------

    def peek(self, limit: int, *, after: int = 0) -> list[OutboxEntry]:
        """The oldest due entries of this target after sequence ``after`` (deferred ones wait for their retry time)."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT sequence, kind, payload, attempts FROM outbox WHERE target = ? AND sequence > ?"
                " AND retry_at <= ? ORDER BY sequence LIMIT ?", (self.target, after, time.time(), limit)).fetchall()
        return [OutboxEntry(sequence=row[0], kind=row[1], payload=_payload(row[2]), attempts=row[3]) for row in rows]

    def acknowledge(self, sequences: Iterable[int]) -> None:
        """Move these entries to the sent table: Cassandra acknowledged them.

        In transactions of ACKNOWLEDGE_CHUNK entries, so a ``store()`` arriving meanwhile waits
        for one short transaction, never for a whole group.
        """
        sequences = list(sequences)
        for index in range(0, len(sequences), ACKNOWLEDGE_CHUNK):
            chunk = json.dumps(sequences[index:index + ACKNOWLEDGE_CHUNK])
            with self._lock, self._write_lock, self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                self._connection.execute(
                    "INSERT OR REPLACE INTO sent (sequence, kind, payload, enqueued_at, sent_at)"
                    " SELECT sequence, kind, payload, enqueued_at, ? FROM outbox"
                    " WHERE sequence IN (SELECT value FROM json_each(?))", (time.time(), chunk))
                self._pending -= self._connection.execute(
                    "DELETE FROM outbox WHERE sequence IN (SELECT value FROM json_each(?))", (chunk,)).rowcount

    def defer(self, entry: OutboxEntry, error: str) -> bool:
        """Note a failure of an entry that an outage does not explain: retry it later, or give up on it.

        Returns True when the entry went to the dead-letter table (its ``MAX_ATTEMPTS``-th failure).
        """
        attempts = entry.attempts + 1
        now = time.time()
        with self._lock, self._write_lock, self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            if attempts >= MAX_ATTEMPTS:
                self._connection.execute(
                    "INSERT OR REPLACE INTO dead_letter (sequence, kind, payload, enqueued_at, target, failed_at,"
                    " attempts, error) SELECT sequence, kind, payload, enqueued_at, target, ?, ?, ? FROM outbox"
                    " WHERE sequence = ?", (now, attempts, error, entry.sequence))
                removed = self._connection.execute("DELETE FROM outbox WHERE sequence = ?", (entry.sequence,)).rowcount
                self._pending -= removed
                self._dead += removed
                return True
            delay = self.first_retry_delay_seconds * 2 ** (attempts - 1)
            self._connection.execute("UPDATE outbox SET attempts = ?, retry_at = ?, last_error = ? WHERE sequence = ?",
                                     (attempts, now + delay, error, entry.sequence))
            return False

    def resend_since(self, moment: float) -> int:
        """Queue again, at their original positions, the entries acknowledged at or after ``moment`` (Unix time).

        Copied in chunks of RESEND_CHUNK, each its own short transaction, so ``add`` is never
        held up for long. Returns how many were queued again. Replaying them is safe: every
        write is idempotent.
        """
        resent = 0
        while True:
            with self._lock, self._write_lock, self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                rows = self._connection.execute(
                    "SELECT sequence, kind, payload, enqueued_at FROM sent WHERE sent_at >= ? ORDER BY sequence LIMIT ?",
                    (moment, RESEND_CHUNK)).fetchall()
                for sequence, kind, payload, enqueued_at in rows:
                    cursor = self._connection.execute(
                        "INSERT OR IGNORE INTO outbox (sequence, kind, payload, enqueued_at, target, created_at, digit,"
                        " confidence, resent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                        (sequence, kind, payload, enqueued_at, self.target, *_facts(kind, _payload(payload))))
                    resent += cursor.rowcount
                    self._pending += cursor.rowcount
                self._connection.executemany("DELETE FROM sent WHERE sequence = ?", [(row[0],) for row in rows])
            if len(rows) < RESEND_CHUNK:
                return resent

    def forget_sent_before(self, moment: float) -> None:
        """Drop acknowledged entries sent before ``moment`` (no node can have lost them any more)."""
        with self._lock, self._write_lock:
            self._connection.execute("DELETE FROM sent WHERE sent_at < ?", (moment,))

    def bound_sent(self) -> None:
        """Keep ``sent`` within its bounds even while a node stays down: the newest rows, the last hour."""
        with self._lock, self._write_lock:
            self._connection.execute("DELETE FROM sent WHERE sent_at < ?", (time.time() - SENT_MAX_AGE_SECONDS,))
            self._connection.execute(
                "DELETE FROM sent WHERE sequence <= (SELECT sequence FROM sent ORDER BY sequence DESC LIMIT 1 OFFSET ?)",
                (SENT_ROW_LIMIT,))

    def checkpoint(self) -> None:
        """Copy the write-ahead log back into the file without blocking appends (SQLite's PASSIVE mode)."""
        with self._lock:
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # The readers' side ------------------------------------------------------------------

    def pending_records(self, *, since: float, until: float, limit: int) -> list[PredictionRecord]:
        """This target's pending predictions made in [since, until), newest first (unreadable ones left out).

        Entries queued again by ``resend_since`` are left out here and in ``pending_slot_figures``:
        Cassandra acknowledged them once, so readers would count them twice.
        """
        with self._lock:
            rows = self._connection.execute(
                "SELECT payload FROM outbox WHERE target = ? AND kind = ? AND resent = 0"
                " AND created_at >= ? AND created_at < ? ORDER BY created_at DESC LIMIT ?",
                (self.target, PREDICTION, since, until, limit)).fetchall()
        records = []
        for (payload,) in rows:
            try:
                records.append(PredictionRecord.from_json_dict(_payload(payload)))
            except (KeyError, TypeError, ValueError):
                continue  # the writer sets it aside
        return records

    def holds_prediction(self, prediction_id: uuid.UUID, created_at: float) -> bool:
        """Whether a prediction with this id waits here (any target); found through the time index,
        since the id's time is the prediction's time, so even a long outage's backlog is not scanned."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT payload FROM outbox WHERE kind = ? AND created_at >= ? AND created_at < ?",
                (PREDICTION, created_at - 0.001, created_at + 0.001)).fetchall()
        return any(_payload(payload).get("id") == str(prediction_id) for (payload,) in rows)

    def pending_slot_figures(self, *, since: float, until: float) -> list[SlotFigures]:
        """Per-slot figures of this target's pending predictions made in [since, until), aggregated by SQLite."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT CAST(created_at / ? AS INTEGER) * ? AS slot, digit,"
                " MIN(CAST(confidence * ? AS INTEGER), ?) AS bin, COUNT(*), SUM(confidence) FROM outbox"
                " WHERE target = ? AND kind = ? AND resent = 0 AND created_at >= ? AND created_at < ?"
                " AND digit BETWEEN 0 AND 9"
                " GROUP BY slot, digit, bin",
                (SLOT_SECONDS, SLOT_SECONDS, CONFIDENCE_BINS, CONFIDENCE_BINS - 1, self.target, PREDICTION, since,
                 until)).fetchall()
        slots: dict[int, tuple[list[int], list[int], list[float]]] = {}
        for slot, digit, confidence_bin, count, confidence_sum in rows:
            counts, histogram, total = slots.setdefault(slot, ([0] * DIGIT_COUNT, [0] * CONFIDENCE_BINS, [0.0]))
            counts[digit] += count
            histogram[confidence_bin] += count
            total[0] += confidence_sum
        return [SlotFigures(slot_start=datetime.datetime.fromtimestamp(slot, datetime.timezone.utc),
                            counts=tuple(counts), confidence_histogram=tuple(histogram), confidence_sum=total[0])
                for slot, (counts, histogram, total) in sorted(slots.items())]

    # Counts (from memory) ---------------------------------------------------------------

    def pending_count(self) -> int:
        """Entries of this target waiting to be sent."""
        return self._pending

    def other_target_count(self) -> int:
        """Entries kept for another Cassandra target (the settings changed while they were pending)."""
        return self._other_targets

    def dead_letter_count(self) -> int:
        return self._dead

    def sent_count(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM sent").fetchone()[0])

    def oldest_age_seconds(self) -> float:
        """How long the oldest entry of this target has waited (0 when there is none)."""
        with self._lock:
            oldest = self._connection.execute(
                "SELECT enqueued_at FROM outbox WHERE target = ? ORDER BY sequence LIMIT 1", (self.target,)).fetchone()
        return 0.0 if oldest is None else max(0.0, time.time() - oldest[0])

    def close(self) -> None:
        with self._lock, self._write_lock:
            self._connection.close()
            self._add_connection.close()
        self._lock_file.close()


def _payload(text: str) -> dict[str, Any]:
    """A stored payload; an unreadable one becomes an empty dict, which the writer dead-letters."""
    try:
        payload = json.loads(text)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _lock_data_directory(path: pathlib.Path):
    """Take the exclusive lock that keeps a second process off this outbox (released when the process exits)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_file = open(lock_path, "a+")  # noqa: SIM115 - held open for the outbox's lifetime
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "another process"
        lock_file.close()
        raise OutboxInUse(
            f"The outbox {path} is in use by {holder}. Each app process needs its own data directory: "
            "set MNIST_DATA_DIR to a different folder for this one."
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"process {os.getpid()}")
    lock_file.flush()
    return lock_file

