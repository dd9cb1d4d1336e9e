"""Cassandra for tests and benchmarks: a private node 2-9 through scripts/cassandra, a plain driver
cluster built without the code under test, and DROP KEYSPACE for cleaning up.

A benchmark that kills and restarts Cassandra runs its own node (127.0.0.N, its own cluster
name and home under .cassandra/nodeN), so the shared development node 1 that other people's
tests use is never started, stopped or killed here. The node is found and killed by the
marker property scripts/cassandra puts on its command line, never by a broad name.
"""

from __future__ import annotations

import collections
import os
import pathlib
import signal
import subprocess
import time

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import ConstantReconnectionPolicy, RoundRobinPolicy
from cassandra.query import SimpleStatement

from harness import REPOSITORY_ROOT

CASSANDRA_SCRIPT = REPOSITORY_ROOT / "scripts" / "cassandra"
CLUSTER_NAME = "mnist-hardening"  # the private nodes' cluster name, never the development node's
NODE_HEAP = "768M"
SHARED_NODE = 1  # the default node other engineers' tests use: never started, stopped or killed here
NODE_START_TIMEOUT_SECONDS = 400


def plain_cluster(address: str = "127.0.0.1", **options) -> Cluster:
    """A driver Cluster built without the code under test, reconnecting quickly after an outage test."""
    return Cluster(
        [address],
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())},
        reconnection_policy=ConstantReconnectionPolicy(delay=0.5, max_attempts=None),
        **options,
    )


def drop_keyspace(keyspace: str) -> None:
    """DROP KEYSPACE IF EXISTS on the development node through a plain driver session (tests and benchmarks clean up with it)."""
    cluster = plain_cluster()
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    finally:
        cluster.shutdown()


class CassandraNode:
    """One node started with scripts/cassandra under its own cluster name; killed by its own pid only."""

    def __init__(self, number: int) -> None:
        if not 2 <= number <= 9:
            raise ValueError(f"--node must be 2-9 (node {SHARED_NODE} is the shared default node); got {number}.")
        self.number = number
        self.address = f"127.0.0.{number}"
        home = pathlib.Path(os.environ.get("MNIST_CASSANDRA_HOME") or REPOSITORY_ROOT / ".cassandra")
        self.node_home = home / f"node{number}"
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("MNIST_CASSANDRA_NATIVE_PORT", "MNIST_CASSANDRA_STORAGE_PORT",
                                      "MNIST_CASSANDRA_AUTH", "MNIST_CASSANDRA_NODE")}
        environment.update({
            "MNIST_CASSANDRA_SEEDS": self.address,
            "MNIST_CASSANDRA_CLUSTER_NAME": CLUSTER_NAME,
            "MNIST_CASSANDRA_HEAP": NODE_HEAP,
        })
        self.environment = environment

    def _script(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(CASSANDRA_SCRIPT), command, str(self.number)], env=self.environment,
                              capture_output=True, text=True, timeout=timeout)

    def answers(self) -> bool:
        return self._script("status", 30).returncode == 0

    def start(self) -> float:
        started = time.monotonic()
        result = self._script("start", NODE_START_TIMEOUT_SECONDS)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/cassandra start {self.number} failed:\n{result.stdout}{result.stderr}")
        return time.monotonic() - started

    def stop(self) -> None:
        result = self._script("stop", 150)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/cassandra stop {self.number} failed:\n{result.stdout}{result.stderr}")

    def pid(self) -> int | None:
        """The daemon's pid, found by the marker property scripts/cassandra puts on its command line."""
        result = subprocess.run(["pgrep", "-f", "--", f"-Dmnist.cassandra.node_home={self.node_home} "],
                                capture_output=True, text=True)
        pids = [int(line) for line in result.stdout.split()]
        return pids[0] if pids else None

    def kill(self) -> None:
        """SIGKILL the daemon (no drain, no flush: the commit log replays on the next start)."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"Cassandra node {self.number} has no running daemon to kill.")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.pid() == pid and time.monotonic() < deadline:
            time.sleep(0.1)

    def connect(self) -> Cluster:
        profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=60)
        return Cluster([self.address], protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile})

    def stored_ids(self, keyspace: str) -> tuple[collections.Counter, dict[str, str]]:
        """Rows per prediction id in predictions_by_slot (a full scan of our small private keyspace) and their sources."""
        cluster = self.connect()
        try:
            session = cluster.connect()
            rows = session.execute(SimpleStatement(f"SELECT id, source FROM {keyspace}.predictions_by_slot", fetch_size=5000))
            counts: collections.Counter = collections.Counter()
            sources: dict[str, str] = {}
            for row in rows:
                identifier = str(row.id)
                counts[identifier] += 1
                sources[identifier] = row.source
            return counts, sources
        finally:
            cluster.shutdown()

    def drop_keyspace(self, keyspace: str) -> None:
        """DROP KEYSPACE IF EXISTS on this node."""
        cluster = self.connect()
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        finally:
            cluster.shutdown()

    def app_environment(self, keyspace: str, data_directory: pathlib.Path) -> dict[str, str]:
        """The MNIST_* settings of an app on this node, in this keyspace, with its outbox in ``data_directory``."""
        return {"MNIST_CASSANDRA_CONTACT_POINTS": self.address, "MNIST_CASSANDRA_KEYSPACE": keyspace,
                "MNIST_DATA_DIR": str(data_directory)}
