"""The compose files as the deployment tests read them: PyYAML, compose's merge of `-f a -f b`,
its `extends` (with the `!reset` and `!override` tags) and its variable syntax, written out here
so most checks need no container engine.

`tests/test_containers.py` checks that this reading agrees with what podman-compose itself
makes of the single-node and cluster projects, so the static tests in `tests/deployment/` rest
on the real tool. `extends` is resolved as Docker Compose does it, file by file before the files
are merged: a service without `extends.file` can extend only a service of its own file (Docker
Compose refuses the rest; podman-compose would look in the merged project), so a service in an
override file extends one in compose.yaml with `file: compose.yaml`.
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


class _Reset:
    """`!reset`: the key is dropped from what the service extends or overrides."""

    def __repr__(self) -> str:
        return "!reset"


RESET = _Reset()


class Override:
    """`!override VALUE`: VALUE replaces what the service extends or overrides instead of merging with it."""

    def __init__(self, value) -> None:
        self.value = value

    def __eq__(self, other) -> bool:
        return isinstance(other, Override) and other.value == self.value

    def __repr__(self) -> str:
        return f"!override {self.value!r}"


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with compose's two merge tags."""


def _override(loader: ComposeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)
ComposeLoader.add_constructor("!override", _override)


def load_yaml(path: pathlib.Path) -> dict:
    """One compose file as written (anchors expanded, `extends` and merge tags left as they are)."""
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=ComposeLoader)  # noqa: S506 - a safe loader
    assert isinstance(document, dict), f"{path.name} is not a YAML mapping."
    return document


def merge_compose(base: dict, override: dict) -> dict:
    """Compose's rule for `-f a -f b` as far as these files use it: mappings merge key by key
    (environment, depends_on, services, volumes), anything else is replaced by the later file;
    `!reset` drops the key and `!override` replaces it whole. The result holds no tags."""
    merged = dict(base)
    for key, value in override.items():
        if value is RESET:
            merged.pop(key, None)
        elif isinstance(value, Override):
            merged[key] = _without_tags(value.value)
        elif isinstance(value, dict):
            earlier = merged.get(key)
            merged[key] = merge_compose(earlier if isinstance(earlier, dict) else {}, value)
        else:
            merged[key] = _without_tags(value)
    return merged


def _without_tags(node):
    """A value with nothing to reset or override under it: `!reset` keys go, `!override` values stay."""
    if isinstance(node, dict):
        return merge_compose({}, node)
    if isinstance(node, list):
        return [_without_tags(item) for item in node]
    return node.value if isinstance(node, Override) else node


# --- extends ------------------------------------------------------------------------------------


def _volume_target(volume) -> str:
    if isinstance(volume, dict):
        return volume["target"]
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _secret_source(secret) -> str:
    return secret["source"] if isinstance(secret, dict) else str(secret)


# Sequences whose entries are unique by a key: the extending service's entry replaces the base's
# entry with the same key, in its place; new ones are appended.
UNIQUE_SEQUENCE_KEYS = {"volumes": _volume_target, "secrets": _secret_source, "configs": _secret_source}
# Sequences the extending service replaces whole (compose's "shell commands").
REPLACED_SEQUENCES = {"command", "entrypoint"}
MAPPINGS_WRITTEN_AS_MAPPINGS = {"environment", "labels"}


def _merge_unique(base: list, local: list, key) -> list:
    merged = list(base)
    positions = {key(entry): index for index, entry in enumerate(merged)}
    for entry in local:
        if key(entry) in positions:
            merged[positions[key(entry)]] = entry
        else:
            positions[key(entry)] = len(merged)
            merged.append(entry)
    return merged


def _depends_on_mapping(value) -> dict:
    if isinstance(value, list):
        return {name: {"condition": "service_started"} for name in value}
    return dict(value)


