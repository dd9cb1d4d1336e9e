"""A real three-node ring on 127.0.0.1-3 (scripts/cassandra, no Docker): the keyspace at replication
factor 3, a thousand predictions written at QUORUM while one node is stopped part-way.

The ring runs beside the development node: its own home (.cassandra/cluster), cluster name,
and ports (CQL 9142, gossip 7100, JMX 7301-7303), so both can be up at once. It is started
fresh for this module and stopped at the end.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import subprocess
import threading
import time

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import ConstantReconnectionPolicy, RoundRobinPolicy, WhiteListRoundRobinPolicy
from cassandra.query import SimpleStatement

from mnist_core.settings import settings_from_mapping
from mnist_core.storage import PredictionStore, StoreOutcome
from tests.stored_rows import day_slots

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.cluster]

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]
CASSANDRA_SCRIPT = REPOSITORY_ROOT / "scripts" / "cassandra"
CLUSTER_HOME = REPOSITORY_ROOT / ".cassandra" / "cluster"
NODES = (1, 2, 3)
NATIVE_PORT = 9142
CLUSTER_ENVIRONMENT = {
    "MNIST_CASSANDRA_HOME": str(CLUSTER_HOME),
    "MNIST_CASSANDRA_CLUSTER_NAME": "mnist-cluster-test",
    "MNIST_CASSANDRA_NATIVE_PORT": str(NATIVE_PORT),
    "MNIST_CASSANDRA_STORAGE_PORT": "7100",
    "MNIST_CASSANDRA_JMX_PORT_BASE": "7300",
    "MNIST_CASSANDRA_SEEDS": "127.0.0.1",
    "MNIST_CASSANDRA_HEAP": "512M",
}
KEYSPACE = "cluster_test"
PREDICTIONS = 1000
STOP_AFTER = 300
WRITE_PAUSE_SECONDS = 0.01
UTC = datetime.timezone.utc


def cluster_script(command: str, node: int) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(CASSANDRA_SCRIPT), command, str(node)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **CLUSTER_ENVIRONMENT}, check=False,
    )
    if command != "status" and result.returncode != 0:
        pytest.fail(f"scripts/cassandra {command} {node} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return result


@pytest.fixture(scope="module")
def three_nodes():
    """A fresh ring: leftovers of an earlier run are removed first (this test owns .cassandra/cluster)."""
    for node in NODES:
        cluster_script("stop", node)
    shutil.rmtree(CLUSTER_HOME, ignore_errors=True)
    try:
        for node in NODES:
            cluster_script("start", node)
        addresses = [f"127.0.0.{node}" for node in NODES]
        wait_until_every_node_sees_the_whole_ring(addresses)
        yield addresses
    finally:
        for node in NODES:
            cluster_script("stop", node)


RING_WAIT_SECONDS = 180


def wait_until_every_node_sees_the_whole_ring(addresses: list[str]) -> None:
    """Each node, as coordinator, completes a write at ALL on a three-replica keyspace.

    A node answers CQL before gossip has told it the others are up: the test once connected
    right then, and the third node refused QUORUM as the only node it knew of.
    """
    cluster = Cluster(
        addresses, port=NATIVE_PORT, protocol_version=5,
        execution_profiles={
            address: ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]),
                                      consistency_level=ConsistencyLevel.ALL, request_timeout=10)
            for address in addresses
        },
        reconnection_policy=ConstantReconnectionPolicy(delay=0.5, max_attempts=None),
    )
    try:
        session = cluster.connect()
        waiting = set(addresses)
        deadline = time.monotonic() + RING_WAIT_SECONDS
        while waiting:
            for address in sorted(waiting):
                try:
                    session.execute("CREATE KEYSPACE IF NOT EXISTS ring_probe WITH replication = "
                                    "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}", execution_profile=address)
                    session.execute("CREATE TABLE IF NOT EXISTS ring_probe.probe (node text PRIMARY KEY)",
                                    execution_profile=address)
                    session.execute("INSERT INTO ring_probe.probe (node) VALUES (%s)", (address,), execution_profile=address)
                    waiting.discard(address)
                except Exception:  # noqa: BLE001 - not ready yet, whatever the driver says
                    pass
            if waiting and time.monotonic() > deadline:
                pytest.fail(f"Nodes {sorted(waiting)} did not see the whole ring within {RING_WAIT_SECONDS} s.",
                            pytrace=False)
            if waiting:
                time.sleep(1.0)
        session.execute("DROP KEYSPACE IF EXISTS ring_probe", timeout=60)
    finally:
        cluster.shutdown()


def checking_session(addresses: list[str]):
    cluster = Cluster(
        addresses, port=NATIVE_PORT, protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())},
        reconnection_policy=ConstantReconnectionPolicy(delay=0.5, max_attempts=None),
    )
    return cluster, cluster.connect()


def wait_until(condition, *, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(message, pytrace=False)
        time.sleep(0.5)


def test_a_thousand_predictions_at_quorum_survive_a_stopped_node(three_nodes, tmp_path, make_record):
    settings = settings_from_mapping({
        "MNIST_CASSANDRA_CONTACT_POINTS": ",".join(three_nodes),
        "MNIST_CASSANDRA_PORT": str(NATIVE_PORT),
        "MNIST_CASSANDRA_KEYSPACE": KEYSPACE,
        "MNIST_CASSANDRA_REPLICATION": "NetworkTopologyStrategy:datacenter1=3",
        "MNIST_CASSANDRA_CONSISTENCY": "QUORUM",
        "MNIST_DATA_DIR": str(tmp_path / "data"),
        "MNIST_OUTBOX_FLUSH_INTERVAL": "0.5",
    })
    checker, session = checking_session(three_nodes)
    store = PredictionStore(settings, background=True)  # the app's store: outbox first, writer behind
    try:
        store.connect()
        wait_until(lambda: sum(host.is_up for host in checker.metadata.all_hosts()) == 3, seconds=60,
                   message="the driver does not see three nodes up")
        replication = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (KEYSPACE,)
        ).one().replication
        assert replication["class"].endswith("NetworkTopologyStrategy")
        assert replication["datacenter1"] == "3"

        first_moment = datetime.datetime.now(UTC).replace(microsecond=0)
        records, failures, outcomes = [], [], []
        # Node 3 is stopped from another thread while predictions keep coming, one every few milliseconds.
        stopper = threading.Thread(target=cluster_script, args=("stop", 3))
        for index in range(PREDICTIONS):
            if index == STOP_AFTER:
                stopper.start()
            time.sleep(WRITE_PAUSE_SECONDS)
            record = make_record(digit=index % 10, created_at=first_moment + datetime.timedelta(milliseconds=index))
            records.append(record)
            try:
                outcomes.append(store.store(record))
            except Exception as error:  # noqa: BLE001 - any exception here is a failure a user would see
                failures.append(error)
        stopper.join()
        assert failures == []
        assert set(outcomes) <= {StoreOutcome.ACCEPTED, StoreOutcome.QUEUED}
        pending_after_writes = store.status().pending

        # Two nodes of three answer QUORUM: the writer empties the outbox while node 3 is still down.
        store.flush(timeout_seconds=120)
        cluster_script("start", 3)
        wait_until(lambda: sum(host.is_up for host in checker.metadata.all_hosts()) == 3, seconds=120,
                   message="node 3 did not come back")

        days = sorted({record.created_at.date() for record in records})
        # Node 3 alone (its own coordinator, consistency ONE) receives the writes it missed, as hints
        # from the other two; checked before any read at ALL, which would repair it.
        node_three = Cluster(["127.0.0.3"], port=NATIVE_PORT, protocol_version=5, execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy(["127.0.0.3"]),
                                                   consistency_level=ConsistencyLevel.ONE)})
        try:
            node_three_session = node_three.connect()

            def node_three_count() -> int:
                return sum(node_three_session.execute(
                    f"SELECT COUNT(*) FROM {KEYSPACE}.predictions_by_slot WHERE slot_start IN %s", (day_slots(day),)
                ).one()[0] for day in days)

            wait_until(lambda: node_three_count() == PREDICTIONS, seconds=180,
                       message="node 3 does not hold every prediction after it came back")
        finally:
            node_three.shutdown()

        # ALL: every replica answers; no prediction is missing and none is there twice.
        found = []
        for day in days:
            statement = SimpleStatement(
                f"SELECT id FROM {KEYSPACE}.predictions_by_slot WHERE slot_start IN %s", consistency_level=ConsistencyLevel.ALL
            )
            found += [row.id for row in session.execute(statement, (day_slots(day),), timeout=60)]
        wanted = {record.id for record in records}
        assert len(wanted - set(found)) == 0, "lost predictions"
        assert len(found) == len(set(found)) == PREDICTIONS, "duplicated predictions"

        counts = store.history_counts(start=days[0], end=days[-1], timezone="UTC")
        assert counts.totals_per_digit == (PREDICTIONS // 10,) * 10
        print(f"cluster: {PREDICTIONS} predictions, {len(failures)} failed for the user, "
              f"{outcomes.count(StoreOutcome.QUEUED)} answered as queued, {pending_after_writes} pending after the "
              f"last write, {len(wanted - set(found))} lost, {len(found) - len(set(found))} duplicated")
    finally:
        store.close()
        checker.shutdown()
