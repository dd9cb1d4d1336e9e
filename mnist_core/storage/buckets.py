"""Time buckets of the data model: UTC day partitions and 15-minute count slots.

Kept in one place so the writer and every reader agree on how a moment maps to a partition.
Fifteen minutes divides every real time-zone offset (+05:30, +05:45, ...), so slot counts can
be regrouped exactly into the hours and days of any display zone.
"""

from __future__ import annotations

import datetime
import zoneinfo

SLOT_LENGTH = datetime.timedelta(minutes=15)
UTC = datetime.timezone.utc


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    """An aware UTC datetime; naive values are rejected because their zone is a guess."""
    if moment.tzinfo is None:
        raise ValueError("Times must carry a time zone (for example datetime.timezone.utc); got a naive datetime.")
    return moment.astimezone(UTC)


def from_cassandra_timestamp(value: datetime.datetime) -> datetime.datetime:
    """The driver returns naive UTC datetimes for timestamp columns; make them aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_day(moment: datetime.datetime) -> datetime.date:
    """The UTC calendar day: the partition of predictions_by_day and digit_counts_by_day."""
    return as_utc(moment).date()


def slot_start(moment: datetime.datetime) -> datetime.datetime:
    """The start of the 15-minute UTC slot holding this moment."""
    moment = as_utc(moment)
    minute = moment.minute - moment.minute % 15
    return moment.replace(minute=minute, second=0, microsecond=0)


def local_dates_to_utc_range(
    start: datetime.date, end: datetime.date, zone: zoneinfo.ZoneInfo
) -> tuple[datetime.datetime, datetime.datetime]:
    """The UTC half-open interval covering local days start..end (both included) in the zone."""
    if end < start:
        raise ValueError(f"The end date {end} is before the start date {start}.")
    local_start = datetime.datetime.combine(start, datetime.time.min, tzinfo=zone)
    local_end = datetime.datetime.combine(end + datetime.timedelta(days=1), datetime.time.min, tzinfo=zone)
    return local_start.astimezone(UTC), local_end.astimezone(UTC)


def utc_days_between(utc_start: datetime.datetime, utc_end: datetime.datetime) -> list[datetime.date]:
    """Every UTC day touched by the half-open interval [utc_start, utc_end)."""
    first = utc_day(utc_start)
    last = utc_day(utc_end - datetime.timedelta(microseconds=1))
    return [first + datetime.timedelta(days=offset) for offset in range((last - first).days + 1)]
