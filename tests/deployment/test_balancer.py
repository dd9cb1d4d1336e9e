"""The shipped balancer: deploy/nginx.conf and compose.replicas.yaml agree with each other and with
the cluster's app, and nginx itself accepts the file (the replica-loss test in
tests/test_cluster.py runs it for real)."""

from __future__ import annotations

import difflib
import re
import subprocess

import pytest

from tests.balancer import NGINX, REPLICA_LINE, SHIPPED_CONFIG, local_config
from tests.deployment.compose_files import (COMPOSE_FILE, REPLICAS_COMPOSE_FILE, RESET, cluster_project, load_yaml,
                                            replicas_project)

APP_IMAGE = "mnist-digits:latest"


def app_replicas(project: dict) -> dict[str, dict]:
    """The long-running app services (the app image without a one-shot command)."""
    return {name: service for name, service in project["services"].items()
            if service.get("image") == APP_IMAGE and "command" not in service}


def upstream_servers(config: str) -> dict[str, list[str]]:
    """Replica names per upstream block of the nginx file."""
    blocks = re.findall(r"upstream (\w+) \{(.*?)\}", config, flags=re.DOTALL)
    return {name: [match.group(2) for match in REPLICA_LINE.finditer(body)] for name, body in blocks}


def test_the_second_replica_is_the_clusters_app_with_its_own_outbox():
    services = replicas_project()["services"]
    first, second = services["app"], services["app-2"]
    differing = {key for key in set(first) | set(second) if first.get(key) != second.get(key)}
    assert differing == {"ports", "volumes"}
    assert "ports" not in second, "only the balancer and the first replica publish a port"
    assert [volume.replace("app-2-data:", "app-data:") for volume in second["volumes"]] == first["volumes"]
    outboxes = [next(volume for volume in service["volumes"] if volume.endswith(":/data"))
                for service in app_replicas(replicas_project()).values()]
    assert len(outboxes) == len(set(outboxes)) == 2, f"each replica needs an outbox of its own: {outboxes}"


def test_the_second_replica_extends_compose_yaml_s_app_and_says_what_the_cluster_changes():
    """app-2 is written as `extends` of compose.yaml's `app`. Docker Compose resolves extends file by
    file before merging, so the cluster's changes to `app` are stated again in app-2; its waits are
    all its own, so nothing rests on whether a tool lets depends_on be inherited."""
    written = load_yaml(REPLICAS_COMPOSE_FILE)["services"]["app-2"]
    assert written["extends"] == {"file": COMPOSE_FILE.name, "service": "app"}
    assert written["ports"] is RESET, "the port stays app's: `ports: !reset []`"
    cluster_app = cluster_project()["services"]["app"]
    assert written["depends_on"] == cluster_app["depends_on"]
    single_app = load_yaml(COMPOSE_FILE)["services"]["app"]
    changed_by_the_cluster = {name for name, value in cluster_app["environment"].items()
                              if single_app["environment"].get(name) != value}
    assert changed_by_the_cluster and changed_by_the_cluster <= set(written["environment"])
    assert {name: cluster_app["environment"][name] for name in written["environment"]} == written["environment"]
    # The healthcheck the balancer waits for is the image's: neither replica replaces it.
    services = replicas_project()["services"]
    assert "healthcheck" not in services["app"] and "healthcheck" not in services["app-2"]


def test_nginx_balances_exactly_the_compose_replicas_in_both_upstreams():
    servers = upstream_servers(SHIPPED_CONFIG.read_text())
    assert set(servers) == {"mnist_sessions", "mnist_api"}
    replicas = sorted(app_replicas(replicas_project()))
    assert replicas == ["app", "app-2"]
    assert {name: sorted(names) for name, names in servers.items()} == {name: replicas for name in servers}


def test_the_balancer_serves_the_shipped_file_once_both_replicas_are_healthy():
    balancer = replicas_project()["services"]["balancer"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in balancer["volumes"]
    assert balancer["depends_on"] == {name: {"condition": "service_healthy"} for name in ("app", "app-2")}
    assert [port.rsplit(":", 1)[1] for port in balancer["ports"]] == ["8080"]
    assert re.search(r"^\s*listen 8080;$", SHIPPED_CONFIG.read_text(), flags=re.MULTILINE)


def test_the_local_copy_differs_from_the_shipped_file_only_in_its_addresses(tmp_path):
    shipped = SHIPPED_CONFIG.read_text()
    local = local_config(shipped, {"app": "127.0.0.1:18501", "app-2": "127.0.0.1:18502"}, "127.0.0.1:18080")
    changed = [line for line in difflib.unified_diff(shipped.splitlines(), local.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert sorted("+" + line[1:].strip() for line in changed if line.startswith("+")) == sorted([
        "+listen 127.0.0.1:18080;",
        *["+server 127.0.0.1:18501 max_fails=1 fail_timeout=10s;"] * 2,
        *["+server 127.0.0.1:18502 max_fails=1 fail_timeout=10s;"] * 2,
    ])
    assert len(changed) == 10
    if not NGINX.exists():
        pytest.skip("Debian's nginx is not installed (scripts/setup --dev installs nginx-light).")
    (tmp_path / "nginx.conf").write_text(local)
    checked = subprocess.run([str(NGINX), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                              "-g", f"pid {tmp_path / 'nginx.pid'};"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_a_file_naming_other_replicas_is_refused():
    shipped = SHIPPED_CONFIG.read_text()
    with pytest.raises(pytest.fail.Exception, match="names replicas"):
        local_config(shipped, {"app": "127.0.0.1:1"}, "127.0.0.1:2")
