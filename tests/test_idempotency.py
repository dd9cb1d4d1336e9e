"""POST /api/predict with an Idempotency-Key: a retry gets the first answer and stores nothing new.

Against the real Cassandra node: the first answer is remembered in the outbox (with its
prediction, in one transaction) and, once the writer sends it, in Cassandra, where another
replica finds it.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import uuid

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from harness.stored_rows import day_slots
from mnist_core import idempotency, rest_api
from tests.test_rest_api import digit_pngs, png_bytes

pytestmark = pytest.mark.cassandra


def _client_for(recognizer, store) -> TestClient:
    return TestClient(Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: recognizer, get_store=lambda: store, default_timezone="UTC")))


@pytest.fixture
def client(recognizer, store):
    with _client_for(recognizer, store) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def two_digits(recognizer, mnist):
    return digit_pngs(recognizer, mnist, 2, seed=5)


def _stored_ids(raw_session, store) -> list[uuid.UUID]:
    today = datetime.datetime.now(datetime.timezone.utc).date()
    query = f"SELECT id FROM {store.settings.cassandra_keyspace}.predictions_by_slot WHERE slot_start IN %s"
    return sorted(row.id for offset in (-1, 0, 1)
                  for row in raw_session.execute(query, (day_slots(today + datetime.timedelta(days=offset)),)))


def _post(client, body: bytes, key: str | None):
    headers = {"Content-Type": "image/png"}
    if key is not None:
        headers[idempotency.HEADER] = key
    return client.post("/api/predict", content=body, headers=headers)


def test_a_retry_with_the_same_key_gets_the_first_answer_and_stores_nothing(client, store, raw_session,
                                                                            two_digits):
    key = str(uuid.uuid4())
    first = _post(client, two_digits[0], key)
    assert first.status_code == 200, first.text
    assert first.headers["Idempotent-Replayed"] == "false"
    store.flush()
    before = _stored_ids(raw_session, store)
    assert uuid.UUID(first.json()["id"]) in before

    again = _post(client, two_digits[0], key)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    store.flush()
    assert _stored_ids(raw_session, store) == before

    # Without a key, or with another, the same image is a new reading.
    fresh = _post(client, two_digits[0], None)
    other_key = _post(client, two_digits[0], str(uuid.uuid4()))
    assert len({fresh.json()["id"], other_key.json()["id"], first.json()["id"]}) == 3
    store.flush()
    assert len(_stored_ids(raw_session, store)) == len(before) + 2


def test_another_replica_and_a_restarted_process_give_the_first_answer(recognizer, store, settings_for,
                                                                       two_digits, tmp_path):
    from mnist_core.storage import PredictionStore

    key = "retry-" + uuid.uuid4().hex
    with _client_for(recognizer, store) as client:
        first = _post(client, two_digits[1], key).json()
    store.flush()

    # Another replica: its own (empty) outbox, the same keyspace; it learns the answer from Cassandra.
    replica = PredictionStore(settings_for(MNIST_DATA_DIR=str(tmp_path / "replica")), background=False)
    try:
        replica.connect()
        replica.flush()  # the writer finds Cassandra answering
        with _client_for(recognizer, replica) as client:
            replayed = _post(client, two_digits[1], key)
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.json() == first
        assert replica.flush() == 0  # nothing was queued
    finally:
        replica.close()

    # The first process restarted with Cassandra unreachable: its outbox still holds the answer.
    store.close()
    restarted = PredictionStore(settings_for(MNIST_CASSANDRA_CONTACT_POINTS="unresolvable.invalid"),
                                background=False)
    try:
        with _client_for(recognizer, restarted) as client:
            replayed = _post(client, two_digits[1], key)
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == first
        status = restarted.status()
        assert status.pending == status.other_target_pending == 0  # nothing new queued
    finally:
        restarted.close()


def test_the_same_key_with_another_image_is_refused_and_stores_nothing(client, store, two_digits):
    key = str(uuid.uuid4())
    assert _post(client, two_digits[0], key).status_code == 200
    pending = store.status().pending
    reused = _post(client, two_digits[1], key)
    assert reused.status_code == 422
    assert "another image" in reused.json()["error"]
    assert store.status().pending == pending


@pytest.mark.parametrize("key", ["", "x" * 256, "two words", "tab\tinside"])
def test_a_malformed_key_is_400_before_the_body_is_read(client, store, two_digits, key):
    pending = store.status().pending
    response = _post(client, two_digits[0], key)
    assert response.status_code == 400
    assert idempotency.HEADER in response.json()["error"]
    assert store.status().pending == pending


def test_a_keyed_picture_without_digits_is_answered_each_time_and_never_stored(client, store):
    key = str(uuid.uuid4())
    blank = png_bytes(np.full((60, 60), 255, dtype=np.uint8))
    pending = store.status().pending
    for _ in range(2):
        response = _post(client, blank, key)
        assert response.status_code == 422
        assert "nothing was stored" in response.json()["error"]
    assert store.status().pending == pending
    assert store.remembered_answer(idempotency.key_hash(key)) is None


def test_requests_racing_with_one_key_store_one_reading(recognizer, store, two_digits):
    key = str(uuid.uuid4())
    pending = store.status().pending

    def send(_):
        return idempotency.read_once(two_digits[0], key=key, recognizer=recognizer, store=store,
                                     answer_of=rest_api._prediction_answer)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert len({answer.answer["id"] for answer in answers}) == 1
    assert sum(not answer.replayed for answer in answers) == 1
    # One prediction and its answer queued, nothing more.
    assert store.status().pending == pending + 2


def test_answers_are_forgotten_after_a_day(tmp_path, monkeypatch):
    from mnist_core.storage import outbox

    queue = outbox.Outbox(tmp_path / "outbox.sqlite3", target="test")
    try:
        queue.add(outbox.ANSWER, {"key_hash": "k", "body_fingerprint": "f", "prediction_id": str(uuid.uuid1()),
                                  "answer": "{}"})
        assert queue.answer("k") == ("f", "{}")
        later = outbox.time.time() + outbox.ANSWER_MAX_AGE_SECONDS + 1
        monkeypatch.setattr(outbox.time, "time", lambda: later)
        assert queue.answer("k") is None
        queue.forget_old_answers()
        monkeypatch.undo()
        assert queue.answer("k") is None  # gone from the file, not only out of the window
    finally:
        queue.close()
