"""Scenario 2, Cassandra faults: the node SIGKILLed during the load, and the app restarted with predictions queued.

2a (FaultInjector) runs inside the load of scenario 1; 2b (run_restart_fault) runs after it,
and hands back the app it started again.
"""

from __future__ import annotations

import collections
import pathlib
import sqlite3
import threading
import time

import httpx2

from bench.hardening.report import say
from harness.accounting import account
from harness.api_load import API_CLIENT_TIMEOUT_SECONDS, says_not_a_digit
from harness.app_process import AppProcess
from harness.cassandra_node import CassandraNode


class FaultInjector(threading.Thread):
    """At a given moment: SIGKILL the node, then start it again with scripts/cassandra (commit log replay)."""

    def __init__(self, node: CassandraNode, at: float) -> None:
        super().__init__(name="fault-injector", daemon=True)
        self.node = node
        self.at = at
        self.killed_at: float | None = None
        self.back_at: float | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            time.sleep(max(0.0, self.at - time.monotonic()))
            self.killed_at = time.monotonic()
            self.node.kill()
            say(f"  [fault] node {self.node.number} killed (SIGKILL); starting it again...")
            self.node.start()
            self.back_at = time.monotonic()
            say(f"  [fault] node {self.node.number} answers again after {self.back_at - self.killed_at:.1f} s")
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            self.failure = error


# ---------------------------------------------------------------------------------------
# Scenario 2b: predictions queued while Cassandra is down survive an app restart
# ---------------------------------------------------------------------------------------

def outbox_rows(data_directory: pathlib.Path) -> int:
    connection = sqlite3.connect(str(data_directory / "outbox.sqlite3"), timeout=10)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        connection.close()


def run_restart_fault(*, app: AppProcess, node: CassandraNode, keyspace: str, data_directory: pathlib.Path,
                      arguments, api_images, figures: dict, expected: dict) -> AppProcess:
    count = arguments.restart_predictions
    say(f"(2b) Cassandra stopped, {count} API predictions queued, app stopped (SIGTERM), Cassandra and app "
        "started again")
    node.stop()
    ids, failures, outcomes = [], collections.Counter(), collections.Counter()
    refused_as_not_a_digit = 0
    with httpx2.Client(base_url=app.base_url, timeout=API_CLIENT_TIMEOUT_SECONDS, trust_env=False,
                       headers=app.api_headers) as client:
        for index in range(count):
            image, _ = api_images[index % len(api_images)]
            try:
                response = client.post("/api/predict", content=image, headers={"Content-Type": "image/png"})
            except httpx2.HTTPError as error:
                failures[f"transport {type(error).__name__}"] += 1
                expected["unknown_api"] += 1
                continue
            if response.status_code == 422 and says_not_a_digit(response):
                # The model's answer, as the load counts it: nothing is stored, and nothing failed.
                refused_as_not_a_digit += 1
                continue
            if response.status_code != 200:
                failures[f"HTTP {response.status_code}"] += 1
                continue
            body = response.json()
            ids.append(body["id"])
            outcomes[body["stored"]] += 1
    health = app.health() or {}
    pending_before_stop = health.get("storage", {}).get("pending")
    code, stop_seconds, had_to_kill = app.stop()
    queued_on_disk = outbox_rows(data_directory)
    say(f"  {len(ids)} answered {dict(outcomes)} ({dict(failures) or 'no failures'}; {refused_as_not_a_digit} "
        f"refused as not a digit); /api/health pending "
        f"{pending_before_stop}; app "
        f"exited with {code} in {stop_seconds:.1f} s{' (SIGKILL needed)' if had_to_kill else ''}; "
        f"{queued_on_disk} entries in the outbox file")

    node.start()
    restarted = AppProcess(environment=node.app_environment(keyspace, data_directory), log_path=app.log_path,
                           streamlit_options=app.streamlit_options, api_key=app.api_key,
                           dashboard_password=app.dashboard_password)
    restarted.start()
    serving = restarted.wait_until_serving()
    # Nobody visits yet: does the outbox drain on its own?
    idle_started = time.monotonic()
    idle_drained = False
    while time.monotonic() - idle_started < arguments.idle_drain_seconds:
        counts, _ = node.stored_ids(keyspace)
        if all(counts[identifier] >= 1 for identifier in ids):
            idle_drained = True
            break
        time.sleep(2)
    drained = restarted.wait_until_drained(arguments.drain_timeout)
    drained_after = time.monotonic() - idle_started
    counts, sources = node.stored_ids(keyspace)
    restart_account = account(set(ids), counts, sources, source=None, unknown_outcomes=0)
    expected["api"] |= set(ids)
    expected["fault"] |= set(ids)
    figures.update({
        "restart_predictions": len(ids),
        "restart_errors": sum(failures.values()),
        "restart_refused_as_not_a_digit": refused_as_not_a_digit,
        "restart_outcomes": dict(outcomes),
        "outbox_entries_after_app_stop": queued_on_disk,
        "app_stop_s": round(stop_seconds, 1),
        "outbox_drained_without_request": idle_drained,
        "outbox_drained_after_restart": drained is not None and restart_account.lost == 0,
        "restart_drain_s": None if drained is None else round(drained_after, 1),  # from the app serving again
        "restart_lost": restart_account.lost,
        "restart_duplicated": restart_account.extra_copies,
    })
    say(f"  app serving again in {serving:.1f} s; outbox drained with no request within "
        f"{arguments.idle_drain_seconds:g} s: {idle_drained}; drained after /api/health: "
        f"{'yes' if drained is not None else 'NO'}; of {len(ids)} queued: lost {restart_account.lost}, "
        f"duplicated {restart_account.extra_copies}")
    return restarted
