"""The dashboard with MNIST_DASHBOARD_PASSWORD and MNIST_API_KEY set, in a real browser.

A visitor who has not signed in sees only the sign-in form, whatever page URL they open; the
right password shows the pages; the API still answers only with its key.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import running_app
from tests.e2e.test_dashboard_browser import DESKTOP, PAGE_TIMEOUT_MS, go_to, open_app, wait_until_idle

pytestmark = [pytest.mark.e2e, pytest.mark.cassandra]

PASSWORD = "a classroom password"
API_KEY = "k" * 24


@pytest.fixture(scope="module")
def guarded_app(module_keyspace, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("guarded") / "streamlit.log"
    with running_app(module_keyspace, tmp_path_factory.mktemp("guarded-data"), log_path,
                     extra_environment={"MNIST_DASHBOARD_PASSWORD": PASSWORD,
                                        "MNIST_API_KEY": API_KEY}) as base_url:
        yield base_url


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_nothing_shows_before_the_password_and_everything_after(browser, guarded_app):
    context, page = open_app(browser, guarded_app, DESKTOP, path="history")
    try:
        page.get_by_role("heading", name="Sign in", exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
        assert page.get_by_test_id("stSidebarNav").count() == 0
        assert page.get_by_text("Cassandra connected").count() == 0
        assert page.get_by_role("heading", name="History", exact=True).count() == 0

        password = page.get_by_label("Password", exact=True)
        password.fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("That is not the password.").wait_for(timeout=PAGE_TIMEOUT_MS)
        assert page.get_by_test_id("stSidebarNav").count() == 0

        password.fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_test_id("stSidebarNav").wait_for(timeout=PAGE_TIMEOUT_MS)
        wait_until_idle(page)
        go_to(page, "History")
        go_to(page, "Model")
    finally:
        context.close()


def test_the_api_needs_its_key_and_health_tells_only_states(guarded_app):
    assert _status(f"{guarded_app}/api/stats") == 401
    assert _status(f"{guarded_app}/api/stats", {"X-API-Key": API_KEY}) == 200
    assert _status(f"{guarded_app}/api/health") == 200
