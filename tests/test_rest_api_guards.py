"""What the REST API refuses before it reads or stores anything: a missing key, a body over the limit, a cross-site form.

- The API key (``MNIST_API_KEY``): without it the API stays open as before; with it,
  /api/predict and /api/stats answer 401 and store nothing unless the key comes as
  ``X-API-Key`` or ``Authorization: Bearer``; /api/health stays open, its internals (error
  sentences naming hosts and roles) only for a caller with the key.
- Bodies over the limit: 413 with nothing stored. tests/test_rest_api.py checks the message
  for a declared length and tests/test_fuzz_rest_api.py sends many such bodies; here the
  chunked case and "nothing stored" are checked without relying on chance.
- Cross-site writes: POST /api/predict refuses a form a browser sends from another site
  (``Sec-Fetch-Site``, ``Origin``) and stores nothing, while same-origin pages and scripts
  are answered. Streamlit's own XSRF protection is checked in tests/test_streamlit_security.py.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import types

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mnist_core import rest_api
from mnist_core.settings import settings_from_mapping
from tests.conftest import REPOSITORY_ROOT

# ---------------------------------------------------------------------------------------
# The optional API key
# ---------------------------------------------------------------------------------------

API_KEY = secrets.token_urlsafe(32)
SHORT_KEY = API_KEY[:15]


def test_the_api_key_setting_is_optional_validated_and_never_shown() -> None:
    assert settings_from_mapping({}).api_key is None
    assert settings_from_mapping({"MNIST_API_KEY": "  "}).api_key is None
    configured = settings_from_mapping({"MNIST_API_KEY": f" {API_KEY} "})
    assert configured.api_key == API_KEY
    assert API_KEY not in repr(configured)
    with pytest.raises(ValueError, match="MNIST_API_KEY must be at least 16 characters") as too_short:
        settings_from_mapping({"MNIST_API_KEY": SHORT_KEY})
    assert SHORT_KEY not in str(too_short.value)
    with pytest.raises(ValueError, match="visible ASCII"):
        settings_from_mapping({"MNIST_API_KEY": API_KEY[:10] + " " + API_KEY[10:]})
    with pytest.raises(ValueError, match="visible ASCII"):
        settings_from_mapping({"MNIST_API_KEY": API_KEY + "é"})


class StoreThatMustNotBeUsed:
    """Stands in for the store where a request must be refused before anything is read or written."""

    def __getattr__(self, name):
        raise AssertionError(f"the store was used ({name}) for a request that should have been refused")


class RecognizerThatMustNotBeUsed:
    model_version = "never-loaded"


def routes_without_storage(**options) -> Starlette:
    return Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: RecognizerThatMustNotBeUsed(),
        get_store=lambda: StoreThatMustNotBeUsed(),
        default_timezone="UTC",
        **options,
    ))


@pytest.fixture
def guarded_client():
    with TestClient(routes_without_storage(api_key=API_KEY, max_body_bytes=64 * 1024)) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": API_KEY[:-1]},
        {"X-API-Key": API_KEY + "x"},
        {"X-API-Key": API_KEY.swapcase()},
        {"Authorization": f"Bearer {API_KEY[1:]}"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
        {"Authorization": "Bearer"},
        {"X-API-Key": "é".encode().decode("latin-1") * 20},
    ],
    ids=["none", "empty", "shorter", "longer", "other-case", "wrong-bearer", "basic-scheme", "no-scheme",
         "bearer-without-key", "non-ascii"],
)
def test_a_missing_or_wrong_key_is_401_and_nothing_is_read_or_stored(guarded_client, headers) -> None:
    sent = {name: value.encode("latin-1") for name, value in headers.items()}
    for response in (
        guarded_client.post("/api/predict", content=b"\x89PNG\r\n\x1a\n", headers=sent),
        guarded_client.get("/api/stats", headers=sent),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_key_is_checked_before_the_body_is_read(guarded_client) -> None:
    """An oversized body without the key is refused for the key (401), not read up to the limit (413)."""
    response = guarded_client.post("/api/predict", content=bytes(1024 * 1024))
    assert response.status_code == 401


def test_the_key_can_be_read_per_request() -> None:
    """Home.py passes a callable, so the key comes from settings once Streamlit's secrets are loaded."""
    current = {"key": None}
    with TestClient(routes_without_storage(api_key=lambda: current["key"])) as client:
        assert client.post("/api/predict", content=b"").status_code == 400  # open: the empty body is the problem
        current["key"] = API_KEY
        assert client.post("/api/predict", content=b"").status_code == 401
        assert client.post("/api/predict", content=b"", headers={"X-API-Key": API_KEY}).status_code == 400


