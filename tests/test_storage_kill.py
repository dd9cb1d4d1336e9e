"""A node killed with SIGKILL right after acknowledging writes: the store sends them again when it is back.

This node runs with Cassandra's default periodic commit log sync (every 10 s), as an operator's
node may: a SIGKILL can then lose writes it acknowledged since its last sync (seen once in an
earlier hardening run; on this machine the replay usually recovers them from the page cache,
so the test checks the resend itself, not a loss). The outbox keeps acknowledged entries for a
window and queues them again when the driver sees the node come back.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from harness.stored_rows import day_slots
from mnist_core.storage import PredictionStore
from mnist_core.storage.records import time_uuid
from tests.conftest import REPOSITORY_ROOT, plain_cluster, run_cassandra_script, start_node, stop_node

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]

PERIODIC_NODE = 6
PERIODIC_NODE_ENVIRONMENT = {
    "MNIST_CASSANDRA_SEEDS": f"127.0.0.{PERIODIC_NODE}",
    "MNIST_CASSANDRA_CLUSTER_NAME": "mnist-periodic",
    "MNIST_CASSANDRA_HEAP": "512M",
    "MNIST_CASSANDRA_COMMITLOG_SYNC": "periodic",
}
PREDICTIONS = 300
WAIT_SECONDS = 180


@pytest.fixture(scope="module")
def periodic_node() -> Iterator[str]:
    started_here = start_node(node=PERIODIC_NODE, environment=PERIODIC_NODE_ENVIRONMENT)
    yield f"127.0.0.{PERIODIC_NODE}"
    if started_here:
        stop_node(node=PERIODIC_NODE)


def daemon_pid(node: int) -> int | None:
    """The node's JVM, found by the node-home marker scripts/cassandra puts on its command line."""
    cassandra_home = pathlib.Path(os.environ.get("MNIST_CASSANDRA_HOME") or REPOSITORY_ROOT / ".cassandra")
    node_home = cassandra_home / f"node{node}"
    result = subprocess.run(["pgrep", "-f", "--", f"-Dmnist.cassandra.node_home={node_home} "],
                            capture_output=True, text=True, check=False)
    pids = [int(line) for line in result.stdout.split()]
    return pids[0] if pids else None


def kill_node(node: int) -> None:
    pid = daemon_pid(node)
    assert pid is not None, f"node {node} has no running daemon"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while daemon_pid(node) == pid and time.monotonic() < deadline:
        time.sleep(0.1)


def stored_ids(address: str, keyspace: str, day: datetime.date) -> list:
    cluster = plain_cluster(address)
    try:
        session = cluster.connect()
        return [row.id for row in session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot WHERE slot_start IN %s", (day_slots(day),))]
    finally:
        cluster.shutdown()


def test_writes_acknowledged_before_a_sigkill_are_sent_again_and_all_arrive_once(
        periodic_node, settings_for, make_record):
    settings = settings_for(MNIST_CASSANDRA_CONTACT_POINTS=periodic_node, MNIST_OUTBOX_RESEND_WINDOW="30")
    store = PredictionStore(settings, background=True)
    store.connect()
    moment = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    records = [make_record(digit=index % 10, identifier=time_uuid(moment + datetime.timedelta(milliseconds=index)))
               for index in range(PREDICTIONS)]
    try:
        for record in records:
            store.store(record)
        deadline = time.monotonic() + 60
        while store.status().pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.status().pending == 0, "Cassandra did not acknowledge the writes before the kill"
        assert len(stored_ids(periodic_node, settings.cassandra_keyspace, moment.date())) == PREDICTIONS

        kill_node(PERIODIC_NODE)
        result = run_cassandra_script("start", node=PERIODIC_NODE, environment=PERIODIC_NODE_ENVIRONMENT)
        assert result.returncode == 0, result.stdout + result.stderr

        deadline = time.monotonic() + WAIT_SECONDS
        stored: list = []
        while time.monotonic() < deadline:
            if store.writer.resent_entries and not store.status().pending:
                stored = stored_ids(periodic_node, settings.cassandra_keyspace, moment.date())
                if len(stored) >= PREDICTIONS:
                    break
            time.sleep(0.5)
        # Every write acknowledged in the window before the node went down was queued again.
        assert store.writer.resent_entries >= PREDICTIONS
        assert sorted(stored) == sorted(record.id for record in records)
    finally:
        store.close()
