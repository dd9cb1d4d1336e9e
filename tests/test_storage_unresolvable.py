"""A contact point whose name does not resolve (what stopping a compose service does to its name).

No node is needed: the fault is the name itself. The store must say which host it cannot
resolve, keep every prediction, and never raise from status() (the sidebar calls it on
every rerun).
"""

from __future__ import annotations

import time

import pytest

from mnist_core.settings import settings_from_mapping
from mnist_core.storage import PredictionStore, StorageUnavailable, connection
from tests.conftest import build_record

GONE = "cassandra-service-stopped.invalid"
OPERATOR_KEY = "operator-key-for-the-health-details"


@pytest.fixture
def gone_settings(tmp_path):
    return settings_from_mapping({
        "MNIST_CASSANDRA_CONTACT_POINTS": GONE,
        "MNIST_DATA_DIR": str(tmp_path / "data"),
        "MNIST_OUTBOX_FLUSH_INTERVAL": "0.2",
        "MNIST_CASSANDRA_CONNECT_ATTEMPTS": "2",
        "MNIST_CASSANDRA_CONNECT_RETRY_DELAY": "0.01",
    })


def test_connect_names_the_host_it_cannot_resolve(gone_settings):
    with pytest.raises(StorageUnavailable, match=f"Cannot resolve the Cassandra host name '{GONE}'"):
        connection.connect(gone_settings, sleep=lambda seconds: None)


def test_the_store_keeps_predictions_and_status_names_the_host(gone_settings):
    store = PredictionStore(gone_settings)
    try:
        records = [build_record(digit=digit) for digit in range(5)]
        outcomes = [store.store(record) for record in records]
        assert all(outcome.offline for outcome in outcomes)
        deadline = time.monotonic() + 10
        while GONE not in store.status().message and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.perf_counter()
        status = store.status()
        elapsed = time.perf_counter() - started
        assert status.state == "degraded" and status.pending == 5
        assert f"'{GONE}'" in status.message and "{}" not in status.message
        assert elapsed < 0.05, f"status() took {elapsed * 1000:.0f} ms"
        with pytest.raises(StorageUnavailable, match=GONE):
            store.latest(5)
    finally:
        store.close()


def test_the_api_answers_predictions_at_once_and_reports_the_host(gone_settings, recognizer, mnist):
    import statistics

    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from mnist_core import rest_api
    from tests.test_rest_api import digit_pngs

    store = PredictionStore(gone_settings)
    application = Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: recognizer, get_store=lambda: store, default_timezone="UTC",
        api_key=OPERATOR_KEY))  # with the key, /api/health says why storage is degraded
    bodies = digit_pngs(recognizer, mnist, 30, seed=5)
    try:
        with TestClient(application, headers={"X-API-Key": OPERATOR_KEY}) as client:
            durations = []
            for body in bodies:
                started = time.perf_counter()
                response = client.post("/api/predict", content=body)
                durations.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                assert response.json()["stored"] == "queued"
            assert max(durations) < 1.0 and statistics.median(durations) < 0.05, durations
            started = time.perf_counter()
            health = client.get("/api/health")
            assert time.perf_counter() - started < 0.5
            assert health.json()["status"] == "degraded" and GONE in health.json()["storage"]["message"]
            assert health.json()["storage"]["pending"] == 30
            started = time.perf_counter()
            stats = client.get("/api/stats")
            assert time.perf_counter() - started < 6.0
            assert stats.status_code == 503 and GONE in stats.json()["error"]
    finally:
        store.close()


def test_the_draw_page_answers_and_its_sidebar_names_the_host(app_settings, fake_canvas, mnist, monkeypatch):
    import numpy as np
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPOSITORY_ROOT, _forget_process_storage
    from evaluation.drawings import redraw

    monkeypatch.setenv("MNIST_CASSANDRA_CONTACT_POINTS", GONE)
    monkeypatch.setenv("MNIST_CASSANDRA_CONNECT_ATTEMPTS", "1")
    _forget_process_storage()
    app = AppTest.from_file(str(REPOSITORY_ROOT / "Home.py"), default_timeout=60)
    app.run()
    fake_canvas.picture = redraw(mnist.test_images[1] / 255.0, "fill", np.random.default_rng(6))
    app.button(key="draw_predict").click().run()
    assert not app.exception, app.exception
    assert app.metric and app.metric[0].label == "Prediction"
    sidebar_text = " ".join(element.value for element in app.sidebar.caption)
    assert f"'{GONE}'" in sidebar_text, sidebar_text
