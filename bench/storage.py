"""Storage benchmark on the local Cassandra node: our write path against the ancestor's, bulk throughput,
the 30-day history counts over 1,000,000 predictions against a naive full scan counted in pandas, and a
backlog of 100,000 outbox entries drained while new predictions keep arriving.

Run: .venv/bin/python -m bench.storage [--predictions 1000000]
It starts the node with scripts/cassandra if needed (and stops it again if it did), works in
its own keyspace (dropped at the end unless --keep), and prints one JSON object as its last line:
{"insert_speedup", "inserts_per_s", "history_1m_ms", "history_speedup", "backlog_store_p99_ms", ...}.
Loading a million predictions takes a few minutes on two cores.

"Our path" in (a) is what the app's Draw page and API wait for: PredictionStore.store() with
the background writer, which appends to the durable outbox (SQLite, fsync) and returns, while
the writer sends to Cassandra behind it. The run checks that every one of those predictions
then landed exactly once. Every write goes that way (there is no other path); the bulk load
(b) uses store_many() and flush(), which run the same writer synchronously, and times both.
(d) leaves 100,000 entries in an outbox (an outage's worth), starts an app store on it, and
calls store() every 10 ms until the backlog is gone: the drain rate and what store() cost
meanwhile, then checks that every entry landed exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pandas
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy

from bench.statistics_helpers import percentile
from harness.stored_rows import day_slots
from mnist_core.settings import settings_from_mapping
from mnist_core.storage import PredictionRecord, PredictionStore
from mnist_core.storage.records import time_uuid

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]
CASSANDRA_SCRIPT = REPOSITORY_ROOT / "scripts" / "cassandra"
KEYSPACE = "bench_storage"
UTC = datetime.timezone.utc
LOAD_CHUNK = 20_000
TARGETS = {"insert_speedup": 100, "inserts_per_s": 3000, "history_1m_ms": 500, "history_speedup": 50,
           "backlog_store_p99_ms": 10}
AT_MOST = ("history_1m_ms", "backlog_store_p99_ms")
BACKLOG_SPACING_SECONDS = 1.7
DRAINED_BELOW = 50


def plain_cluster() -> Cluster:
    return Cluster(
        ["127.0.0.1"],
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())},
    )


def make_images(count: int, generator: random.Random) -> list[bytes]:
    """A few distinct 28x28 images: realistic size per row without spending the benchmark on generating them."""
    return [bytes(generator.randrange(256) if generator.random() < 0.2 else 0 for _ in range(784)) for _ in range(count)]


def make_record(*, digit: int, created_at: datetime.datetime, image: bytes) -> PredictionRecord:
    probabilities = [0.005] * 10
    probabilities[digit] = 0.955
    return PredictionRecord(
        id=time_uuid(created_at),
        created_at=created_at,
        digit=digit,
        confidence=0.955,
        probabilities=tuple(probabilities),
        model_input=image,
        source="canvas",
        model_version="bench",
        latency_ms=5.0,
    )


# Section 1: the ancestor's path (a new Cluster and connection for every insert) against ours.

def ancestor_insert_latencies(samples: int) -> list[float]:
    setup = plain_cluster()
    session = setup.connect()
    session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.ancestor_predictions (date timestamp PRIMARY KEY, result text)")
    setup.shutdown()
    latencies = []
    for index in range(samples):
        started = time.perf_counter()
        cluster = Cluster(["127.0.0.1"])
        session = cluster.connect()
        session.execute(
            f"INSERT INTO {KEYSPACE}.ancestor_predictions (date, result) VALUES (toTimestamp(now()), %s)", (str(index % 10),)
        )
        cluster.shutdown()
        latencies.append(time.perf_counter() - started)
    return latencies


def our_insert_latencies(store: PredictionStore, samples: int, images: list[bytes]) -> tuple[list[float], list]:
    """What a user waits for in the app: store() on the app's store (outbox first, the writer sends behind)."""
    latencies, records = [], []
    for index in range(samples):
        record = PredictionRecord.new(
            digit=index % 10,
            confidence=0.955,
            probabilities=[0.955 if digit == index % 10 else 0.005 for digit in range(10)],
            model_input=images[index % len(images)],
            source="canvas",
            model_version="bench",
            latency_ms=5.0,
        )
        started = time.perf_counter()
        store.store(record)
        latencies.append(time.perf_counter() - started)
        records.append(record)
    return latencies, records


