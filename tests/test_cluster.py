"""A real three-node ring on 127.0.0.1-3 (scripts/cassandra, no Docker): the keyspace at replication
factor 3, a thousand predictions written at QUORUM while one node is stopped part-way; then two
app processes behind Debian's nginx running deploy/nginx.conf, browsers drawing and the API
loaded through it, and one replica SIGKILLed mid-load and started again.

The ring runs beside the development node: its own home (.cassandra/cluster), cluster name,
and ports (CQL 9142, gossip 7100, JMX 7301-7303), so both can be up at once. It is started
fresh for this module and stopped at the end.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import os
import pathlib
import shutil
import statistics
import subprocess
import threading
import time

import httpx2
import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import ConstantReconnectionPolicy, RoundRobinPolicy, WhiteListRoundRobinPolicy
from cassandra.query import SimpleStatement
from playwright.async_api import async_playwright

from harness.accounting import account
from harness.api_load import ApiResult, send_one
from harness.app_process import SHIPPED_MODEL_PATH, AppProcess
from harness.browser_sessions import IDLE_SELECTOR, BrowserSession
from harness.chromium import launch_chromium
from harness.pictures import browser_drawings, digit_pictures, png_bytes
from harness.stored_rows import day_slots
from mnist_core.settings import settings_from_mapping
from mnist_core.storage import PredictionStore, StoreOutcome
from tests.balancer import ROUTE_COOKIE, Balancer, running_balancer
from tests.e2e.conftest import app_failures_fail_the_test, app_is_serving, get_json

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


# ---------------------------------------------------------------------------------------
# Two app replicas behind nginx (deploy/nginx.conf) on the same ring; one is SIGKILLed mid-load.
# ---------------------------------------------------------------------------------------

REPLICA_NAMES = ("app", "app-2")  # compose's service names, as deploy/nginx.conf lists them
DOOMED = "app"
REPLICAS_KEYSPACE = "replicas_test"
SESSIONS_PER_REPLICA = 3
PREDICTIONS_BEFORE_KILL = 2  # each session's, before the kill
PREDICTIONS_AFTER_KILL = 4  # each session's after it (the dead replica's sessions through the survivor)
API_REQUESTS_PER_SECOND = 3.0
ANSWER_TIMEOUT_SECONDS = 30
RECONNECT_TIMEOUT_SECONDS = 45
# A Predict answer cut by the kill may be retried by the page once it is back; a session that
# keeps failing after reconnecting is a failure.
FAILED_ATTEMPTS_ALLOWED_PER_DOOMED_SESSION = 2


def replica_environment(addresses: list[str], data_directory: pathlib.Path) -> dict[str, str]:
    return {
        "MNIST_CASSANDRA_CONTACT_POINTS": ",".join(addresses),
        "MNIST_CASSANDRA_PORT": str(NATIVE_PORT),
        "MNIST_CASSANDRA_KEYSPACE": REPLICAS_KEYSPACE,
        "MNIST_CASSANDRA_REPLICATION": "NetworkTopologyStrategy:datacenter1=3",
        "MNIST_CASSANDRA_CONSISTENCY": "QUORUM",
        "MNIST_DATA_DIR": str(data_directory),
        "MNIST_OUTBOX_FLUSH_INTERVAL": "0.5",
    }


@dataclasses.dataclass
class SessionRun:
    """What one browser session went through: its replica, its attempts and how it came back."""
    session: BrowserSession
    replica: str
    failures_after_kill: int = 0
    problem: str | None = None

    def reconnect_seconds(self, killed_at: float) -> float | None:
        """From the kill to the page's next websocket (None: it never opened one after the kill)."""
        reopened = [opened for opened in self.session.websocket_opens if opened > killed_at]
        return min(reopened) - killed_at if reopened else None


