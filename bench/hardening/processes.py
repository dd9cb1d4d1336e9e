"""The processes the run starts and watches: a private Cassandra node, the app, and Chromium's priority.

Everything here is started on loopback and stopped again by its own pid: the node by the marker
property scripts/cassandra puts on its command line, the app by the Popen that started it. The
browsers are the load generator, not the system under test, so the helpers at the end keep them
from taking the CPU from the app they measure.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import datetime
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import httpx2
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy
from cassandra.query import SimpleStatement

from tests.app_process import free_port

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[2]
CASSANDRA_SCRIPT = REPOSITORY_ROOT / "scripts" / "cassandra"
CLUSTER_NAME = "mnist-hardening"
NODE_HEAP = "768M"
SHARED_NODE = 1  # the default node other engineers' tests use: never started, stopped or killed here
CHROMIUM_LIBRARY_DIRECTORY = pathlib.Path("/usr/lib/chromium")  # where /usr/bin/chromium's processes run from
AUTOGROUP_SCAN_SECONDS = 0.5

APP_START_TIMEOUT_SECONDS = 180
APP_STOP_TIMEOUT_SECONDS = 20
NODE_START_TIMEOUT_SECONDS = 400
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
        """Rows per prediction id in predictions_by_slot (a full scan of our small private keyspace) and their sources."""
        cluster = self.connect()
        try:
            session = cluster.connect()
            rows = session.execute(SimpleStatement(f"SELECT id, source FROM {keyspace}.predictions_by_slot", fetch_size=5000))
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