def count_stored(ids: list, days: set[datetime.date]) -> tuple[int, int]:
    """(rows found for these ids, distinct ids found), read back through a fresh connection."""
    cluster = plain_cluster()
    session = cluster.connect()
    wanted = set(ids)
    found = []
    for day in days:
        found += [row.id for row in session.execute(f"SELECT id FROM {KEYSPACE}.predictions_by_slot WHERE slot_start IN %s", (day_slots(day),))
                  if row.id in wanted]
    cluster.shutdown()
    return len(found), len(set(found))


# Section 2: loading 1,000,000 predictions over 30 days, measured as sustained bulk throughput.

def load_predictions(store: PredictionStore, *, total: int, first_day: datetime.date, days: int,
                     images: list[bytes], generator: random.Random) -> tuple[float, int]:
    """Write ``total`` predictions spread over the days, oldest first (as an import or a replay arrives);
    returns (seconds spent queueing and sending, rows written)."""
    window_start = datetime.datetime.combine(first_day, datetime.time.min, tzinfo=UTC)
    window_milliseconds = days * 86_400_000
    moments = sorted(generator.randrange(window_milliseconds) for _ in range(total))
    writing_seconds = 0.0
    written = 0
    while written < total:
        size = min(LOAD_CHUNK, total - written)
        records = [
            make_record(
                digit=generator.randrange(10),
                created_at=window_start + datetime.timedelta(milliseconds=moment),
                image=images[generator.randrange(len(images))],
            )
            for moment in moments[written:written + size]
        ]
        started = time.perf_counter()
        store.store_many(records)
        store.flush(timeout_seconds=600)
        writing_seconds += time.perf_counter() - started
        written += size
        if written % 100_000 == 0 or written == total:
            print(f"  loaded {written:>9,} predictions, {written / writing_seconds:,.0f}/s while writing", flush=True)
    return writing_seconds, written


# Section 4: a backlog of outbox entries drained under load.

def drain_backlog(settings, *, entries: int, first_moment: datetime.datetime, images: list[bytes]) -> dict:
    """Leave ``entries`` in an outbox, then let an app store drain it while store() is called every 10 ms."""
    backlog = [make_record(digit=index % 10, image=images[index % len(images)],
                           created_at=first_moment + datetime.timedelta(seconds=index * BACKLOG_SPACING_SECONDS))
               for index in range(entries)]
    left_behind = PredictionStore(settings, background=False)
    queued_started = time.perf_counter()
    for index in range(0, entries, LOAD_CHUNK):
        left_behind.store_many(backlog[index:index + LOAD_CHUNK])
    queue_seconds = time.perf_counter() - queued_started
    left_behind.close()

    app_store = PredictionStore(settings, background=True)
    latencies, arrivals = [], []
    try:
        app_store.connect()
        started = time.perf_counter()
        # Drained once only the last moments' arrivals wait (under steady load a few always do).
        while app_store.status().pending > DRAINED_BELOW:
            record = make_record(digit=7, image=images[0],
                                 created_at=first_moment - datetime.timedelta(minutes=30, seconds=len(arrivals)))
            call_started = time.perf_counter()
            app_store.store(record)
            latencies.append(time.perf_counter() - call_started)
            arrivals.append(record)
            time.sleep(0.01)
            if time.perf_counter() - started > 900:
                raise RuntimeError("the backlog did not drain within 15 minutes")
        drain_seconds = time.perf_counter() - started
        app_store.flush(timeout_seconds=60)
    finally:
        app_store.close()
    days = {record.created_at.date() for record in backlog + arrivals}
    rows, distinct = count_stored([record.id for record in backlog + arrivals], days)
    return {
        "queue_seconds": queue_seconds,
        "drain_seconds": drain_seconds,
        "latencies": latencies,
        "arrivals": len(arrivals),
        "exactly_once": rows == distinct == len(backlog) + len(arrivals),
    }


# Section 3: the history question, answered from the rollup and by a naive full scan.

