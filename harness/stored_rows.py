"""Reading the prediction tables directly in tests and benchmarks, as their partitions are laid out (schema 005).

Predictions live in one partition per 15-minute UTC slot, so "every row of a day" is a read of
that day's 96 slot partitions in one IN query.
"""

from __future__ import annotations

import datetime

from cassandra.query import ValueSequence

from mnist_core.storage.buckets import SLOT_LENGTH, slot_start

SLOTS_PER_DAY = 96
# The start of the 15-minute UTC slot holding a moment: the partition key of its rows.
slot_of = slot_start


def day_slots(day: datetime.date) -> ValueSequence:
    """The 96 slot starts of a UTC day, as the driver's IN (...) list for a plain query."""
    midnight = datetime.datetime.combine(day, datetime.time.min, tzinfo=datetime.timezone.utc)
    return ValueSequence([midnight + index * SLOT_LENGTH for index in range(SLOTS_PER_DAY)])

