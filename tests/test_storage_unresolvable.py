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
