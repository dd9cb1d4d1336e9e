"""How long raw prediction rows live (``MNIST_RETENTION_DAYS``), as the TTLs Cassandra is given.

A row's life is counted from the prediction's own time, never from its write: a reading replayed
from the outbox a day late, or copied by a migration, expires with the readings made beside it,
and a correction's cell expires with the row it corrects. Rollups are never given a TTL, so the
History figures of a period outlive its rows; this module also says when a slot's rows may have
started to expire, after which its rollup must no longer be recounted from them.
"""

from __future__ import annotations

import datetime
import math

from mnist_core.settings import LONGEST_RETENTION_DAYS
from mnist_core.storage import buckets

# A slot is not recounted within this margin of its first row's expiry, so a recount never sees
# part of a slot already gone (clocks of app and nodes may differ by a little).
RECOUNT_MARGIN = datetime.timedelta(hours=1)
# Cassandra's TTL for "never expires".
FOREVER = 0


class Retention:
    """The retention policy: ``days=None`` keeps every row forever."""

    def __init__(self, days: int | None) -> None:
        if days is not None and not 1 <= days <= LONGEST_RETENTION_DAYS:
            raise ValueError(f"A retention must be between 1 and {LONGEST_RETENTION_DAYS} days; got {days}.")
        self.days = days
        self._length = None if days is None else datetime.timedelta(days=days)

    def time_to_live(self, created_at: datetime.datetime, *, now: datetime.datetime | None = None) -> int | None:
        """The TTL in seconds for a row of a prediction made at ``created_at``: FOREVER (0) without a
        retention, and None when the prediction is already past it (its rows must not be written)."""
        if self._length is None:
            return FOREVER
        now = datetime.datetime.now(buckets.UTC) if now is None else now
        remaining = (buckets.as_utc(created_at) + self._length - now).total_seconds()
        if remaining <= 0:
            return None
        return max(1, math.ceil(remaining))

    def slot_time_to_live(self, slot_start: datetime.datetime, *, now: datetime.datetime | None = None) -> int | None:
        """The TTL of a slot's index row: as long as the slot's last possible row lives."""
        return self.time_to_live(slot_start + buckets.SLOT_LENGTH, now=now)

    def may_recount(self, slot_start: datetime.datetime, *, now: datetime.datetime | None = None) -> bool:
        """Whether every row of the slot is still certainly there, so a recount of its rollup is whole."""
        if self._length is None:
            return True
        now = datetime.datetime.now(buckets.UTC) if now is None else now
        return buckets.as_utc(slot_start) + self._length - RECOUNT_MARGIN > now
