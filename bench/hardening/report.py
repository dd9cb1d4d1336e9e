"""How the run prints: each line flushed at once (a run takes minutes; progress shows as it happens).

Durations are measured in seconds; the figures, printed and in the final JSON line, give them in
milliseconds rounded to 0.1 (None stays None: no sample, no figure).
"""

from __future__ import annotations


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def say(text: str = "") -> None:
    print(text, flush=True)
