"""Headless Debian Chromium (``/usr/bin/chromium``) through Playwright, as the browser tests and benchmarks run it.

Playwright comes from PyPI; its own browser download (``playwright install``) is never
needed: every launch points at Debian's binary with the same arguments, here in one place.
"""

from __future__ import annotations

import pathlib

CHROMIUM_PATH = pathlib.Path("/usr/bin/chromium")
CHROMIUM_ARGUMENTS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def launch_chromium(playwright):
    """``playwright.chromium.launch`` of Debian's Chromium, headless: the browser from the sync API,
    an awaitable of it from the async one (``await launch_chromium(playwright)``)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), headless=True, args=CHROMIUM_ARGUMENTS)
