"""One `streamlit run Home.py` process for the tests that need the real server: started on a
given loopback port, waited for, stopped politely or killed outright, and started again on the
same port and outbox directory (what a supervisor does after a crash).

The browser tests' ``running_app`` and the replica test behind nginx both start the app here.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.conftest import REPOSITORY_ROOT, SHIPPED_MODEL_PATH

START_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 20


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout_seconds: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_seconds``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_seconds)


class AppProcess:
    """The dashboard and its API on 127.0.0.1:``port`` with the given MNIST_* settings; its log
    collects every run (each start appends), so a restart's start-up is in the same file."""

    def __init__(self, *, port: int, environment: dict[str, str], log_path: pathlib.Path) -> None:
        if not SHIPPED_MODEL_PATH.is_file():
            pytest.fail(f"The app tests need the trained model at {SHIPPED_MODEL_PATH}.", pytrace=False)
        self.port = port
        self.log_path = log_path
        self.environment = {
            **os.environ,
            "MNIST_MODEL_PATH": str(SHIPPED_MODEL_PATH),
            "MNIST_DISPLAY_TIMEZONE": "UTC",
            **environment,
        }
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "streamlit", "run", "Home.py",
            "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
        ]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=self.environment,
                                            stdout=log, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_until(self, ready: Callable[[str], bool], *, timeout_seconds: float = START_TIMEOUT_SECONDS) -> None:
        """Until ``ready(base_url)``; fails the test with the log's tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            if not self.running():
                pytest.fail(f"streamlit run exited with {self.process.returncode}:\n{self.log_tail()}", pytrace=False)
            try:
                if ready(self.base_url):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"The app did not answer within {timeout_seconds:.0f} s:\n{self.log_tail()}", pytrace=False)
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, what the outbox holds is all that survives."""
        if self.running():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        if self.running():
            stop_process(self.process, STOP_TIMEOUT_SECONDS)

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]
