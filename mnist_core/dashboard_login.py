"""Who may open the dashboard when ``MNIST_DASHBOARD_PASSWORD`` is set: one shared password.

The dashboard stores readings and shows every record with its 28x28 input and a CSV export, so
a deployment on a network it does not trust can ask for a password before any page runs. The
check compares SHA-256 digests with :func:`hmac.compare_digest` (constant time, whatever the
length typed), and wrong attempts are rate-limited twice over: per client address, a pause
after ``FAILURES_BEFORE_PAUSE`` consecutive failures that doubles with each further one; and
for the whole process, at most ``PROCESS_FAILURES_PER_WINDOW`` failures per window, so many
addresses together cannot guess fast either (a legitimate sign-in then waits for the window to
end, which the page says). Holds no Streamlit code: the sign-in page (``dashboard/login.py``)
renders what this decides.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import threading
import time
from collections.abc import Callable

FAILURES_BEFORE_PAUSE = 5
FIRST_PAUSE_SECONDS = 30.0
LONGEST_PAUSE_SECONDS = 900.0
PROCESS_FAILURES_PER_WINDOW = 100
PROCESS_WINDOW_SECONDS = 600.0
# Addresses remembered at most (the oldest are forgotten first): bounded memory under a flood.
REMEMBERED_CLIENTS = 10_000


def password_fingerprint(password: str) -> str:
    """What a signed-in session keeps: changing the password signs every session out."""
    return hashlib.sha256(b"mnist-dashboard:" + password.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class SignInAnswer:
    signed_in: bool
    # When not signed in because of too many attempts: seconds until the next one is looked at.
    wait_seconds: float = 0.0

    @property
    def throttled(self) -> bool:
        return self.wait_seconds > 0


@dataclasses.dataclass
class _ClientFailures:
    consecutive: int = 0
    paused_until: float = 0.0


class SignInGuard:
    """Checks passwords and counts failures; one per process, shared by every session (thread-safe)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: collections.OrderedDict[str, _ClientFailures] = collections.OrderedDict()
        self._process_failures: collections.deque[float] = collections.deque()

    def sign_in(self, typed: str, expected: str, *, client: str | None) -> SignInAnswer:
        """Whether `typed` is the password; throttled attempts are refused without being compared."""
        client = client or "unknown"
        now = self._clock()
        with self._lock:
            while self._process_failures and self._process_failures[0] <= now - PROCESS_WINDOW_SECONDS:
                self._process_failures.popleft()
            failures = self._clients.get(client)
            waits = [failures.paused_until - now if failures else 0.0]
            if len(self._process_failures) >= PROCESS_FAILURES_PER_WINDOW:
                waits.append(self._process_failures[0] + PROCESS_WINDOW_SECONDS - now)
            if max(waits) > 0:
                return SignInAnswer(signed_in=False, wait_seconds=max(waits))
            right = hmac.compare_digest(hashlib.sha256(typed.encode("utf-8")).digest(),
                                        hashlib.sha256(expected.encode("utf-8")).digest())
            if right:
                self._clients.pop(client, None)
                return SignInAnswer(signed_in=True)
            failures = self._clients.pop(client, None) or _ClientFailures()
            self._clients[client] = failures
            while len(self._clients) > REMEMBERED_CLIENTS:
                self._clients.popitem(last=False)
            failures.consecutive += 1
            self._process_failures.append(now)
            if failures.consecutive >= FAILURES_BEFORE_PAUSE:
                pause = min(FIRST_PAUSE_SECONDS * 2 ** (failures.consecutive - FAILURES_BEFORE_PAUSE),
                            LONGEST_PAUSE_SECONDS)
                failures.paused_until = now + pause
                return SignInAnswer(signed_in=False, wait_seconds=pause)
            return SignInAnswer(signed_in=False)
