"""Property-based fuzzing of ``POST /api/predict`` with the shipped model and the real Cassandra node.

The routes are the ones Home.py mounts (``rest_api.create_routes`` with the production body
limit), served by Starlette's TestClient. Requests carry raw bodies of every kind the
preprocessing fuzzer makes (garbage, damaged images, bombs), every content type (none,
text/plain, application/json, multipart without a boundary, ...), multipart forms with no
file, two files, a broken boundary or cut short, bodies over the limit with and without a
Content-Length, and Content-Length headers that are not numbers or lie. Now and then a real
digit is sent, so the happy path stays in the mix.

The property: 200 with a digit, or a 4xx whose JSON body is ``{"error": "<sentence>"}``;
never a 5xx. A prediction is stored for every 200 and for nothing else: the store is wrapped
to see each write as it happens, and at the end the rows in this module's keyspace are read
back with a plain driver session and compared with the 200s' ids. The outbox stays empty
and ``/api/health`` still answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from evaluation.drawings import redraw
from harness.bad_inputs import multipart_body
from mnist_core import readings, rest_api
from tests.test_fuzz_preprocess import (
    CASE_TIME_LIMIT_SECONDS,
    FUZZ_CASES,
    FUZZ_SETTINGS,
    CaseLog,
    fixed_inputs,
    image_inputs,
    time_limit,
)

pytestmark = [
    pytest.mark.cassandra,
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]

BODY_LIMIT = readings.MAX_UPLOAD_BYTES  # what Home.py's routes use
DIGIT_SAMPLES = 8
CONTENT_TYPES = (None, "image/png", "image/jpeg", "text/plain", "application/json", "application/octet-stream",
                 "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=",
                 "multipart/mixed; boundary=x", "image/png; charset=utf-8")
# Header values travel as bytes; the last one is Arabic-Indic "12" in UTF-8, read back as Latin-1.
BAD_CONTENT_LENGTHS = ("abc", "-1", "", "1e3", "0x10", "99999999999999999999", " 12 ", "0", "1",
                       "١٢".encode().decode("latin-1"))


@dataclasses.dataclass(frozen=True)
class FuzzRequest:
    """One POST: a body (sent in chunks without a Content-Length when ``chunked``) and its headers."""

    description: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    chunked: bool = False

    def __repr__(self) -> str:
        # Failure reports show the start of the body, not megabytes of it.
        shown = self.body[:96] + (b"..." if len(self.body) > 96 else b"")
        return (f"FuzzRequest({self.description!r}, {len(self.body)} bytes {shown!r}, headers={self.headers!r}, "
                f"chunked={self.chunked})")

    def digest(self) -> bytes:
        summary = repr((self.description, self.headers, self.chunked)).encode()
        return hashlib.blake2b(summary + self.body, digest_size=16).digest()

    def send(self, client: TestClient):
        headers = {name: value.encode("latin-1") for name, value in self.headers}
        if self.chunked:
            chunks = [self.body[start:start + 65536] for start in range(0, len(self.body), 65536)]
            return client.post("/api/predict", content=iter(chunks), headers=headers)
        return client.post("/api/predict", content=self.body, headers=headers)


# ---------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
boundaries = st.one_of(st.just(b"fuzzboundary"), st.binary(min_size=1, max_size=70).map(lambda raw: raw.hex().encode()[:70]))


def request_strategy(digit_images: list[bytes]) -> st.SearchStrategy[FuzzRequest]:
    """Every kind of request: mostly bad ones, now and then a real digit (raw or as a file)."""
    images = image_inputs()
    digits = st.sampled_from(digit_images)

    @st.composite
    def raw_body(draw) -> FuzzRequest:
        body = draw(st.one_of(images, digits)) if draw(st.integers(0, 19)) == 0 else draw(images)
        content_type = draw(st.one_of(st.sampled_from(CONTENT_TYPES), header_text))
        headers = () if content_type is None else (("Content-Type", content_type),)
        return FuzzRequest("raw body", body, headers)

    @st.composite
    def multipart(draw) -> FuzzRequest:
        boundary = draw(boundaries)
        shape = draw(st.sampled_from(["one file", "one file", "no file", "two files", "no name", "broken boundary",
                                      "cut short", "no boundary parameter", "many fields"]))
        image = draw(digits) if draw(st.integers(0, 9)) == 0 else draw(images)
        file_name = draw(st.one_of(st.just("digit.png"), header_text))
        file_type = draw(st.sampled_from([None, "image/png", "image/jpeg", "text/plain"]))
        field = draw(st.sampled_from(["image", "file", "x"]))
        parts = {
            "one file": [(field, file_name, file_type, image)],
            "no file": [("note", None, None, b"no file here")],
            "two files": [(field, file_name, file_type, image), ("second", "b.png", "image/png", image)],
            "many fields": [(f"field{index}", None, None, b"x") for index in range(12)]
                           + [(field, file_name, file_type, image)],
        }.get(shape, [(field, file_name, file_type, image)])
        if shape == "no name":
            body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\n' + image
                    + b"\r\n--" + boundary + b"--\r\n")
        else:
            body = multipart_body(parts, boundary)
        declared = boundary
        if shape == "broken boundary":
            declared = boundary + b"x"
        if shape == "cut short" and len(body) > 1:
            body = body[: draw(st.integers(1, len(body) - 1))]
        content_type = "multipart/form-data" if shape == "no boundary parameter" else (
            "multipart/form-data; boundary=" + declared.decode("latin-1"))
        return FuzzRequest(f"multipart {shape}", body, (("Content-Type", content_type),))

    @st.composite
    def oversized(draw) -> FuzzRequest:
        extra = draw(st.integers(1, 4096))
        prefix = draw(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"--fuzzboundary\r\n"]))
        body = prefix + bytes(BODY_LIMIT + extra - len(prefix))
        chunked = draw(st.booleans())
        content_type = draw(st.sampled_from(["image/png", "multipart/form-data; boundary=fuzzboundary"]))
        return FuzzRequest("oversized" + (" chunked" if chunked else ""), body, (("Content-Type", content_type),),
                           chunked=chunked)

    @st.composite
    def bad_content_length(draw) -> FuzzRequest:
        body = draw(st.one_of(images, st.just(b"")))
        declared = draw(st.one_of(st.sampled_from(BAD_CONTENT_LENGTHS), st.integers(0, 2 * BODY_LIMIT).map(str)))
        return FuzzRequest("content-length " + repr(declared), body, (("Content-Length", declared),))

    return st.one_of(raw_body(), raw_body(), raw_body(), multipart(), multipart(), oversized(), bad_content_length())


# ---------------------------------------------------------------------------------------
# Fixtures: a real digit or two, the app's routes, and a store that shows each write
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_images(mnist) -> list[bytes]:
    """MNIST test digits redrawn as canvas strokes, as PNG and JPEG files."""
    rng = np.random.default_rng(7)
    files = []
    for index in range(DIGIT_SAMPLES):
        canvas = redraw(mnist.test_images[index], "fill", rng)
        for image_format, image in (("PNG", Image.fromarray(canvas, "RGBA")),
                                    ("JPEG", Image.fromarray(255 - canvas[..., 3]).convert("RGB"))):
            buffer = io.BytesIO()
            image.save(buffer, format=image_format)
            files.append(buffer.getvalue())
    return files


class WatchedStore:
    """The real store, with every prediction it is asked to keep noted in order."""

    def __init__(self, store) -> None:
        self._store = store
        self.stored_ids: list[str] = []

    def store(self, record):
        self.stored_ids.append(str(record.id))
        return self._store.store(record)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture
def watched_store(store) -> WatchedStore:
    return WatchedStore(store)


@pytest.fixture
def client(recognizer, watched_store):
    application = Starlette(
        routes=rest_api.create_routes(
            get_recognizer=lambda: recognizer,
            get_store=lambda: watched_store,
            default_timezone="UTC",
            max_body_bytes=BODY_LIMIT,
        )
    )
    with TestClient(application) as test_client:
        yield test_client


def stored_prediction_ids(raw_session, keyspace: str) -> set[str]:
    """Every prediction id in the keyspace, read with a plain driver session (the table is this module's own)."""
    return {str(row.id) for row in raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot")}


# ---------------------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------------------


def check_answer(response, request: FuzzRequest) -> str | None:
    """Assert the status and body are acceptable; returns the stored prediction's id for a 200."""
    where = f"{request.description} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:300]}"
    assert response.status_code == 200 or 400 <= response.status_code < 500, where
    assert response.headers.get("content-type", "").startswith("application/json"), f"{where}: {response.text[:300]}"
    answer = response.json()
    if response.status_code == 200:
        assert 0 <= answer["digit"] <= 9 and len(answer["probabilities"]) == 10, where
        return answer["id"]
    # A drawing that is not a digit also says so, and how sure the model is.
    allowed = ({"error"}, {"error", "digit", "not_a_digit", "not_a_digit_probability"})
    assert isinstance(answer, dict) and set(answer) in allowed, f"{where}: {answer}"
    if "not_a_digit" in answer:
        assert response.status_code == 422 and answer["not_a_digit"] is True and answer["digit"] is None, where
    assert isinstance(answer["error"], str) and len(answer["error"].strip()) > 10, f"{where}: {answer}"
    return None


def test_any_request_gets_a_digit_or_a_json_4xx_and_only_digits_are_stored(
    client, watched_store, store, raw_session, digit_images
) -> None:
    keyspace = store.settings.cassandra_keyspace
    client.get("/api/health")  # connects the store and creates the schema, so the table exists
    ids_before = stored_prediction_ids(raw_session, keyspace)
    log = CaseLog()
    answered_ids: list[str] = []

    def send_and_check(request: FuzzRequest) -> None:
        log.record(request.digest())
        with time_limit(CASE_TIME_LIMIT_SECONDS):
            response = request.send(client)
        log.outcomes[response.status_code] += 1
        prediction_id = check_answer(response, request)
        if prediction_id is not None:
            answered_ids.append(prediction_id)
        # A write happens for a 200 and only for a 200, and it is that prediction's.
        assert watched_store.stored_ids == answered_ids, request.description

    @FUZZ_SETTINGS
    @given(request=request_strategy(digit_images))
    def one_request(request: FuzzRequest) -> None:
        send_and_check(request)

    started = time.perf_counter()
    for data in fixed_inputs():
        send_and_check(FuzzRequest("fixed input", data, (("Content-Type", "image/png"),)))
    one_request()
    elapsed = time.perf_counter() - started

    assert log.distinct >= FUZZ_CASES, f"only {log.distinct} distinct requests in {log.runs} cases"
    for status in (200, 400, 413, 415, 422):
        assert log.outcomes[status] >= 5, f"too few {status} answers to say much: {dict(log.outcomes)}"
    # What Cassandra holds now: the rows from before, plus exactly the predictions answered with 200.
    store.flush()
    assert stored_prediction_ids(raw_session, keyspace) == ids_before | set(answered_ids)
    assert len(set(answered_ids)) == len(answered_ids)
    assert store.status().pending == 0, "a write was left in the outbox"
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    print(f"\n{log.runs} requests ({log.distinct} distinct) in {elapsed:.1f} s: "
          f"{dict(sorted(log.outcomes.items()))}")

