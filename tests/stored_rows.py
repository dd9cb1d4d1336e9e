"""Reading the prediction tables directly in tests, as their partitions are laid out (schema 005).

Predictions live in one partition per 15-minute UTC slot, so "every row of a day" is a read of
that day's 96 slot partitions in one IN query.
"""

from __future__ import annotations

import datetime

from cassandra.query import ValueSequence

SLOTS_PER_DAY = 96
SLOT_LENGTH = datetime.timedelta(minutes=15)


def day_slots(day: datetime.date) -> ValueSequence:
    """The 96 slot starts of a UTC day, as the driver's IN (...) list for a plain query."""
    midnight = datetime.datetime.combine(day, datetime.time.min, tzinfo=datetime.timezone.utc)
    return ValueSequence([midnight + index * SLOT_LENGTH for index in range(SLOTS_PER_DAY)])


def slot_of(moment: datetime.datetime) -> datetime.datetime:
    """The start of the 15-minute UTC slot holding a moment: the partition key of its rows."""
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)
