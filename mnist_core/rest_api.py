"""The REST API served by the dashboard's own server (``st.App`` routes, Starlette underneath).

``POST /api/predict`` reads an image (raw PNG/JPEG body, or multipart with one file) through
the same :func:`mnist_core.readings.predict_and_store` as the Draw page, stored with source
``api``; ``GET /api/health`` says whether the model is loaded and how storage is doing;
``GET /api/stats?from=&to=&tz=`` gives counts per digit; ``POST /api/feedback`` takes the
true label of a prediction (``{"id": ..., "true_label": 0-9}``; 202 once queued, 404 for an id
no prediction has, the latest label wins). A predict request with an
``Idempotency-Key`` header is read and stored once; the key sent again within a day gets the
first answer back (``Idempotent-Replayed: true``) and stores nothing (see mnist_core.idempotency). This module is only the transport
adapter: it parses requests, calls ``mnist_core``, and turns exceptions into 4xx/5xx JSON.
The recognizer and store are injected as zero-argument callables so the app shares its
cached ones and tests pass their own. With an API key configured, /api/predict, /api/feedback
and /api/stats answer only requests that carry it (``X-API-Key: <key>`` or
``Authorization: Bearer <key>``); /api/health stays open for load balancers and probes.
"""

from __future__ import annotations

import datetime
import hmac
import json
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mnist_core import feedback, history_figures, idempotency, readings, settings
from mnist_core.inference import Recognizer
from mnist_core.preprocess import ImageDecodeError
from mnist_core.storage import PredictionStore, StorageError

logger = logging.getLogger(__name__)

DEFAULT_STATS_DAYS = 7
# A feedback body is two short fields; anything much longer is not one.
MAX_FEEDBACK_BODY_BYTES = 4 * 1024
MAX_STATS_DAYS = 366


class RequestProblem(Exception):
    """A request the API refuses, with the HTTP status, a sentence for the caller and any extra headers."""

    def __init__(self, status_code: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def _problem_response(problem: RequestProblem) -> JSONResponse:
    return JSONResponse({"error": problem.message}, status_code=problem.status_code, headers=problem.headers)


def _presented_api_key(request: Request) -> str | None:
    """The key from ``X-API-Key``, or from ``Authorization: Bearer <key>``; None when neither is sent."""
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def _require_api_key(request: Request, expected: str | None) -> None:
    """Refuse (401) a request without the expected key, compared in constant time so timing reveals none of it."""
    if expected is None:
        return
    challenge = {"WWW-Authenticate": 'Bearer realm="mnist-api"'}
    presented = _presented_api_key(request)
    if presented is None:
        raise RequestProblem(
            401, "This API needs a key: send it as an X-API-Key header or as 'Authorization: Bearer <key>'.",
            headers=challenge,
        )
    # Header values reach us decoded as Latin-1, so encoding them back gives the bytes that were sent.
    if not hmac.compare_digest(presented.encode("latin-1"), expected.encode("utf-8")):
        raise RequestProblem(401, "The API key is not valid.", headers=challenge)


def _refuse_cross_site(request: Request) -> None:
    """Refuse (403) a write sent by a browser on behalf of another site (cross-site request forgery).

    A page elsewhere can make a visitor's browser POST a form (multipart or text/plain needs no
    CORS preflight) to this API. Browsers say where such a request comes from: `Sec-Fetch-Site`
    (cross-site or same-site) and `Origin` (another scheme, host or port than the one asked).
    Non-browser clients (curl, scripts, the tests) send neither and are not affected, and a
    page served by this app is same-origin.
    """
    fetch_site = request.headers.get("sec-fetch-site", "").strip().lower()
    origin = request.headers.get("origin", "").strip()
    if fetch_site in ("cross-site", "same-site"):
        raise RequestProblem(403, "Requests from other web sites are refused; call the API from a script or this app.")
    if fetch_site in ("same-origin", "none"):
        # The browser's own verdict; the Origin comparison below could be fooled by a proxy that
        # terminates TLS or rewrites Host, and is only for browsers that do not send this header.
        return
    if origin and origin.lower() != "null":
        own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
        if origin.rstrip("/").lower() != own:
            raise RequestProblem(403, f"Requests from {origin} are refused; call the API from a script or this app.")
    elif origin.lower() == "null":
        # A sandboxed frame or a file:// page: no site to trust.
        raise RequestProblem(403, "Requests from an opaque origin are refused; call the API from a script or this app.")


async def _read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything above ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestProblem(413, f"The request is larger than the {limit // 1024} kB limit.")
        except ValueError:
            raise RequestProblem(400, "The Content-Length header is not a number.") from None
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestProblem(413, f"The request is larger than the {limit // 1024} kB limit.")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to read the answer; answering (instead of raising) keeps a traceback out of the log.
        raise RequestProblem(400, "The client disconnected before sending the whole body; nothing was stored.") from None
    return b"".join(chunks)


async def _image_bytes(request: Request, limit: int) -> bytes:
    """The image from a raw body or from the first file of a multipart form."""
    content_type = request.headers.get("content-type", "")
    body = await _read_limited_body(request, limit)
    if content_type.startswith("multipart/form-data"):
        # The body was already read (with the size limit); replay it to a request that parses the form.
        async def replay_body() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay_body).form(max_files=1, max_fields=10, max_part_size=limit)
        except (MultiPartException, HTTPException) as error:
            # Starlette reports a malformed form (no boundary, two files, ...) as a plain-text 400; answer in JSON.
            reason = getattr(error, "detail", None) or getattr(error, "message", None) or "it is malformed"
            raise RequestProblem(400, f"The multipart form cannot be read: {reason}") from None
        try:
            uploads = [value for value in form.values() if hasattr(value, "read")]
            if not uploads:
                raise RequestProblem(400, "The multipart form holds no file; send the image as a file field.")
            return await uploads[0].read()
        finally:
            await form.close()
    if not body:
        raise RequestProblem(400, "The request has no body; send a PNG or JPEG image.")
    return body


