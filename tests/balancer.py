"""Debian's nginx running the shipped ``deploy/nginx.conf`` in front of local app processes.

The shipped file names compose's replicas (``server app:8501``, ``server app-2:8501``) and
listens on 8080; here exactly those lines are pointed at loopback ports and every other line is
used unchanged, so the test runs the configuration an operator deploys. nginx runs in the
foreground from a private prefix directory and is stopped by its own process id.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from harness.app_process import free_port, stop_process
from tests.conftest import REPOSITORY_ROOT

SHIPPED_CONFIG = REPOSITORY_ROOT / "deploy" / "nginx.conf"
NGINX = pathlib.Path("/usr/sbin/nginx")
ROUTE_COOKIE = "mnist_route"
START_TIMEOUT_SECONDS = 20
# The shipped file's only addresses: each replica line of the two upstreams, and the listener.
REPLICA_LINE = re.compile(r"^(\s*server )(app(?:-\d+)?):8501( .*)$", re.MULTILINE)
LISTEN_LINE = re.compile(r"^(\s*listen )8080;$", re.MULTILINE)
UPSTREAM_FIELD = re.compile(r" upstream=(\S+) route=(\S+) ")


def local_config(shipped: str, replicas: dict[str, str], listen: str) -> str:
    """The shipped configuration with compose's replica names mapped to ``replicas`` (name -> host:port)
    and the listener on ``listen``; fails if the file's addresses are not the ones expected."""
    names = sorted(set(match.group(2) for match in REPLICA_LINE.finditer(shipped)))
    if names != sorted(replicas):
        pytest.fail(f"deploy/nginx.conf names replicas {names}, the test has {sorted(replicas)}.", pytrace=False)
    config, listeners = LISTEN_LINE.subn(rf"\g<1>{listen};", shipped)
    if listeners != 1:
        pytest.fail(f"deploy/nginx.conf has {listeners} `listen 8080;` lines, expected one.", pytrace=False)
    return REPLICA_LINE.sub(lambda match: f"{match.group(1)}{replicas[match.group(2)]}{match.group(3)}", config)


class Balancer:
    """A running nginx: its URL, and which replica a route cookie leads to (from its access log)."""

    def __init__(self, port: int, access_log: pathlib.Path) -> None:
        self.port = port
        self.access_log = access_log

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def replica_of(self, route: str) -> str:
        """The replica (host:port) nginx sends this route to: one request, then its log line."""
        request = urllib.request.Request(f"{self.base_url}/_stcore/health", headers={"Cookie": f"{ROUTE_COOKIE}={route}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for line in reversed(self.access_log.read_text().splitlines()):
                match = UPSTREAM_FIELD.search(line)
                if match and match.group(2) == route:
                    return match.group(1)
            time.sleep(0.1)
        pytest.fail(f"nginx logged no request for route {route}.", pytrace=False)

    def routes_per_replica(self, replicas: list[str], count: int) -> dict[str, list[str]]:
        """``count`` route cookie values for each replica, found by asking nginx where candidates go."""
        routes: dict[str, list[str]] = {replica: [] for replica in replicas}
        for candidate in range(200):
            if all(len(found) >= count for found in routes.values()):
                return routes
            route = f"test-route-{candidate}"
            found = routes.get(self.replica_of(route))
            if found is not None and len(found) < count:
                found.append(route)
        pytest.fail(f"200 route cookies did not give {count} for each replica: {routes}", pytrace=False)

    def served_by(self, replica: str, *, path_prefix: str) -> int:
        """How many logged requests under ``path_prefix`` nginx sent to ``replica``."""
        return sum(1 for line in self.access_log.read_text().splitlines()
                   if f" {path_prefix}" in line and f" upstream={replica} " in line)


@contextlib.contextmanager
def running_balancer(replicas: dict[str, str], directory: pathlib.Path) -> Iterator[Balancer]:
    """nginx with the shipped configuration in front of ``replicas`` (compose name -> host:port)."""
    if not NGINX.exists():
        pytest.skip("Debian's nginx is not installed (scripts/setup --dev installs nginx-light).")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(local_config(SHIPPED_CONFIG.read_text(), replicas, f"127.0.0.1:{port}"))
    access_log = directory / "access.log"
    error_log = directory / "error.log"
    command = [str(NGINX), "-p", str(directory), "-c", str(config),
               "-g", f"daemon off; pid {directory / 'nginx.pid'};"]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    if checked.returncode != 0:
        pytest.fail(f"nginx refused deploy/nginx.conf:\n{checked.stderr}", pytrace=False)
    with open(access_log, "w") as stdout, open(error_log, "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    balancer = Balancer(port, access_log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{balancer.base_url}/balancer/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start:\n{error_log.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.2)
        yield balancer
    finally:
        stop_process(process, 10)
