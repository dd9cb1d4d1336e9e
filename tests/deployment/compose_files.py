"""The compose files as the deployment tests read them: PyYAML, compose's merge of `-f a -f b`
and its variable syntax, written out here so most checks need no container engine.

`tests/test_containers.py` checks that this reading agrees with what podman-compose itself
makes of both projects, so the static tests in `tests/deployment/` rest on the real tool.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping

import yaml

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPOSITORY_ROOT / "compose.yaml"
CLUSTER_COMPOSE_FILE = REPOSITORY_ROOT / "compose.cluster.yaml"
REPLICAS_COMPOSE_FILE = REPOSITORY_ROOT / "compose.replicas.yaml"
# What an operator may set for compose (passwords are secret files, not variables).
OPERATOR_ENVIRONMENT = {"CASSANDRA_KEYSPACE": "mnist"}


def load_yaml(path: pathlib.Path) -> dict:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path.name} is not a YAML mapping."
    return document


def merge_compose(base: dict, override: dict) -> dict:
    """Compose's rule for `-f a -f b` as far as these files use it: mappings merge key by key
    (environment, depends_on, services, volumes), anything else is replaced by the later file."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_compose(merged[key], value)
        else:
            merged[key] = value
    return merged


def single_node_project() -> dict:
    return load_yaml(COMPOSE_FILE)


def cluster_project() -> dict:
    return merge_compose(load_yaml(COMPOSE_FILE), load_yaml(CLUSTER_COMPOSE_FILE))


def replicas_project() -> dict:
    """The three files together: the ring, two app replicas and the balancer."""
    return merge_compose(cluster_project(), load_yaml(REPLICAS_COMPOSE_FILE))


VARIABLE_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """Compose's variable syntax: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        operator, argument = match.group("operator"), match.group("argument") or ""
        value = environment.get(name)
        missing = value is None or (operator is not None and operator.startswith(":") and value == "")
        if operator in (":-", "-"):
            return argument if missing else value
        if operator in (":?", "?"):
            if missing:
                raise MissingVariable(f"{name}: {argument}")
            return value
        return value or ""

    return VARIABLE_REFERENCE.sub(replace, text)


def interpolate_all(node, environment: Mapping[str, str]):
    if isinstance(node, dict):
        return {key: interpolate_all(value, environment) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_all(value, environment) for value in node]
    if isinstance(node, str):
        return interpolate(node, environment)
    return node


def referenced_variables(path: pathlib.Path) -> set[str]:
    return {
        match.group("name") or match.group("bare")
        for match in VARIABLE_REFERENCE.finditer(path.read_text(encoding="utf-8"))
        if not match.group("escaped")
    }


def environment_of(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "Write environment as a mapping (NAME: value), as the compose files do."
    return {name: "" if value is None else str(value) for name, value in environment.items()}
