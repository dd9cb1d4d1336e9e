"""Hardening run: the live app under browser and API load, through Cassandra faults, and against bad input.

Run: .venv/bin/python bench/hardening.py [--duration 120] [--sessions 20] [--api-rate 50] [--fuzz-cases 1000]
Smoke run: --duration 20 --sessions 3 --api-rate 10 --fuzz-cases 100 (about 3.5 minutes on two cores,
most of it Cassandra restarting); --skip-faults and --skip-fuzz leave scenarios out; --secured runs the
app with an API key and a dashboard password (every request sends the key, every browser session
signs in first); --help for the rest.

Everything it needs runs on loopback and is started and stopped here: a private Cassandra node
(node 7 on 127.0.0.7:9042, cluster "mnist-hardening"; the shared default node 1 is never touched),
the app (`streamlit run Home.py` on a free port, with its own keyspace and outbox directory) and a
headless Debian Chromium driven by Playwright. Chromium and the Playwright driver run at nice 19
and cannot raise their priority, and Chromium's own session groups get autogroup nice 19, so the
load generator does not take the CPU from the app it measures; the API requests are sent from a
child process of their own.

1. Load: browser sessions (one Chromium, one context each) clear the Draw page, draw an MNIST test
   digit with mouse strokes, click Predict and wait for the answer, over and over; meanwhile
   ``POST /api/predict`` gets digit PNGs at a fixed rate, open loop (a request is sent on schedule
   whether or not earlier ones have answered, and its latency counts from that schedule).
   Errors: transport failures, non-200 answers, API answers later than --api-deadline, browser
   answers later than --answer-timeout (or "Draw a digit first."), Python or JavaScript exceptions
   in a page. A drawing that does not show on the canvas is cleared and drawn again (counted as
   browser_canvas_misses; not a prediction yet). The app's RSS (/proc/<pid>/status) is read after the
   warm-up and when the load ends.
2. Faults: a third into the load the node is killed (SIGKILL) and started again (its commit log
   replays) while predictions go to the app's outbox; after the load the outbox must drain. Then
   Cassandra is stopped, --restart-predictions API predictions are queued, the app is stopped
   (SIGTERM), Cassandra and the app are started again, and the outbox must drain after the restart.
3. Bad input: --fuzz-cases seeded bad bodies (empty, garbage, truncated or corrupted PNG/JPEG,
   decompression bombs, wrong content types, broken multipart, oversized, malformed HTTP) sent to
   ``POST /api/predict`` with no other load; a crash is a 5xx, a connection error or an unhealthy
   server afterwards; the rows stored in Cassandra are counted before and after.

Every prediction id the app answered (API) or showed (browser: the feedback widget's key holds it)
is looked up in Cassandra: ``lost`` counts ids without a row, ``duplicated`` counts extra rows.
Each scenario prints its figures as it finishes; the last line is one JSON object with
load_errors, lost, duplicated, fuzz_cases, fuzz_crashes, rss_growth_pct and more.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import datetime
import io
import json
import logging
import multiprocessing
import os
import pathlib
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))

import httpx2  # noqa: E402
import numpy as np  # noqa: E402
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile  # noqa: E402
from cassandra.policies import RoundRobinPolicy  # noqa: E402
from cassandra.query import SimpleStatement  # noqa: E402
from PIL import Image  # noqa: E402
from playwright.async_api import Error as PlaywrightError  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402

from mnist_core.datasets import load_mnist  # noqa: E402
from tests.e2e.strokes import ANSWER_TIMER_SCRIPT, digit_strokes  # noqa: E402
from train.drawings import redraw  # noqa: E402

CASSANDRA_SCRIPT = REPOSITORY_ROOT / "scripts" / "cassandra"
CLUSTER_NAME = "mnist-hardening"
NODE_HEAP = "768M"
SHARED_NODE = 1  # the default node other engineers' tests use: never started, stopped or killed here
CHROMIUM_PATH = pathlib.Path("/usr/bin/chromium")
CHROMIUM_LIBRARY_DIRECTORY = pathlib.Path("/usr/lib/chromium")  # where /usr/bin/chromium's processes run from
AUTOGROUP_SCAN_SECONDS = 0.5
CHROMIUM_ARGUMENTS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
DESKTOP = {"width": 1280, "height": 900}

APP_START_TIMEOUT_SECONDS = 180
APP_STOP_TIMEOUT_SECONDS = 20
NODE_START_TIMEOUT_SECONDS = 400
PAGE_TIMEOUT_MS = 60_000
PAGE_OPEN_CONCURRENCY = 4  # pages opened at once during the warm-up
SESSION_STAGGER_SECONDS = 0.4  # sessions start their loops this far apart
HAND_TO_BUTTON_SECONDS = 0.5  # mouse-up to Predict, as in the browser tests
INK_WAIT_SECONDS = 3.0  # after the last stroke, how long the canvas may take to show it
DRAWING_TRIES = 3  # a drawing that does not show on the canvas is cleared and drawn again
CANVAS_MOUNT_SECONDS = 1.0  # Clear gives the canvas a new key; let it mount before drawing
ANSWER_POLL_MS = 200
RSS_SAMPLE_SECONDS = 2.0
STATS_WAIT_SECONDS = 60
API_CLIENT_TIMEOUT_SECONDS = 60.0  # generous, so a late answer still tells us its id
FUZZ_CLIENT_TIMEOUT_SECONDS = 120.0
RAW_RESPONSE_WAIT_SECONDS = 5.0
# The browsers are the load generator, not the system under test: they run at this niceness.
# Run as root, Chromium raises its compositor and IO threads to nice -8 and would take the CPU
# from the app it is measuring on a 2-core machine; without CAP_SYS_NICE it cannot.
# Niceness only weighs processes within one session group: Chromium's renderers sit in groups of
# their own, so AutogroupDemoter writes the same value to those groups (nice 10 or 19 alone left
# Chromium a full core against the app's half, measured from /proc).
BROWSER_NICENESS = 19
PR_CAPBSET_DROP = 24
CAP_SYS_NICE = 23
TRACEBACK_MARKER = "Traceback (most recent call last)"


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def say(text: str = "") -> None:
    print(text, flush=True)


def git_state() -> dict:
    """The commit and the uncommitted files the app runs with (other people may be editing the tree)."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=REPOSITORY_ROOT, capture_output=True, text=True).stdout
    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line[3:] != "bench/hardening.py"]
    return {"git_head": git("rev-parse", "--short", "HEAD").strip(), "git_changed_files": changed}


# ---------------------------------------------------------------------------------------
# The processes: a private Cassandra node and the app
# ---------------------------------------------------------------------------------------