class ReplicaLossRun:
    """Browsers drawing through nginx and API requests at a fixed rate, while one replica is killed."""

    def __init__(self, balancer: Balancer, routes: dict[str, list[str]], doomed_address: str,
                 kill, drawings: list, api_images: list) -> None:
        self.balancer = balancer
        self.routes = routes
        self.doomed_address = doomed_address
        self.kill = kill
        self.drawings = drawings
        self.api_images = api_images
        self.sessions: list[SessionRun] = []
        self.api_results: list[ApiResult] = []
        self.killed_at: float | None = None
        self._killed = asyncio.Event()
        self._ready = 0

    async def run(self) -> None:
        async with async_playwright() as playwright:
            browser = await launch_chromium(playwright)
            for replica, routes in self.routes.items():
                for route in routes:
                    cookie = {"name": ROUTE_COOKIE, "value": route, "url": self.balancer.base_url}
                    session = BrowserSession(len(self.sessions), browser=browser, base_url=self.balancer.base_url,
                                             drawings=self.drawings, answer_timeout_seconds=ANSWER_TIMEOUT_SECONDS,
                                             cookies=[cookie])
                    self.sessions.append(SessionRun(session, replica))
            await asyncio.gather(*(run.session.open() for run in self.sessions))
            stop_api = asyncio.Event()
            api = asyncio.create_task(self._api_load(stop_api))
            await asyncio.gather(*(self._session_loop(run) for run in self.sessions), self._kill_when_loaded())
            stop_api.set()
            await api
            await browser.close()

    async def _kill_when_loaded(self) -> None:
        """SIGKILL the doomed replica once every session has its first predictions, while they keep drawing."""
        while self._ready < len(self.sessions):
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # every session is in the middle of its next attempt
        # The kill's moment is when SIGKILL is sent, not when the process has been reaped: a page
        # may reconnect to the survivor, or fail an attempt, in between.
        self.killed_at = time.monotonic()
        self._killed.set()
        await asyncio.get_running_loop().run_in_executor(None, self.kill)

    async def _session_loop(self, run: SessionRun) -> None:
        doomed = run.replica == self.doomed_address
        for _ in range(PREDICTIONS_BEFORE_KILL):
            attempt = await run.session.predict_once("before")
            if attempt.error is not None:
                run.problem = f"failed before the kill: {attempt.error}"
                self._ready += 1
                return
        self._ready += 1
        done_after = 0
        while done_after < PREDICTIONS_AFTER_KILL:
            attempt = await run.session.predict_once("after" if self._killed.is_set() else "around")
            if attempt.error is None:
                if self._killed.is_set() and attempt.clicked_at > self.killed_at:
                    done_after += 1
                continue
            if not doomed or not self._killed.is_set():
                run.problem = f"{attempt.phase} attempt failed on a replica that was not killed: {attempt.error}"
                return
            run.failures_after_kill += 1
            if run.failures_after_kill > FAILED_ATTEMPTS_ALLOWED_PER_DOOMED_SESSION:
                run.problem = f"still failing after reconnecting: {attempt.error}"
                return
            await self._wait_for_reconnect(run)
            if run.problem:
                return

    async def _wait_for_reconnect(self, run: SessionRun) -> None:
        """The page, never reloaded, opens a new websocket (nginx sends it to the survivor) and is usable again."""
        page = run.session.page
        deadline = time.monotonic() + RECONNECT_TIMEOUT_SECONDS
        while not any(opened > self.killed_at for opened in run.session.websocket_opens):
            if time.monotonic() > deadline:
                run.problem = f"no reconnect within {RECONNECT_TIMEOUT_SECONDS} s of the kill"
                return
            await asyncio.sleep(0.2)
        await page.get_by_role("button", name="Predict", exact=True).wait_for()
        await page.wait_for_selector(IDLE_SELECTOR)
        if await page.get_by_test_id("stException").count():
            run.problem = "the page shows an exception after reconnecting"

    async def _api_load(self, stop: asyncio.Event) -> None:
        plan = {"images": self.api_images, "deadline_seconds": ANSWER_TIMEOUT_SECONDS}
        async with httpx2.AsyncClient(base_url=self.balancer.base_url, timeout=ANSWER_TIMEOUT_SECONDS,
                                      trust_env=False) as client:
            tasks = []
            started = time.monotonic()
            while not stop.is_set():
                result = ApiResult(index=len(self.api_results), scheduled_at=time.monotonic())
                self.api_results.append(result)
                tasks.append(asyncio.create_task(send_one(client, plan, result)))
                next_at = started + len(self.api_results) / API_REQUESTS_PER_SECOND
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks)


def answer_median(runs: list[SessionRun], *, before: bool) -> float:
    """Median seconds from Predict to the answer over these sessions' attempts before (or after) the kill."""
    return statistics.median(attempt.answer_seconds for run in runs for attempt in run.session.attempts
                             if attempt.answer_seconds is not None and (attempt.phase == "before") == before)


def stats_total(base_url: str) -> int:
    status, body = get_json(f"{base_url}/api/stats")
    assert status == 200, body
    return body["total"]