# Dates outside these years cannot be turned into UTC instants in every zone (year 1 in Tokyo
# starts in year 0 UTC), and no reading is stored there anyway.
EARLIEST_DATE = datetime.date(1970, 1, 1)
LATEST_DATE = datetime.date(9998, 12, 31)


def _parse_date(text: str | None, *, name: str, default: datetime.date) -> datetime.date:
    if text is None or text == "":
        return default
    try:
        value = datetime.date.fromisoformat(text)
    except ValueError:
        raise RequestProblem(400, f"{name}={text!r} is not a date; use YYYY-MM-DD.") from None
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise RequestProblem(400, f"{name}={text} is out of range; use a date from {EARLIEST_DATE} to {LATEST_DATE}.")
    return value


def _prediction_answer(result: readings.StoredReading) -> dict:
    """The JSON answer to a stored reading (also what an Idempotency-Key replays)."""
    reading = result.reading
    return {
        "id": str(result.record.id),
        "digit": reading.digit,
        "number": reading.number,
        "confidence": round(reading.overall_confidence, 6),
        "probabilities": [round(value, 6) for value in reading.probabilities],
        "stored": result.outcome.value,
        "model_version": result.record.model_version,
        "latency_ms": round(reading.latency_ms, 2),
    }


def create_routes(
    *,
    get_recognizer: Callable[[], Recognizer],
    get_store: Callable[[], PredictionStore],
    default_timezone: str | None = None,
    max_body_bytes: int = readings.MAX_UPLOAD_BYTES,
    api_key: str | Callable[[], str | None] | None = None,
) -> list[Route]:
    """The API routes, reading the model and store through the given providers on each request.

    ``default_timezone`` is the zone for /api/stats days when the caller gives no ``tz``;
    None means the display time zone setting, read at request time. ``api_key`` (a key, or
    a zero-argument callable read on each request, so the app can take it from settings once
    Streamlit's secrets are loaded) makes /api/predict and /api/stats refuse requests without
    it; None leaves the API open.
    """

    def expected_api_key() -> str | None:
        return api_key() if callable(api_key) else api_key

    def loaded_recognizer() -> Recognizer:
        # A model that cannot be loaded is a JSON 503 on each request, never a bare 500.
        try:
            return get_recognizer()
        except (OSError, ValueError) as error:
            raise RequestProblem(503, f"The model is not loaded, so nothing can be read: {error}") from None

    async def predict(request: Request) -> JSONResponse:
        idempotency_key = request.headers.get(idempotency.HEADER)
        try:
            # Checked before the body is read: a caller without the key cannot make us read 2 MB.
            _require_api_key(request, expected_api_key())
            _refuse_cross_site(request)
            if idempotency_key is not None:
                idempotency.key_hash(idempotency_key)
            image = await _image_bytes(request, max_body_bytes)
            # In the thread pool: even a first load (or a failing one) never holds the event loop.
            recognizer = await run_in_threadpool(loaded_recognizer)
            if idempotency_key is None:
                result = await run_in_threadpool(
                    readings.predict_and_store, image, source="api", recognizer=recognizer, store=get_store()
                )
            else:
                keyed = await run_in_threadpool(
                    idempotency.read_once, image, key=idempotency_key, recognizer=recognizer, store=get_store(),
                    answer_of=_prediction_answer,
                )
                if keyed.answer is not None:
                    return JSONResponse(keyed.answer,
                                        headers={"Idempotent-Replayed": "true" if keyed.replayed else "false"})
                result = keyed.result
        except RequestProblem as problem:
            return _problem_response(problem)
        except ImageDecodeError as error:
            return _problem_response(RequestProblem(415, str(error)))
        except idempotency.IdempotencyKeyError as error:
            return _problem_response(RequestProblem(400, str(error)))
        except idempotency.IdempotencyKeyReused as error:
            return _problem_response(RequestProblem(422, str(error)))
        reading = result.reading
        if reading.is_not_a_digit:
            return JSONResponse({"error": "This does not look like a digit (a scribble, a letter or a "
                                          "drawing?); nothing was stored.",
                                 "digit": None, "not_a_digit": True,
                                 "not_a_digit_probability": round(reading.not_a_digit_probability, 6)},
                                status_code=422)
        if reading.is_blank:
            return _problem_response(RequestProblem(422, "No digit was found in the image; nothing was stored."))
        return JSONResponse(_prediction_answer(result))

    async def give_feedback(request: Request) -> JSONResponse:
        try:
            _require_api_key(request, expected_api_key())
            _refuse_cross_site(request)
            if not request.headers.get("content-type", "").startswith("application/json"):
                raise RequestProblem(415, 'Send the feedback as JSON: {"id": "<prediction id>", "true_label": 0-9}.')
            body = await _read_limited_body(request, MAX_FEEDBACK_BODY_BYTES)
            try:
                document = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise RequestProblem(400, "The body is not JSON.") from None
            if not isinstance(document, dict) or set(document) != {"id", "true_label"}:
                raise RequestProblem(400, 'The body must be exactly {"id": "<prediction id>", "true_label": 0-9}.')
            outcome = await run_in_threadpool(feedback.record_feedback, get_store(), document["id"],
                                              document["true_label"])
        except RequestProblem as problem:
            return _problem_response(problem)
        except feedback.FeedbackRefused as error:
            return _problem_response(RequestProblem(400, str(error)))
        except feedback.UnknownPrediction as error:
            return _problem_response(RequestProblem(404, str(error)))
        except StorageError as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        # 202: the label is durably queued on this server; Cassandra gets it behind (see `stored`).
        return JSONResponse({"id": str(feedback.prediction_id_from(document["id"])),
                             "true_label": document["true_label"], "stored": outcome.value}, status_code=202)

    async def wrong_method(request: Request) -> JSONResponse:
        what = ('JSON {"id": "<prediction id>", "true_label": 0-9}' if request.url.path == "/api/feedback"
                else "a PNG or JPEG image")
        return JSONResponse({"error": f"Use POST with {what} as the body."}, status_code=405,
                            headers={"Allow": "POST"})

    async def not_found(request: Request) -> JSONResponse:
        return JSONResponse(
            {"error": f"There is no API at {request.url.path}; use /api/predict, /api/feedback, /api/health or /api/stats."},
            status_code=404,
        )

    def shows_details(request: Request) -> bool:
        """Error sentences name hosts, addresses, the Cassandra role and driver internals: /api/health
        gives them only to a caller with the API key (the server log has them anyway)."""
        expected = expected_api_key()
        if expected is None:
            return False
        try:
            _require_api_key(request, expected)
        except RequestProblem:
            return False
        return True

    async def health(request: Request) -> JSONResponse:
        detailed = shows_details(request)
        try:
            recognizer = await run_in_threadpool(get_recognizer)
        except (OSError, ValueError) as error:
            body = {"status": "unavailable", "model_loaded": False}
            if detailed:
                body["error"] = str(error)
            return JSONResponse(body, status_code=503)
        status = await run_in_threadpool(lambda: get_store().status())
        storage = {"state": status.state, "pending": status.pending, "dead_letters": status.dead_letters,
                   "other_target_pending": status.other_target_pending}
        if detailed:
            storage.update({"message": status.message, "warnings": list(status.warnings)})
        return JSONResponse(
            {
                "status": "ok" if status.connected else "degraded",
                "model_loaded": True,
                "model_version": recognizer.model_version,
                "storage": storage,
            }
        )

    async def stats(request: Request) -> JSONResponse:
        try:
            _require_api_key(request, expected_api_key())
            timezone = request.query_params.get("tz") or default_timezone or settings.get_settings().display_timezone
            try:
                today = history_figures.local_today(timezone)
            except ValueError as error:
                raise RequestProblem(400, str(error)) from None
            end = _parse_date(request.query_params.get("to"), name="to", default=today)
            start = _parse_date(
                request.query_params.get("from"), name="from", default=end - datetime.timedelta(days=DEFAULT_STATS_DAYS - 1)
            )
            if end < start:
                raise RequestProblem(400, f"to={end} is before from={start}.")
            if (end - start).days >= MAX_STATS_DAYS:
                raise RequestProblem(400, f"The range may cover at most {MAX_STATS_DAYS} days.")
            body = await run_in_threadpool(history_figures.digit_counts, get_store(),
                                           start=start, end=end, timezone=timezone)
        except RequestProblem as problem:
            return _problem_response(problem)
        except StorageError as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        return JSONResponse(body)

    return [
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/health", health, methods=["GET"]),
        Route("/api/stats", stats, methods=["GET"]),
        Route("/api/feedback", give_feedback, methods=["POST"]),
        # Without these, Streamlit's catch-all would answer other /api/ requests with its HTML page.
        Route("/api/predict", wrong_method, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route("/api/feedback", wrong_method, methods=["GET", "PUT", "PATCH", "DELETE"]),
        Route("/api/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
