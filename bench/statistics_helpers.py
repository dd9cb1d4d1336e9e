"""Percentiles for the benchmarks' latency figures, computed one way so figures from different runs compare.

Nearest rank: the sample closest to ``fraction`` of the way through the sorted values, so a
reported p99 is a latency that was actually measured, not an interpolation between two.
"""

from __future__ import annotations


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]
