"""What the History page and ``/api/stats`` show: the figures of a local date range of predictions.

The helpers turn storage answers (per-slot rollups, correction rollups, the newest records of
the range) into the numbers the dashboard and ``/api/stats`` report, so both show the same
figures; they hold no Streamlit code, so they are tested without a browser.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

from mnist_core import time_zones
from mnist_core.storage import AccuracyReport, HistoryCounts, PredictionRecord, PredictionStore

# The History page lists at most this many predictions of its range (table, CSV); every figure
# (counts, mean confidence, confidence histogram, accuracy) comes from rollups of the whole range.
DEFAULT_RECORD_LIMIT = 5000


@dataclasses.dataclass(frozen=True)
class HistorySummary:
    """Everything the History page shows for a date range, in one object that can be cached."""

    start: datetime.date
    end: datetime.date
    timezone: str
    counts: HistoryCounts
    today_count: int
    accuracy: AccuracyReport
    records: tuple[PredictionRecord, ...]
    records_truncated: bool
    # (model version, corrections, correct), most corrected first: which model reads these users better.
    accuracy_by_version: tuple[tuple[str, int, int], ...] = ()

    @property
    def total(self) -> int:
        return sum(self.counts.totals_per_digit)

    @property
    def mean_confidence(self) -> float | None:
        """Mean confidence over every prediction of the range (from the rollups); None when there is none."""
        return self.counts.mean_confidence

    @property
    def is_empty(self) -> bool:
        return self.total == 0 and not self.records


def local_today(timezone: str) -> datetime.date:
    return datetime.datetime.now(time_zones.zone(timezone)).date()


def records_in_range(
    store: PredictionStore,
    *,
    start: datetime.date,
    end: datetime.date,
    timezone: str,
    limit: int = DEFAULT_RECORD_LIMIT,
) -> tuple[list[PredictionRecord], bool]:
    """Predictions made on local days start..end (newest first), at most ``limit``; and whether more exist.

    Read from the range itself (its first local midnight to the one after its last day), so a
    past range shows its own predictions however many were made since.
    """
    if end < start:
        raise ValueError(f"The range ends ({end}) before it starts ({start}).")
    zone = time_zones.zone(timezone)
    since = datetime.datetime.combine(start, datetime.time.min, tzinfo=zone)
    until = datetime.datetime.combine(end + datetime.timedelta(days=1), datetime.time.min, tzinfo=zone)
    # Read one more than asked so a full page tells us there is more.
    fetched = store.records_between(since=since, until=until, limit=limit + 1)
    return fetched[:limit], len(fetched) > limit


def history_summary(
    store: PredictionStore,
    *,
    start: datetime.date,
    end: datetime.date,
    timezone: str,
    record_limit: int = DEFAULT_RECORD_LIMIT,
) -> HistorySummary:
    """Counts, today's count, accuracy from feedback and the recent predictions for a local date range.

    Raises StorageUnavailable when Cassandra cannot answer, ValueError for a bad range or zone.
    """
    counts = store.history_counts(start=start, end=end, timezone=timezone)
    today = local_today(timezone)
    if start <= today <= end:
        today_count = sum(period.total for period in counts.daily if period.start.date() == today)
    else:
        today_count = sum(store.history_counts(start=today, end=today, timezone=timezone).totals_per_digit)
    accuracy = store.accuracy(start=start, end=end, timezone=timezone)
    by_version = store.accuracy_by_version(start=start, end=end, timezone=timezone)
    records, truncated = records_in_range(store, start=start, end=end, timezone=timezone, limit=record_limit)
    return HistorySummary(
        start=start,
        end=end,
        timezone=timezone,
        counts=counts,
        today_count=today_count,
        accuracy=accuracy,
        records=tuple(records),
        records_truncated=truncated,
        accuracy_by_version=tuple(sorted(((version, corrections, correct)
                                          for version, (corrections, correct) in by_version.items()),
                                         key=lambda item: (-item[1], item[0]))),
    )


def digit_counts(store: PredictionStore, *, start: datetime.date, end: datetime.date, timezone: str) -> dict:
    """Counts per digit for ``/api/stats``: a JSON-ready dict."""
    counts = store.history_counts(start=start, end=end, timezone=timezone)
    totals = counts.totals_per_digit
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "timezone": counts.timezone,
        "total": sum(totals),
        "counts": {str(digit): count for digit, count in enumerate(totals)},
    }


def record_rows(records: typing.Iterable[PredictionRecord], *, timezone: str) -> list[dict]:
    """Table and CSV rows for predictions, times in the display zone (no image bytes)."""
    zone = time_zones.zone(timezone)
    return [
        {
            "time": record.created_at.astimezone(zone).replace(tzinfo=None),
            "id": str(record.id),
            "digit": record.digit,
            "number": record.number,
            "confidence": round(record.confidence, 4),
            "true_label": record.true_label,
            "source": record.source,
            "model_version": record.model_version,
            "latency_ms": round(record.latency_ms, 2),
        }
        for record in records
    ]
