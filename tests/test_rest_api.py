"""The REST API routes on a Starlette app, with the shipped model and the real Cassandra node.

The same routes are mounted by Home.py's ``st.App``; the browser tests call them on the real
server too. Here each answer and each refusal is checked, and stored rows are read back.
"""

from __future__ import annotations

import datetime
import io

import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from evaluation.drawings import redraw
from harness.stored_rows import day_slots
from mnist_core import rest_api

pytestmark = pytest.mark.cassandra

SMALL_BODY_LIMIT = 64 * 1024


@pytest.fixture
def client(recognizer, store):
    application = Starlette(
        routes=rest_api.create_routes(
            get_recognizer=lambda: recognizer,
            get_store=lambda: store,
            default_timezone="UTC",
            max_body_bytes=SMALL_BODY_LIMIT,
        )
    )
    with TestClient(application) as test_client:
        yield test_client


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_pngs(recognizer, mnist, count: int, seed: int) -> list[bytes]:
    """`count` MNIST test digits redrawn filling the canvas, as dark-on-light PNGs, that the model
    reads as a digit: storage tests need readings to store (a redraw whose skeleton grew spurs may
    be refused as not a digit, which the model-quality tests count)."""
    from evaluation.drawings import redraw

    random = np.random.default_rng(seed)
    bodies = []
    for image in mnist.test_images:
        body = png_bytes(255 - redraw(image / 255.0, "fill", random)[..., 3])
        if recognizer.read(body).has_digits:
            bodies.append(body)
        if len(bodies) == count:
            return bodies
    raise AssertionError("too few test digits read as digits")


@pytest.fixture(scope="module")
def digit_png(mnist):
    """An MNIST test digit drawn as canvas strokes, saved as a PNG, and its label."""
    canvas = redraw(mnist.test_images[0], "fill", np.random.default_rng(1))
    return png_bytes(canvas), int(mnist.test_labels[0])


def test_predict_with_a_raw_png_body_stores_an_api_prediction(client, digit_png, store, raw_session):
    body, label = digit_png
    response = client.post("/api/predict", content=body, headers={"Content-Type": "image/png"})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["digit"] == label
    assert answer["number"] is None
    assert len(answer["probabilities"]) == 10
    assert answer["confidence"] == pytest.approx(max(answer["probabilities"]), abs=1e-5)
    assert answer["stored"] == "accepted"
    store.flush()
    row = raw_session.execute(
        f"SELECT source, digit FROM {store.settings.cassandra_keyspace}.predictions_by_slot WHERE slot_start IN %s",
        (day_slots(datetime.datetime.now(datetime.timezone.utc).date()),),
    )
    stored = {(item.source, item.digit) for item in row}
    assert ("api", label) in stored


def test_predict_accepts_a_multipart_upload(client, digit_png):
    body, label = digit_png
    response = client.post("/api/predict", files={"image": ("digit.png", body, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == label


def test_a_blank_image_is_422_and_stores_nothing(client, store):
    before = len(store.latest(200))
    response = client.post("/api/predict", content=png_bytes(np.full((60, 60), 255, dtype=np.uint8)))
    assert response.status_code == 422
    assert "nothing was stored" in response.json()["error"]
    assert len(store.latest(200)) == before


def test_a_letter_is_422_not_a_digit_and_stores_nothing(client, store, refused_letter):
    def as_uploaded(picture):
        return 255 - picture[..., 3]

    before = len(store.latest(200))
    # A capital letter, the kind of thing a person writes to see what happens.
    picture = refused_letter(as_uploaded)
    response = client.post("/api/predict", content=png_bytes(as_uploaded(picture)))
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["not_a_digit"] is True and answer["digit"] is None
    assert "not look like a digit" in answer["error"] and answer["not_a_digit_probability"] > 0.5
    assert len(store.latest(200)) == before


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"", 400), (b"this is not an image", 415), (b"\x89PNG\r\n\x1a\n" + bytes(SMALL_BODY_LIMIT), 413)],
    ids=["empty", "not-an-image", "too-large"],
)
def test_bad_bodies_get_a_clear_4xx(client, body, status):
    response = client.post("/api/predict", content=body)
    assert response.status_code == status
    assert response.json()["error"]


def test_a_multipart_form_without_a_file_is_400(client):
    response = client.post("/api/predict", files={"note": (None, "no file here")})
    assert response.status_code == 400


def test_wrong_method_and_unknown_path_answer_json(client):
    assert client.get("/api/predict").status_code == 405
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert "/api/predict" in missing.json()["error"]


def test_health_reports_the_model_and_storage(client, recognizer):
    answer = client.get("/api/health").json()
    assert answer["model_loaded"] is True
    assert answer["model_version"] == recognizer.model_version
    assert answer["storage"]["state"] == "connected"
    assert answer["status"] == "ok"


def test_stats_count_what_was_predicted(client, digit_png, store):
    body, label = digit_png
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    # Earlier tests' stores left their slots marked for recounting; settle them so "before" is exact.
    store.refresh_marked_slots()
    before = client.get("/api/stats", params={"from": today, "to": today}).json()
    client.post("/api/predict", content=body)
    client.post("/api/predict", content=body)
    store.flush()
    after = client.get("/api/stats", params={"from": today, "to": today})

    assert after.status_code == 200
    assert after.json()["counts"][str(label)] == before["counts"][str(label)] + 2
    assert after.json()["total"] == before["total"] + 2


@pytest.mark.parametrize(
    "params",
    [{"from": "2026-13-01"}, {"from": "2026-05-02", "to": "2026-05-01"}, {"tz": "Nowhere/Land"},
     {"from": "2020-01-01", "to": "2026-01-01"},
     # Year 1 in Tokyo begins before year 1 in UTC: once an OverflowError and a 500.
     {"from": "0001-01-01", "to": "0001-01-02", "tz": "Asia/Tokyo"}],
    ids=["bad-date", "reversed", "bad-zone", "too-long", "out-of-range"],
)
def test_stats_refuse_bad_queries(client, params):
    response = client.get("/api/stats", params=params)
    assert response.status_code == 400
    assert response.json()["error"]


def test_a_client_that_disconnects_mid_body_gets_an_answer_not_a_traceback(recognizer, store, digit_png):
    """Driven at the ASGI level: the body's first half arrives, then the client goes away."""
    import asyncio

    application = Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: recognizer, get_store=lambda: store, default_timezone="UTC"))
    body = digit_png[0]
    incoming = [
        {"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/predict", "raw_path": b"/api/predict", "root_path": "", "query_string": b"",
        "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }
    before = len(store.latest(200))
    asyncio.run(application(scope, receive, send))  # raises if the disconnect escapes the route
    start = next(message for message in sent if message["type"] == "http.response.start")
    assert start["status"] == 400
    answer = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    assert b"disconnected" in answer
    assert len(store.latest(200)) == before


def test_a_model_that_cannot_be_loaded_is_a_json_503_and_stores_nothing(tmp_path, store, digit_png):
    from mnist_core.inference import load_recognizer

    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"truncated download")
    application = Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: load_recognizer(broken), get_store=lambda: store, default_timezone="UTC"))
    pending_before = store.status().pending
    with TestClient(application, raise_server_exceptions=False) as test_client:
        response = test_client.post("/api/predict", content=digit_png[0], headers={"Content-Type": "image/png"})
        health = test_client.get("/api/health")
    assert response.status_code == 503
    assert "model is not loaded" in response.json()["error"] and "not a LiteRT model" in response.json()["error"]
    assert health.status_code == 503 and health.json()["model_loaded"] is False
    assert store.status().pending == pending_before
