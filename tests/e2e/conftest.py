"""Browser test fixtures: the real app (`streamlit run Home.py`) on a free loopback port, and Chromium.

The server (harness/app_process.py) gets this module's fresh keyspace and its own outbox
directory, and is stopped (by its own process id) when the module is done. Chromium is
Debian's ``/usr/bin/chromium`` driven by Playwright from PyPI (harness/chromium.py);
``playwright install`` is never needed.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from harness.app_process import SHIPPED_MODEL_PATH, AppProcess, AppProcessFailed
from harness.chromium import CHROMIUM_PATH, launch_chromium


def get_json(url: str, timeout: float = 10.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def app_is_serving(base_url: str) -> bool:
    """The app answers /api/health with the model loaded and Cassandra connected."""
    status, body = get_json(f"{base_url}/api/health", timeout=5)
    return status == 200 and body.get("storage", {}).get("state") == "connected"


@contextlib.contextmanager
def app_failures_fail_the_test() -> Iterator[None]:
    """An app that exits or does not answer fails the test with its log's tail, without a Python traceback."""
    try:
        yield
    except AppProcessFailed as error:
        pytest.fail(str(error), pytrace=False)


@contextlib.contextmanager
def running_app(keyspace: str, data_directory: pathlib.Path, log_path: pathlib.Path, *,
                ready: Callable[[str], bool] = app_is_serving,
                extra_environment: dict[str, str] | None = None) -> Iterator[str]:
    """`streamlit run Home.py` on a free port with this keyspace and outbox directory (and any
    other MNIST_* settings in ``extra_environment``), until ``ready(base_url)``.

    Yields the base URL; stops the server with SIGTERM (SIGKILL after a grace period).
    """
    with app_failures_fail_the_test():
        app = AppProcess(log_path=log_path, model_path=SHIPPED_MODEL_PATH, environment={
            "MNIST_CASSANDRA_CONTACT_POINTS": "127.0.0.1",
            "MNIST_CASSANDRA_KEYSPACE": keyspace,
            "MNIST_DATA_DIR": str(data_directory),
            **(extra_environment or {}),
        })
        app.start()
    try:
        with app_failures_fail_the_test():
            app.wait_until(ready)
        yield app.base_url
    finally:
        app.stop()


@pytest.fixture(scope="module")
def app_server(module_keyspace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard and its API served by `streamlit run Home.py`; yields the base URL once /api/health answers."""
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    with running_app(module_keyspace, tmp_path_factory.mktemp("app-data"), log_path) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright; the tests are skipped only if Chromium is not installed."""
    if not CHROMIUM_PATH.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()
