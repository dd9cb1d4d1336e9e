"""The largest partition at 1,000,000 readings a day, measured by Cassandra itself.

Writes one 15-minute slot's share of a million-a-day rate (10,417 readings, ``--rate`` to
change it) through the app's store into a private keyspace, flushes the node and reads
``nodetool tablehistograms`` and ``tablestats`` for predictions_by_slot: the partition size and
cell count Cassandra reports. The slot is the partition of every per-prediction table, so this
is the largest partition at that rate (a busier 15 minutes scales it linearly).
Run: .venv/bin/python -m bench.partition_size [--rate 1000000]
It uses the local node 1 (started with scripts/cassandra if needed, stopped again if it did),
drops its keyspace at the end, and prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import re
import subprocess
import tempfile

from bench.storage import CASSANDRA_SCRIPT, local_node, make_images, make_record
from harness.cassandra_node import drop_keyspace
from mnist_core.settings import settings_from_mapping
from mnist_core.storage import PredictionStore

KEYSPACE = "bench_partition_size"
UTC = datetime.timezone.utc
LIMIT_BYTES = 100 * 1024 * 1024
LIMIT_ROWS = 100_000


def nodetool(*arguments: str) -> str:
    return subprocess.run([str(CASSANDRA_SCRIPT), "nodetool", "1", *arguments], capture_output=True, text=True,
                          timeout=300, check=True).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1_000_000, help="readings a day to simulate")
    arguments = parser.parse_args()
    with local_node():
        return run(arguments)


def run(arguments: argparse.Namespace) -> int:
    rows = round(arguments.rate / 96)
    try:
        with tempfile.TemporaryDirectory() as data_directory:
            settings = settings_from_mapping({"MNIST_CASSANDRA_KEYSPACE": KEYSPACE, "MNIST_DATA_DIR": data_directory})
            store = PredictionStore(settings, background=False)
            store.connect()
            generator = random.Random(5)
            images = make_images(64, generator)
            slot = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
            spacing = datetime.timedelta(minutes=15) / rows
            records = [make_record(digit=index % 10, created_at=slot + index * spacing, image=images[index % 64])
                       for index in range(rows)]
            for index in range(0, rows, 5000):
                store.store_many(records[index:index + 5000])
                store.flush()
            store.close()
        nodetool("flush", KEYSPACE)
        histograms = nodetool("tablehistograms", KEYSPACE, "predictions_by_slot")
        stats = nodetool("tablestats", f"{KEYSPACE}.predictions_by_slot")
        maximum = re.search(r"^Max\s+\S+\s+\S+\s+\S+\s+(\d+)\s+(\d+)", histograms, re.MULTILINE)
        largest = re.search(r"Compacted partition maximum bytes:\s*(\d+)", stats)
        partition_bytes = int(largest.group(1)) if largest else int(maximum.group(1))
        cells = int(maximum.group(2)) if maximum else None
        print(histograms)
        figures = {"rate_per_day": arguments.rate, "rows_per_partition": rows,
                   "largest_partition_bytes": partition_bytes,
                   "largest_partition_mb": round(partition_bytes / 1024 / 1024, 1),
                   "largest_partition_cells": cells,
                   "within_100_mb": partition_bytes <= LIMIT_BYTES, "within_100k_rows": rows <= LIMIT_ROWS}
    finally:
        drop_keyspace(KEYSPACE)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
