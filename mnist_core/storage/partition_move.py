"""Copies a keyspace's day-partitioned rows (schema 001) into the slot partitions of schema 005.

Run by :mod:`mnist_core.storage.migrations` right after 005's tables exist and before 005 is
recorded, so a start that dies half-way copies again next time; every copy is an INSERT of the
same cells, written with the original moment as its write time (created_at for a prediction,
corrected_at for a correction), so copying twice changes nothing and never overrides a newer
correction. Rows already past the retention are not copied. The rollups are shared by both
layouts and need nothing. The old tables are left as they were (see the schema file).
"""

from __future__ import annotations

import itertools
import logging

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent
from cassandra.query import UNSET_VALUE, SimpleStatement

from mnist_core.storage import buckets
from mnist_core.storage.retention import Retention

LOGGER = logging.getLogger(__name__)
PAGE_SIZE = 1000
CONCURRENCY = 32
# Statements held at once: a few pages' worth.
CHUNK_STATEMENTS = 4000


def _microseconds(moment) -> int:
    return int(buckets.as_utc(moment).timestamp() * 1_000_000)


SELECT_PREDICTIONS = "SELECT * FROM predictions_by_day WHERE day = %s"
SELECT_CORRECTIONS = "SELECT * FROM corrections_by_day WHERE day = %s"


def _live_rows(session: Session, query: str, day, retention: Retention):
    """The rows of one day partition of an old table, paged, each with its prediction's time and
    TTL; rows already past the retention are left out."""
    for row in session.execute(SimpleStatement(query, fetch_size=PAGE_SIZE), (day,)):
        created_at = buckets.from_cassandra_timestamp(row.created_at)
        time_to_live = retention.time_to_live(created_at)
        if time_to_live is not None:
            yield row, created_at, time_to_live


def move_day_partitions(session: Session, *, retention_days: int | None) -> tuple[int, int]:
    """Copy every prediction and correction of the day tables; returns (predictions, corrections) copied.

    ``session`` is bound to the keyspace (the schema files' unqualified names).
    """
    retention = Retention(retention_days)
    insert_prediction = session.prepare(
        "INSERT INTO predictions_by_slot (slot_start, created_at, id, digit, number, confidence, probabilities, "
        "model_input, source, model_version, latency_ms, true_label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "USING TTL ? AND TIMESTAMP ?")
    insert_digit = session.prepare(
        "INSERT INTO prediction_digits_by_slot (slot_start, digit, id, confidence) VALUES (?, ?, ?, ?) "
        "USING TTL ? AND TIMESTAMP ?")
    insert_index = session.prepare(
        "INSERT INTO prediction_slots_by_day (day, slot_start) VALUES (?, ?) USING TTL ?")
    insert_correction = session.prepare(
        "INSERT INTO corrections_by_slot (slot_start, prediction_id, created_at, predicted_digit, true_label, "
        "model_version, corrected_at) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?")
    copied = {"predictions": 0, "corrections": 0}

    def copies():
        """The INSERTs, made as the day tables are paged, so a day of a million rows is never
        held in memory."""
        days = [row.day for row in session.execute(SimpleStatement("SELECT DISTINCT day FROM predictions_by_day",
                                                                   fetch_size=PAGE_SIZE))]
        for day in days:
            indexed = set()
            for row, created_at, time_to_live in _live_rows(session, SELECT_PREDICTIONS, day, retention):
                slot = buckets.slot_start(created_at)
                written_at = _microseconds(created_at)
                yield insert_prediction, (
                    slot, created_at, row.id, row.digit, UNSET_VALUE if row.number is None else row.number,
                    row.confidence, row.probabilities, row.model_input, row.source, row.model_version,
                    row.latency_ms, UNSET_VALUE if row.true_label is None else row.true_label, time_to_live,
                    written_at)
                yield insert_digit, (slot, row.digit, row.id, row.confidence, time_to_live, written_at)
                if slot not in indexed:
                    indexed.add(slot)
                    yield insert_index, (buckets.utc_day(slot), slot, retention.slot_time_to_live(slot))
                copied["predictions"] += 1
            for row, created_at, time_to_live in _live_rows(session, SELECT_CORRECTIONS, day, retention):
                yield insert_correction, (
                    buckets.slot_start(created_at), row.prediction_id, created_at, row.predicted_digit,
                    row.true_label, row.model_version, row.corrected_at, time_to_live,
                    _microseconds(buckets.from_cassandra_timestamp(row.corrected_at or row.created_at)))
                copied["corrections"] += 1

    # Sent a chunk at a time from this thread: the driver pulls statements from its own I/O
    # thread, where paging the old tables (a blocking read) must not happen.
    statements = copies()
    while chunk := list(itertools.islice(statements, CHUNK_STATEMENTS)):
        execute_concurrent(session, chunk, concurrency=CONCURRENCY, raise_on_first_error=True)
    predictions, corrections = copied["predictions"], copied["corrections"]
    if predictions or corrections:
        LOGGER.warning("Schema 005: copied %d predictions and %d corrections from day partitions into 15-minute "
                       "slot partitions; the tables predictions_by_day, prediction_digits_by_day and "
                       "corrections_by_day are no longer read.", predictions, corrections)
    return predictions, corrections
