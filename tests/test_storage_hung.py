"""A hung node: the process is stopped (SIGSTOP), its sockets stay open and nothing answers.

That is what a network drop, a long GC pause or a frozen VM looks like to the driver, and
unlike a stopped node it gives no "connection refused" to react to. While the node hangs,
predictions are answered at once, /api/health says the node does not answer, /api/stats
answers JSON 503 within its time, and the History page shows a sentence; after SIGCONT every
accepted prediction is stored exactly once.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import statistics
import time

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from evaluation.drawings import redraw
from harness.stored_rows import day_slots
from mnist_core import rest_api
from mnist_core.storage import PredictionStore
from tests.conftest import plain_cluster
from tests.test_rest_api import digit_pngs
from tests.test_storage_kill import daemon_pid

OPERATOR_KEY = "operator-key-for-the-health-details"
pytestmark = [pytest.mark.cassandra, pytest.mark.slow]

PREDICTIONS = 30


@contextlib.contextmanager
def hung_node(node: int = 1):
    pid = daemon_pid(node)
    assert pid is not None, f"node {node} has no running daemon"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_hung_node_costs_the_user_nothing_and_loses_nothing(recognizer, settings_for, mnist, cassandra_node):
    settings = settings_for(MNIST_CASSANDRA_REQUEST_TIMEOUT="2", MNIST_OUTBOX_FLUSH_INTERVAL="0.5")
    store = PredictionStore(settings)
    store.connect()
    application = Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: recognizer, get_store=lambda: store, default_timezone="UTC",
        api_key=OPERATOR_KEY))  # with the key, /api/health says why storage is degraded
    bodies = digit_pngs(recognizer, mnist, PREDICTIONS, seed=3)
    try:
        with TestClient(application, headers={"X-API-Key": OPERATOR_KEY}) as client:
            assert client.get("/api/health").json()["status"] == "ok"
            with hung_node():
                durations, identifiers = [], []
                for body in bodies:
                    started = time.perf_counter()
                    response = client.post("/api/predict", content=body)
                    durations.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                    identifiers.append(response.json()["id"])
                assert max(durations) < 1.0, durations
                assert statistics.median(durations) < 0.05, durations

                # The writer's requests time out; health then says so, and answers at once.
                deadline = time.monotonic() + 20
                health = client.get("/api/health").json()
                while health["status"] == "ok" and time.monotonic() < deadline:
                    time.sleep(0.2)
                    health = client.get("/api/health").json()
                started = time.perf_counter()
                health = client.get("/api/health").json()
                health_seconds = time.perf_counter() - started
                assert health_seconds < 0.5
                assert health["status"] == "degraded", health
                assert "does not answer" in health["storage"]["message"], health
                assert health["storage"]["pending"] >= 1

                started = time.perf_counter()
                stats = client.get("/api/stats")
                stats_seconds = time.perf_counter() - started
                assert stats_seconds < 6.0
                assert stats.status_code == 503 and stats.json()["error"]
                print(f"\nhung node: {PREDICTIONS} predictions p50 {statistics.median(durations) * 1000:.1f} ms, "
                      f"max {max(durations) * 1000:.1f} ms; /api/health {health_seconds * 1000:.1f} ms; "
                      f"/api/stats 503 in {stats_seconds:.2f} s")

            deadline = time.monotonic() + 90
            while store.status().pending and time.monotonic() < deadline:
                time.sleep(0.2)
            assert store.status().pending == 0, "the outbox did not drain after SIGCONT"
            today = datetime.datetime.now(datetime.timezone.utc).date()
            yesterday = today - datetime.timedelta(days=1)  # the run may cross midnight UTC
            counted = store.history_counts(start=yesterday, end=today, timezone="UTC").totals_per_digit
            assert sum(counted) == PREDICTIONS, counted  # each counted once (this module's keyspace holds only these)
    finally:
        store.close()

    cluster = plain_cluster()
    try:
        session = cluster.connect()
        today = datetime.datetime.now(datetime.timezone.utc).date()
        stored = [str(row.id) for day in (today - datetime.timedelta(days=1), today) for row in session.execute(
            f"SELECT id FROM {settings.cassandra_keyspace}.predictions_by_slot WHERE slot_start IN %s", (day_slots(day),))]
    finally:
        cluster.shutdown()
    assert sorted(identifier for identifier in stored if identifier in set(identifiers)) == sorted(identifiers)
    assert len(stored) == len(set(stored))


def test_the_draw_and_history_pages_answer_with_a_hung_node(app_settings, fake_canvas, mnist, recognizer,
                                                            cassandra_node, monkeypatch):
    """The pages as a user sees them (AppTest): Draw answers and saves locally, History says why it cannot read."""
    from streamlit.testing.v1 import AppTest

    from mnist_core.storage import get_storage
    from tests.conftest import REPOSITORY_ROOT, _forget_process_storage

    monkeypatch.setenv("MNIST_CASSANDRA_REQUEST_TIMEOUT", "2")
    _forget_process_storage()
    store = get_storage()
    assert store.status().connected  # connected before the node hangs, as a running app is
    picture = redraw(mnist.test_images[0] / 255.0, "fill", np.random.default_rng(4))
    with hung_node():
        draw = AppTest.from_file(str(REPOSITORY_ROOT / "Home.py"), default_timeout=60)
        draw.run()
        fake_canvas.picture = picture
        started = time.perf_counter()
        draw.button(key="draw_predict").click().run()
        elapsed = time.perf_counter() - started
        assert not draw.exception, draw.exception
        assert draw.metric and draw.metric[0].value.startswith(str(recognizer.read(picture).digit))
        assert elapsed < 5.0, f"Predict took {elapsed:.1f} s with the node hung"

        history = AppTest.from_file(str(REPOSITORY_ROOT / "Home.py"), default_timeout=60)
        history.switch_page("app_pages/history.py").run()
        assert not history.exception, history.exception
        errors = [element.value for element in history.error]
        assert any("cannot be read right now" in text for text in errors), errors
    deadline = time.monotonic() + 90
    while store.status().pending and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.status().pending == 0, "the drawing saved during the hang was not sent after SIGCONT"


def test_a_starting_server_does_not_wait_for_a_hung_node(app_settings, make_record, monkeypatch, cassandra_node):
    """The server builds its store at start without waiting to connect (storage.start_storage): with
    the node hung, the store is there at once and says it is connecting, a prediction goes to the
    outbox, and a read waits for that first attempt and then says why it failed; after SIGCONT the
    store connects and the prediction is stored."""
    from mnist_core import settings
    from mnist_core.storage import StorageUnavailable, StoreOutcome, service

    monkeypatch.setattr(service, "_connect_on_the_writer_thread", False)  # put back after the test
    monkeypatch.setenv("MNIST_CASSANDRA_CONNECT_TIMEOUT", "2")
    settings.get_settings.cache_clear()
    record = make_record(digit=4)
    with hung_node():
        started = time.perf_counter()
        store = service.start_storage()
        assert time.perf_counter() - started < 1.0, "building the store waited for the node"
        deadline = time.monotonic() + 5
        while store.status().state != "connecting" and time.monotonic() < deadline:
            time.sleep(0.01)
        status = store.status()
        assert status.state == "connecting" and "Connecting to Cassandra" in status.message
        assert store.store(record) is StoreOutcome.QUEUED
        started = time.perf_counter()
        with pytest.raises(StorageUnavailable) as refused:
            store.latest(5)
        waited = time.perf_counter() - started
        # It waited for the attempt to end (not "try again shortly" at once) and says how it ended.
        assert "try again shortly" not in str(refused.value), refused.value
        assert 0.2 < waited < 20, waited
        assert store.status().state == "degraded"
    store.flush(timeout_seconds=60)
    assert [stored.id for stored in store.latest(100)].count(record.id) == 1
    assert store.status().connected