def naive_history_counts(first_day: datetime.date, last_day: datetime.date) -> tuple[float, pandas.DataFrame]:
    cluster = plain_cluster()
    session = cluster.connect()
    session.default_fetch_size = 5000
    started = time.perf_counter()
    rows = session.execute(f"SELECT * FROM {KEYSPACE}.predictions_by_slot", timeout=600)
    frame = pandas.DataFrame(list(rows))
    frame["local_day"] = pandas.to_datetime(frame["created_at"], utc=True).dt.date
    in_range = frame[(frame["local_day"] >= first_day) & (frame["local_day"] <= last_day)]
    counts = in_range.groupby(["local_day", "digit"]).size()
    elapsed = time.perf_counter() - started
    cluster.shutdown()
    return elapsed, counts


def run_script(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CASSANDRA_SCRIPT), command], capture_output=True, text=True, timeout=900)


@contextlib.contextmanager
def local_node() -> Iterator[None]:
    """The local node for a benchmark: started with scripts/cassandra when it is not answering, and
    then stopped again at the end (a node someone else started is left running)."""
    started = run_script("status").returncode != 0
    if started:
        print("starting the local Cassandra node...", flush=True)
        result = run_script("start")
        if result.returncode != 0:
            raise SystemExit(f"scripts/cassandra start failed:\n{result.stdout}{result.stderr}")
    try:
        yield
    finally:
        if started:
            run_script("stop")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--ancestor-samples", type=int, default=30)
    parser.add_argument("--latency-samples", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark keyspace afterwards")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with local_node():
        return run(arguments)


def run(arguments: argparse.Namespace) -> int:
    generator = random.Random(20240601)
    setup = plain_cluster()
    setup_session = setup.connect()
    version = setup_session.execute("SELECT release_version FROM system.local").one().release_version
    setup_session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
    setup.shutdown()
    print(f"Cassandra {version} on 127.0.0.1:9042, keyspace {KEYSPACE}", flush=True)

    def store_settings(directory_prefix: str):
        return settings_from_mapping({"MNIST_CASSANDRA_KEYSPACE": KEYSPACE,
                                      "MNIST_DATA_DIR": tempfile.mkdtemp(prefix=directory_prefix)})

    # The app's store (writer on its thread) for the latency a user sees; a script's store (writer driven by flush()).
    app_store = PredictionStore(store_settings("bench-storage-app-"), background=True)
    app_store.connect()
    store = PredictionStore(store_settings("bench-storage-"), background=False)
    store.connect()
    images = make_images(32, generator)
    try:
        print(f"(a) insert latency: ancestor ({arguments.ancestor_samples} inserts, new Cluster each) "
              f"against ours ({arguments.latency_samples} inserts, one session)", flush=True)
        ancestor = ancestor_insert_latencies(arguments.ancestor_samples)
        ours, app_records = our_insert_latencies(app_store, arguments.latency_samples, images)
        drain_started = time.perf_counter()
        app_store.flush(timeout_seconds=120)
        drain_ms = (time.perf_counter() - drain_started) * 1000
        rows_found, ids_found = count_stored([record.id for record in app_records],
                                             {record.created_at.date() for record in app_records})
        ancestor_p50, ancestor_p99 = percentile(ancestor, 0.5) * 1000, percentile(ancestor, 0.99) * 1000
        ours_p50, ours_p99 = percentile(ours, 0.5) * 1000, percentile(ours, 0.99) * 1000
        print(f"  ancestor      p50 {ancestor_p50:.1f} ms, p99 {ancestor_p99:.1f} ms", flush=True)
        print(f"  ours (app)    p50 {ours_p50:.2f} ms, p99 {ours_p99:.2f} ms: outbox on disk, the writer sends behind; "
              f"outbox empty {drain_ms:.0f} ms after the last call; {ids_found}/{len(app_records)} ids stored, "
              f"{rows_found} rows", flush=True)
        if ids_found != len(app_records) or rows_found != len(app_records):
            print("  MISMATCH: the app store did not land every prediction exactly once", file=sys.stderr, flush=True)
            return 1

        today = datetime.datetime.now(UTC).date()
        first_day = today - datetime.timedelta(days=arguments.days)
        last_day = today - datetime.timedelta(days=1)
        print(f"(b) loading {arguments.predictions:,} predictions over {first_day}..{last_day}", flush=True)
        load_started = time.perf_counter()
        writing_seconds, written = load_predictions(
            store, total=arguments.predictions, first_day=first_day, days=arguments.days, images=images,
            generator=generator,
        )
        inserts_per_second = written / writing_seconds
        print(f"  {inserts_per_second:,.0f} inserts/s through the outbox and the writer (rollups recounted as it goes); "
              f"whole load {time.perf_counter() - load_started:.0f} s", flush=True)

        print(f"(c) history counts for {arguments.days} days over {written:,} predictions", flush=True)
        history_runs = []
        for _ in range(7):
            started = time.perf_counter()
            history = store.history_counts(start=first_day, end=last_day, timezone="UTC")
            history_runs.append(time.perf_counter() - started)
        history_ms = statistics.median(history_runs) * 1000
        print(f"  rollup: median {history_ms:.1f} ms (first {history_runs[0] * 1000:.1f} ms, "
              f"max {max(history_runs) * 1000:.1f} ms)", flush=True)
        naive_seconds, naive_counts = naive_history_counts(first_day, last_day)
        print(f"  naive SELECT * counted in pandas: {naive_seconds * 1000:,.0f} ms", flush=True)
        naive_total = int(naive_counts.sum())
        rollup_total = sum(period.total for period in history.daily)
        if naive_total != rollup_total:
            print(f"  MISMATCH: naive counted {naive_total}, rollup {rollup_total}", file=sys.stderr, flush=True)
            return 1
        for period in history.daily:
            for digit, count in enumerate(period.counts):
                if int(naive_counts.get((period.start.date(), digit), 0)) != count:
                    print(f"  MISMATCH on {period.start.date()} digit {digit}", file=sys.stderr, flush=True)
                    return 1
        print(f"  both count {rollup_total:,} predictions, identical per day and digit", flush=True)

        backlog_first = datetime.datetime.combine(first_day - datetime.timedelta(days=4), datetime.time.min, tzinfo=UTC)
        print(f"(d) a backlog of {arguments.backlog:,} outbox entries drained while store() runs every 10 ms", flush=True)
        backlog = drain_backlog(store_settings("bench-storage-backlog-"), entries=arguments.backlog,
                                first_moment=backlog_first, images=images)
        backlog_p50 = percentile(backlog["latencies"], 0.5) * 1000
        backlog_p99 = percentile(backlog["latencies"], 0.99) * 1000
        backlog_rate = arguments.backlog / backlog["drain_seconds"]
        print(f"  queued in {backlog['queue_seconds']:.1f} s; drained in {backlog['drain_seconds']:.1f} s "
              f"({backlog_rate:,.0f} entries/s) while {backlog['arrivals']} new predictions arrived; store() p50 "
              f"{backlog_p50:.2f} ms, p99 {backlog_p99:.2f} ms, max {max(backlog['latencies']) * 1000:.1f} ms", flush=True)
        if not backlog["exactly_once"]:
            print("  MISMATCH: the backlog did not land exactly once", file=sys.stderr, flush=True)
            return 1

        figures = {
            "insert_speedup": round(ancestor_p50 / ours_p50, 1),
            "inserts_per_s": round(inserts_per_second),
            "history_1m_ms": round(history_ms, 1),
            "history_speedup": round(naive_seconds * 1000 / history_ms, 1),
            "ancestor_insert_p50_ms": round(ancestor_p50, 1),
            "ancestor_insert_p99_ms": round(ancestor_p99, 1),
            "insert_p50_ms": round(ours_p50, 2),
            "insert_p99_ms": round(ours_p99, 2),
            "backlog_store_p50_ms": round(backlog_p50, 2),
            "backlog_store_p99_ms": round(backlog_p99, 2),
            "backlog_drain_s": round(backlog["drain_seconds"], 1),
            "backlog_entries_per_s": round(backlog_rate),
            "backlog_entries": arguments.backlog,
            "outbox_drain_ms": round(drain_ms),
            "naive_history_ms": round(naive_seconds * 1000),
            "predictions": written,
            "cassandra_version": version,
        }
        figures["targets_met"] = all(
            figures[key] <= target if key in AT_MOST else figures[key] >= target
            for key, target in TARGETS.items()
        )
    finally:
        app_store.close()
        store.close()
        if not arguments.keep:
            cleanup = plain_cluster()
            cleanup.connect().execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=300)
            cleanup.shutdown()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
