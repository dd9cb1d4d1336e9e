"""compose.yaml and compose.cluster.yaml, read as compose would (tests/deployment/compose_files.py):
each Cassandra node limited, health-checked and on its own volume; the init and schema one-shot
jobs and the order services wait in; passwords only as secret files; TLS verified against
compose's own authority; the app's environment made of real, valid settings; every variable in
.env.example; the three-node ring.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from mnist_core.settings import Replication, settings_from_mapping
from tests.deployment.compose_files import (CLUSTER_COMPOSE_FILE, COMPOSE_FILE, OPERATOR_ENVIRONMENT, REPLICAS_COMPOSE_FILE,
                                            REPOSITORY_ROOT, cluster_project, environment_of, interpolate, interpolate_all,
                                            load_yaml, referenced_variables, single_node_project)
from tests.deployment.image_files import dockerfile_environment, left_out_of_build_context
from tests.deployment.settings_names import setting_variable_names

ENVIRONMENT_EXAMPLE = REPOSITORY_ROOT / ".env.example"


def cassandra_nodes(project: dict) -> dict[str, dict]:
    """Services that run a Cassandra node (the cassandra image, started with `cassandra -f`)."""
    return {
        name: service
        for name, service in project["services"].items()
        if str(service.get("image", "")).startswith("cassandra:") and service.get("command") == ["cassandra", "-f"]
    }


def named_volume_target(service: dict, target: str, project: dict) -> str:
    """The named volume mounted at target (short syntax SOURCE:TARGET); fails for bind mounts or none."""
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            assert not source.startswith((".", "/")), f"{target} must be a named volume, not the bind mount {source}."
            assert source in (project.get("volumes") or {}), f"Volume {source} is not declared under top-level volumes."
            return source
    raise AssertionError(f"Nothing is mounted at {target}.")


def deploy_mount_is_present(service: dict) -> bool:
    return "./deploy:/deploy:ro" in service.get("volumes", [])


# --- compose.yaml: the Cassandra node ---------------------------------------------------------


@pytest.mark.parametrize("project_loader", [single_node_project, cluster_project], ids=["single", "cluster"])
def test_every_cassandra_node_is_limited_checked_and_stored_on_a_named_volume(project_loader) -> None:
    project = project_loader()
    nodes = cassandra_nodes(project)
    assert nodes
    volumes = set()
    for name, node in nodes.items():
        assert node["image"] == "cassandra:5.0", name
        environment = environment_of(node)
        # cassandra-env.sh requires both or neither.
        assert environment.get("MAX_HEAP_SIZE") and environment.get("HEAP_NEWSIZE"), name
        heap = interpolate(environment["MAX_HEAP_SIZE"], {})
        assert re.fullmatch(r"\d+[MG]", heap), heap
        limit = interpolate(node.get("mem_limit", ""), {})
        assert re.fullmatch(r"\d+[mg]", limit), f"{name}: a memory limit"
        assert _megabytes(limit) >= _megabytes(heap) + 512, f"{name}: the limit leaves room beyond the heap"
        volumes.add(named_volume_target(node, "/var/lib/cassandra", project))
        assert node.get("restart") == "unless-stopped", name
        assert node["entrypoint"] == ["bash", "/deploy/cassandra-entrypoint.sh"], name
        assert deploy_mount_is_present(node), name
        check = node["healthcheck"]
        assert check["test"][:3] == ["CMD", "bash", "/deploy/cql-answers.sh"], name
        assert check.get("retries", 0) >= 3 and check.get("start_period"), name
    assert len(volumes) == len(nodes), "Every node needs its own data volume."


def _megabytes(size: str) -> int:
    return int(size[:-1]) * (1024 if size[-1].lower() == "g" else 1)


@pytest.mark.parametrize("project_loader", [single_node_project, cluster_project], ids=["single", "cluster"])
def test_the_app_has_a_memory_limit_above_its_decode_budget(project_loader) -> None:
    from mnist_core.decode_budget import DECODE_BUDGET_PIXELS

    limit = interpolate(project_loader()["services"]["app"].get("mem_limit", ""), {})
    assert re.fullmatch(r"\d+[mg]", limit), "the app needs a memory limit"
    # About 220 MB at rest, and the budget's pixels decoded as RGBA.
    assert _megabytes(limit) >= 256 + DECODE_BUDGET_PIXELS * 4 // 2**20


# --- compose.yaml: roles and credentials ------------------------------------------------------


def test_init_service_is_a_one_shot_after_cassandra_answers() -> None:
    project = single_node_project()
    init = project["services"]["cassandra-init"]
    assert init["image"] == project["services"]["cassandra"]["image"]
    assert init["restart"] == "no"
    assert init["depends_on"]["cassandra"]["condition"] == "service_healthy"
    assert init["entrypoint"] == ["bash", "/deploy/cassandra-init.sh"]
    assert deploy_mount_is_present(init)
    environment = environment_of(init)
    assert environment["CASSANDRA_HOST"] == "cassandra"
    assert environment["AUTH_DATACENTER"] == environment_of(project["services"]["cassandra"])["CASSANDRA_DC"]
    assert environment["AUTH_REPLICATION_FACTOR"] == "1"


def test_app_waits_for_a_healthy_cassandra_and_the_finished_init() -> None:
    app = single_node_project()["services"]["app"]
    assert app["depends_on"]["cassandra"]["condition"] == "service_healthy"
    assert app["depends_on"]["cassandra-init"]["condition"] == "service_completed_successfully"


def test_app_service_restart_port_and_outbox_volume() -> None:
    project = single_node_project()
    app = project["services"]["app"]
    assert app["build"] == "."
    assert app["restart"] == "unless-stopped"
    container_ports = [str(port).rsplit(":", 1)[-1] for port in app["ports"]]
    assert container_ports == ["8501"]
    assert named_volume_target(app, "/data", project)


SECRET_NAMES = {"cassandra_password", "cassandra_admin_password", "api_key", "dashboard_password"}


def test_no_container_gets_a_password_in_its_environment_only_secret_files() -> None:
    """Compose secrets (files mounted at /run/secrets), not environment values that `docker inspect` shows."""
    base = load_yaml(COMPOSE_FILE)
    declared = base["secrets"]
    assert set(declared) == SECRET_NAMES
    for name, secret in declared.items():
        # Made by scripts/make-secrets in ./secrets (kept out of git and the image), or elsewhere.
        assert re.fullmatch(r"\$\{[A-Z_]+_FILE:-\./secrets/" + name + r"\}", secret["file"]), secret
    for path in (COMPOSE_FILE, CLUSTER_COMPOSE_FILE):
        project = load_yaml(path)
        for service_name, service in project["services"].items():
            for name, value in environment_of(service).items():
                if re.search(r"PASSWORD|API_KEY|SECRET|TOKEN", name):
                    assert name.endswith("_FILE"), f"{path.name}: {service_name}.{name} holds a secret itself."
                    secret = value.removeprefix("/run/secrets/")
                    assert value == f"/run/secrets/{secret}" and secret in declared, (service_name, name, value)
                    merged = single_node_project()["services"][service_name]
                    assert secret in merged.get("secrets", []), f"{service_name} reads {secret} but does not mount it."
    assert "secrets/" in (REPOSITORY_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert left_out_of_build_context("secrets/cassandra_password")
    text = COMPOSE_FILE.read_text() + CLUSTER_COMPOSE_FILE.read_text()
    assert not re.search(r"(?i)password\W+cassandra\b", text)


# The secret files as compose would mount them, for reading the services' settings here.
SECRET_FILE_CONTENTS = {"cassandra_password": "app-secret-1", "cassandra_admin_password": "admin-secret-2",
                        "api_key": "", "dashboard_password": ""}


def with_mounted_secrets(environment: dict[str, str], directory: pathlib.Path) -> dict[str, str]:
    """The environment with /run/secrets/<name> (and the TLS authority in /tls-ca) pointing at
    files in `directory` instead, as compose would mount them."""
    directory.mkdir(exist_ok=True)
    for name, content in SECRET_FILE_CONTENTS.items():
        (directory / name).write_text(content)
    (directory / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return {name: value.replace("/run/secrets/", f"{directory}/").replace("/tls-ca/", f"{directory}/")
            for name, value in environment.items()}


@pytest.mark.parametrize("project_loader", [single_node_project, cluster_project], ids=["single", "cluster"])
def test_every_client_reaches_cassandra_over_tls_signed_by_compose_s_own_authority(project_loader) -> None:
    project = interpolate_all(project_loader(), OPERATOR_ENVIRONMENT)
    services = project["services"]
    nodes = cassandra_nodes(project)
    job = services["tls-certificates"]
    assert job["restart"] == "no" and job["entrypoint"] == ["bash", "/deploy/make-tls.sh"]
    # A certificate for every node's host name, and each node waits for it and mounts its keystore.
    assert set(environment_of(job)["TLS_HOSTS"].split(",")) == {node.get("hostname", name) for name, node in nodes.items()}
    for name, node in nodes.items():
        assert node["depends_on"]["tls-certificates"]["condition"] == "service_completed_successfully", name
        assert "tls-nodes:/tls-nodes:ro" in node["volumes"], name
    for name in ("cassandra-init", "schema", "app"):
        assert "tls-ca:/tls-ca:ro" in services[name]["volumes"], name
        assert not any(volume.startswith("tls-nodes") for volume in services[name]["volumes"]), "clients never see node keys"
    assert environment_of(services["cassandra-init"])["CQLSH_CA_FILE"] == "/tls-ca/ca.pem"
    for name in ("schema", "app"):
        assert environment_of(services[name])["MNIST_CASSANDRA_TLS_CA_FILE"] == "/tls-ca/ca.pem", name


def app_environment(project: dict) -> dict[str, str]:
    resolved = interpolate_all(project, OPERATOR_ENVIRONMENT)
    return environment_of(resolved["services"]["app"])


@pytest.mark.parametrize("project_loader", [single_node_project, cluster_project], ids=["single", "cluster"])
def test_app_environment_is_made_of_real_valid_settings(project_loader, tmp_path: pathlib.Path) -> None:
    project = project_loader()
    environment = app_environment(project)
    unknown = set(environment) - setting_variable_names()
    assert not unknown, f"Not settings that mnist_core/settings.py reads: {sorted(unknown)}"
    image_environment = {name: value for name, value in dockerfile_environment().items() if name.startswith("MNIST_")}
    settings = settings_from_mapping(with_mounted_secrets({**image_environment, **environment}, tmp_path / "run"))
    assert settings.authentication_enabled
    assert settings.cassandra_username not in {"cassandra", ""}
    assert settings.cassandra_password == SECRET_FILE_CONTENTS["cassandra_password"]
    # Empty optional files leave the API and the pages open, as documented.
    assert settings.api_key is None and settings.dashboard_password is None
    nodes = cassandra_nodes(interpolate_all(project, OPERATOR_ENVIRONMENT))
    datacenters = {environment_of(node)["CASSANDRA_DC"] for node in nodes.values()}
    assert datacenters == {settings.cassandra_datacenter}
    assert set(settings.cassandra_contact_points) == {node.get("hostname", name) for name, node in nodes.items()}
    assert settings.cassandra_replication.strategy == "NetworkTopologyStrategy"
    assert settings.cassandra_replication.datacenter_factors == ((settings.cassandra_datacenter, len(nodes)),)
    assert settings.cassandra_consistency == "LOCAL_QUORUM"
    # The init creates the role the app logs in with.
    init = environment_of(interpolate_all(project, OPERATOR_ENVIRONMENT)["services"]["cassandra-init"])
    assert init["APP_USERNAME"] == settings.cassandra_username
    assert init["APP_PASSWORD_FILE"] == environment["MNIST_CASSANDRA_PASSWORD_FILE"]
    assert init["APP_KEYSPACE"] == settings.cassandra_keyspace
    assert init["ADMIN_USERNAME"] != init["APP_USERNAME"]
    assert int(init["AUTH_REPLICATION_FACTOR"]) == len(nodes)


@pytest.mark.parametrize("project_loader", [single_node_project, cluster_project], ids=["single", "cluster"])
def test_the_schema_job_applies_the_schema_as_the_administrator_and_grants_the_app_only_reads_and_writes(
        project_loader, tmp_path: pathlib.Path) -> None:
    project = interpolate_all(project_loader(), OPERATOR_ENVIRONMENT)
    services = project["services"]
    schema, app, init = services["schema"], services["app"], services["cassandra-init"]
    assert schema["depends_on"]["cassandra-init"]["condition"] == "service_completed_successfully"
    assert app["depends_on"]["schema"]["condition"] == "service_completed_successfully"
    assert schema["image"] == app["image"] and schema["restart"] == "no"
    job, app_environment_ = environment_of(schema), environment_of(app)
    image_environment = {name: value for name, value in dockerfile_environment().items() if name.startswith("MNIST_")}
    job_settings = settings_from_mapping(with_mounted_secrets({**image_environment, **job}, tmp_path / "run"))
    app_settings = settings_from_mapping(with_mounted_secrets({**image_environment, **app_environment_}, tmp_path / "run"))
    # The administrator's role and secret, the app's keyspace, nodes and replication.
    assert job_settings.cassandra_username == environment_of(init)["ADMIN_USERNAME"]
    assert job["MNIST_CASSANDRA_PASSWORD_FILE"] == environment_of(init)["ADMIN_PASSWORD_FILE"]
    assert "cassandra_admin_password" in schema["secrets"] and "cassandra_admin_password" not in app["secrets"]
    for field in ("cassandra_keyspace", "cassandra_contact_points", "cassandra_replication", "cassandra_datacenter"):
        assert getattr(job_settings, field) == getattr(app_settings, field), field
    assert schema["command"] == ["python", "-m", "mnist_core", "migrate", "--grant-to", app_settings.cassandra_username]


def test_every_variable_the_compose_files_read_is_in_the_environment_example() -> None:
    example = ENVIRONMENT_EXAMPLE.read_text(encoding="utf-8")
    for variable in (referenced_variables(COMPOSE_FILE) | referenced_variables(CLUSTER_COMPOSE_FILE)
                     | referenced_variables(REPLICAS_COMPOSE_FILE)):
        assert re.search(rf"^#? ?{variable}=", example, re.MULTILINE), f".env.example does not mention {variable}."
    for line in example.splitlines():
        name, equals, value = line.partition("=")
        if equals and not name.startswith("#") and "PASSWORD" in name:
            assert value == "", f".env.example must not hold a password: {line}"


# --- compose.cluster.yaml ---------------------------------------------------------------------


def test_cluster_has_three_nodes_in_one_datacenter_started_one_after_another() -> None:
    project = cluster_project()
    nodes = cassandra_nodes(project)
    assert sorted(nodes) == ["cassandra", "cassandra-2", "cassandra-3"]
    environments = {name: interpolate_all(environment_of(node), {}) for name, node in nodes.items()}
    for key in ("CASSANDRA_CLUSTER_NAME", "CASSANDRA_DC", "CASSANDRA_ENDPOINT_SNITCH", "MAX_HEAP_SIZE", "HEAP_NEWSIZE"):
        assert len({environment.get(key) for environment in environments.values()}) == 1, key
    assert environments["cassandra"]["CASSANDRA_DC"] == "datacenter1"
    assert environments["cassandra"]["CASSANDRA_ENDPOINT_SNITCH"] == "GossipingPropertyFileSnitch"
    for name in ("cassandra-2", "cassandra-3"):
        assert environments[name]["CASSANDRA_SEEDS"] == "cassandra"
    # Cassandra bootstraps one node at a time.
    certificates = {"tls-certificates": {"condition": "service_completed_successfully"}}
    assert project["services"]["cassandra-2"]["depends_on"] == {**certificates, "cassandra": {"condition": "service_healthy"}}
    assert project["services"]["cassandra-3"]["depends_on"] == {**certificates,
                                                                "cassandra-2": {"condition": "service_healthy"}}
    # The cluster's nodes are defined exactly like the single node: the definition is repeated in
    # compose.cluster.yaml, not extended (see the note there), so this keeps the copies the same.
    reference = nodes["cassandra"]
    for name in ("cassandra-2", "cassandra-3"):
        for key in ("image", "entrypoint", "command", "healthcheck", "restart", "mem_limit", "environment"):
            assert nodes[name][key] == reference[key], (name, key)
        data_volume = named_volume_target(nodes[name], "/var/lib/cassandra", project)
        assert [volume.replace(f"{data_volume}:", "cassandra-data:") for volume in nodes[name]["volumes"]] == \
            reference["volumes"], name
        assert "extends" not in load_yaml(CLUSTER_COMPOSE_FILE)["services"][name], \
            "podman-compose config would print the node unresolved (compose.cluster.yaml)"


def test_cluster_app_and_init_wait_for_every_node_and_use_three_replicas() -> None:
    project = cluster_project()
    nodes = cassandra_nodes(project)
    app, init = project["services"]["app"], project["services"]["cassandra-init"]
    for name in nodes:
        assert app["depends_on"][name]["condition"] == "service_healthy", name
    assert app["depends_on"]["cassandra-init"]["condition"] == "service_completed_successfully"
    assert init["depends_on"]["cassandra-3"]["condition"] == "service_healthy"
    environment = app_environment(project)
    assert Replication.parse(environment["MNIST_CASSANDRA_REPLICATION"]) == Replication(
        strategy="NetworkTopologyStrategy", datacenter_factors=(("datacenter1", 3),)
    )
    assert environment["MNIST_CASSANDRA_CONSISTENCY"] == "LOCAL_QUORUM"
    assert environment_of(init)["AUTH_REPLICATION_FACTOR"] == "3"