class CassandraNode:
    """One node started with scripts/cassandra under its own cluster name; killed by its own pid only."""

    def __init__(self, number: int) -> None:
        if not 2 <= number <= 9:
            raise ValueError(f"--node must be 2-9 (node {SHARED_NODE} is the shared default node); got {number}.")
        self.number = number
        self.address = f"127.0.0.{number}"
        home = pathlib.Path(os.environ.get("MNIST_CASSANDRA_HOME") or REPOSITORY_ROOT / ".cassandra")
        self.node_home = home / f"node{number}"
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("MNIST_CASSANDRA_NATIVE_PORT", "MNIST_CASSANDRA_STORAGE_PORT",
                                      "MNIST_CASSANDRA_AUTH", "MNIST_CASSANDRA_NODE")}
        environment.update({
            "MNIST_CASSANDRA_SEEDS": self.address,
            "MNIST_CASSANDRA_CLUSTER_NAME": CLUSTER_NAME,
            "MNIST_CASSANDRA_HEAP": NODE_HEAP,
        })
        self.environment = environment

    def _script(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(CASSANDRA_SCRIPT), command, str(self.number)], env=self.environment,
                              capture_output=True, text=True, timeout=timeout)

    def answers(self) -> bool:
        return self._script("status", 30).returncode == 0

    def start(self) -> float:
        started = time.monotonic()
        result = self._script("start", NODE_START_TIMEOUT_SECONDS)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/cassandra start {self.number} failed:\n{result.stdout}{result.stderr}")
        return time.monotonic() - started

    def stop(self) -> None:
        result = self._script("stop", 150)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/cassandra stop {self.number} failed:\n{result.stdout}{result.stderr}")

    def pid(self) -> int | None:
        """The daemon's pid, found by the marker property scripts/cassandra puts on its command line."""
        result = subprocess.run(["pgrep", "-f", "--", f"-Dmnist.cassandra.node_home={self.node_home} "],
                                capture_output=True, text=True)
        pids = [int(line) for line in result.stdout.split()]
        return pids[0] if pids else None

    def kill(self) -> None:
        """SIGKILL the daemon (no drain, no flush: the commit log replays on the next start)."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"Cassandra node {self.number} has no running daemon to kill.")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.pid() == pid and time.monotonic() < deadline:
            time.sleep(0.1)

    def connect(self) -> Cluster:
        profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=60)
        return Cluster([self.address], protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile})

    def stored_ids(self, keyspace: str) -> tuple[collections.Counter, dict[str, str]]:
        """Rows per prediction id in predictions_by_day (a full scan of our small private keyspace) and their sources."""
        cluster = self.connect()
        try:
            session = cluster.connect()
            rows = session.execute(SimpleStatement(f"SELECT id, source FROM {keyspace}.predictions_by_day", fetch_size=5000))
            counts: collections.Counter = collections.Counter()
            sources: dict[str, str] = {}
            for row in rows:
                identifier = str(row.id)
                counts[identifier] += 1
                sources[identifier] = row.source
            return counts, sources
        finally:
            cluster.shutdown()

    def drop_keyspace(self, keyspace: str) -> None:
        cluster = self.connect()
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        finally:
            cluster.shutdown()


class AppServer:
    """`streamlit run Home.py` on a free loopback port, pointed at our node, keyspace and outbox directory."""

    def __init__(self, *, node: CassandraNode, keyspace: str, data_directory: pathlib.Path, log_path: pathlib.Path,
                 streamlit_options: list[str] = (), api_key: str | None = None,
                 dashboard_password: str | None = None) -> None:
        self.environment = {
            **{name: value for name, value in os.environ.items()
               if name not in ("MNIST_API_KEY", "MNIST_DASHBOARD_PASSWORD")},
            "MNIST_CASSANDRA_CONTACT_POINTS": node.address,
            "MNIST_CASSANDRA_KEYSPACE": keyspace,
            "MNIST_DATA_DIR": str(data_directory),
            "MNIST_DISPLAY_TIMEZONE": "UTC",
        }
        # --secured: the API needs the key (every request here sends it) and the pages a password.
        if api_key is not None:
            self.environment["MNIST_API_KEY"] = api_key
        if dashboard_password is not None:
            self.environment["MNIST_DASHBOARD_PASSWORD"] = dashboard_password
        self.api_key = api_key
        self.dashboard_password = dashboard_password
        self.api_headers = {"X-API-Key": api_key} if api_key is not None else {}
        self.log_path = log_path
        self.streamlit_options = list(streamlit_options)
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.http = httpx2.Client(timeout=10, trust_env=False, headers=self.api_headers)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(self.port),
                   "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
                   # Edits to the working tree during a run must not hot-reload modules into the running app.
                   "--server.fileWatcherType", "none"]
        for option in self.streamlit_options:
            name, _, value = option.partition("=")
            command += [f"--{name}", value]
        with open(self.log_path, "a") as log:
            log.write(f"\n===== streamlit run on port {self.port} at {datetime.datetime.now().isoformat()} =====\n")
            log.flush()
            self.process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=self.environment,
                                            stdout=log, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, path: str) -> tuple[int, dict | str]:
        response = self.http.get(self.base_url + path)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def health(self) -> dict | None:
        try:
            status, body = self.get("/api/health")
        except httpx2.HTTPError:
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def wait_until_serving(self, timeout: float = APP_START_TIMEOUT_SECONDS) -> float:
        """Until Streamlit's own health check answers (this does not touch the model or the store)."""
        started = time.monotonic()
        while True:
            self._require_alive()
            try:
                if self.http.get(self.base_url + "/_stcore/health").status_code == 200:
                    return time.monotonic() - started
            except httpx2.HTTPError:
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"The app did not serve within {timeout:.0f} s; see {self.log_path}.")
            time.sleep(0.5)

    def wait_until_drained(self, timeout: float) -> float | None:
        """Until /api/health says connected with nothing pending; seconds waited, or None on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self._require_alive()
            body = self.health()
            if body is not None and body["storage"]["state"] == "connected" and body["storage"]["pending"] == 0:
                return time.monotonic() - started
            time.sleep(1.0)
        return None

    def _require_alive(self) -> None:
        if not self.running():
            raise RuntimeError(f"The app exited with code {self.process.returncode}; see {self.log_path}:\n"
                               + self.log_path.read_text()[-3000:])

    def memory_mb(self, field: str = "VmRSS") -> float | None:
        """A /proc/<pid>/status memory figure (VmRSS now, VmHWM the peak) in MiB."""
        try:
            for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            return None
        return None

    def stop(self) -> tuple[int | None, float, bool]:
        """SIGTERM, then SIGKILL after a bounded wait; (exit code, seconds, whether it had to be killed)."""
        if self.process is None:
            return None, 0.0, False
        started = time.monotonic()
        killed = False
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=APP_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                killed = True
                self.process.kill()
                self.process.wait(timeout=APP_STOP_TIMEOUT_SECONDS)
        self.http.close()
        return self.process.returncode, time.monotonic() - started, killed


class RssSampler(threading.Thread):
    """Reads the app's VmRSS every few seconds while a scenario runs; keeps the peak."""

    def __init__(self, app: AppServer) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.app = app
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(RSS_SAMPLE_SECONDS):
            value = self.app.memory_mb()
            if value is not None:
                self.samples.append(value)

    def finish(self) -> float | None:
        self._stop_event.set()
        self.join(timeout=10)
        return max(self.samples) if self.samples else None


class AutogroupDemoter(threading.Thread):
    """Lowers the scheduler weight of every Chromium session group, as Chromium starts processes.

    With the kernel's autogroup scheduling on, CPU is shared between sessions first, and
    Chromium puts its renderers in sessions of their own: each was weighed like the whole app
    however nice it was, and twenty of them took a full core against the app's half. Writing a
    niceness to ``/proc/<pid>/autogroup`` weighs the group itself.
    """

    def __init__(self) -> None:
        super().__init__(name="autogroup-demoter", daemon=True)
        self.groups: set[str] = set()
        self._stop_event = threading.Event()

    def _demote_once(self) -> None:
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not (entry / "cmdline").read_bytes().startswith(str(CHROMIUM_LIBRARY_DIRECTORY).encode()):
                    continue
                group = (entry / "autogroup").read_text().split()[0]
                if group not in self.groups:
                    (entry / "autogroup").write_text(str(BROWSER_NICENESS))
                    self.groups.add(group)
            except OSError:  # gone already, or autogroup scheduling is off
                continue

    def run(self) -> None:
        while not self._stop_event.wait(AUTOGROUP_SCAN_SECONDS):
            self._demote_once()

    def finish(self) -> int:
        self._stop_event.set()
        self.join(timeout=10)
        return len(self.groups)


def tracebacks_in_log(log_path: pathlib.Path, since_offset: int = 0) -> collections.Counter:
    """The Python tracebacks the app logged after ``since_offset``, counted by their final exception line."""
    lines = log_path.read_text(errors="replace")[since_offset:].splitlines()
    exceptions: collections.Counter = collections.Counter()
    index = 0
    while index < len(lines):
        if TRACEBACK_MARKER in lines[index]:
            index += 1
            # The frames are indented; the first line that is not ends the traceback and names the exception.
            while index < len(lines) and (lines[index].startswith((" ", "\t")) or not lines[index].strip()):
                index += 1
            exceptions[lines[index][:160] if index < len(lines) else "(truncated)"] += 1
        index += 1
    return exceptions


def log_size(log_path: pathlib.Path) -> int:
    return len(log_path.read_text(errors="replace")) if log_path.exists() else 0


# ---------------------------------------------------------------------------------------
# Inputs: digit PNGs for the API, mouse strokes for the browsers
# ---------------------------------------------------------------------------------------

def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def digit_pictures(mnist, *, first: int, count: int, seed: int) -> list[tuple[Image.Image, int]]:
    """MNIST test digits redrawn as 18 px pen strokes: two in three as canvas RGBA, one as dark ink on paper."""
    generator = np.random.default_rng(seed)
    pictures = []
    for index in range(first, first + count):
        canvas = redraw(mnist.test_images[index], "fill" if index % 2 == 0 else "natural", generator)
        if index % 3 == 2:
            picture = Image.fromarray(255 - canvas[..., 3], "L")
        else:
            picture = Image.fromarray(canvas, "RGBA")
        pictures.append((picture, int(mnist.test_labels[index])))
    return pictures


def browser_drawings(mnist, *, first: int, count: int) -> list[tuple[list, int]]:
    """(mouse strokes, label) for MNIST test digits, as the browser tests draw them, with every second point.

    Each mouse move is a round trip to Chromium; points 8 px apart still draw the same digit
    with an 18 px pen, at half the cost to the machine the app shares.
    """
    drawings = []
    for index in range(first, first + count):
        strokes = [stroke[::2] + ([stroke[-1]] if len(stroke) % 2 == 0 else [])
                   for stroke in digit_strokes(mnist.test_images[index])]
        drawings.append((strokes, int(mnist.test_labels[index])))
    return drawings


# ---------------------------------------------------------------------------------------
# Scenario 1 (and the first fault): browsers and the REST API at once
# ---------------------------------------------------------------------------------------

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


# What the page shows after Predict: the prediction id (the "Was this right?" radio has the key
# draw_right_<id>, which Streamlit puts in the class st-key-draw_right_<id>), the blank message,
# or a Python exception.
ANSWER_OUTCOME_SCRIPT = """() => {
  const radio = document.querySelector('[class*="st-key-draw_right_"]');
  if (radio) {
    const match = radio.className.match(/st-key-draw_right_([0-9a-f-]{36})/);
    const value = document.querySelector('[data-testid="stMetricValue"]');
    if (match && value) return {id: match[1], text: value.innerText};
  }
  const exception = document.querySelector('[data-testid="stException"]');
  if (exception) return {exception: exception.innerText.slice(0, 300)};
  if (document.body.innerText.includes('Draw a digit first.')) return {blank: true};
  return null;
}"""

IDLE_SELECTOR = '[data-testid="stApp"][data-test-script-state="notRunning"]'
# Clear gives the canvas a new key, draw_canvas_<generation>; Streamlit puts it in the class st-key-<key>.
CANVAS_GENERATION_SCRIPT = """() => {
  for (const element of document.querySelectorAll('[class*="st-key-draw_canvas_"]')) {
    const match = element.className.match(/st-key-draw_canvas_(\\d+)/);
    if (match) return Number(match[1]);
  }
  return null;
}"""
# Whether the canvas shows ink (the component's Fabric canvas renders strokes on canvas.dc-canvas.lower-canvas).
CANVAS_HAS_INK_SCRIPT = """(canvas) => {
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  for (let index = 3; index < pixels.length; index += 4) { if (pixels[index] > 0) return true; }
  return false;
}"""


@dataclasses.dataclass
class BrowserAttempt:
    session: int
    phase: str
    label: int
    clicked_at: float | None = None  # monotonic
    answer_seconds: float | None = None  # in the page: Predict click to the metric in the DOM
    prediction_id: str | None = None
    answer_text: str | None = None
    error: str | None = None
    predict_clicked: bool = False


