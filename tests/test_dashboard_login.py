"""The optional dashboard password: the guard's rate limits, and the pages hidden until sign-in."""

from __future__ import annotations

import pytest

from mnist_core.dashboard_login import (
    FAILURES_BEFORE_PAUSE,
    FIRST_PAUSE_SECONDS,
    PROCESS_FAILURES_PER_WINDOW,
    PROCESS_WINDOW_SECONDS,
    SignInGuard,
)

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock) -> SignInGuard:
    return SignInGuard(clock=clock)


def test_only_the_password_signs_in(guard):
    assert guard.sign_in(PASSWORD, PASSWORD, client="10.0.0.1").signed_in
    for index, typed in enumerate(("", "correct horse", PASSWORD + " ", PASSWORD.upper(), "é" * 40)):
        answer = guard.sign_in(typed, PASSWORD, client=f"10.0.0.{10 + index}")
        assert not answer.signed_in and not answer.throttled, typed


def test_repeated_failures_pause_the_client_even_for_the_right_password(guard, clock):
    for _ in range(FAILURES_BEFORE_PAUSE - 1):
        assert not guard.sign_in("guess", PASSWORD, client="10.0.0.3").throttled
    paused = guard.sign_in("guess", PASSWORD, client="10.0.0.3")
    assert paused.wait_seconds == FIRST_PAUSE_SECONDS
    clock.now += FIRST_PAUSE_SECONDS - 1
    # Not even compared while paused; another address is not affected.
    assert guard.sign_in(PASSWORD, PASSWORD, client="10.0.0.3").throttled
    assert guard.sign_in(PASSWORD, PASSWORD, client="10.0.0.4").signed_in
    clock.now += 1
    # After the pause one more failure pauses twice as long; the right password resets the count.
    assert guard.sign_in("guess", PASSWORD, client="10.0.0.3").wait_seconds == 2 * FIRST_PAUSE_SECONDS
    clock.now += 2 * FIRST_PAUSE_SECONDS
    assert guard.sign_in(PASSWORD, PASSWORD, client="10.0.0.3").signed_in
    assert not guard.sign_in("guess", PASSWORD, client="10.0.0.3").throttled


def test_many_addresses_together_are_held_to_the_process_limit(guard, clock):
    for index in range(PROCESS_FAILURES_PER_WINDOW):
        guard.sign_in("guess", PASSWORD, client=f"10.1.{index // 250}.{index % 250}")
        clock.now += 1
    held = guard.sign_in(PASSWORD, PASSWORD, client="10.9.9.9")
    assert held.throttled and not held.signed_in
    assert held.wait_seconds == pytest.approx(PROCESS_WINDOW_SECONDS - PROCESS_FAILURES_PER_WINDOW)
    clock.now += held.wait_seconds
    assert guard.sign_in(PASSWORD, PASSWORD, client="10.9.9.9").signed_in


def test_a_short_password_is_refused_by_the_settings():
    from mnist_core.settings import settings_from_mapping

    with pytest.raises(ValueError, match="at least 8 characters"):
        settings_from_mapping({"MNIST_DASHBOARD_PASSWORD": "short"})
    assert settings_from_mapping({"MNIST_DASHBOARD_PASSWORD": PASSWORD}).dashboard_password == PASSWORD
    assert PASSWORD not in repr(settings_from_mapping({"MNIST_DASHBOARD_PASSWORD": PASSWORD}))


@pytest.mark.cassandra
def test_the_pages_stay_hidden_until_the_session_signs_in(app_settings, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from mnist_core import settings
    from tests.conftest import REPOSITORY_ROOT

    monkeypatch.setenv("MNIST_DASHBOARD_PASSWORD", PASSWORD)
    settings.get_settings.cache_clear()
    app = AppTest.from_file(str(REPOSITORY_ROOT / "Home.py"), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    assert [title.value for title in app.title] == ["Sign in"]
    assert not app.sidebar.markdown and not app.metric  # no storage status, no page

    app.text_input[0].input("not it")
    app.button[0].click().run()
    assert [error.value for error in app.error] == ["That is not the password."]
    assert [title.value for title in app.title] == ["Sign in"]

    app.text_input[0].input(PASSWORD)
    app.button[0].click().run()
    assert not app.exception, app.exception
    assert "Sign in" not in [title.value for title in app.title]
    assert any(button.label == "Sign out" for button in app.sidebar.button)
    # History is reachable now.
    app.switch_page("app_pages/history.py").run()
    assert not app.exception, app.exception
    assert app.title and app.title[0].value != "Sign in"

    next(button for button in app.sidebar.button if button.label == "Sign out").click().run()
    assert [title.value for title in app.title] == ["Sign in"]
