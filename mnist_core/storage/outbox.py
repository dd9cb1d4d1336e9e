"""A durable local queue of writes that Cassandra has not acknowledged yet: a SQLite file in the data directory.

Entries keep the order they were added in (an autoincrement sequence) and carry the full
prediction with its client-generated id, so replaying an entry twice writes the same rows
twice, never two predictions. SQLite runs in WAL mode with full fsync: once ``add`` returns,
the entry survives a crash of the app.

An acknowledged entry is not forgotten at once: it moves to a ``sent`` table for a while.
A Cassandra node that is killed can lose the writes it acknowledged since its last commit log
sync (10 s by default), so when a node comes back the store puts the entries sent shortly
before it went away back in the queue, at their old positions, and sends them again.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sqlite3
import threading
import time
from typing import Any

PREDICTION = "prediction"
CORRECTION = "correction"


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """One queued write: its position in the queue, its kind and its JSON payload."""

    sequence: int
    kind: str
    payload: dict[str, Any]


class Outbox:
    """The SQLite-backed queue; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " sequence INTEGER PRIMARY KEY AUTOINCREMENT,"
            " kind TEXT NOT NULL,"
            " payload TEXT NOT NULL,"
            " enqueued_at REAL NOT NULL)"
        )
        # Entries Cassandra acknowledged, kept for resend_since(); same columns plus when they were sent.
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS sent ("
            " sequence INTEGER PRIMARY KEY,"
            " kind TEXT NOT NULL,"
            " payload TEXT NOT NULL,"
            " enqueued_at REAL NOT NULL,"
            " sent_at REAL NOT NULL)"
        )
        self._connection.execute("CREATE INDEX IF NOT EXISTS sent_by_time ON sent (sent_at)")

    def add(self, kind: str, payload: dict[str, Any]) -> int:
        """Append one write durably; returns its sequence number."""
        if kind not in (PREDICTION, CORRECTION):
            raise ValueError(f"Unknown outbox entry kind {kind!r}.")
        with self._lock:
            cursor = self._connection.execute(
                "INSERT INTO outbox (kind, payload, enqueued_at) VALUES (?, ?, ?)",
                (kind, json.dumps(payload, separators=(",", ":")), time.time()),
            )
            return int(cursor.lastrowid)

    def peek(self, limit: int) -> list[OutboxEntry]:
        """The oldest entries, in the order they were added."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT sequence, kind, payload FROM outbox ORDER BY sequence LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxEntry(sequence=row[0], kind=row[1], payload=json.loads(row[2])) for row in rows]

    def remove_through(self, sequence: int) -> None:
        """Move every entry up to and including ``sequence`` to the sent table (Cassandra acknowledged them)."""
        with self._lock, self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.execute(
                "INSERT OR REPLACE INTO sent (sequence, kind, payload, enqueued_at, sent_at)"
                " SELECT sequence, kind, payload, enqueued_at, ? FROM outbox WHERE sequence <= ?",
                (time.time(), sequence),
            )
            self._connection.execute("DELETE FROM outbox WHERE sequence <= ?", (sequence,))

    def resend_since(self, moment: float) -> int:
        """Queue again, at their original positions, the entries acknowledged at or after ``moment`` (a Unix time).

        Returns how many were queued again. Replaying them is safe: every write is idempotent.
        """
        with self._lock, self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            cursor = self._connection.execute(
                "INSERT OR IGNORE INTO outbox (sequence, kind, payload, enqueued_at)"
                " SELECT sequence, kind, payload, enqueued_at FROM sent WHERE sent_at >= ?",
                (moment,),
            )
            self._connection.execute("DELETE FROM sent WHERE sent_at >= ?", (moment,))
            return int(cursor.rowcount)

    def forget_sent_before(self, moment: float) -> None:
        """Drop acknowledged entries sent before ``moment``: no node can have lost them any more."""
        with self._lock:
            self._connection.execute("DELETE FROM sent WHERE sent_at < ?", (moment,))

    def sent_count(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM sent").fetchone()[0])

    def pending_count(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def oldest_age_seconds(self) -> float:
        """How long the oldest entry has waited (0 when the outbox is empty)."""
        with self._lock:
            oldest = self._connection.execute("SELECT MIN(enqueued_at) FROM outbox").fetchone()[0]
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def close(self) -> None:
        with self._lock:
            self._connection.close()