class BrowserSession:
    """One browser context on the Draw page: clear, draw, Predict, wait for the answer; again."""

    def __init__(self, index: int, *, browser, base_url: str, drawings: list[tuple[list, int]],
                 answer_timeout_seconds: float, dashboard_password: str | None = None) -> None:
        self.index = index
        self.dashboard_password = dashboard_password
        self.browser = browser
        self.base_url = base_url
        self.drawings = drawings
        self.answer_timeout_ms = int(answer_timeout_seconds * 1000)
        self.attempts: list[BrowserAttempt] = []
        self.page_errors: list[str] = []
        self.reloads = 0
        self.canvas_misses = 0  # drawings that did not show on the canvas (drawn again; not a prediction)
        self.usable = False  # the page is open on the Draw page
        self.context = None
        self.page = None
        self._next_drawing = index * 7

    async def open(self) -> None:
        self.context = await self.browser.new_context(viewport=DESKTOP, device_scale_factor=1)
        self.page = await self.context.new_page()
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)[:300]))
        self.page.on("crash", lambda _: self.page_errors.append("page crashed"))
        await self._load()
        self.usable = True

    async def _load(self) -> None:
        await self.page.goto(self.base_url + "/", wait_until="domcontentloaded")
        if self.dashboard_password is not None:
            # A new Streamlit session (a reload too) signs in first.
            await self.page.get_by_role("heading", name="Sign in", exact=True).wait_for()
            await self.page.get_by_label("Password", exact=True).fill(self.dashboard_password)
            await self.page.get_by_role("button", name="Sign in", exact=True).click()
        await self.page.get_by_role("button", name="Predict", exact=True).wait_for()
        await self.page.wait_for_selector(IDLE_SELECTOR)

    async def recover(self) -> None:
        """After a failed attempt: reload the page (a new Streamlit session), or open a new context."""
        self.reloads += 1
        self.usable = False
        try:
            await self._load()
            self.usable = True
        except PlaywrightError:
            await self.context.close()
            await self.open()

    async def predict_once(self, phase: str) -> BrowserAttempt:
        strokes, label = self.drawings[self._next_drawing % len(self.drawings)]
        self._next_drawing += 1
        attempt = BrowserAttempt(session=self.index, phase=phase, label=label)
        self.attempts.append(attempt)
        page = self.page
        step = "clear"
        try:
            for _ in range(DRAWING_TRIES):
                step = "clear"
                generation = await self._clear_canvas()
                step = "draw"
                if await self._draw(generation, strokes):
                    break
                self.canvas_misses += 1
            else:
                attempt.error = f"the strokes did not reach the canvas in {DRAWING_TRIES} tries"
                return attempt
            await asyncio.sleep(HAND_TO_BUTTON_SECONDS)
            await page.wait_for_selector(IDLE_SELECTOR)
            step = "predict"
            await page.evaluate(ANSWER_TIMER_SCRIPT)
            attempt.clicked_at = time.monotonic()
            await page.get_by_role("button", name="Predict", exact=True).click()
            attempt.predict_clicked = True
            step = "answer"
            handle = await page.wait_for_function(ANSWER_OUTCOME_SCRIPT, polling=ANSWER_POLL_MS,
                                                  timeout=self.answer_timeout_ms)
            outcome = await handle.json_value()
        except PlaywrightError as error:
            kind = "no answer within the timeout" if step == "answer" else f"stuck at {step}"
            attempt.error = f"{kind}: {error.message.splitlines()[0][:120]}"
            return attempt
        if "id" in outcome:
            attempt.prediction_id = outcome["id"]
            attempt.answer_text = outcome["text"]
            shown = await page.evaluate(
                "() => window.__answerShownAt === null ? null : (window.__answerShownAt - window.__predictClickedAt) / 1000")
            attempt.answer_seconds = shown if shown is not None else time.monotonic() - attempt.clicked_at
        elif "exception" in outcome:
            attempt.error = f"exception in the page: {outcome['exception'][:200]}"
        else:
            attempt.error = "blank answer ('Draw a digit first.')"
        return attempt

    async def _clear_canvas(self) -> int:
        """Click Clear and wait for the new, empty canvas; returns its generation."""
        page = self.page
        generation = (await page.evaluate(CANVAS_GENERATION_SCRIPT) or 0) + 1
        await page.get_by_role("button", name="Clear", exact=True).click()
        await page.get_by_test_id("stMetric").wait_for(state="detached")
        await page.wait_for_selector(IDLE_SELECTOR)
        # The new canvas must be mounted before the mouse goes down, or the strokes land on the old one.
        await page.locator(f".st-key-draw_canvas_{generation} canvas").last.wait_for(state="visible")
        await asyncio.sleep(CANVAS_MOUNT_SECONDS)
        return generation

    async def _draw(self, generation: int, strokes: list) -> bool:
        """Draw the strokes with the mouse; whether they show on the canvas afterwards."""
        page = self.page
        box = await page.locator(f".st-key-draw_canvas_{generation} canvas").last.bounding_box()
        for stroke in strokes:
            x, y = stroke[0]
            await page.mouse.move(box["x"] + x, box["y"] + y)
            await page.mouse.down()
            for x, y in stroke[1:]:
                await page.mouse.move(box["x"] + x, box["y"] + y)
            await page.mouse.up()
        return await self._canvas_shows_ink(generation)

    async def _canvas_shows_ink(self, generation: int) -> bool:
        """Whether the drawn strokes show on the canvas (polled briefly: a busy page may render them late)."""
        layer = self.page.locator(f".st-key-draw_canvas_{generation} canvas.dc-canvas.lower-canvas")
        deadline = time.monotonic() + INK_WAIT_SECONDS
        while True:
            try:
                if await layer.evaluate(CANVAS_HAS_INK_SCRIPT, timeout=1000):
                    return True
            except PlaywrightError:
                pass  # the canvas is not (or no longer) there
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)

    async def run_until(self, stop_at: float) -> None:
        await asyncio.sleep(self.index * SESSION_STAGGER_SECONDS)
        while self.usable and time.monotonic() < stop_at:
            attempt = await self.predict_once("load")
            if attempt.error is not None:
                try:
                    await self.recover()
                except PlaywrightError as error:
                    self.page_errors.append(f"could not reopen the page: {error.message[:200]}")
                    return

    async def close(self) -> None:
        if self.context is not None:
            await self.context.close()


class FaultInjector(threading.Thread):
    """At a given moment: SIGKILL the node, then start it again with scripts/cassandra (commit log replay)."""

    def __init__(self, node: CassandraNode, at: float) -> None:
        super().__init__(name="fault-injector", daemon=True)
        self.node = node
        self.at = at
        self.killed_at: float | None = None
        self.back_at: float | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            time.sleep(max(0.0, self.at - time.monotonic()))
            self.killed_at = time.monotonic()
            self.node.kill()
            say(f"  [fault] node {self.node.number} killed (SIGKILL); starting it again...")
            self.node.start()
            self.back_at = time.monotonic()
            say(f"  [fault] node {self.node.number} answers again after {self.back_at - self.killed_at:.1f} s")
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            self.failure = error


@dataclasses.dataclass
class Accounting:
    expected: int
    lost: int
    extra_copies: int
    unmatched_rows: int
    unknown_outcomes: int
    lost_ids: list[str] = dataclasses.field(default_factory=list)

    @property
    def duplicated(self) -> int:
        # Rows no answer told us about are explained only by attempts whose outcome we could not see.
        return self.extra_copies + max(0, self.unmatched_rows - self.unknown_outcomes)


def account(expected_ids: set[str], counts: collections.Counter, sources: dict[str, str], *, source: str | None,
            unknown_outcomes: int) -> Accounting:
    """Lost and duplicated among ``expected_ids``; rows of ``source`` (None: any) not expected are unmatched."""
    lost_ids = sorted(identifier for identifier in expected_ids if counts[identifier] == 0)
    extra = sum(counts[identifier] - 1 for identifier in expected_ids if counts[identifier] > 1)
    unmatched = sum(count for identifier, count in counts.items()
                    if identifier not in expected_ids and (source is None or sources.get(identifier) == source))
    return Accounting(expected=len(expected_ids), lost=len(lost_ids), extra_copies=extra, unmatched_rows=unmatched,
                      unknown_outcomes=unknown_outcomes, lost_ids=lost_ids)


def drop_priority_raising_for_children() -> bool:
    """Take CAP_SYS_NICE out of the bounding set: programs started from now on cannot raise their priority.

    This process keeps its own capabilities; only what it executes (the Playwright driver and
    Chromium, and later the app and Cassandra, which never ask for a higher priority) loses it.
    """
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def thread_niceness(value: int):
    """Run the block with this thread at ``value`` niceness (on Linux, niceness is per thread and inherited)."""
    previous = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, value)
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, previous)
        except PermissionError:
            pass


