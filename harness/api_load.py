"""API load: open-loop POST /api/predict at a fixed rate, from a child process, and one request's outcome.

The hardening run sends its REST load with :class:`ApiLoad`; tests/test_cluster.py sends its
own paced requests through nginx with :func:`send_one` and reads the same :class:`ApiResult`.
A module of its own, importing only what the child needs: the child is started with ``spawn``
and imports this module, not the browsers, Cassandra or the MNIST data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import time

import httpx2

API_CLIENT_TIMEOUT_SECONDS = 60.0  # generous, so a late answer still tells us its id


@dataclasses.dataclass
class ApiResult:
    index: int
    scheduled_at: float  # monotonic
    latency_seconds: float | None = None  # from the scheduled send time to the answer
    status: int | None = None
    error: str | None = None
    prediction_id: str | None = None
    stored: str | None = None
    digit: int | None = None
    label: int | None = None
    phase: str = "load"
    # Answered 422 "not a digit": the model's reading of the picture (issue of the recognizer),
    # not a fault of the server under load; counted apart from the errors.
    refused_as_not_a_digit: bool = False


class ApiLoad:
    """Open-loop POST /api/predict at a fixed rate, sent from a child process.

    The child has its own interpreter, so the browsers' Playwright loop in this process never
    delays a send or the reading of an answer (both would be counted against the app).
    Usage: ``start()`` (returns once the child is ready), ``begin(at)``, then ``join()``.
    """

    def __init__(self, *, base_url: str, images: list[tuple[bytes, int]], rate: float, duration: float,
                 deadline_seconds: float, phase: str = "load", headers: dict[str, str] | None = None) -> None:
        self.plan = {"base_url": base_url, "images": images, "rate": rate, "total": int(rate * duration),
                     "deadline_seconds": deadline_seconds, "phase": phase, "headers": headers or {}}
        self.results: list[ApiResult] = []
        self.dispatch_lags: list[float] = []
        self.failure: str | None = None
        self._connection = None
        self._process = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=api_load_child, args=(self.plan, child_end), name="api-load",
                                        daemon=True)
        self._process.start()
        child_end.close()
        if self._connection.recv() != "ready":
            raise RuntimeError("The API load process did not start.")

    def begin(self, start_at: float) -> None:
        """Send the first request at ``start_at`` (time.monotonic(), one clock for every process)."""
        self._connection.send(start_at)

    def join(self) -> None:
        try:
            self.results, self.dispatch_lags, self.failure = self._connection.recv()
        except EOFError:
            self.failure = f"the API load process died (exit code {self._process.exitcode})"
        self._process.join(timeout=30)


def api_load_child(plan: dict, connection) -> None:
    """The child process of :class:`ApiLoad`: wait for the start time, send everything, report back."""
    connection.send("ready")
    start_at = connection.recv()
    results: list[ApiResult] = []
    dispatch_lags: list[float] = []
    try:
        asyncio.run(send_open_loop(plan, start_at, results, dispatch_lags))
        failure = None
    except BaseException as error:  # noqa: BLE001 - reported by the parent
        failure = repr(error)
    connection.send((results, dispatch_lags, failure))
    connection.close()


async def send_open_loop(plan: dict, start_at: float, results: list[ApiResult], dispatch_lags: list[float]) -> None:
    # Idle connections are dropped after 2 s, before the server's 5 s keep-alive timeout, so a
    # request never races the server closing the connection it was about to reuse.
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=2.0)
    async with httpx2.AsyncClient(base_url=plan["base_url"], timeout=API_CLIENT_TIMEOUT_SECONDS, limits=limits,
                                  trust_env=False, headers=plan["headers"]) as client:
        tasks = []
        for index in range(plan["total"]):
            scheduled = start_at + index / plan["rate"]
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            dispatch_lags.append(max(0.0, time.monotonic() - scheduled))
            result = ApiResult(index=index, scheduled_at=scheduled, phase=plan["phase"])
            results.append(result)
            tasks.append(asyncio.create_task(send_one(client, plan, result)))
        await asyncio.gather(*tasks)


async def send_one(client: httpx2.AsyncClient, plan: dict, result: ApiResult) -> None:
    image, result.label = plan["images"][result.index % len(plan["images"])]
    try:
        response = await client.post("/api/predict", content=image, headers={"Content-Type": "image/png"})
    except httpx2.HTTPError as error:
        result.error = f"transport {type(error).__name__}"
        return
    result.latency_seconds = time.monotonic() - result.scheduled_at
    result.status = response.status_code
    if response.status_code == 422 and says_not_a_digit(response):
        result.refused_as_not_a_digit = True
        return
    if response.status_code != 200:
        result.error = f"HTTP {response.status_code}"
        return
    try:
        body = response.json()
        result.prediction_id, result.stored, result.digit = body["id"], body["stored"], body["digit"]
    except (ValueError, KeyError):
        result.error = "answer without id"
        return
    if result.latency_seconds > plan["deadline_seconds"]:
        result.error = "late"


def says_not_a_digit(response: httpx2.Response) -> bool:
    """Whether a 422 is the model's "not a digit" answer (a reading, not a failure of the server)."""
    try:
        return response.json().get("not_a_digit") is True
    except ValueError:
        return False
