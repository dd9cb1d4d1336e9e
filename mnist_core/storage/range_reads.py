"""Reading stored predictions by time range: the newest ``limit`` of a range (History's table and
CSV, newest first) and every one of a range (the export, oldest first).

Both walk only the 15-minute slot partitions that exist, found through each UTC day's slot index
(``prediction_slots_by_day``), each read bounded on its clustering column: a range costs reads
of its own slots however much else is stored, and an empty day one small read. The newest-first
read also asks the rollups how many rows each slot holds, so that it asks for just enough slots
at once instead of walking them one by one.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator

from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from mnist_core.storage import buckets
from mnist_core.storage.records import PredictionRecord

# The newest-first read asks for slots in requests of about this many rows (from the rollups'
# per-slot counts) and at most this many slot partitions, sent together.
ROWS_PER_RANGE_REQUEST = 1000
SLOTS_PER_RANGE_REQUEST = 32
# Slots one round of requests covers at most, and days whose slot index and rollup rows are read
# at once while looking for them.
SLOTS_PER_RANGE_ROUND = 1024
INDEX_DAYS_PER_READ = 8
# Rows an export reads per page (about 1 kB each, most of it the 28x28 input).
EXPORT_PAGE_SIZE = 1000


class RangeReader:
    """The range reads over one session, with statements prepared once through ``prepare``."""

    def __init__(self, session: Session, prepare: Callable[[str], PreparedStatement]) -> None:
        self._session = session
        self._select_day_slots = prepare(
            "SELECT slot_start FROM {keyspace}.prediction_slots_by_day WHERE day = ? AND slot_start >= ? "
            "AND slot_start < ?"
        )
        # The per-slot counts only (History's own read of this table takes every column).
        self._select_rollup = prepare(
            "SELECT slot_start, counts FROM {keyspace}.digit_counts_by_day WHERE day = ? AND slot_start >= ? "
            "AND slot_start < ?"
        )
        self._select_between_slots = prepare(
            "SELECT * FROM {keyspace}.predictions_by_slot WHERE slot_start IN ? AND created_at >= ? AND created_at < ? "
            "PER PARTITION LIMIT ?"
        )
        # Every column an export writes, oldest first within a slot (the reverse of the table's order).
        self._select_for_export = prepare(
            "SELECT id, created_at, digit, number, confidence, model_input, source, model_version, true_label "
            "FROM {keyspace}.predictions_by_slot WHERE slot_start = ? AND created_at >= ? AND created_at < ? "
            "ORDER BY created_at ASC"
        )

    def newest(self, *, since: datetime.datetime, until: datetime.datetime, limit: int) -> list[PredictionRecord]:
        """The newest ``limit`` predictions made in [since, until), newest first.

        The rollups' per-slot counts pick how many of the newest slots hold ``limit`` rows; those
        are asked for in requests of about ROWS_PER_RANGE_REQUEST rows, all sent at once: a busy
        day's newest slots answer in a few requests, and sparse readings spread over many slots
        in a few more, not one per slot. Counts that lag behind (a slot still being written)
        only mean another round.
        """
        records: list[PredictionRecord] = []
        slots = self._sized_slots_newest_first(since, until)
        while len(records) < limit:
            wanted = limit - len(records)
            requests: list[list[datetime.datetime]] = []
            request: list[datetime.datetime] = []
            request_rows = round_rows = round_slots = 0
            for slot, rows in slots:
                request.append(slot)
                request_rows += rows
                round_rows += rows
                round_slots += 1
                if len(request) == SLOTS_PER_RANGE_REQUEST or request_rows >= ROWS_PER_RANGE_REQUEST:
                    requests.append(request)
                    request, request_rows = [], 0
                if round_rows >= wanted or round_slots >= SLOTS_PER_RANGE_ROUND:
                    break
            if request:
                requests.append(request)
            if not requests:
                break
            # Rows of several partitions come back in token order, so the round is sorted here.
            futures = [self._session.execute_async(self._select_between_slots, (chosen, since, until, wanted))
                       for chosen in requests]
            found = [record_from_row(row) for future in futures for row in future.result()]
            records.extend(sorted(found, key=lambda record: (record.created_at, record.id.int), reverse=True))
        return records[:limit]

    def rows_for_export(self, *, since: datetime.datetime, until: datetime.datetime,
                        page_size: int = EXPORT_PAGE_SIZE) -> Iterator:
        """Every stored prediction made in [since, until), oldest first, read a page at a time.

        One slot partition after another, each paged by the driver, so an export of any range
        holds one page in memory, never the range.
        """
        for day in buckets.utc_days_between(since, until):
            for slot in reversed(self._slots_of_day(day, since, until)):
                statement = self._select_for_export.bind((slot, since, until))
                statement.fetch_size = page_size
                yield from self._session.execute(statement)

    def _slots_of_day(self, day: datetime.date, since: datetime.datetime,
                      until: datetime.datetime) -> list[datetime.datetime]:
        """The slots of a UTC day that hold predictions and overlap [since, until), newest first."""
        rows = self._session.execute(self._select_day_slots, (day, buckets.slot_start(since), until))
        return [buckets.from_cassandra_timestamp(row.slot_start) for row in rows]

    def _sized_slots_newest_first(self, since: datetime.datetime,
                                  until: datetime.datetime) -> Iterator[tuple[datetime.datetime, int]]:
        """(slot, rows) for the slots holding predictions in [since, until), newest first.

        The index says which slots exist (it is written before their rows, so it is never
        behind); the rollups say about how many rows each holds (at least 1 is assumed for a
        slot written since its last recount). Both are read for INDEX_DAYS_PER_READ days at once.
        """
        first_slot = buckets.slot_start(since)
        days = buckets.utc_days_between(since, until)[::-1]
        for offset in range(0, len(days), INDEX_DAYS_PER_READ):
            reads = [(self._session.execute_async(self._select_day_slots, (day, first_slot, until)),
                      self._session.execute_async(self._select_rollup, (day, first_slot, until)))
                     for day in days[offset:offset + INDEX_DAYS_PER_READ]]
            for index, rollup in reads:
                sizes = {row.slot_start: sum(row.counts) for row in rollup.result()}
                for row in index.result():
                    yield buckets.from_cassandra_timestamp(row.slot_start), max(1, sizes.get(row.slot_start, 0))


def record_from_row(row) -> PredictionRecord:
    """A ``predictions_by_slot`` row (all columns) as the record that was written."""
    return PredictionRecord.from_storage(
        id=row.id,
        created_at=buckets.from_cassandra_timestamp(row.created_at),
        digit=row.digit,
        number=row.number,
        confidence=row.confidence,
        probabilities=tuple(row.probabilities),
        model_input=row.model_input,
        source=row.source,
        model_version=row.model_version,
        latency_ms=row.latency_ms,
        true_label=row.true_label,
    )