async def browsers_and_api(*, app: AppServer, node: CassandraNode, arguments, api_images, drawings,
                           figures: dict) -> tuple[list[ApiResult], list[BrowserAttempt], list[BrowserSession], dict]:
    """Warm up, then run the browser sessions and the API load together (with the node killed on the way)."""
    timing: dict = {}
    api_results: list[ApiResult] = []
    figures["browser_priority_capped"] = drop_priority_raising_for_children()
    figures["browser_nice"] = BROWSER_NICENESS
    with thread_niceness(BROWSER_NICENESS):  # the Playwright driver, and Chromium after it, inherit it
        playwright_manager = async_playwright()
        playwright = await playwright_manager.__aenter__()
    demoter = AutogroupDemoter()
    demoter.start()
    try:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), headless=True,
                                                   args=CHROMIUM_ARGUMENTS)
        sessions = [BrowserSession(index, browser=browser, base_url=app.base_url, drawings=drawings,
                                   answer_timeout_seconds=arguments.answer_timeout,
                                   dashboard_password=app.dashboard_password)
                    for index in range(arguments.sessions)]
        try:
            # Warm-up: every page open with one answered drawing, and the API served a few times.
            warm_up_started = time.monotonic()
            opening = asyncio.Semaphore(PAGE_OPEN_CONCURRENCY)

            async def open_and_draw(session: BrowserSession) -> None:
                try:
                    async with opening:
                        await session.open()
                    attempt = await session.predict_once("warm-up")
                    if attempt.error is not None:
                        await session.recover()
                except PlaywrightError as error:
                    session.usable = False
                    session.page_errors.append(f"could not open the page: {error.message.splitlines()[0][:200]}")

            await asyncio.gather(*(open_and_draw(session) for session in sessions))
            warm_up = ApiLoad(base_url=app.base_url, images=api_images, rate=max(1.0, arguments.api_rate / 2),
                              duration=4.0, deadline_seconds=arguments.api_deadline, phase="warm-up",
                              headers=app.api_headers)
            await asyncio.to_thread(warm_up.start)
            warm_up.begin(time.monotonic())
            await asyncio.to_thread(warm_up.join)
            if warm_up.failure is not None:
                raise RuntimeError(f"The API warm-up failed: {warm_up.failure}")
            api_results.extend(warm_up.results)
            figures["warm_up_s"] = round(time.monotonic() - warm_up_started, 1)
            await asyncio.sleep(2.0)
            figures["rss_before_mb"] = round(app.memory_mb(), 1)
            say(f"  warm-up: {sum(s.usable for s in sessions)} of {len(sessions)} pages open, "
                f"{sum(len(s.attempts) for s in sessions)} drawings, "
                f"{len(warm_up.results)} API requests in {figures['warm_up_s']} s; app RSS {figures['rss_before_mb']} MB")

            # The load itself.
            load = ApiLoad(base_url=app.base_url, images=api_images, rate=arguments.api_rate,
                           duration=arguments.duration, deadline_seconds=arguments.api_deadline,
                           headers=app.api_headers)
            await asyncio.to_thread(load.start)
            sampler = RssSampler(app)
            sampler.start()
            start_at = time.monotonic() + 0.5
            stop_at = start_at + arguments.duration
            load.begin(start_at)
            fault = None
            if not arguments.skip_faults:
                fault = FaultInjector(node, start_at + arguments.duration / 3)
                fault.start()
            await asyncio.gather(*(session.run_until(stop_at) for session in sessions))
            await asyncio.to_thread(load.join)
            timing["load_started"], timing["load_stopped"] = start_at, time.monotonic()
            figures["rss_after_mb"] = round(app.memory_mb(), 1)
            figures["rss_peak_mb"] = round(sampler.finish() or figures["rss_after_mb"], 1)
            if load.failure is not None:
                raise RuntimeError(f"The API load failed: {load.failure}")
            api_results.extend(load.results)
            figures["api_dispatch_lag_max_ms"] = milliseconds(max(load.dispatch_lags, default=0.0))
            if fault is not None:
                await asyncio.to_thread(fault.join)
                if fault.failure is not None:
                    raise RuntimeError(f"The fault injection failed: {fault.failure!r}")
                timing["killed_at"], timing["back_at"] = fault.killed_at, fault.back_at
        finally:
            for session in sessions:
                try:
                    await session.close()
                except PlaywrightError:
                    pass
            await browser.close()
    finally:
        await playwright_manager.__aexit__(None, None, None)
        figures["browser_autogroups_demoted"] = demoter.finish()
    attempts = [attempt for session in sessions for attempt in session.attempts]
    return api_results, attempts, sessions, timing


TIMELINE_BUCKET_SECONDS = 10


def print_timeline(api_results: list[ApiResult], attempts: list[BrowserAttempt], timing: dict, arguments) -> None:
    """API and browser figures per 10 s of the load, with the node's outage marked."""
    start = timing["load_started"]
    say(f"  {'seconds':>9}  {'API sent':>8} {'errors':>6} {'p50 ms':>7} {'max ms':>7}   {'answers':>7} {'errors':>6} "
        f"{'p50 ms':>7}")
    for bucket_start in range(0, int(arguments.duration), TIMELINE_BUCKET_SECONDS):
        low, high = start + bucket_start, start + bucket_start + TIMELINE_BUCKET_SECONDS
        sent = [result for result in api_results if low <= result.scheduled_at < high]
        latencies = [result.latency_seconds for result in sent if result.latency_seconds is not None]
        clicked = [attempt for attempt in attempts if attempt.clicked_at is not None and low <= attempt.clicked_at < high]
        answers = [attempt.answer_seconds for attempt in clicked if attempt.answer_seconds is not None]
        marks = []
        if timing.get("killed_at") is not None and low <= timing["killed_at"] < high:
            marks.append("node killed")
        if timing.get("back_at") is not None and low <= timing["back_at"] < high:
            marks.append("node back")
        say(f"  {bucket_start:>4}-{bucket_start + TIMELINE_BUCKET_SECONDS:<4}  {len(sent):>8} "
            f"{sum(result.error is not None for result in sent):>6} {milliseconds(percentile(latencies, 0.5)) or '-':>7} "
            f"{milliseconds(max(latencies, default=None)) or '-':>7}   {len(answers):>7} "
            f"{sum(attempt.error is not None for attempt in clicked):>6} {milliseconds(percentile(answers, 0.5)) or '-':>7}"
            f"  {', '.join(marks)}")


