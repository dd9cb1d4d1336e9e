"""What the hardening run watches besides the app: its memory, Chromium's priority, the app's tracebacks.

The processes themselves come from the harness: the private Cassandra node
(harness/cassandra_node.py) and the app (harness/app_process.py), both started on loopback and
stopped again by their own pid. The browsers are the load generator, not the system under
test, so the helpers here keep them from taking the CPU from the app they measure.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import pathlib
import subprocess
import threading

from harness import REPOSITORY_ROOT
from harness.app_process import AppProcess

CHROMIUM_LIBRARY_DIRECTORY = pathlib.Path("/usr/lib/chromium")  # where /usr/bin/chromium's processes run from
AUTOGROUP_SCAN_SECONDS = 0.5

RSS_SAMPLE_SECONDS = 2.0
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


def git_state() -> dict:
    """The commit and the uncommitted files the app runs with (other people may be editing the tree)."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=REPOSITORY_ROOT, capture_output=True, text=True).stdout
    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if not line[3:].startswith("bench/hardening/")]
    return {"git_head": git("rev-parse", "--short", "HEAD").strip(), "git_changed_files": changed}


class RssSampler(threading.Thread):
    """Reads the app's VmRSS every few seconds while a scenario runs; keeps the peak."""

    def __init__(self, app: AppProcess) -> None:
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
