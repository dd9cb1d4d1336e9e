"""`python -m mnist_core export`: the readings people corrected, as a data set, from the real node.

The round trip goes the way a class would: readings through `POST /api/predict`, their true
labels through `POST /api/feedback`, then the export run as its own process. The other tests
put their records on days of their own, so each export holds exactly what its test stored.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mnist_core import dataset_export, rest_api
from tests.conftest import REPOSITORY_ROOT
from tests.test_rest_api import digit_pngs

pytestmark = pytest.mark.cassandra

UTC = datetime.timezone.utc


def run_export(keyspace: str, tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MNIST_CASSANDRA_CONTACT_POINTS": "127.0.0.1", "MNIST_CASSANDRA_KEYSPACE": keyspace,
                   "MNIST_DATA_DIR": str(tmp_path / "cli-data"), "MNIST_CASSANDRA_CONNECT_ATTEMPTS": "2"}
    return subprocess.run([sys.executable, "-m", "mnist_core", "export", *arguments], cwd=REPOSITORY_ROOT,
                          env=environment, capture_output=True, text=True, timeout=120)


def test_thirty_readings_and_their_feedback_come_back_as_exactly_that_data_set(
        recognizer, store, mnist, module_keyspace, tmp_path):
    bodies = digit_pngs(recognizer, mnist, 30, seed=15)
    routes = rest_api.create_routes(get_recognizer=lambda: recognizer, get_store=lambda: store,
                                    default_timezone="UTC")
    expected = {}
    with TestClient(Starlette(routes=routes)) as client:
        for index, body in enumerate(bodies):
            answer = client.post("/api/predict", content=body, headers={"Content-Type": "image/png"}).json()
            # Every third one was read wrong, says its writer.
            true_label = (answer["digit"] + 1) % 10 if index % 3 == 0 else answer["digit"]
            response = client.post("/api/feedback", json={"id": answer["id"], "true_label": true_label})
            assert response.status_code == 202, response.text
            expected[answer["id"]] = (true_label, answer["digit"], recognizer.read(body).model_input_bytes())
    store.flush()
    today = datetime.datetime.now(UTC).date()
    output = tmp_path / "class.npz"
    finished = run_export(module_keyspace, tmp_path, "--from", str(today - datetime.timedelta(days=1)),
                          "--to", str(today + datetime.timedelta(days=1)), "--output", str(output), "--tz", "UTC")
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    assert summary["readings"] == 30 and summary["format"] == "npz"

    data = np.load(output)
    assert data["x"].dtype == np.uint8 and data["x"].shape == (30, 28, 28)
    assert sorted(data["id"].tolist()) == sorted(expected)
    for row, identifier in enumerate(data["id"]):
        true_label, predicted, model_input = expected[str(identifier)]
        assert data["y"][row] == true_label
        assert data["predicted"][row] == predicted
        assert data["x"][row].tobytes() == model_input  # the exact input the model saw
        assert data["model_version"][row] == recognizer.model_version
    assert (data["y"] != data["predicted"]).sum() == 10
    created = data["created_at"].astype("datetime64[ms]")
    assert (np.diff(created.astype(np.int64)) >= 0).all()  # oldest first


def _records_on(store, make_record, day: datetime.datetime, labels: list[int | None]):
    records = []
    for index, label in enumerate(labels):
        record = make_record(digit=index % 10, created_at=day + datetime.timedelta(minutes=7 * index),
                             model_input=bytes([(index * 31 + pixel) % 256 for pixel in range(784)]))
        store.store(record)
        records.append((record, label))
    store.flush()
    for record, label in records:
        if label is not None:
            store.record_correction(record.id, label)
    store.flush()
    return records


def test_csv_and_png_zip_hold_the_same_readings_and_all_adds_the_unlabelled(store, make_record,
                                                                          module_keyspace, tmp_path):
    day = datetime.datetime(2022, 5, 17, 9, 0, tzinfo=UTC)
    records = _records_on(store, make_record, day, [3, None, 8, 1, None])
    arguments = ("--from", "2022-05-17", "--to", "2022-05-17", "--tz", "UTC")

    table_path = tmp_path / "readings.csv"
    assert run_export(module_keyspace, tmp_path, *arguments, "--output", str(table_path)).returncode == 0
    rows = list(csv.DictReader(table_path.open(encoding="utf-8")))
    assert [row["id"] for row in rows] == [str(record.id) for record, label in records if label is not None]
    for row, (record, label) in zip(rows, [item for item in records if item[1] is not None]):
        assert int(row["true_label"]) == label and int(row["predicted"]) == record.digit
        assert bytes(int(row[f"pixel{index}"]) for index in range(784)) == record.model_input

    archive_path = tmp_path / "readings.zip"
    finished = run_export(module_keyspace, tmp_path, *arguments, "--all", "--output", str(archive_path))
    assert finished.returncode == 0, finished.stderr
    with zipfile.ZipFile(archive_path) as archive:
        index = list(csv.DictReader(io.TextIOWrapper(archive.open("readings.csv"), encoding="utf-8")))
        assert len(index) == len(records)
        for entry, (record, label) in zip(index, records):
            assert entry["file"] == f"{'unlabelled' if label is None else label}/{record.id}.png"
            picture = np.asarray(Image.open(io.BytesIO(archive.read(entry["file"]))))
            assert picture.shape == (28, 28) and picture.tobytes() == record.model_input

    everything = tmp_path / "all.npz"
    assert run_export(module_keyspace, tmp_path, *arguments, "--all", "--output", str(everything)).returncode == 0
    assert np.load(everything)["y"].tolist() == [-1 if label is None else label for _, label in records]


def test_the_dates_are_days_of_the_given_zone(store, make_record, module_keyspace, tmp_path):
    # 23:30 UTC on 3 July is already 4 July in Tokyo.
    late = datetime.datetime(2023, 7, 3, 23, 30, tzinfo=UTC)
    (record, _), = _records_on(store, make_record, late, [6])
    output = tmp_path / "tokyo.npz"
    finished = run_export(module_keyspace, tmp_path, "--from", "2023-07-04", "--to", "2023-07-04",
                          "--tz", "Asia/Tokyo", "--output", str(output))
    assert finished.returncode == 0, finished.stderr
    assert np.load(output)["id"].tolist() == [str(record.id)]
    finished = run_export(module_keyspace, tmp_path, "--from", "2023-07-04", "--to", "2023-07-04",
                          "--tz", "UTC", "--output", str(output))
    assert finished.returncode == 0 and json.loads(finished.stdout)["readings"] == 0
    assert np.load(output)["x"].shape == (0, 28, 28)


@pytest.mark.parametrize(("arguments", "words"), [
    (("--from", "2022-05-17", "--to", "2022-05-16"), "before the start date"),
    (("--from", "2022-05-17", "--to", "2022-05-17", "--tz", "Mars/Olympus"), "not a known time zone"),
    (("--from", "2022-05-17", "--to", "2022-05-17", "--output-folder-missing"), "nothing was written"),
], ids=["end-before-start", "unknown-zone", "missing-folder"])
def test_a_bad_request_is_a_sentence_and_writes_nothing(module_keyspace, tmp_path, arguments, words):
    output = tmp_path / "out.npz"
    if arguments[-1] == "--output-folder-missing":
        arguments, output = arguments[:-1], tmp_path / "nowhere" / "out.npz"
    finished = run_export(module_keyspace, tmp_path, *arguments, "--output", str(output))
    assert finished.returncode == 2
    assert words in finished.stderr and "Traceback" not in finished.stderr
    assert not output.exists()
    assert not list(tmp_path.glob(".*.partial"))


def test_rows_are_read_a_page_at_a_time_across_days_oldest_first(store, make_record):
    start = datetime.datetime(2024, 2, 28, 22, 0, tzinfo=UTC)
    records = [make_record(created_at=start + datetime.timedelta(hours=index)) for index in range(7)]
    store.store_many(records)
    store.flush()
    repository = store.connect()
    rows = list(repository.rows_for_export(since=start, until=start + datetime.timedelta(days=1), page_size=2))
    assert [row.id for row in rows] == [record.id for record in records]
    exported = list(dataset_export.readings_to_export(rows, include_unlabelled=False))
    assert exported == []  # none has a true label yet
