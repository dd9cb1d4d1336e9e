"""History's cost at two sizes in one run: the same 30 days holding 100,000 and then 3,000,000 predictions.

Run: .venv/bin/python -m bench.history_scale [--small 100000] [--large 3000000]
It starts the local node with scripts/cassandra if needed (and stops it again if it did), works in
its own keyspace (dropped at the end unless --keep) and prints one JSON object as its last line:
{"small_ms", "large_ms", "ratio", "stats_small_ms", "stats_large_ms", "targets_met", ...}.
Loading three million predictions through the app's write path takes about a quarter of an hour
on two cores.

"The History computation" is everything the History page computes before it draws, for its
default range (the last 30 days and today): ``history_figures.history_summary`` (per-digit counts per
hour and day, today's count, mean confidence and the confidence histogram from the slot
rollups; accuracy, confusion and per-version accuracy from the correction rollups; the newest
5,000 readings for the table and CSV) and the table's rows. ``/api/stats`` is timed beside it.
Both should cost the same at either size: the rollups hold one row per slot whatever it
counts, and the table reads the newest slots until it has 5,000 rows.

Every prediction goes in through ``PredictionStore.store_many`` and ``flush`` (the outbox and the
writer the app uses, rollups recounted as it goes), one correction for every hundredth; the
figures are checked against what was written before they are reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import random
import statistics
import sys
import tempfile
import time

from bench.storage import local_node, make_images, make_record
from harness.cassandra_node import drop_keyspace
from mnist_core import history_figures
from mnist_core.settings import settings_from_mapping
from mnist_core.storage import PredictionStore

KEYSPACE = "bench_history_scale"
DAYS = 30
LOAD_CHUNK = 20_000
CORRECTION_EVERY = 100
RUNS = 9
TARGETS = {"ratio": 1.5, "large_ms": 500.0}
UTC = datetime.timezone.utc


def load(store: PredictionStore, *, total: int, first_day: datetime.date, generator: random.Random,
         images: list[bytes], digit_totals: list[int]) -> tuple[float, int]:
    """Write ``total`` predictions at random moments of the DAYS days from ``first_day`` and a
    correction for every CORRECTION_EVERY-th; returns (seconds spent, corrections written)."""
    window_start = datetime.datetime.combine(first_day, datetime.time.min, tzinfo=UTC)
    moments = sorted(generator.randrange(DAYS * 86_400_000) for _ in range(total))
    started = time.perf_counter()
    corrections = 0
    for offset in range(0, total, LOAD_CHUNK):
        records = []
        for moment in moments[offset:offset + LOAD_CHUNK]:
            digit = generator.randrange(10)
            digit_totals[digit] += 1
            records.append(make_record(digit=digit, created_at=window_start + datetime.timedelta(milliseconds=moment),
                                       image=images[generator.randrange(len(images))]))
        store.store_many(records)
        store.flush(timeout_seconds=900)
        for record in records[::CORRECTION_EVERY]:
            # Nine in ten confirmed, one in ten corrected to the next digit: a confusion matrix with both.
            true_label = record.digit if generator.random() < 0.9 else (record.digit + 1) % 10
            store.record_correction(record.id, true_label)
            corrections += 1
        store.flush(timeout_seconds=900)
        done = offset + len(records)
        if done % 200_000 == 0 or done == total:
            elapsed = time.perf_counter() - started
            print(f"  {done:>9,} predictions ({done / elapsed:,.0f}/s)", flush=True)
    return time.perf_counter() - started, corrections


def timed(function, runs: int = RUNS) -> tuple[float, object]:
    """Median milliseconds of ``runs`` calls (after one unmeasured warm-up) and the last result."""
    result = function()
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000, result


def measure(store: PredictionStore, *, start: datetime.date, end: datetime.date) -> dict:
    def history():
        summary = history_figures.history_summary(store, start=start, end=end, timezone="UTC")
        return summary, history_figures.record_rows(summary.records, timezone="UTC")

    history_ms, (summary, rows) = timed(history)
    stats_ms, stats = timed(lambda: history_figures.digit_counts(store, start=start, end=end, timezone="UTC"))
    return {"history_ms": history_ms, "stats_ms": stats_ms, "summary": summary, "rows": rows, "stats": stats}


def check(figures: dict, *, digit_totals: list[int], corrections: int) -> None:
    """The figures are the written ones: totals per digit, every correction, a full table."""
    summary = figures["summary"]
    if list(summary.counts.totals_per_digit) != digit_totals:
        raise SystemExit(f"MISMATCH: History counts {summary.counts.totals_per_digit}, written {digit_totals}")
    if figures["stats"]["total"] != sum(digit_totals):
        raise SystemExit(f"MISMATCH: /api/stats total {figures['stats']['total']}, written {sum(digit_totals)}")
    if summary.accuracy.corrections != corrections:
        raise SystemExit(f"MISMATCH: {summary.accuracy.corrections} corrections counted, {corrections} written")
    if len(summary.records) != history_figures.DEFAULT_RECORD_LIMIT or len(figures["rows"]) != len(summary.records):
        raise SystemExit(f"MISMATCH: the table holds {len(summary.records)} readings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=3_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark keyspace afterwards")
    arguments = parser.parse_args()
    if not 0 < arguments.small < arguments.large:
        parser.error("--small must be positive and below --large")
    logging.basicConfig(level=logging.ERROR)
    with local_node():
        return run(arguments)


def run(arguments: argparse.Namespace) -> int:
    generator = random.Random(20261204)
    drop_keyspace(KEYSPACE)

    store = PredictionStore(settings_from_mapping({
        "MNIST_CASSANDRA_KEYSPACE": KEYSPACE, "MNIST_DATA_DIR": tempfile.mkdtemp(prefix="bench-history-scale-"),
    }), background=False)
    images = make_images(32, generator)
    today = datetime.datetime.now(UTC).date()
    first_day = today - datetime.timedelta(days=DAYS)
    digit_totals = [0] * 10
    try:
        store.connect()
        results = {}
        corrections = 0
        loaded = 0
        for name, size in (("small", arguments.small), ("large", arguments.large)):
            print(f"loading {size - loaded:,} more predictions over {first_day}..{today - datetime.timedelta(days=1)}",
                  flush=True)
            seconds, written = load(store, total=size - loaded, first_day=first_day, generator=generator,
                                    images=images, digit_totals=digit_totals)
            loaded, corrections = size, corrections + written
            figures = measure(store, start=first_day, end=today)
            check(figures, digit_totals=digit_totals, corrections=corrections)
            results[name] = figures
            print(f"  {size:,} predictions ({seconds:.0f} s to load): History {figures['history_ms']:.1f} ms, "
                  f"/api/stats {figures['stats_ms']:.1f} ms (medians of {RUNS})", flush=True)
    finally:
        store.close()
        if not arguments.keep:
            drop_keyspace(KEYSPACE)
    output = {
        "small_predictions": arguments.small,
        "large_predictions": arguments.large,
        "days": DAYS,
        "small_ms": round(results["small"]["history_ms"], 1),
        "large_ms": round(results["large"]["history_ms"], 1),
        "ratio": round(results["large"]["history_ms"] / results["small"]["history_ms"], 2),
        "stats_small_ms": round(results["small"]["stats_ms"], 1),
        "stats_large_ms": round(results["large"]["stats_ms"], 1),
        "table_rows": len(results["large"]["rows"]),
        "corrections": corrections,
    }
    output["targets_met"] = output["ratio"] <= TARGETS["ratio"] and output["large_ms"] <= TARGETS["large_ms"]
    print(json.dumps(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
