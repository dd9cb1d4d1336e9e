"""One `streamlit run Home.py` process, for the tests and benchmarks that need the real server.

Started on a given (or a free) loopback port with the MNIST_* settings it is handed, waited
for, asked for its health and memory, stopped politely or killed outright, and started again
on the same port and outbox directory (what a supervisor does after a crash). Its log collects
every run: each start appends a header line, so a restart's start-up is in the same file.

The browser tests' ``running_app``, the replicas behind nginx in tests/test_cluster.py, the
hardening run and the feedback-loop benchmark all start the app here. Nothing here uses
pytest: a process that exits or does not answer in time raises :class:`AppProcessFailed`,
with the end of its log in the message, and the test fixtures turn that into a clean failure.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import httpx2

from harness import REPOSITORY_ROOT

SHIPPED_MODEL_PATH = REPOSITORY_ROOT / "models" / "mnist_cnn.tflite"
START_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 20
POLL_SECONDS = 0.5
# Settings the app gets only when the caller passes them, never from the caller's own shell.
NOT_INHERITED = ("MNIST_API_KEY", "MNIST_DASHBOARD_PASSWORD")


class AppProcessFailed(RuntimeError):
    """The app exited, did not answer in time, or cannot start; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout_seconds: float) -> bool:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_seconds``; whether it had to be killed."""
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_seconds)
        return True


class AppProcess:
    """The dashboard and its API on 127.0.0.1:``port`` (a free one when not given) with these MNIST_* settings.

    ``environment`` is laid over the caller's environment (less MNIST_API_KEY and
    MNIST_DASHBOARD_PASSWORD) with MNIST_DISPLAY_TIMEZONE=UTC; ``model_path`` sets
    MNIST_MODEL_PATH (None: whatever the environment says). ``api_key`` and
    ``dashboard_password`` secure the app; the key is then sent with every request made
    through :attr:`http`. ``streamlit_options`` are extra ``NAME=VALUE`` options of ``streamlit run``.
    """

    def __init__(self, *, environment: Mapping[str, str], log_path: pathlib.Path, port: int | None = None,
                 model_path: pathlib.Path | None = None, streamlit_options: Sequence[str] = (),
                 api_key: str | None = None, dashboard_password: str | None = None) -> None:
        if model_path is not None and not pathlib.Path(model_path).is_file():
            raise AppProcessFailed(f"The app needs the trained model at {model_path}.")
        self.port = port if port is not None else free_port()
        self.log_path = pathlib.Path(log_path)
        self.streamlit_options = list(streamlit_options)
        self.environment = {
            **{name: value for name, value in os.environ.items() if name not in NOT_INHERITED},
            "MNIST_DISPLAY_TIMEZONE": "UTC",
        }
        if model_path is not None:
            self.environment["MNIST_MODEL_PATH"] = str(model_path)
        self.environment.update(environment)
        if api_key is not None:
            self.environment["MNIST_API_KEY"] = api_key
        if dashboard_password is not None:
            self.environment["MNIST_DASHBOARD_PASSWORD"] = dashboard_password
        self.api_key = self.environment.get("MNIST_API_KEY")
        self.dashboard_password = self.environment.get("MNIST_DASHBOARD_PASSWORD")
        self.api_headers = {"X-API-Key": self.api_key} if self.api_key is not None else {}
        self.process: subprocess.Popen | None = None
        self._http: httpx2.Client | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http(self) -> httpx2.Client:
        """A client for this app (10 s timeout, no proxies from the environment, the API key if any)."""
        if self._http is None or self._http.is_closed:
            self._http = httpx2.Client(timeout=10, trust_env=False, headers=self.api_headers)
        return self._http

    def start(self) -> None:
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

    def wait_until(self, ready: Callable[[str], bool], *, timeout_seconds: float = START_TIMEOUT_SECONDS) -> float:
        """Until ``ready(base_url)``; the seconds waited. Raises AppProcessFailed if the process exits or time runs out."""
        started = time.monotonic()
        while True:
            self._require_alive()
            try:
                if ready(self.base_url):
                    return time.monotonic() - started
            except (OSError, ValueError, httpx2.HTTPError):
                pass
            if time.monotonic() - started > timeout_seconds:
                raise AppProcessFailed(f"The app did not answer within {timeout_seconds:.0f} s; "
                                       f"the end of {self.log_path}:\n{self.log_tail()}")
            time.sleep(POLL_SECONDS)

    def wait_until_serving(self, timeout: float = START_TIMEOUT_SECONDS) -> float:
        """Until Streamlit's own health check answers (this does not touch the model or the store); seconds waited."""
        return self.wait_until(lambda base_url: self.http.get(base_url + "/_stcore/health").status_code == 200,
                               timeout_seconds=timeout)

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

    def get(self, path: str) -> tuple[int, dict | str]:
        """GET a path of the app: (status, the JSON body, or the text when it is not JSON)."""
        response = self.http.get(self.base_url + path)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def health(self) -> dict | None:
        """The /api/health body, or None when it does not answer 200 with JSON."""
        try:
            status, body = self.get("/api/health")
        except httpx2.HTTPError:
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def memory_mb(self, field: str = "VmRSS") -> float | None:
        """A /proc/<pid>/status memory figure (VmRSS now, VmHWM the peak) in MiB."""
        if self.process is None:
            return None
        try:
            for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            return None
        return None

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, what the outbox holds is all that survives."""
        if self.running():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def stop(self) -> tuple[int | None, float, bool]:
        """SIGTERM, then SIGKILL after a grace period; (exit code, seconds, whether it had to be killed)."""
        if self._http is not None:
            self._http.close()
        if self.process is None:
            return None, 0.0, False
        started = time.monotonic()
        killed = stop_process(self.process, STOP_TIMEOUT_SECONDS) if self.process.poll() is None else False
        return self.process.returncode, time.monotonic() - started, killed

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""

    def _require_alive(self) -> None:
        if self.process is None:
            raise AppProcessFailed("The app was never started.")
        if not self.running():
            raise AppProcessFailed(f"streamlit run exited with {self.process.returncode}; "
                                   f"the end of {self.log_path}:\n{self.log_tail()}")
