"""The sign-in page, shown instead of the dashboard while ``MNIST_DASHBOARD_PASSWORD`` is set and
the session has not signed in (the check and its rate limits are mnist_core.dashboard_login).

A session stays signed in until the browser tab is closed or reloaded (Streamlit keeps state
per connection), or the password changes; the sidebar has a sign-out button.
"""

from __future__ import annotations

import math

import streamlit as st

from mnist_core import settings
from mnist_core.dashboard_login import SignInGuard, password_fingerprint

SESSION_KEY = "dashboard_signed_in"


@st.cache_resource(show_spinner=False)
def sign_in_guard() -> SignInGuard:
    """One guard per server process: its failure counts hold across sessions."""
    return SignInGuard()


def _password() -> str | None:
    return settings.get_settings().dashboard_password


def signed_in() -> bool:
    """Whether this session may see the pages (always, when no password is set)."""
    password = _password()
    return password is None or st.session_state.get(SESSION_KEY) == password_fingerprint(password)


def render() -> None:
    """The sign-in form."""
    password = _password()
    st.title("Sign in")
    st.caption("This dashboard asks for a password. Ask the person who runs it.")
    with st.form("sign-in"):
        typed = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted or password is None:
        return
    answer = sign_in_guard().sign_in(typed, password, client=st.context.ip_address)
    if answer.signed_in:
        st.session_state[SESSION_KEY] = password_fingerprint(password)
        st.rerun()
    elif answer.throttled:
        st.error(f"Too many wrong passwords: try again in {math.ceil(answer.wait_seconds)} s.")
    else:
        st.error("That is not the password.")


def render_sign_out() -> None:
    """A sign-out button in the sidebar, when a password is set."""
    if _password() is None:
        return
    with st.sidebar:
        if st.button("Sign out", icon=":material/logout:"):
            st.session_state.pop(SESSION_KEY, None)
            st.rerun()
