"""The compose reading the deployment tests rest on (tests/deployment/compose_files.py): its
`extends`, `!reset` and `!override` follow compose's rules, and for the three-file replicas
project it agrees with podman-compose's own resolution when podman-compose is installed
(`scripts/containers setup` puts it in .containers/venv)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import textwrap

import pytest

from tests.deployment.compose_files import (CLUSTER_COMPOSE_FILE, COMPOSE_FILE, OPERATOR_ENVIRONMENT, REPLICAS_COMPOSE_FILE,
                                            REPOSITORY_ROOT, RESET, Override, extend_service, interpolate_all, load_yaml,
                                            merge_compose, replicas_project, resolve_extends)


def test_extending_merges_mappings_replaces_commands_and_keys_unique_sequences() -> None:
    base = {
        "image": "one:1",
        "command": ["serve", "--slow"],
        "environment": {"A": "1", "B": "2"},
        "healthcheck": {"test": ["CMD", "probe", "a"], "interval": "10s", "retries": 3},
        "volumes": ["data:/data", "./conf:/conf:ro"],
        "secrets": ["first"],
        "ports": ["8000:8000"],
        "depends_on": ["db"],
    }
    local = {
        "command": ["serve"],
        "environment": {"B": "two", "C": "3"},
        "healthcheck": {"test": ["CMD", "probe", "b"]},
        "volumes": ["other-data:/data", "logs:/logs"],
        "secrets": ["first", "second"],
        "ports": ["9000:9000"],
        "depends_on": {"cache": {"condition": "service_healthy"}},
        "extends": {"service": "base"},
    }
    assert extend_service(base, local) == {
        "image": "one:1",
        "command": ["serve"],
        "environment": {"A": "1", "B": "two", "C": "3"},
        "healthcheck": {"test": ["CMD", "probe", "b"], "interval": "10s", "retries": 3},
        # Same mount target: the local volume takes the base's place.
        "volumes": ["other-data:/data", "./conf:/conf:ro", "logs:/logs"],
        "secrets": ["first", "second"],
        "ports": ["8000:8000", "9000:9000"],
        "depends_on": {"db": {"condition": "service_started"}, "cache": {"condition": "service_healthy"}},
    }


def test_reset_drops_and_override_replaces_what_is_extended_or_merged() -> None:
    base = {"ports": ["8501:8501"], "environment": {"A": "1", "B": "2"}, "image": "one:1"}
    assert extend_service(base, {"ports": RESET, "environment": Override({"C": "3"})}) == {
        "environment": {"C": "3"}, "image": "one:1"}
    assert merge_compose(base, {"ports": RESET, "environment": {"B": RESET}}) == {"environment": {"A": "1"}, "image": "one:1"}
    # A tag with nothing under it to change leaves no trace.
    assert merge_compose({}, {"services": {"x": {"ports": RESET, "labels": Override({"a": "b"})}}}) == {
        "services": {"x": {"labels": {"a": "b"}}}}


def test_the_tags_are_read_from_yaml(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  x:\n    ports: !reset []\n    command: !override [a, b]\n")
    service = load_yaml(path)["services"]["x"]
    assert service["ports"] is RESET and service["command"] == Override(["a", "b"])


def _write(directory: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_extends_reads_the_named_file_or_the_same_file(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, "base.yaml", """
        services:
          root:
            image: one:1
            environment: {A: "1"}
          child:
            extends: root
            environment: {B: "2"}
    """)
    override = _write(tmp_path, "override.yaml", """
        services:
          grandchild:
            extends: {file: base.yaml, service: child}
            environment: {C: "3"}
    """)
    services = resolve_extends(load_yaml(override), override)["services"]
    assert services["grandchild"] == {"image": "one:1", "environment": {"A": "1", "B": "2", "C": "3"}}


def test_extends_without_a_file_cannot_reach_another_compose_file(tmp_path: pathlib.Path) -> None:
    # Docker Compose resolves extends in each file before it merges them: `app` is not visible here.
    override = _write(tmp_path, "override.yaml", """
        services:
          app-2:
            extends: {service: app}
    """)
    with pytest.raises(AssertionError, match="not in this file"):
        resolve_extends(load_yaml(override), override)


def test_extends_refuses_loops_and_files_elsewhere(tmp_path: pathlib.Path) -> None:
    looping = _write(tmp_path, "loop.yaml", """
        services:
          a: {extends: b}
          b: {extends: a}
    """)
    with pytest.raises(AssertionError, match="loops"):
        resolve_extends(load_yaml(looping), looping)
    (tmp_path / "elsewhere").mkdir()
    _write(tmp_path / "elsewhere", "base.yaml", "services:\n  root: {image: one:1}\n")
    distant = _write(tmp_path, "distant.yaml", """
        services:
          x: {extends: {file: elsewhere/base.yaml, service: root}}
    """)
    with pytest.raises(AssertionError, match="not next to it"):
        resolve_extends(load_yaml(distant), distant)


# podman-compose's own reading of a project, with `extends` resolved as `up` uses it. `config`
# cannot serve here: podman-compose 1.6.0 prints the merged files before it resolves `extends`.
PODMAN_COMPOSE_RESOLUTION = """
import json, sys
import podman_compose
compose = podman_compose.podman_compose
compose.global_args = compose._parse_args(["--dry-run", "--project-name", "mnist", *sys.argv[1:], "config"])
compose._parse_compose_file()
print(json.dumps({name: {key: value for key, value in service.items() if not key.startswith("_")}
                  for name, service in compose.services.items()}))
"""


def _podman_compose_python() -> pathlib.Path:
    configured = os.environ.get("MNIST_PODMAN_COMPOSE_PYTHON")
    return pathlib.Path(configured) if configured else REPOSITORY_ROOT / ".containers" / "venv" / "bin" / "python"


def _comparable(service: dict) -> dict:
    """What a container is made from: podman-compose keeps the `extends` key and an absolute build
    context; volume order does not matter."""
    service = {key: value for key, value in service.items() if key != "extends"}
    build = service.get("build")
    if build is not None:
        context = build if isinstance(build, str) else build["context"]
        service["build"] = {**({} if isinstance(build, str) else build),
                            "context": str((REPOSITORY_ROOT / context).resolve())}
    if "volumes" in service:
        service["volumes"] = sorted(service["volumes"])
    return service


def test_the_replicas_project_resolves_as_podman_compose_resolves_it() -> None:
    python = _podman_compose_python()
    if not python.is_file():
        pytest.skip(f"podman-compose is not installed ({python}; `scripts/containers setup` installs it)")
    files = [argument for path in (COMPOSE_FILE, CLUSTER_COMPOSE_FILE, REPLICAS_COMPOSE_FILE)
             for argument in ("-f", str(path))]
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **OPERATOR_ENVIRONMENT}
    finished = subprocess.run([str(python), "-c", PODMAN_COMPOSE_RESOLUTION, *files], capture_output=True, text=True,
                              env=environment, cwd=REPOSITORY_ROOT, timeout=60)
    assert finished.returncode == 0, finished.stderr[-3000:]
    real = json.loads(finished.stdout)
    ours = interpolate_all(replicas_project(), OPERATOR_ENVIRONMENT)["services"]
    assert set(real) == set(ours)
    for name, service in ours.items():
        assert _comparable(real[name]) == _comparable(service), name
    assert "ports" not in real["app-2"]
