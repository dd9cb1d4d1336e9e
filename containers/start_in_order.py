"""Start a compose stack's containers in depends_on order, waiting for each condition.

`scripts/containers up` runs this after `podman-compose up --no-start --no-deps` has created
the containers. podman-compose hands the waits to `podman wait --condition=...`, which podman 4.3
(Debian bookworm's) cannot do for "healthy", so it skips them; and with no systemd on the
machine no timer runs a container's healthcheck. So this waits itself: `service_started` is
"running", `service_healthy` is the healthcheck run here until it passes (`podman healthcheck
run`), and `service_completed_successfully` is the container's exit code 0. It prints, for each
service, the seconds from the first start until it was ready, and the log of a service that
failed.

Usage: python start_in_order.py --project NAME --configuration MERGED_COMPOSE_YAML [--check]

Before anything, every secret's file must exist (as Docker Compose requires); --check stops there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from graphlib import TopologicalSorter

import yaml

HEALTHCHECK_PAUSE_SECONDS = 2.0
DEFAULT_WAIT_SECONDS = 300.0


class StartFailed(Exception):
    """A service did not reach the state a dependent service waits for."""


def podman(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *arguments], capture_output=True, text=True, check=check)


def container_names(project: str) -> dict[str, str]:
    """Service name -> container name, from the labels podman-compose puts on its containers."""
    listing = podman("ps", "--all", "--filter", f"label=io.podman.compose.project={project}",
                     "--format", "json")
    names = {}
    for container in json.loads(listing.stdout or "[]"):
        service = container.get("Labels", {}).get("com.docker.compose.service")
        if service:
            names[service] = container["Names"][0]
    return names


DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_seconds(text: str | None, default: float) -> float:
    """A compose duration such as '10s', '1m30s' or '500ms' in seconds."""
    if not text:
        return default
    parts = re.findall(r"([\d.]+)(ms|h|m|s)", text)
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def healthcheck_budget(service: dict) -> float:
    """How long a service may take to pass its healthcheck: its start period plus every retry."""
    check = service.get("healthcheck") or {}
    if not check:
        return DEFAULT_WAIT_SECONDS
    start_period = duration_seconds(check.get("start_period"), 0.0)
    interval = duration_seconds(check.get("interval"), 30.0)
    timeout = duration_seconds(check.get("timeout"), 30.0)
    retries = int(check.get("retries", 3))
    return start_period + retries * (interval + timeout)


def state(container: str) -> dict:
    return json.loads(podman("inspect", "--format", "{{json .State}}", container).stdout)


def log_tail(container: str, lines: int = 30) -> str:
    logs = podman("logs", "--tail", str(lines), container, check=False)
    return (logs.stdout + logs.stderr).strip()


def wait_until_healthy(container: str, budget: float) -> None:
    deadline = time.monotonic() + budget
    while True:
        if podman("healthcheck", "run", container, check=False).returncode == 0:
            return
        current = state(container)
        if not current.get("Running"):
            raise StartFailed(f"{container} stopped (exit code {current.get('ExitCode')}) before it "
                              f"was healthy:\n{log_tail(container)}")
        if time.monotonic() > deadline:
            raise StartFailed(f"{container} was not healthy within {budget:.0f} s:\n{log_tail(container)}")
        time.sleep(HEALTHCHECK_PAUSE_SECONDS)


def wait_until_completed(container: str, budget: float) -> None:
    finished = subprocess.run(["podman", "wait", container], capture_output=True, text=True,
                              timeout=budget)
    exit_code = int((finished.stdout or "-1").strip().splitlines()[-1])
    if exit_code != 0:
        raise StartFailed(f"{container} exited with code {exit_code}:\n{log_tail(container)}")


def start_in_order(project: str, configuration: dict) -> dict[str, float]:
    services = configuration["services"]
    names = container_names(project)
    missing = sorted(set(services) - set(names))
    if missing:
        raise StartFailed(f"no container for {', '.join(missing)}; did `podman-compose up --no-start` run?")
    dependencies = {name: set((service.get("depends_on") or {})) for name, service in services.items()}
    ready: dict[str, float] = {}
    waited: set[tuple[str, str]] = set()
    began = time.monotonic()
    for name in TopologicalSorter(dependencies).static_order():
        for dependency, rule in (services[name].get("depends_on") or {}).items():
            condition = (rule or {}).get("condition", "service_started")
            if (dependency, condition) in waited:
                continue
            container = names[dependency]
            if condition == "service_healthy":
                wait_until_healthy(container, healthcheck_budget(services[dependency]))
            elif condition == "service_completed_successfully":
                wait_until_completed(container, DEFAULT_WAIT_SECONDS)
            waited.add((dependency, condition))
            ready.setdefault(dependency, round(time.monotonic() - began, 1))
            print(f"start_in_order: {dependency} {condition.removeprefix('service_')} "
                  f"after {ready[dependency]} s", file=sys.stderr)
        started = podman("start", names[name], check=False)
        if started.returncode != 0:
            raise StartFailed(f"podman could not start {names[name]}: {started.stderr.strip()}")
    # The services nothing depends on (the app) are ready once their own healthcheck passes.
    for name, service in services.items():
        if name not in ready and (service.get("healthcheck") or image_has_healthcheck(names[name])):
            wait_until_healthy(names[name], healthcheck_budget(service))
            ready[name] = round(time.monotonic() - began, 1)
            print(f"start_in_order: {name} healthy after {ready[name]} s", file=sys.stderr)
    return ready


def image_has_healthcheck(container: str) -> bool:
    inspected = podman("inspect", "--format", "{{json .Config.Healthcheck}}", container, check=False)
    return inspected.returncode == 0 and inspected.stdout.strip() not in ("", "null", "{}")


def missing_secret_files(configuration: dict) -> list[str]:
    """What Docker Compose refuses to start without: a secret whose file is not there.

    podman-compose only fails to create the containers that mount it and carries on, so this is
    checked before anything is created or stopped.
    """
    problems = []
    for name, secret in sorted((configuration.get("secrets") or {}).items()):
        path = (secret or {}).get("file")
        if path and not os.path.isfile(path):
            users = sorted(service for service, definition in configuration["services"].items()
                           if name in _secret_names(definition))
            problems.append(f'secret "{name}" file "{path}" not found (used by {", ".join(users) or "no service"}); '
                            "scripts/make-secrets writes the missing ones")
    return problems


def _secret_names(service: dict) -> set[str]:
    return {entry if isinstance(entry, str) else entry.get("source") for entry in service.get("secrets") or []}


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--configuration", required=True, help="the merged compose file (`config`)")
    parser.add_argument("--check", action="store_true",
                        help="only check that every secret's file exists; start nothing")
    options = parser.parse_args(arguments)
    with open(options.configuration, encoding="utf-8") as handle:
        configuration = yaml.safe_load(handle)
    problems = missing_secret_files(configuration)
    if problems:
        for problem in problems:
            print(f"start_in_order: {problem}", file=sys.stderr)
        return 1
    if options.check:
        return 0
    try:
        ready = start_in_order(options.project, configuration)
    except (StartFailed, subprocess.TimeoutExpired) as error:
        print(f"start_in_order: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"ready_seconds": ready}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
