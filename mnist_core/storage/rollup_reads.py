"""Reading the rollups History and ``/api/stats`` show: per-digit counts per local hour and day
with the confidence figures (``digit_counts_by_day``), and accuracy, confusion and per-version
accuracy (``correction_counts_by_day``, ``correction_counts_by_version``).

One small read per UTC day of the range, all sent at once; each holds at most one row per
15-minute slot whatever the slot counts, so a range costs the same at any number of readings.
Fifteen minutes divides every real time-zone offset, so slots regroup exactly into local hours.
"""

from __future__ import annotations

import datetime
import itertools
import zoneinfo
from collections.abc import Callable, Iterable

from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from mnist_core.storage import buckets
from mnist_core.storage.records import (CONFIDENCE_BINS, DIGIT_COUNT, AccuracyReport, HistoryCounts, PeriodCounts,
                                        SlotFigures)


class RollupReader:
    """The rollup reads over one session, with statements prepared once through ``prepare``."""

    def __init__(self, session: Session, prepare: Callable[[str], PreparedStatement]) -> None:
        self._session = session
        self._select_rollup = prepare(
            "SELECT slot_start, counts, confidence_histogram, confidence_sum FROM {keyspace}.digit_counts_by_day "
            "WHERE day = ? AND slot_start >= ? AND slot_start < ?"
        )
        self._select_correction_rollup = prepare(
            "SELECT confusion FROM {keyspace}.correction_counts_by_day WHERE day = ? AND slot_start >= ? "
            "AND slot_start < ?"
        )
        self._select_version_rollup = prepare(
            "SELECT model_version, corrections, correct FROM {keyspace}.correction_counts_by_version "
            "WHERE day = ? AND slot_start >= ? AND slot_start < ?"
        )

    def history_counts(self, *, start: datetime.date, end: datetime.date, zone: zoneinfo.ZoneInfo,
                       pending: Iterable[SlotFigures] = ()) -> HistoryCounts:
        """Per-digit counts per local hour and local day, and the confidence figures, for local days start..end.

        ``pending`` adds slots' figures that are not in Cassandra yet (this process's outbox).
        """
        utc_start, utc_end = buckets.local_dates_to_utc_range(start, end, zone)
        futures = [
            self._session.execute_async(self._select_rollup, (day, utc_start, utc_end))
            for day in buckets.utc_days_between(utc_start, utc_end)
        ]
        hourly: dict[datetime.datetime, list[int]] = {}
        daily: dict[datetime.date, list[int]] = {}
        # Every local hour and day in the range is present, with zeros where nothing was stored.
        slot = utc_start
        while slot < utc_end:
            local = slot.astimezone(zone)
            hourly.setdefault(_local_hour(local), [0] * DIGIT_COUNT)
            daily.setdefault(local.date(), [0] * DIGIT_COUNT)
            slot += buckets.SLOT_LENGTH
        histogram = [0] * CONFIDENCE_BINS
        confidence_sum = 0.0
        stored = (
            SlotFigures(slot_start=buckets.from_cassandra_timestamp(row.slot_start), counts=tuple(row.counts),
                        confidence_histogram=None if row.confidence_histogram is None else tuple(row.confidence_histogram),
                        confidence_sum=row.confidence_sum or 0.0)
            for future in futures for row in future.result()
        )
        for figures in itertools.chain(stored, pending):
            if not utc_start <= figures.slot_start < utc_end:
                continue
            local = figures.slot_start.astimezone(zone)
            hour_counts = hourly[_local_hour(local)]
            day_counts = daily[local.date()]
            for digit, count in enumerate(figures.counts):
                hour_counts[digit] += count
                day_counts[digit] += count
            if figures.confidence_histogram is not None:
                for index, count in enumerate(figures.confidence_histogram):
                    histogram[index] += count
                confidence_sum += figures.confidence_sum
        return HistoryCounts(
            timezone=zone.key,
            start=start,
            end=end,
            hourly=tuple(
                PeriodCounts(start=hour.astimezone(zone), counts=tuple(counts)) for hour, counts in sorted(hourly.items())
            ),
            daily=tuple(
                PeriodCounts(start=datetime.datetime.combine(day, datetime.time.min, tzinfo=zone), counts=tuple(counts))
                for day, counts in sorted(daily.items())
            ),
            confidence_histogram=tuple(histogram),
            confidence_sum=confidence_sum,
        )

    def accuracy(self, *, start: datetime.date, end: datetime.date, zone: zoneinfo.ZoneInfo) -> AccuracyReport:
        """Accuracy and confusion matrix from the correction rollups of local days start..end (one read per UTC day)."""
        utc_start, utc_end = buckets.local_dates_to_utc_range(start, end, zone)
        futures = [self._session.execute_async(self._select_correction_rollup, (day, utc_start, utc_end))
                   for day in buckets.utc_days_between(utc_start, utc_end)]
        matrix = [0] * (DIGIT_COUNT * DIGIT_COUNT)
        for future in futures:
            for row in future.result():
                for index, count in enumerate(row.confusion):
                    matrix[index] += count
        return AccuracyReport.from_matrix(
            [matrix[row * DIGIT_COUNT:(row + 1) * DIGIT_COUNT] for row in range(DIGIT_COUNT)])

    def accuracy_by_version(self, *, start: datetime.date, end: datetime.date,
                            zone: zoneinfo.ZoneInfo) -> dict[str, tuple[int, int]]:
        """(corrections, correct) per model version for predictions made on local days start..end
        (one read per UTC day of the per-version rollup)."""
        utc_start, utc_end = buckets.local_dates_to_utc_range(start, end, zone)
        futures = [self._session.execute_async(self._select_version_rollup, (day, utc_start, utc_end))
                   for day in buckets.utc_days_between(utc_start, utc_end)]
        totals: dict[str, list[int]] = {}
        for future in futures:
            for row in future.result():
                counts = totals.setdefault(row.model_version, [0, 0])
                counts[0] += row.corrections
                counts[1] += row.correct
        return {version: (corrections, correct) for version, (corrections, correct) in totals.items()}


def _local_hour(local: datetime.datetime) -> datetime.datetime:
    """The UTC instant where this local hour starts: unique even for the hour a DST change repeats."""
    return local.replace(minute=0, second=0, microsecond=0).astimezone(buckets.UTC)