def extend_service(base: dict, local: dict) -> dict:
    """The service `local` extending `base`, by compose's rules for `extends`: mappings merge key by
    key with the local value winning (environment, depends_on, healthcheck, build...); `command` and
    `entrypoint` (and `healthcheck.test`) are replaced; volumes, secrets and configs merge by mount
    target or source; other sequences (ports...) are appended to; `!reset` drops the base's value
    and `!override` replaces it."""
    merged = dict(base)
    for key, value in local.items():
        if key == "extends":
            continue
        if value is RESET:
            merged.pop(key, None)
            continue
        if isinstance(value, Override):
            merged[key] = _without_tags(value.value)
            continue
        earlier = merged.get(key)
        if earlier is None:
            merged[key] = _without_tags(value)
        elif key in MAPPINGS_WRITTEN_AS_MAPPINGS:
            assert isinstance(earlier, dict) and isinstance(value, dict), \
                f"Write {key} as a mapping (NAME: value), as the compose files do."
            merged[key] = merge_compose(earlier, value)
        elif key == "depends_on":
            merged[key] = merge_compose(_depends_on_mapping(earlier), _depends_on_mapping(value))
        elif key == "healthcheck":
            merged[key] = merge_compose(earlier, value)  # test is a sequence: replaced, as compose does
        elif key in REPLACED_SEQUENCES or not isinstance(value, (dict, list)):
            merged[key] = _without_tags(value)
        elif key in UNIQUE_SEQUENCE_KEYS:
            merged[key] = _merge_unique(earlier, _without_tags(value), UNIQUE_SEQUENCE_KEYS[key])
        elif isinstance(value, list):
            merged[key] = list(earlier) + _without_tags(value)
        else:
            merged[key] = merge_compose(earlier if isinstance(earlier, dict) else {}, value)
    return merged


def resolve_extends(document: dict, path: pathlib.Path, _chain: tuple = ()) -> dict:
    """The file's services with every `extends` replaced by the service it names, merged under the
    local definition. The extended file must sit next to this one, so that relative paths in it
    (`./deploy`, `build: .`) mean the same from both."""
    services = dict(document.get("services") or {})
    resolved: dict[str, dict] = {}

    def resolve(name: str, chain: tuple) -> dict:
        if name in resolved:
            return resolved[name]
        assert name in services, f"{path.name}: no service {name}"
        service = services[name]
        extends = service.get("extends") if isinstance(service, dict) else None
        if extends is None:
            resolved[name] = service
            return service
        extends = {"service": extends} if isinstance(extends, str) else extends
        link = (path.name, name)
        assert link not in chain, f"extends loops: {' -> '.join(map(str, chain + (link,)))}"
        if "file" in extends:
            base_path = (path.parent / extends["file"]).resolve()
            assert base_path.parent == path.parent.resolve(), \
                f"{path.name}: {name} extends {extends['file']}, which is not next to it"
            base_services = resolve_extends(load_yaml(base_path), base_path, chain + (link,))["services"]
            assert extends["service"] in base_services, f"{path.name}: {name} extends a service {base_path.name} lacks"
            base = base_services[extends["service"]]
        else:
            # Docker Compose resolves extends in each file before merging the files, so only a
            # service of the same file can be named without `file`.
            assert extends["service"] in services, (
                f"{path.name}: {name} extends {extends['service']}, which is not in this file; name the file "
                "(extends: {file: ..., service: ...}) or Docker Compose refuses it")
            base = resolve(extends["service"], chain + (link,))
        resolved[name] = extend_service(base, service)
        return resolved[name]

    for name in services:
        resolve(name, _chain)
    return {**document, "services": resolved} if "services" in document else document


def load_compose_file(path: pathlib.Path) -> dict:
    """One compose file with its `extends` resolved (tags not yet applied to other files)."""
    return resolve_extends(load_yaml(path), path)


def single_node_project() -> dict:
    return merge_compose({}, load_compose_file(COMPOSE_FILE))


def cluster_project() -> dict:
    return merge_compose(single_node_project(), load_compose_file(CLUSTER_COMPOSE_FILE))


def replicas_project() -> dict:
    """The three files together: the ring, two app replicas and the balancer."""
    return merge_compose(cluster_project(), load_compose_file(REPLICAS_COMPOSE_FILE))


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
