"""Recounting the rollups History reads: each 15-minute slot's per-digit counts and confidence
figures from the narrow ``prediction_digits_by_slot`` table, and its confusion matrix and
per-version accuracy from ``corrections_by_slot``.

A slot is recounted whole (never incremented), so a replayed or retried write can never count
twice; the rollup is written with the time the recount began as its write timestamp, so of two
racing recounts the later one, which saw every write acknowledged before it, wins. Slots to
recount are found by the dirty markers the writes leave (``count_slots_to_refresh_by_day``), a
crashed process's included. A slot whose rows may have begun to expire keeps the rollup it has
(see retention.py).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent
from cassandra.query import PreparedStatement

from mnist_core.storage import buckets
from mnist_core.storage.records import CONFIDENCE_BINS, DIGIT_COUNT, confidence_bin
from mnist_core.storage.retention import Retention


def now_microseconds() -> int:
    """Client clock in microseconds: the unit of Cassandra write timestamps."""
    return time.time_ns() // 1000


class SlotRecounter:
    """The recounts over one session, with statements prepared once through ``prepare``."""

    def __init__(self, session: Session, prepare: Callable[[str], PreparedStatement], retention: Retention) -> None:
        self._session = session
        self._retention = retention
        self._select_markers = prepare(
            "SELECT slot_start, WRITETIME(requested_at) AS marked_until FROM {keyspace}.count_slots_to_refresh_by_day "
            "WHERE day = ?"
        )
        self._delete_marker = prepare(
            "DELETE FROM {keyspace}.count_slots_to_refresh_by_day USING TIMESTAMP ? WHERE day = ? AND slot_start = ?"
        )
        self._select_slot = prepare(
            "SELECT digit, confidence FROM {keyspace}.prediction_digits_by_slot WHERE slot_start = ?"
        )
        self._insert_rollup = prepare(
            "INSERT INTO {keyspace}.digit_counts_by_day (day, slot_start, counts, confidence_histogram, confidence_sum) "
            "VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        self._select_slot_corrections = prepare(
            "SELECT predicted_digit, true_label, model_version FROM {keyspace}.corrections_by_slot WHERE slot_start = ?"
        )
        self._insert_correction_rollup = prepare(
            "INSERT INTO {keyspace}.correction_counts_by_day (day, slot_start, confusion) VALUES (?, ?, ?) "
            "USING TIMESTAMP ?"
        )
        self._insert_version_rollup = prepare(
            "INSERT INTO {keyspace}.correction_counts_by_version (day, slot_start, model_version, corrections, correct) "
            "VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )

    def refresh_slots(self, slots: Iterable[datetime.datetime], *, concurrency: int = 32) -> None:
        """Recount each slot from the narrow table and store its rollup row (counts and confidence figures).

        The rollup is written with the time the recount began as its write timestamp, so when
        two recounts race, the later one (which saw every write acknowledged before it) wins.
        A slot whose rows may have begun to expire keeps the rollup it has.
        """
        slots = sorted(slot for slot in set(slots) if self._retention.may_recount(slot))
        if not slots:
            return
        started = now_microseconds()
        results = execute_concurrent(
            self._session, [(self._select_slot, (slot,)) for slot in slots],
            concurrency=concurrency, raise_on_first_error=True,
        )
        writes = []
        for slot, (success, rows) in zip(slots, results):
            counts = [0] * DIGIT_COUNT
            histogram = [0] * CONFIDENCE_BINS
            confidence_sum = 0.0
            for row in rows:
                counts[row.digit] += 1
                if row.confidence is not None:
                    histogram[confidence_bin(row.confidence)] += 1
                    confidence_sum += row.confidence
            writes.append((self._insert_rollup,
                           (buckets.utc_day(slot), slot, counts, histogram, confidence_sum, started)))
        execute_concurrent(self._session, writes, concurrency=concurrency, raise_on_first_error=True)

    def refresh_correction_slots(self, slots: Iterable[datetime.datetime], *, concurrency: int = 32) -> None:
        """Recount the confusion matrix of each slot's corrected predictions and store its rollup rows
        (a slot whose rows may have begun to expire keeps the ones it has)."""
        slots = sorted(slot for slot in set(slots) if self._retention.may_recount(slot))
        if not slots:
            return
        started = now_microseconds()
        results = execute_concurrent(
            self._session, [(self._select_slot_corrections, (slot,)) for slot in slots],
            concurrency=concurrency, raise_on_first_error=True,
        )
        writes = []
        for slot, (success, rows) in zip(slots, results):
            day = buckets.utc_day(slot)
            confusion = [0] * (DIGIT_COUNT * DIGIT_COUNT)
            by_version: dict[str, list[int]] = {}
            for row in rows:
                confusion[row.true_label * DIGIT_COUNT + row.predicted_digit] += 1
                counts = by_version.setdefault(row.model_version or "", [0, 0])
                counts[0] += 1
                counts[1] += int(row.true_label == row.predicted_digit)
            writes.append((self._insert_correction_rollup, (day, slot, confusion, started)))
            writes.extend((self._insert_version_rollup, (day, slot, version, corrections, correct, started))
                          for version, (corrections, correct) in by_version.items())
        execute_concurrent(self._session, writes, concurrency=concurrency, raise_on_first_error=True)

    def slots_marked_for_refresh(self, days: Iterable[datetime.date]) -> dict[datetime.datetime, int]:
        """Slots with a dirty marker on those UTC days, each with the time its marker stays valid until."""
        marked: dict[datetime.datetime, int] = {}
        futures = [self._session.execute_async(self._select_markers, (day,)) for day in days]
        for future in futures:
            for row in future.result():
                marked[buckets.from_cassandra_timestamp(row.slot_start)] = row.marked_until
        return marked

    def refresh_marked_slots(self, days: Iterable[datetime.date]) -> int:
        """Recount every marked slot on those days, then drop the markers no write can still need."""
        marked = self.slots_marked_for_refresh(days)
        if not marked:
            return 0
        started = now_microseconds()
        self.refresh_slots(marked)
        deletions = [
            (self._delete_marker, (started, buckets.utc_day(slot), slot))
            for slot, marked_until in marked.items()
            if marked_until is not None and marked_until <= started
        ]
        execute_concurrent(self._session, deletions, concurrency=32, raise_on_first_error=True)
        return len(marked)