def test_health_stays_open_with_a_key() -> None:
    class ConnectedStore:
        def status(self):
            from mnist_core.storage import StorageStatus

            return StorageStatus(state="connected", pending=0, message="Connected to Cassandra.")

    application = Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: RecognizerThatMustNotBeUsed(), get_store=lambda: ConnectedStore(), api_key=API_KEY))
    with TestClient(application) as client:
        response = client.get("/api/health")
    assert response.status_code == 200 and response.json()["status"] == "ok", response.text


@pytest.fixture(scope="module")
def digit_png(mnist) -> bytes:
    import io

    from PIL import Image

    from evaluation.drawings import redraw

    canvas = redraw(mnist.test_images[0], "fill", np.random.default_rng(1))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.cassandra
def test_with_the_right_key_predictions_are_answered_and_stored_and_without_it_none(
    recognizer, store, raw_session, digit_png
) -> None:
    keyspace = store.settings.cassandra_keyspace
    application = Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: recognizer, get_store=lambda: store, default_timezone="UTC", api_key=API_KEY))
    with TestClient(application) as client:
        assert client.get("/api/health").status_code == 200  # open, and connects the store
        rows_before = {row.id for row in raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot")}
        refused = [
            client.post("/api/predict", content=digit_png),
            client.post("/api/predict", content=digit_png, headers={"X-API-Key": API_KEY[::-1]}),
            client.post("/api/predict", content=digit_png, headers={"Authorization": f"Bearer {SHORT_KEY}"}),
        ]
        assert [response.status_code for response in refused] == [401, 401, 401]
        rows_after_refusals = {row.id for row in raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot")}
        assert rows_after_refusals == rows_before

        answered = [
            client.post("/api/predict", content=digit_png, headers={"X-API-Key": API_KEY}),
            client.post("/api/predict", content=digit_png, headers={"Authorization": f"Bearer {API_KEY}"}),
            client.post("/api/predict", content=digit_png, headers={"authorization": f"bearer  {API_KEY} "}),
        ]
        assert [response.status_code for response in answered] == [200, 200, 200], [r.text for r in answered]
        store.flush()
        stats = client.get("/api/stats", headers={"X-API-Key": API_KEY})
        assert stats.status_code == 200 and stats.json()["total"] >= 3
    rows_after = {str(row.id) for row in raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot")}
    assert rows_after == {str(row_id) for row_id in rows_before} | {response.json()["id"] for response in answered}


def test_home_wires_the_api_key_from_the_settings() -> None:
    """Import Home.py as the server does (in a child process: st.App pins process-wide Streamlit state)."""
    probe = (
        "import Home\n"
        "from starlette.applications import Starlette\n"
        "from starlette.testclient import TestClient\n"
        "client = TestClient(Starlette(routes=Home.app._user_routes))\n"
        "print(client.post('/api/predict', content=b'').status_code)\n"
    )
    answers = {}
    for label, key in (("open", None), ("keyed", API_KEY)):
        environment = {name: value for name, value in os.environ.items() if name != "MNIST_API_KEY"}
        if key is not None:
            environment["MNIST_API_KEY"] = key
        result = subprocess.run([sys.executable, "-c", probe], cwd=REPOSITORY_ROOT, env=environment,
                                capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        answers[label] = result.stdout.strip().splitlines()[-1]
    assert answers == {"open": "400", "keyed": "401"}


def test_health_tells_its_internals_only_to_a_caller_with_the_key() -> None:
    class BrokenStore:
        def status(self):
            from mnist_core.storage import StorageStatus

            return StorageStatus(state="degraded", pending=3,
                                 message="Cassandra at cassandra-7.internal (10.2.3.4:9042) refused role 'mnist_app'.",
                                 warnings=("replication drift on 10.2.3.4",))

    def routes(api_key):
        return rest_api.create_routes(get_recognizer=lambda: types.SimpleNamespace(model_version="m1"),
                                      get_store=lambda: BrokenStore(), api_key=api_key)

    for api_key, headers in ((None, {}), (API_KEY, {}), (API_KEY, {"X-API-Key": "wrong-" + API_KEY})):
        with TestClient(Starlette(routes=routes(api_key)), headers=headers) as client:
            answer = client.get("/api/health")
        assert answer.status_code == 200
        assert answer.json()["storage"] == {"state": "degraded", "pending": 3, "dead_letters": 0,
                                            "other_target_pending": 0}
        assert "10.2.3.4" not in answer.text and "mnist_app" not in answer.text
    with TestClient(Starlette(routes=routes(API_KEY)), headers={"X-API-Key": API_KEY}) as client:
        detailed = client.get("/api/health").json()
    assert "10.2.3.4" in detailed["storage"]["message"] and detailed["storage"]["warnings"]


# ---------------------------------------------------------------------------------------
# Bodies over the limit
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413_and_nothing_is_read_or_stored(chunked: bool) -> None:
    limit = 64 * 1024
    body = b"\x89PNG\r\n\x1a\n" + bytes(limit)
    content = iter([body[start:start + 8192] for start in range(0, len(body), 8192)]) if chunked else body
    with TestClient(routes_without_storage(max_body_bytes=limit)) as client:
        response = client.post("/api/predict", content=content, headers={"Content-Type": "image/png"})
    assert response.status_code == 413, response.text
    assert "64 kB" in response.json()["error"]


# ---------------------------------------------------------------------------------------
# Cross-site forms
# ---------------------------------------------------------------------------------------


@pytest.mark.cassandra
@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},  # a form on another site, today's browsers
    {"Origin": "https://evil.example"},  # a browser that does not send Sec-Fetch-Site
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Sec-Fetch-Site": "same-site"},  # another app on a sibling subdomain
], ids=["cross-site", "other-origin", "opaque-origin", "same-site"])
def test_a_form_posted_from_another_site_is_refused_and_stores_nothing(headers, recognizer, store, mnist) -> None:
    from tests.test_rest_api import digit_pngs

    (body,) = digit_pngs(recognizer, mnist, 1, seed=11)
    application = Starlette(routes=rest_api.create_routes(get_recognizer=lambda: recognizer, get_store=lambda: store))
    known = {record.id for record in store.latest(100)}
    with TestClient(application, base_url="http://digits.example:8501") as client:
        refused = client.post("/api/predict", files={"image": ("digit.png", body, "image/png")}, headers=headers)
        text_plain = client.post("/api/predict", content=body, headers={**headers, "Content-Type": "text/plain"})
        same_origin = client.post("/api/predict", files={"image": ("digit.png", body, "image/png")},
                                  headers={"Origin": "http://digits.example:8501", "Sec-Fetch-Site": "same-origin"})
        script = client.post("/api/predict", content=body)  # curl and scripts send no Origin
        # Behind a proxy that terminates TLS the Origin's scheme differs; the browser's verdict holds.
        proxied = client.post("/api/predict", files={"image": ("digit.png", body, "image/png")},
                              headers={"Origin": "https://digits.example", "Sec-Fetch-Site": "same-origin"})
    assert refused.status_code == 403 and "refused" in refused.json()["error"]
    assert text_plain.status_code == 403
    assert same_origin.status_code == 200, same_origin.text
    assert script.status_code == 200, script.text
    assert proxied.status_code == 200, proxied.text
    store.flush()
    stored = [record for record in store.latest(100) if record.id not in known]
    assert sorted(str(record.id) for record in stored) == sorted(
        answer.json()["id"] for answer in (same_origin, script, proxied))