def run_load(*, app: AppServer, node: CassandraNode, keyspace: str, arguments, api_images, drawings,
             figures: dict, expected: dict) -> None:
    say(f"(1) load: {arguments.sessions} browser sessions drawing and predicting, and POST /api/predict at "
        f"{arguments.api_rate:g}/s open loop, for {arguments.duration:g} s"
        + ("" if arguments.skip_faults else f"; (2a) node {node.number} SIGKILLed and restarted at "
           f"{arguments.duration / 3:.0f} s"))
    log_offset = log_size(app.log_path)
    api_results, attempts, sessions, timing = asyncio.run(browsers_and_api(
        app=app, node=node, arguments=arguments, api_images=api_images, drawings=drawings, figures=figures))

    load_api = [result for result in api_results if result.phase == "load"]
    load_attempts = [attempt for attempt in attempts if attempt.phase == "load"]
    api_errors = [result for result in load_api if result.error is not None]
    browser_errors = [attempt for attempt in load_attempts if attempt.error is not None]
    page_errors = [error for session in sessions for error in session.page_errors]
    api_latencies = [result.latency_seconds for result in load_api if result.latency_seconds is not None]
    answer_latencies = [attempt.answer_seconds for attempt in load_attempts if attempt.answer_seconds is not None]
    answered_api = [result for result in api_results if result.prediction_id is not None]
    answered_browser = [attempt for attempt in attempts if attempt.prediction_id is not None]
    duration = timing["load_stopped"] - timing["load_started"]

    figures.update({
        "api_requests": len(load_api),
        "api_rate_achieved": round(len(load_api) / arguments.duration, 1),
        "api_errors": len(api_errors),
        "api_p50_ms": milliseconds(percentile(api_latencies, 0.50)),
        "api_p99_ms": milliseconds(percentile(api_latencies, 0.99)),
        "api_max_ms": milliseconds(max(api_latencies, default=None)),
        "api_queued": sum(result.stored == "queued" for result in answered_api),
        "api_digit_accuracy": round(statistics.mean(result.digit == result.label for result in answered_api), 4)
        if answered_api else None,
        "browser_predictions": sum(attempt.prediction_id is not None for attempt in load_attempts),
        "browser_attempts": len(load_attempts),
        "browser_errors": len(browser_errors),
        "browser_page_errors": len(page_errors),
        "browser_p50_ms": milliseconds(percentile(answer_latencies, 0.50)),
        "browser_p99_ms": milliseconds(percentile(answer_latencies, 0.99)),
        "browser_max_ms": milliseconds(max(answer_latencies, default=None)),
        "browser_predictions_per_s": round(len(answer_latencies) / duration, 2),
        "browser_reloads": sum(session.reloads for session in sessions),
        "browser_canvas_misses": sum(session.canvas_misses for session in sessions),
        "browser_digit_accuracy": round(statistics.mean(
            attempt.answer_text.startswith(str(attempt.label)) for attempt in answered_browser), 4)
        if answered_browser else None,
        "warm_up_errors": sum(r.error is not None for r in api_results if r.phase == "warm-up")
        + sum(a.error is not None for a in attempts if a.phase == "warm-up"),
    })
    figures["load_errors"] = figures["api_errors"] + figures["browser_errors"] + figures["browser_page_errors"]
    figures["api_error_kinds"] = dict(collections.Counter(result.error for result in api_errors))
    figures["browser_error_kinds"] = dict(collections.Counter(attempt.error.split(":")[0] for attempt in browser_errors))
    before, after = figures["rss_before_mb"], figures["rss_after_mb"]
    figures["rss_growth_pct"] = round((after - before) / before * 100, 2)

    if "killed_at" in timing:
        window_start, window_end = timing["killed_at"], timing["back_at"] + 10
        figures["fault_downtime_s"] = round(timing["back_at"] - timing["killed_at"], 1)
        figures["load_errors_in_fault_window"] = (
            sum(window_start <= result.scheduled_at <= window_end for result in api_errors)
            + sum(window_start <= (attempt.clicked_at or 0) <= window_end for attempt in browser_errors))

    say(f"  API: {figures['api_requests']} requests ({figures['api_rate_achieved']}/s), {len(api_errors)} errors "
        f"{dict(collections.Counter(result.error for result in api_errors))}, p50 {figures['api_p50_ms']} ms, "
        f"p99 {figures['api_p99_ms']} ms, max {figures['api_max_ms']} ms (from the scheduled send; late means over "
        f"{arguments.api_deadline:g} s); {figures['api_queued']} answered 'queued'; digit right "
        f"{figures['api_digit_accuracy']}; pacer lag max {figures['api_dispatch_lag_max_ms']} ms")
    say(f"  browsers: {figures['browser_predictions']} answered of {len(load_attempts)} Predict attempts "
        f"({figures['browser_predictions_per_s']}/s), {len(browser_errors)} errors, {len(page_errors)} page errors, "
        f"answer p50 {figures['browser_p50_ms']} ms, p99 {figures['browser_p99_ms']} ms, max "
        f"{figures['browser_max_ms']} ms; digit right {figures['browser_digit_accuracy']}; "
        f"{figures['browser_canvas_misses']} drawing(s) did not show on the canvas and were drawn again")
    for reason, count in collections.Counter(attempt.error for attempt in browser_errors).most_common(5):
        say(f"    {count} x {reason}")
    for error in page_errors[:5]:
        say(f"    page error: {error}")
    if "fault_downtime_s" in figures:
        say(f"  fault: node down {figures['fault_downtime_s']} s; "
            f"{figures['load_errors_in_fault_window']} of the load errors fall in the outage (+10 s)")
    print_timeline(load_api, load_attempts, timing, arguments)
    say(f"  app RSS: {before} MB after warm-up, {after} MB after the load ({figures['rss_growth_pct']:+.2f}%), "
        f"peak {figures['rss_peak_mb']} MB")

    # The outbox must drain, then every answered id must be stored exactly once.
    drained = app.wait_until_drained(arguments.drain_timeout)
    figures["drain_s"] = None if drained is None else round(drained, 1)
    say(f"  outbox drained {'in ' + str(figures['drain_s']) + ' s' if drained is not None else 'NOT within the timeout'}")
    api_ids = {result.prediction_id for result in answered_api}
    browser_ids = {attempt.prediction_id for attempt in answered_browser}
    expected["api"] |= api_ids
    expected["canvas"] |= browser_ids
    expected["queued"] |= {result.prediction_id for result in answered_api if result.stored == "queued"}
    expected["unknown_api"] += sum(result.prediction_id is None and result.status is None for result in api_results)
    # A Predict click that showed nothing may still have stored a row.
    expected["unknown_canvas"] += sum(attempt.predict_clicked and attempt.prediction_id is None for attempt in attempts)
    counts, sources = node.stored_ids(keyspace)
    api_account = account(api_ids, counts, sources, source="api", unknown_outcomes=expected["unknown_api"])
    browser_account = account(browser_ids, counts, sources, source="canvas", unknown_outcomes=expected["unknown_canvas"])
    canvas_rows = sum(count for identifier, count in counts.items() if sources[identifier] == "canvas")
    figures["load_lost"] = api_account.lost + browser_account.lost
    figures["load_duplicated"] = api_account.duplicated + browser_account.duplicated
    figures["stored_rows_after_load"] = sum(counts.values())
    figures["stored_matches_answers"] = sum(counts.values()) == len(api_ids) + len(browser_ids)
    say(f"  Cassandra: {sum(counts.values())} rows for {len(api_ids)} API + {len(browser_ids)} browser answers "
        f"(warm-up included); API lost {api_account.lost}, duplicated {api_account.duplicated}; canvas rows "
        f"{canvas_rows} for {len(browser_ids)} answers shown, lost {browser_account.lost}, duplicated "
        f"{browser_account.duplicated} (unmatched rows {browser_account.unmatched_rows}, clicks without an answer "
        f"{expected['unknown_canvas']})")

    answered_at = {result.prediction_id: (result.scheduled_at + (result.latency_seconds or 0), f"API, answered "
                   f"'{result.stored}'") for result in answered_api}
    answered_at.update({attempt.prediction_id: (attempt.clicked_at + (attempt.answer_seconds or 0), "browser")
                        for attempt in answered_browser})
    if "killed_at" in timing:
        # The predictions the first fault put at risk: answered from 5 s before the SIGKILL until 10 s
        # after the node was back, and every one answered 'queued'.
        low, high = timing["killed_at"] - 5, timing["back_at"] + 10
        at_risk = {identifier for identifier, (moment, _) in answered_at.items() if low <= moment <= high}
        at_risk |= expected["queued"]
        expected["fault"] |= at_risk
        fault_account = account(at_risk, counts, sources, source=None, unknown_outcomes=0)
        figures["fault1_predictions"] = len(at_risk)
        figures["fault1_lost"] = fault_account.lost
        figures["fault1_duplicated"] = fault_account.extra_copies
        say(f"  around the SIGKILL (from 5 s before to 10 s after the node was back, or answered 'queued'): "
            f"{len(at_risk)} predictions, lost {fault_account.lost}, duplicated {fault_account.extra_copies}")
    for identifier in (api_account.lost_ids + browser_account.lost_ids)[:10]:
        moment, what = answered_at[identifier]
        relative = (f"{moment - timing['killed_at']:+.2f} s from the SIGKILL" if "killed_at" in timing
                    else f"{moment - timing['load_started']:.1f} s into the load")
        say(f"    LOST {identifier} ({what}, answered about {relative})")

    # The per-digit rollup behind /api/stats must come to the same total.
    stats_total = None
    deadline = time.monotonic() + STATS_WAIT_SECONDS
    while time.monotonic() < deadline:
        status, body = app.get("/api/stats")
        stats_total = body.get("total") if status == 200 and isinstance(body, dict) else None
        if stats_total == sum(counts.values()):
            break
        time.sleep(2)
    figures["stats_match"] = stats_total == sum(counts.values())
    say(f"  /api/stats total {stats_total} ({'matches' if figures['stats_match'] else 'DOES NOT match'} the rows)")
    tracebacks = tracebacks_in_log(app.log_path, log_offset)
    figures["server_tracebacks_load"] = sum(tracebacks.values())
    for exception, count in tracebacks.most_common(5):
        say(f"  the app logged {count} traceback(s) ending in: {exception}")


# ---------------------------------------------------------------------------------------
# Scenario 2b: predictions queued while Cassandra is down survive an app restart
# ---------------------------------------------------------------------------------------

def outbox_rows(data_directory: pathlib.Path) -> int:
    connection = sqlite3.connect(str(data_directory / "outbox.sqlite3"), timeout=10)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        connection.close()


def run_restart_fault(*, app: AppServer, node: CassandraNode, keyspace: str, data_directory: pathlib.Path,
                      arguments, api_images, figures: dict, expected: dict) -> AppServer:
    count = arguments.restart_predictions
    say(f"(2b) Cassandra stopped, {count} API predictions queued, app stopped (SIGTERM), Cassandra and app "
        "started again")
    node.stop()
    ids, failures, outcomes = [], collections.Counter(), collections.Counter()
    with httpx2.Client(base_url=app.base_url, timeout=API_CLIENT_TIMEOUT_SECONDS, trust_env=False,
                       headers=app.api_headers) as client:
        for index in range(count):
            image, _ = api_images[index % len(api_images)]
            try:
                response = client.post("/api/predict", content=image, headers={"Content-Type": "image/png"})
            except httpx2.HTTPError as error:
                failures[f"transport {type(error).__name__}"] += 1
                expected["unknown_api"] += 1
                continue
            if response.status_code != 200:
                failures[f"HTTP {response.status_code}"] += 1
                continue
            body = response.json()
            ids.append(body["id"])
            outcomes[body["stored"]] += 1
    health = app.health() or {}
    pending_before_stop = health.get("storage", {}).get("pending")
    code, stop_seconds, had_to_kill = app.stop()
    queued_on_disk = outbox_rows(data_directory)
    say(f"  {len(ids)} answered {dict(outcomes)} ({dict(failures) or 'no failures'}); /api/health pending "
        f"{pending_before_stop}; app "
        f"exited with {code} in {stop_seconds:.1f} s{' (SIGKILL needed)' if had_to_kill else ''}; "
        f"{queued_on_disk} entries in the outbox file")

    node.start()
    restarted = AppServer(node=node, keyspace=keyspace, data_directory=data_directory, log_path=app.log_path,
                          streamlit_options=app.streamlit_options, api_key=app.api_key,
                          dashboard_password=app.dashboard_password)
    restarted.start()
    serving = restarted.wait_until_serving()
    # Nobody visits yet: does the outbox drain on its own?
    idle_started = time.monotonic()
    idle_drained = False
    while time.monotonic() - idle_started < arguments.idle_drain_seconds:
        counts, _ = node.stored_ids(keyspace)
        if all(counts[identifier] >= 1 for identifier in ids):
            idle_drained = True
            break
        time.sleep(2)
    drained = restarted.wait_until_drained(arguments.drain_timeout)
    drained_after = time.monotonic() - idle_started
    counts, sources = node.stored_ids(keyspace)
    restart_account = account(set(ids), counts, sources, source=None, unknown_outcomes=0)
    expected["api"] |= set(ids)
    expected["fault"] |= set(ids)
    figures.update({
        "restart_predictions": len(ids),
        "restart_errors": sum(failures.values()),
        "restart_outcomes": dict(outcomes),
        "outbox_entries_after_app_stop": queued_on_disk,
        "app_stop_s": round(stop_seconds, 1),
        "outbox_drained_without_request": idle_drained,
        "outbox_drained_after_restart": drained is not None and restart_account.lost == 0,
        "restart_drain_s": None if drained is None else round(drained_after, 1),  # from the app serving again
        "restart_lost": restart_account.lost,
        "restart_duplicated": restart_account.extra_copies,
    })
    say(f"  app serving again in {serving:.1f} s; outbox drained with no request within "
        f"{arguments.idle_drain_seconds:g} s: {idle_drained}; drained after /api/health: "
        f"{'yes' if drained is not None else 'NO'}; of {len(ids)} queued: lost {restart_account.lost}, "
        f"duplicated {restart_account.extra_copies}")
    return restarted


# ---------------------------------------------------------------------------------------
# Scenario 3: bad input
# ---------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BODY_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass
class BadInput:
    category: str
    body: bytes = b""
    headers: dict = dataclasses.field(default_factory=dict)
    method: str = "POST"
    chunked: bool = False  # sent without Content-Length, in chunks
    raw_request: bytes | None = None  # sent as-is over a socket
    half_close: bool = False  # raw: shut our side after sending (a client that gives up mid-body)
    may_store: bool = False  # a decodable picture: a 200 with a stored row is a fair answer
    heavy: bool = False


