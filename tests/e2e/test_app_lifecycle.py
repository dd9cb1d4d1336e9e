"""The served app's start and stop: an outbox left by an earlier process drains with nobody visiting,
and a secrets file that cannot be read stops the start instead of opening the API.

A previous app process that stopped (or crashed) while Cassandra was away leaves its
predictions in the SQLite outbox of its data directory. The next process must send them at
start, not when its first visitor or API call happens to build the store.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from secrets import token_urlsafe

import pytest

from harness.app_process import free_port
from harness.stored_rows import day_slots
from mnist_core.settings import settings_from_mapping
from mnist_core.storage import outbox
from mnist_core.storage.connection import target_name
from mnist_core.storage.records import time_uuid
from tests.conftest import REPOSITORY_ROOT, build_record
from tests.e2e.conftest import running_app

pytestmark = [pytest.mark.e2e, pytest.mark.cassandra, pytest.mark.slow]

LEFT_BEHIND = 25
DRAIN_TIMEOUT_SECONDS = 90


def streamlit_answers(base_url: str) -> bool:
    """Streamlit's own health route: it answers without touching the model or the store."""
    with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=5) as response:
        return response.status == 200


def test_outbox_of_an_earlier_process_drains_at_start_without_any_request(module_keyspace, tmp_path, raw_session):
    data_directory = tmp_path / "app-data"
    moment = datetime.datetime.now(datetime.timezone.utc)
    records = [
        build_record(digit=index % 10, identifier=time_uuid(moment - datetime.timedelta(milliseconds=index)))
        for index in range(LEFT_BEHIND)
    ]
    outbox_path = data_directory / "outbox.sqlite3"
    target = target_name(settings_from_mapping({"MNIST_CASSANDRA_CONTACT_POINTS": "127.0.0.1",
                                                "MNIST_CASSANDRA_KEYSPACE": module_keyspace}))
    left_behind = outbox.Outbox(outbox_path, target=target)
    for record in records:
        left_behind.add(outbox.PREDICTION, record.to_json_dict())
    assert left_behind.pending_count() == LEFT_BEHIND
    left_behind.close()  # the process that wrote them is gone; the app takes the data directory over

    def pending() -> int:
        with contextlib.closing(sqlite3.connect(outbox_path)) as reader:
            return reader.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    with running_app(module_keyspace, data_directory, tmp_path / "streamlit.log", ready=streamlit_answers):
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        stored: list = []
        while time.monotonic() < deadline:
            if pending() == 0:
                # Schema and keyspace were created by the app itself, so only query once it says it is done.
                stored = [row.id for row in raw_session.execute(
                    f"SELECT id FROM {module_keyspace}.predictions_by_slot WHERE slot_start IN %s", (day_slots(moment.date()),))]
                if len(stored) >= LEFT_BEHIND:
                    break
            time.sleep(0.5)
        assert pending() == 0, "the outbox was not sent although nobody visited the app"
        assert sorted(stored) == sorted(record.id for record in records)


def test_a_secrets_file_that_cannot_be_parsed_stops_the_start_with_a_sentence(module_keyspace, tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'MNIST_API_KEY = "{token_urlsafe(24)}"\nbroken = [\n')
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--secrets.files", str(secrets)]
    environment = {**os.environ, "MNIST_CASSANDRA_KEYSPACE": module_keyspace, "MNIST_DATA_DIR": str(tmp_path / "data")}
    completed = subprocess.run(command, cwd=REPOSITORY_ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0, "the server must not run without the settings in its secrets file"
    assert f"The secrets file {secrets} cannot be read" in completed.stdout + completed.stderr
