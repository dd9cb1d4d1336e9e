"""`POST /api/feedback` and the Draw page's feedback, through mnist_core.feedback, on the real node.

Each answer is checked against what Cassandra then holds: the true label on the prediction's
row, and the accuracy figures built from the corrections.
"""

from __future__ import annotations

import datetime
import json
import uuid

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from harness.stored_rows import slot_of
from mnist_core import feedback, rest_api
from mnist_core.storage import StoreOutcome

pytestmark = pytest.mark.cassandra

API_KEY = "feedback-test-key-0123456789"


def _client(recognizer, store, **options) -> TestClient:
    routes = rest_api.create_routes(get_recognizer=lambda: recognizer, get_store=lambda: store,
                                    default_timezone="UTC", **options)
    return TestClient(Starlette(routes=routes))


@pytest.fixture
def client(recognizer, store):
    with _client(recognizer, store) as test_client:
        yield test_client


def _true_label(raw_session, keyspace: str, record) -> int | None:
    row = raw_session.execute(
        f"SELECT true_label FROM {keyspace}.predictions_by_slot WHERE slot_start = %s AND created_at = %s AND id = %s",
        (slot_of(record.created_at), record.created_at, record.id)).one()
    return None if row is None else row.true_label


def _post(client, body, **headers):
    return client.post("/api/feedback", content=json.dumps(body) if not isinstance(body, (bytes, str)) else body,
                       headers={"Content-Type": "application/json", **headers})


def test_feedback_on_a_stored_prediction_is_queued_then_stored_and_the_latest_label_wins(
        client, store, make_record, raw_session, module_keyspace):
    # On a day of its own, so the accuracy figures below hold this test's corrections only.
    record = make_record(digit=4, created_at=datetime.datetime(2021, 3, 14, 15, 9, 26, tzinfo=datetime.timezone.utc))
    store.store(record)
    store.flush()

    first = _post(client, {"id": str(record.id), "true_label": 9})
    assert first.status_code == 202, first.text
    assert first.json() == {"id": str(record.id), "true_label": 9, "stored": "accepted"}
    store.flush()
    assert _true_label(raw_session, module_keyspace, record) == 9

    again = _post(client, {"id": str(record.id), "true_label": 4})
    assert again.status_code == 202
    store.flush()
    assert _true_label(raw_session, module_keyspace, record) == 4
    day = record.created_at.date()
    report = store.accuracy(start=day - datetime.timedelta(days=1), end=day + datetime.timedelta(days=1),
                            timezone="UTC")
    assert report.corrections == 1 and report.correct == 1  # one correction counted, the latest


def test_feedback_on_a_prediction_still_in_the_outbox_is_taken(client, store, make_record, raw_session,
                                                               module_keyspace):
    record = make_record(digit=2)
    store.store(record)  # not flushed: only the outbox knows it yet
    response = _post(client, {"id": str(record.id), "true_label": 7})
    assert response.status_code == 202, response.text
    store.flush()
    assert _true_label(raw_session, module_keyspace, record) == 7


@pytest.mark.parametrize("identifier", [str(uuid.uuid1()), str(uuid.uuid4())], ids=["time-based", "random"])
def test_an_id_no_prediction_has_is_404_and_stores_nothing(client, store, identifier):
    response = _post(client, {"id": identifier, "true_label": 3})
    assert response.status_code == 404, response.text
    assert identifier in response.json()["error"]
    assert store.status().pending == 0


@pytest.mark.parametrize(("body", "words"), [
    (b"{not json", "not JSON"),
    ({"id": "x", "true_label": 3}, "not a prediction id"),
    ({"true_label": 3}, "exactly"),
    ({"id": "{id}", "true_label": 10}, "0 to 9"),
    ({"id": "{id}", "true_label": True}, "0 to 9"),
    ({"id": "{id}", "true_label": "3"}, "0 to 9"),
    ({"id": "{id}", "true_label": 3, "extra": 1}, "exactly"),
    ([1, 2], "exactly"),
], ids=["garbage", "bad-id", "no-id", "label-10", "label-bool", "label-text", "extra-field", "list"])
def test_a_bad_body_is_400_with_a_sentence_and_changes_nothing(client, store, make_record, raw_session,
                                                               module_keyspace, body, words):
    record = make_record(digit=5)
    store.store(record)
    store.flush()
    if isinstance(body, dict):
        body = {key: (str(record.id) if value == "{id}" else value) for key, value in body.items()}
    response = _post(client, body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    assert store.status().pending == 0
    assert _true_label(raw_session, module_keyspace, record) is None


def test_feedback_needs_json_the_api_key_and_post(recognizer, store, make_record):
    record = make_record()
    store.store(record)
    body = {"id": str(record.id), "true_label": 1}
    with _client(recognizer, store, api_key=API_KEY) as keyed:
        assert _post(keyed, body).status_code == 401
        assert _post(keyed, body, **{"X-API-Key": "wrong"}).status_code == 401
        assert keyed.post("/api/feedback", content=json.dumps(body), headers={
            "Content-Type": "text/plain", "X-API-Key": API_KEY}).status_code == 415
        cross_site = _post(keyed, body, **{"X-API-Key": API_KEY, "Sec-Fetch-Site": "cross-site"})
        assert cross_site.status_code == 403
        assert keyed.get("/api/feedback").status_code == 405
        assert _post(keyed, body, **{"X-API-Key": API_KEY}).status_code == 202


def test_the_core_refuses_what_the_page_could_send_wrong(store, make_record):
    record = make_record()
    store.store(record)
    with pytest.raises(feedback.FeedbackRefused):
        feedback.record_feedback(store, record.id, 11)
    with pytest.raises(feedback.UnknownPrediction):
        feedback.record_feedback(store, uuid.uuid1(), 1)
    assert feedback.record_feedback(store, record.id, 1) is StoreOutcome.ACCEPTED


def test_while_cassandra_cannot_say_the_label_is_queued_not_refused(store, make_record, monkeypatch):
    record = make_record()
    store.store(record)
    store.flush()
    # As when the writer last found the node unreachable: nothing can be looked up there.
    monkeypatch.setattr(store.writer, "answering", False)
    assert store.prediction_known(uuid.uuid1()) is None
    assert feedback.record_feedback(store, uuid.uuid1(), 1) is StoreOutcome.QUEUED