def test_two_replicas_behind_nginx_lose_nothing_when_one_is_killed(three_nodes, tmp_path, mnist):
    # The schema first, once, as compose's schema job applies it before any replica starts.
    schema_store = PredictionStore(settings_from_mapping(replica_environment(three_nodes, tmp_path / "schema")),
                                   background=False)
    schema_store.connect()
    schema_store.close()
    with app_failures_fail_the_test():
        replicas = {name: AppProcess(log_path=tmp_path / f"{name}.log", model_path=SHIPPED_MODEL_PATH,
                                     environment=replica_environment(three_nodes, tmp_path / f"{name}-data"))
                    for name in REPLICA_NAMES}
    addresses = {name: f"127.0.0.1:{app.port}" for name, app in replicas.items()}
    checker, session = checking_session(three_nodes)
    try:
        for app in replicas.values():
            app.start()
        with app_failures_fail_the_test():
            for app in replicas.values():
                app.wait_until(app_is_serving)
        with running_balancer(addresses, tmp_path / "nginx") as balancer:
            routes = balancer.routes_per_replica(list(addresses.values()), SESSIONS_PER_REPLICA)
            drawings = browser_drawings(mnist, first=0, count=12)
            api_images = [(png_bytes(picture), label) for picture, label in
                          digit_pictures(mnist, first=100, count=20, seed=13)]
            run = ReplicaLossRun(balancer, routes, addresses[DOOMED], replicas[DOOMED].kill, drawings, api_images)
            asyncio.run(run.run())
            assert [(sessions.replica, sessions.problem) for sessions in run.sessions if sessions.problem] == []

            # The killed replica comes back on its port and outbox, and sends what it had accepted.
            replicas[DOOMED].start()
            with app_failures_fail_the_test():
                for app in replicas.values():
                    app.wait_until(lambda base_url: app_is_serving(base_url) and get_json(
                        f"{base_url}/api/health")[1]["storage"]["pending"] == 0)

            survivors = [sessions for sessions in run.sessions if sessions.replica != addresses[DOOMED]]
            doomed = [sessions for sessions in run.sessions if sessions.replica == addresses[DOOMED]]
            # Sessions on the survivor never noticed: no failed attempt, no reload, one websocket throughout.
            for survivor in survivors:
                assert [attempt.error for attempt in survivor.session.attempts if attempt.error] == []
                assert survivor.session.reloads == 0 and len(survivor.session.websocket_opens) == 1
            # The dead replica's sessions came back by themselves (a new websocket, no reload), and
            # their predictions after the kill went through the survivor.
            reconnects = [session_run.reconnect_seconds(run.killed_at) for session_run in doomed]
            assert None not in reconnects and all(session_run.session.reloads == 0 for session_run in doomed)
            assert balancer.served_by(addresses[DOOMED], path_prefix="/api/") > 0, "the API load reached both replicas"

            answered = {attempt.prediction_id for sessions in run.sessions for attempt in sessions.session.attempts
                        if attempt.prediction_id}
            answered |= {result.prediction_id for result in run.api_results if result.prediction_id}
            unknown = sum(1 for sessions in run.sessions for attempt in sessions.session.attempts
                          if attempt.predict_clicked and attempt.prediction_id is None)
            unknown += sum(1 for result in run.api_results if result.status is None or result.status >= 500)
            statement = SimpleStatement(f"SELECT id, source FROM {REPLICAS_KEYSPACE}.predictions_by_slot",
                                        consistency_level=ConsistencyLevel.ALL, fetch_size=5000)
            counts, sources = collections.Counter(), {}
            for row in session.execute(statement, timeout=60):
                counts[str(row.id)] += 1
                sources[str(row.id)] = row.source
            books = account(answered, counts, sources, source=None, unknown_outcomes=unknown)
            assert books.lost == 0, f"lost accepted readings: {books.lost_ids}"
            assert books.duplicated == 0
            # History through either replica counts every stored reading once.
            stored = sum(counts.values())
            assert [stats_total(app.base_url) for app in replicas.values()] == [stored, stored]
            print(f"replicas behind nginx: {len(answered)} readings accepted ({sum(1 for r in run.api_results if r.prediction_id)} "
                  f"by the API), {unknown} answers cut by the kill, {stored} stored, {books.lost} lost, "
                  f"{books.duplicated} duplicated; the dead replica's sessions back in "
                  f"{', '.join(f'{seconds:.1f}' for seconds in reconnects)} s after the kill, "
                  f"survivor sessions: {sum(len(s.session.attempts) for s in survivors)} attempts, 0 failed, answer "
                  f"p50 {answer_median(survivors, before=True):.2f} s before the kill and "
                  f"{answer_median(survivors, before=False):.2f} s after")
    finally:
        for app in replicas.values():
            app.stop()
        checker.shutdown()
