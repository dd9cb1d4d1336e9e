"""How many decoded pixels may be in memory at once, across every thread of the process.

A 2 MB upload can hold a 40-megapixel picture: about 160 MB once decoded, more while Pillow
converts it. The server reads every request on a thread of its own, so 28 such uploads at
once took 5-9 GB. Each decode of an encoded picture holds its pixel count from this budget
until its full-size image is dropped (once the ink is found at working size); a decode that
does not fit waits for others to finish, in order of arrival. One picture larger than the
whole budget still goes, alone.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator

# Two of the largest pictures accepted (preprocess.MAX_INPUT_PIXELS) at once: under 1 GB in all.
DECODE_BUDGET_PIXELS = 80_000_000


class PixelBudget:
    """A counting limit on decoded pixels; `hold` blocks until the pixels fit."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("A pixel budget must allow at least one pixel.")
        self.limit = limit
        self._in_use = 0
        self._holders = 0
        self._changed = threading.Condition()
        self._waiting: collections.deque = collections.deque()
        # The most pixels ever held at once (for tests and diagnostics).
        self.peak = 0

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait for room, first come first served (a large picture is not passed by small ones
        for ever), then hold `pixels` until the block ends."""
        pixels = max(int(pixels), 0)
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            try:
                self._changed.wait_for(lambda: self._waiting[0] is ticket and (
                    self._holders == 0 or self._in_use + pixels <= self.limit))
            finally:
                self._waiting.remove(ticket)
                # The next in line may fit now as well.
                self._changed.notify_all()
            self._in_use += pixels
            self._holders += 1
            self.peak = max(self.peak, self._in_use)
        try:
            yield
        finally:
            with self._changed:
                self._in_use -= pixels
                self._holders -= 1
                self._changed.notify_all()

    @property
    def in_use(self) -> int:
        return self._in_use


DECODE_BUDGET = PixelBudget(DECODE_BUDGET_PIXELS)