@dataclasses.dataclass
class BadInputResult:
    case: BadInput
    status: int | None
    error: str | None
    seconds: float
    json_error: bool
    prediction_id: str | None = None


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def blank_png(width: int, height: int, *, bit_depth: int, colour_type: int, channels: int) -> bytes:
    """A complete PNG of zeros, compressed row by row so no full-size image is ever held in memory."""
    row = b"\x00" * (1 + (width * channels * bit_depth + 7) // 8)
    rows_per_block = max(1, (1 << 20) // len(row))
    compressor = zlib.compressobj(9)
    parts, remaining = [], height
    while remaining:
        rows = min(rows_per_block, remaining)
        parts.append(compressor.compress(row * rows))
        remaining -= rows
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def png_chunk_spans(data: bytes) -> list[tuple[bytes, int, int]]:
    """(kind, start of data, end of data) of each chunk of a PNG."""
    spans, position = [], len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        kind = data[position + 4:position + 8]
        spans.append((kind, position + 8, position + 8 + length))
        position += 12 + length
    return spans


def multipart(parts: list[tuple[str, str | None, bytes, str | None]], boundary: str, *, terminated: bool = True) -> bytes:
    """A multipart/form-data body from (field name, file name or None, content, content type or None)."""
    lines = []
    for name, filename, content, content_type in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        lines.append(head.encode() + b"\r\n" + content + b"\r\n")
    return b"".join(lines) + (f"--{boundary}--\r\n".encode() if terminated else b"")


class BadInputs:
    """Seeded generators of bad request bodies, one method per category."""

    def __init__(self, seed: int, pictures: list[tuple[Image.Image, int]]) -> None:
        self.random = random.Random(seed)
        self.pngs = [png_bytes(picture) for picture, _ in pictures]
        self.jpegs = [encoded(picture.convert("L"), "JPEG", quality=90) for picture, _ in pictures]
        self.pictures = [picture for picture, _ in pictures]

    def _content_type(self) -> dict:
        return {"Content-Type": self.random.choice(["image/png", "image/jpeg", "application/octet-stream"])}

    def _garbage(self, largest_power: int = 14) -> bytes:
        return self.random.randbytes(max(1, int(2 ** self.random.uniform(0, largest_power))))

    def _boundary(self) -> str:
        return "hardening" + self.random.randbytes(8).hex()

    # Not images at all.
    def empty(self) -> BadInput:
        return BadInput("empty", b"", self.random.choice([{}, self._content_type()]))

    def garbage(self) -> BadInput:
        return BadInput("garbage", self._garbage(), self._content_type())

    def unicode_text(self) -> BadInput:
        text = "".join(chr(self.random.choice([self.random.randrange(32, 127), self.random.randrange(0x80, 0x2FFF)]))
                       for _ in range(self.random.randrange(1, 400)))
        return BadInput("unicode-text", text.encode("utf-8", "surrogatepass"), {"Content-Type": "text/plain; charset=utf-8"})

    def magic_then_garbage(self) -> BadInput:
        magic = self.random.choice([PNG_SIGNATURE, b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                                    b"RIFF\x00\x00\x00\x00WEBP", b"\x00\x00\x01\x00", b"8BPS", b"%!PS-Adobe-3.0 EPSF-3.0\n"])
        return BadInput("magic-then-garbage", magic + self._garbage(12), self._content_type())

    def svg(self) -> BadInput:
        body = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
                b'<path d="M14 4 L14 24" stroke="black" stroke-width="3"/></svg>')
        return BadInput("svg", body, {"Content-Type": "image/svg+xml"})

    def eps(self) -> BadInput:
        body = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 14 4 moveto 14 24 lineto stroke\n%%EOF\n"
        return BadInput("eps", body, {"Content-Type": "application/postscript"})

    # Broken PNG and JPEG files.
    def truncated_png(self) -> BadInput:
        data = self.random.choice(self.pngs)
        idat = [span for span in png_chunk_spans(data) if span[0] == b"IDAT"][0]
        cut = self.random.randrange(1, idat[2] - 1)  # somewhere before the end of the image data
        return BadInput("truncated-png", data[:cut], {"Content-Type": "image/png"})

    def truncated_jpeg(self) -> BadInput:
        data = self.random.choice(self.jpegs)
        cut = self.random.randrange(2, int(len(data) * 0.9))
        return BadInput("truncated-jpeg", data[:cut], {"Content-Type": "image/jpeg"})

    def bad_crc_png(self) -> BadInput:
        data = bytearray(self.random.choice(self.pngs))
        data[len(PNG_SIGNATURE) + 8 + 13 + self.random.randrange(4)] ^= 0xFF  # a byte of IHDR's CRC
        return BadInput("bad-crc-png", bytes(data), {"Content-Type": "image/png"})

    def bit_flipped(self) -> BadInput:
        use_png = self.random.random() < 0.5
        data = bytearray(self.random.choice(self.pngs if use_png else self.jpegs))
        for _ in range(self.random.randrange(1, 16)):
            data[self.random.randrange(8 if use_png else 2, len(data))] ^= 1 << self.random.randrange(8)
        # Corrupted but possibly still decodable (JPEG is forgiving): storing a reading is fair.
        return BadInput("bit-flipped-" + ("png" if use_png else "jpeg"), bytes(data), self._content_type(), may_store=True)

    def huge_header_png(self) -> BadInput:
        """A small valid PNG whose header claims a huge size (CRC fixed so the header itself is well formed)."""
        data = self.random.choice(self.pngs)
        width = self.random.randrange(7000, 2**31 - 1)
        height = self.random.randrange(7000, 2**31 - 1)
        original = data[len(PNG_SIGNATURE) + 8:len(PNG_SIGNATURE) + 8 + 13]
        header = struct.pack(">II", width, height) + original[8:]
        rebuilt = PNG_SIGNATURE + png_chunk(b"IHDR", header) + data[len(PNG_SIGNATURE) + 25:]
        return BadInput("huge-header-png", rebuilt, {"Content-Type": "image/png"})

    def huge_header_jpeg(self) -> BadInput:
        """A small JPEG whose frame header (SOF0) claims up to 65535 x 65535 pixels."""
        data = bytearray(self.random.choice(self.jpegs))
        frame = data.find(b"\xff\xc0")
        height = self.random.randrange(7000, 65536)
        width = self.random.randrange(7000, 65536)
        data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
        return BadInput("huge-header-jpeg", bytes(data), {"Content-Type": "image/jpeg"})

    # Well-formed pictures with nothing to read (the app answers 422 and stores nothing).
    def blank(self) -> BadInput:
        width, height = self.random.randrange(1, 600), self.random.randrange(1, 600)
        shade = self.random.randrange(256)
        mode, image_format = self.random.choice([("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"),
                                                  ("1", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("L", "JPEG"),
                                                  ("RGB", "JPEG"), ("CMYK", "JPEG"), ("RGB", "BMP"), ("P", "GIF"),
                                                  ("RGB", "TIFF"), ("RGBA", "WEBP")])
        colour = {"1": shade & 1, "L": shade, "P": shade, "I;16": shade * 257, "LA": (shade, 255),
                  "RGB": (shade, shade, 255 - shade), "RGBA": (shade, shade, shade, 0 if shade % 2 else 255),
                  "CMYK": (shade, 0, 0, 0)}[mode]
        image = Image.new(mode, (width, height), colour)
        return BadInput(f"blank-{image_format.lower()}", encoded(image, image_format), self._content_type())

    def faint_noise(self) -> BadInput:
        """Paper with noise of at most 3% (the README: faint noise reads as nothing drawn)."""
        side = self.random.randrange(28, 400)
        generator = np.random.default_rng(self.random.randrange(2**32))
        pixels = np.clip(235 + generator.integers(-7, 8, size=(side, side)), 0, 255).astype(np.uint8)
        return BadInput("faint-noise", png_bytes(Image.fromarray(pixels, "L")), {"Content-Type": "image/png"})

    def single_dot(self) -> BadInput:
        image = Image.new("L", (280, 280), 255)
        x, y, radius = self.random.randrange(20, 260), self.random.randrange(20, 260), self.random.randrange(1, 5)
        image.paste(0, (x - radius, y - radius, x + radius, y + radius))
        return BadInput("single-dot", png_bytes(image), {"Content-Type": "image/png"})

    def other_format_digit(self) -> BadInput:
        """A real digit as BMP, GIF, TIFF or WebP: the API says PNG or JPEG; whatever it does is recorded."""
        image_format = self.random.choice(["BMP", "GIF", "TIFF", "WEBP"])
        picture = self.random.choice(self.pictures)
        return BadInput(f"digit-as-{image_format.lower()}", encoded(picture, image_format), self._content_type(),
                        may_store=True)

    # Wrong content types and broken forms.
    def wrong_content_type(self) -> BadInput:
        content_type, body = self.random.choice([
            ("application/json", json.dumps({"image": self.random.randbytes(30).hex()}).encode()),
            ("application/x-www-form-urlencoded", b"image=" + self.random.randbytes(40).hex().encode()),
            ("text/html", b"<html><body>7</body></html>"),
            ("image/png", b"data:image/png;base64," + self.random.randbytes(60).hex().encode()),
            ("application/gzip", zlib.compress(self.random.choice(self.pngs))),
        ])
        return BadInput("wrong-content-type", body, {"Content-Type": content_type})

    def multipart_without_boundary(self) -> BadInput:
        return BadInput("multipart-no-boundary", self._garbage(10), {"Content-Type": "multipart/form-data"})

    def multipart_without_file(self) -> BadInput:
        boundary = self._boundary()
        body = multipart([("image", None, b"not a file", None), ("note", None, b"7", None)], boundary)
        return BadInput("multipart-no-file", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def multipart_bad_file(self) -> BadInput:
        boundary = self._boundary()
        content = self.random.choice([self._garbage(12), self.truncated_png().body, b""])
        body = multipart([("image", "digit.png", content, "image/png")], boundary)
        return BadInput("multipart-bad-file", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def multipart_too_many(self) -> BadInput:
        boundary = self._boundary()
        if self.random.random() < 0.5:
            parts = [(f"image{index}", f"{index}.png", self._garbage(8), "image/png") for index in range(2, 5)]
        else:
            parts = [(f"field{index}", None, b"x", None) for index in range(12, 40)]
        return BadInput("multipart-too-many-parts", multipart(parts, boundary),
                        {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def multipart_unterminated(self) -> BadInput:
        boundary = self._boundary()
        body = multipart([("image", "digit.png", self._garbage(10), "image/png")], boundary, terminated=False)
        body = body[:self.random.randrange(1, len(body))]
        return BadInput("multipart-unterminated", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    # Too big.
    def oversized(self) -> BadInput:
        size = MAX_BODY_BYTES + self.random.randrange(1, 1024 * 1024)
        kind = self.random.choice(["declared", "chunked", "multipart"])
        if kind == "multipart":
            boundary = self._boundary()
            body = multipart([("image", "big.png", PNG_SIGNATURE + self.random.randbytes(size), "image/png")], boundary)
            return BadInput("oversized-multipart", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return BadInput(f"oversized-{kind}", PNG_SIGNATURE + self.random.randbytes(size), {"Content-Type": "image/png"},
                        chunked=kind == "chunked")

    # Wrong method and malformed HTTP, sent as raw bytes.
    def wrong_method(self) -> BadInput:
        return BadInput("wrong-method", b"", method=self.random.choice(["GET", "PUT", "PATCH", "DELETE"]))

    def raw_malformed(self) -> BadInput:
        head = "POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        kind = self.random.choice(["content-length-text", "content-length-negative", "content-length-huge",
                                   "short-body", "bad-chunk-size", "header-flood"])
        if kind == "content-length-text":
            raw, half_close = (head + "Content-Length: seven\r\n\r\n").encode() + b"1234567", False
        elif kind == "content-length-negative":
            raw, half_close = (head + "Content-Length: -5\r\n\r\n").encode(), False
        elif kind == "content-length-huge":
            raw, half_close = (head + "Content-Length: 99999999999999999999\r\n\r\n").encode() + b"abc", True
        elif kind == "short-body":
            raw, half_close = (head + "Content-Length: 5000\r\n\r\n").encode() + self.random.choice(self.pngs)[:100], True
        elif kind == "bad-chunk-size":
            raw, half_close = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"zz\r\nabc\r\n0\r\n\r\n", False
        else:
            flood = "".join(f"X-Filler-{index}: {'a' * 200}\r\n" for index in range(400))
            raw, half_close = (head + flood + "Content-Length: 3\r\n\r\n").encode() + b"abc", False
        return BadInput(f"raw-{kind}", raw_request=raw, half_close=half_close)

    LIGHT = ("empty", "garbage", "unicode_text", "magic_then_garbage", "svg", "eps", "truncated_png", "truncated_jpeg",
             "bad_crc_png", "bit_flipped", "huge_header_png", "huge_header_jpeg", "blank", "faint_noise", "single_dot",
             "other_format_digit", "wrong_content_type", "multipart_without_boundary", "multipart_without_file",
             "multipart_bad_file", "multipart_too_many", "multipart_unterminated", "oversized", "wrong_method",
             "raw_malformed")

    def light(self, count: int) -> list[BadInput]:
        cases = [getattr(self, name)() for name in self.LIGHT]  # every category at least once
        while len(cases) < count:
            cases.append(getattr(self, self.random.choice(self.LIGHT))())
        self.random.shuffle(cases)
        return cases[:count]


def heavy_inputs(repeats: int) -> list[BadInput]:
    """Decompression bombs (refused by size) and pictures just under the app's 40 Mpixel limit (decoded)."""
    bombs = [
        ("bomb-png-30000x30000-1bit", blank_png(30000, 30000, bit_depth=1, colour_type=0, channels=1)),
        ("bomb-png-30000x30000-grey", blank_png(30000, 30000, bit_depth=8, colour_type=0, channels=1)),
        ("near-limit-png-6300x6300-rgba", blank_png(6300, 6300, bit_depth=8, colour_type=6, channels=4)),
        ("near-limit-png-6300x6300-rgba16", blank_png(6300, 6300, bit_depth=16, colour_type=6, channels=4)),
        ("near-limit-png-1x39000000-strip", blank_png(1, 39_000_000, bit_depth=8, colour_type=0, channels=1)),
    ]
    return [BadInput(name, body, {"Content-Type": "image/png"}, heavy=True) for name, body in bombs for _ in range(repeats)]


async def send_raw(port: int, case: BadInput) -> tuple[int | None, str | None]:
    """Send bytes as-is; the status of the answer, or None when the server closed without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(case.raw_request)
        await writer.drain()
        if case.half_close:
            writer.write_eof()
        try:
            head = await asyncio.wait_for(reader.readline(), RAW_RESPONSE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            return None, "no answer (connection left open)"
        match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        return (int(match.group(1)), None) if match else (None, "closed without an answer")
    finally:
        writer.close()


async def send_bad_input(client: httpx2.AsyncClient, port: int, case: BadInput) -> BadInputResult:
    started = time.monotonic()
    if case.raw_request is not None:
        try:
            status, note = await send_raw(port, case)
        except OSError as error:
            status, note = None, f"connection error {type(error).__name__}"
        # A client that gives up mid-body gets no answer, which is fine; anything else must be answered.
        error = None if status is not None or (case.half_close and note == "closed without an answer") else note
        return BadInputResult(case, status, error, time.monotonic() - started, json_error=False)
    content = case.body
    if case.chunked:
        body = case.body

        async def chunks():
            for offset in range(0, len(body), 64 * 1024):
                yield body[offset:offset + 64 * 1024]

        content = chunks()
    try:
        response = await client.request(case.method, "/api/predict", content=content if case.method != "GET" else None,
                                        headers=case.headers)
    except httpx2.HTTPError as error:
        return BadInputResult(case, None, f"transport {type(error).__name__}", time.monotonic() - started, False)
    try:
        body = response.json()
    except ValueError:
        body = None
    json_error = isinstance(body, dict) and "error" in body
    prediction_id = body.get("id") if isinstance(body, dict) and response.status_code == 200 else None
    return BadInputResult(case, response.status_code, None, time.monotonic() - started, json_error, prediction_id)


async def send_all_bad_inputs(base_url: str, port: int, light: list[BadInput], heavy: list[BadInput],
                              concurrency: int, headers: dict[str, str]) -> list[BadInputResult]:
    limits = httpx2.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base_url, timeout=FUZZ_CLIENT_TIMEOUT_SECONDS, limits=limits,
                                  trust_env=False, headers=headers) as client:
        gate = asyncio.Semaphore(concurrency)

        async def limited(case: BadInput) -> BadInputResult:
            async with gate:
                return await send_bad_input(client, port, case)

        results = list(await asyncio.gather(*(limited(case) for case in light)))
        for case in heavy:  # one at a time: each may take seconds and a gigabyte or more
            results.append(await send_bad_input(client, port, case))
        return results


def run_bad_input(*, app: AppServer, node: CassandraNode, keyspace: str, arguments, pictures, api_images,
                  figures: dict, expected: dict) -> None:
    generator = BadInputs(arguments.seed, pictures)
    heavy = heavy_inputs(arguments.bomb_repeats)
    light = generator.light(max(0, arguments.fuzz_cases - len(heavy)))
    say(f"(3) bad input: {len(light) + len(heavy)} bodies ({len(light)} light, {arguments.fuzz_concurrency} at a "
        f"time; {len(heavy)} bombs and near-limit pictures one at a time) to POST /api/predict, no other load")
    log_offset = log_size(app.log_path)
    rows_before = sum(node.stored_ids(keyspace)[0].values())
    peak_before = app.memory_mb("VmHWM")
    sampler = RssSampler(app)
    sampler.start()
    started = time.monotonic()
    results = asyncio.run(send_all_bad_inputs(app.base_url, app.port, light, heavy, arguments.fuzz_concurrency,
                                              app.api_headers))
    elapsed = time.monotonic() - started
    rss_peak = sampler.finish()

    healthy = app.running() and app.health() is not None
    try:
        serving = app.http.get(app.base_url + "/_stcore/health").status_code == 200
    except httpx2.HTTPError:
        serving = False
    if healthy:
        app.wait_until_drained(arguments.drain_timeout)  # accepted pictures reach Cassandra before the count
    rows_after = sum(node.stored_ids(keyspace)[0].values())
    # The server still reads a good digit afterwards.
    image, _ = api_images[0]
    try:
        response = app.http.post(app.base_url + "/api/predict", content=image, headers={"Content-Type": "image/png"})
        still_reads = response.status_code == 200
    except httpx2.HTTPError:
        still_reads = False
    if still_reads:
        expected["api"].add(response.json()["id"])

    crashes = [result for result in results if result.error is not None or (result.status or 0) >= 500]
    accepted = [result for result in results if result.status == 200]
    expected["api"] |= {result.prediction_id for result in accepted if result.prediction_id is not None}
    non_json = [result for result in results
                if result.status not in (None, 200) and not result.json_error and result.case.raw_request is None]
    wrongly_accepted = [result for result in accepted if not result.case.may_store]
    figures.update({
        "fuzz_cases": len(results),
        "fuzz_crashes": len(crashes) + (0 if healthy and serving and still_reads else 1),
        "fuzz_status_counts": {str(key): value for key, value in sorted(
            collections.Counter(result.status if result.status is not None else "none" for result in results).items(),
            key=lambda item: str(item[0]))},
        "fuzz_accepted": len(accepted),
        "fuzz_wrongly_accepted": len(wrongly_accepted),
        "fuzz_rows_stored": rows_after - rows_before,
        "fuzz_rows_unexplained": rows_after - rows_before - len(accepted),
        "fuzz_non_json_errors": len(non_json),
        "fuzz_seconds": round(elapsed, 1),
        "fuzz_slowest_s": round(max(result.seconds for result in results), 2) if results else None,
        "fuzz_rss_peak_mb": None if rss_peak is None else round(rss_peak, 1),
        "app_vmhwm_mb": round(app.memory_mb("VmHWM") or 0, 1),
        "healthy_after_fuzz": healthy and serving and still_reads,
    })
    by_category: dict[str, list[BadInputResult]] = collections.defaultdict(list)
    for result in results:
        by_category[result.case.category].append(result)
    say(f"  {'category':<34}{'cases':>6}  {'answers':<32}{'slowest':>9}")
    for category in sorted(by_category):
        group = by_category[category]
        answers = collections.Counter(result.status if result.status is not None else result.error for result in group)
        summary = ", ".join(f"{answer} x{count}" for answer, count in sorted(answers.items(), key=str))
        say(f"  {category:<34}{len(group):>6}  {summary:<32}{max(result.seconds for result in group):>8.2f}s")
    say(f"  {figures['fuzz_cases']} cases in {elapsed:.1f} s: {len(crashes)} crashes (5xx or connection errors); server "
        f"healthy afterwards: {figures['healthy_after_fuzz']}; {len(accepted)} accepted (decodable pictures), "
        f"{len(wrongly_accepted)} of them should have been refused; rows {rows_before} -> {rows_after} "
        f"({figures['fuzz_rows_unexplained']} unexplained); {len(non_json)} refusals not in JSON "
        f"{dict(collections.Counter(f'{result.case.category} {result.status}' for result in non_json))}")
    say(f"  app RSS peak while fuzzing {figures['fuzz_rss_peak_mb']} MB (sampled every {RSS_SAMPLE_SECONDS:g} s); "
        f"VmHWM {figures['app_vmhwm_mb']} MB (was {None if peak_before is None else round(peak_before, 1)} MB)")
    for result in crashes[:10]:
        say(f"    crash: {result.case.category}: {result.status} {result.error}")
    for result in wrongly_accepted[:10]:
        say(f"    accepted but should not be: {result.case.category} ({len(result.case.body)} bytes)")
    tracebacks = tracebacks_in_log(app.log_path, log_offset)
    figures["server_tracebacks_fuzz"] = sum(tracebacks.values())
    figures["server_traceback_kinds_fuzz"] = dict(tracebacks)
    for exception, count in tracebacks.most_common(5):
        say(f"  the app logged {count} traceback(s) while fuzzing, ending in: {exception}")


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------

def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent browser sessions (default 20)")
    parser.add_argument("--api-rate", type=float, default=50.0, help="API requests per second, open loop (default 50)")
    parser.add_argument("--api-deadline", type=float, default=2.0,
                        help="an API answer later than this many seconds after its scheduled send is an error (default 2)")
    parser.add_argument("--answer-timeout", type=float, default=10.0,
                        help="a browser answer later than this many seconds after the click is an error (default 10)")
    parser.add_argument("--fuzz-cases", type=int, default=1000, help="bad bodies to send (default 1000)")
    parser.add_argument("--fuzz-concurrency", type=int, default=4)
    parser.add_argument("--bomb-repeats", type=int, default=2, help="times each bomb/near-limit picture is sent")
    parser.add_argument("--restart-predictions", type=int, default=50,
                        help="API predictions queued before the app restart (default 50)")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--idle-drain-seconds", type=float, default=10.0,
                        help="after the app restart, how long to watch for the outbox draining before any request")
    parser.add_argument("--skip-faults", action="store_true", help="no Cassandra kill, no restart scenario")
    parser.add_argument("--skip-fuzz", action="store_true")
    parser.add_argument("--node", type=int, default=7, help="private Cassandra node number, 2-9 (default 7)")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--streamlit-option", action="append", default=[], metavar="NAME=VALUE",
                        help="extra `streamlit run` option for the app, e.g. runner.postScriptGC=false (repeatable)")
    parser.add_argument("--secured", action="store_true",
                        help="run the app with MNIST_API_KEY and MNIST_DASHBOARD_PASSWORD set (random): every "
                             "request sends the key, every browser session signs in first")
    parser.add_argument("--keep", action="store_true", help="keep the keyspace and the work directory (logs, outbox)")
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    node = CassandraNode(arguments.node)
    keyspace = "hardening_" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
    work_directory = pathlib.Path(tempfile.mkdtemp(prefix="bench-hardening-"))
    data_directory = work_directory / "app-data"
    log_path = work_directory / "streamlit.log"
    figures: dict = {}
    expected = {"api": set(), "canvas": set(), "queued": set(), "fault": set(), "unknown_api": 0, "unknown_canvas": 0}
    node_was_running = False
    app: AppServer | None = None
    run_started = time.monotonic()
    failure: BaseException | None = None

    say(f"hardening run: node {node.number} ({node.address}), keyspace {keyspace}, work directory {work_directory}")
    figures.update(git_state())
    figures["load_average_at_start"] = [round(value, 2) for value in os.getloadavg()]
    say(f"code: commit {figures['git_head']}, {len(figures['git_changed_files'])} changed file(s) in the working tree "
        f"{figures['git_changed_files']}")
    mnist = load_mnist("hub")
    pictures = digit_pictures(mnist, first=0, count=120, seed=arguments.seed)
    api_images = [(png_bytes(picture), label) for picture, label in pictures]
    drawings = browser_drawings(mnist, first=2000, count=max(40, arguments.sessions * 4))
    say(f"inputs: {len(api_images)} digit PNGs for the API (mean {statistics.mean(len(i) for i, _ in api_images) / 1024:.1f}"
        f" kB), {len(drawings)} digits as mouse strokes")
    try:
        node_was_running = node.answers()
        if node_was_running:
            say(f"node {node.number} already answers; using it (and leaving it running)")
        else:
            say(f"node {node.number} started in {node.start():.0f} s")
        app = AppServer(node=node, keyspace=keyspace, data_directory=data_directory, log_path=log_path,
                        streamlit_options=arguments.streamlit_option,
                        api_key=secrets.token_urlsafe(24) if arguments.secured else None,
                        dashboard_password=secrets.token_urlsafe(12) if arguments.secured else None)
        app.start()
        serving = app.wait_until_serving()
        connected = app.wait_until_drained(APP_START_TIMEOUT_SECONDS)
        if connected is None:
            raise RuntimeError(f"The app never reported storage connected; see {log_path}.")
        say(f"app (pid {app.pid}) serving on {app.base_url} in {serving:.1f} s, storage connected")

        if arguments.sessions > 0 or arguments.api_rate > 0:
            run_load(app=app, node=node, keyspace=keyspace, arguments=arguments, api_images=api_images,
                     drawings=drawings, figures=figures, expected=expected)
        if not arguments.skip_faults:
            app = run_restart_fault(app=app, node=node, keyspace=keyspace, data_directory=data_directory,
                                    arguments=arguments, api_images=api_images, figures=figures, expected=expected)
        if not arguments.skip_fuzz:
            run_bad_input(app=app, node=node, keyspace=keyspace, arguments=arguments, pictures=pictures,
                          api_images=api_images, figures=figures, expected=expected)

        # The whole run: every id answered anywhere is stored exactly once.
        counts, sources = node.stored_ids(keyspace)
        api_total = account(expected["api"], counts, sources, source="api", unknown_outcomes=expected["unknown_api"])
        canvas_total = account(expected["canvas"], counts, sources, source="canvas",
                               unknown_outcomes=expected["unknown_canvas"])
        figures["lost"] = api_total.lost + canvas_total.lost
        figures["duplicated"] = api_total.duplicated + canvas_total.duplicated
        figures["stored_rows"] = sum(counts.values())
        figures["expected_rows"] = len(expected["api"]) + len(expected["canvas"])
        if not arguments.skip_faults:
            outbox_account = account(expected["fault"], counts, sources, source=None, unknown_outcomes=0)
            figures["fault_predictions"] = len(expected["fault"])
            figures["fault_lost"] = outbox_account.lost
            figures["fault_duplicated"] = outbox_account.extra_copies
        say(f"all scenarios: {figures['stored_rows']} rows stored, {figures['expected_rows']} answered with an id or "
            f"accepted; lost {figures['lost']}, duplicated {figures['duplicated']}")
    except BaseException as error:  # noqa: BLE001 - clean up first, then report
        failure = error
    finally:
        if app is not None and app.running():
            app.stop()
        try:
            if not arguments.keep:
                if not node.answers():  # a failure may have left it down
                    node.start()
                node.drop_keyspace(keyspace)
                say(f"keyspace {keyspace} dropped")
        except Exception as error:  # noqa: BLE001 - report, keep cleaning up
            say(f"could not drop keyspace {keyspace}: {error}")
        if not node_was_running:
            try:
                node.stop()
                say(f"node {node.number} stopped")
            except Exception as error:  # noqa: BLE001 - report it; nothing else is left to clean up
                say(f"could not stop node {node.number}: {error}")
        if arguments.keep or failure is not None:
            say(f"work directory kept: {work_directory}")
        else:
            shutil.rmtree(work_directory, ignore_errors=True)
    if failure is not None:
        if isinstance(failure, KeyboardInterrupt):
            return 130
        say(f"the run failed: {failure!r}")
        raise failure
    figures["run_s"] = round(time.monotonic() - run_started)
    figures["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    figures["settings"] = {"duration": arguments.duration, "sessions": arguments.sessions, "api_rate": arguments.api_rate,
                           "api_deadline_s": arguments.api_deadline, "answer_timeout_s": arguments.answer_timeout,
                           "streamlit_options": arguments.streamlit_option, "secured": arguments.secured}
    leading = ["load_errors", "lost", "duplicated", "fuzz_cases", "fuzz_crashes", "rss_growth_pct"]
    ordered = {key: figures.get(key) for key in leading}
    ordered.update({key: value for key, value in figures.items() if key not in ordered})
    print(json.dumps(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
