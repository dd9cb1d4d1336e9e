"""The image and the compose stacks, run for real with podman (scripts/containers).

The single-node stack is built from a clean clone of this repository's HEAD and brought up
once for the module (`containers` marker, part of the suite); the three-node stack is the
`containers_cluster` marker, left out of the default run for its length and run with
`scripts/test -m containers_cluster`. Everything talks over loopback (the app's published port)
and the podman network compose creates for the test's own project; nothing is pulled from a
registry (`--pull=never`; the base images are built by `scripts/containers setup`).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml
from PIL import Image, ImageDraw

from tests.deployment.compose_files import OPERATOR_ENVIRONMENT, cluster_project, interpolate_all, single_node_project

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPOSITORY / "scripts" / "containers"
CONTAINERS_HOME = REPOSITORY / ".containers"
APP_USER = "mnist"
ADMIN_USER = "mnist_admin"


def podman_environment(**extra: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment["CONTAINERS_CONF"] = str(CONTAINERS_HOME / "containers.conf")
    environment.update(extra)
    return environment


def run(command: list[str], *, environment: dict[str, str] | None = None, timeout: float = 1200,
        check: bool = True, cwd: pathlib.Path = REPOSITORY) -> subprocess.CompletedProcess:
    finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=environment or podman_environment())
    if check and finished.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {finished.returncode}:\n"
                             f"{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}")
    return finished


def podman(*arguments: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return run(["podman", *arguments], check=check, timeout=timeout)


def digit_png(seed: int = 0) -> bytes:
    """A one: a vertical stroke, moved a little with the seed so each image is different."""
    image = Image.new("L", (280, 280), 0)
    offset = seed % 40
    ImageDraw.Draw(image).line([(120 + offset, 40), (124 + offset, 240)], fill=255, width=18)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post_prediction(port: int, *, seed: int = 0) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/predict", data=digit_png(seed),
                                     headers={"Content-Type": "image/png"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Stack:
    """One compose project brought up by scripts/containers, with its own port and secrets."""

    def __init__(self, project: str, port: int, secrets: pathlib.Path, layout: str = "up"):
        self.project, self.port, self.secrets, self.layout = project, port, secrets, layout
        self.ready_seconds: dict[str, float] = {}
        self.up_seconds = 0.0

    def environment(self, **extra: str) -> dict[str, str]:
        settings = {
            "MNIST_CONTAINERS_PROJECT": self.project,
            "APP_PORT": str(self.port),
            "CASSANDRA_PASSWORD_FILE": str(self.secrets / "cassandra_password"),
            "CASSANDRA_ADMIN_PASSWORD_FILE": str(self.secrets / "cassandra_admin_password"),
            "MNIST_API_KEY_FILE": str(self.secrets / "api_key"),
            "MNIST_DASHBOARD_PASSWORD_FILE": str(self.secrets / "dashboard_password"),
        }
        settings.update(extra)
        return podman_environment(**settings)

    def up(self, **extra: str) -> subprocess.CompletedProcess:
        began = time.monotonic()
        finished = run([str(SCRIPT), self.layout], environment=self.environment(**extra), check=False)
        self.up_seconds = time.monotonic() - began
        if finished.returncode == 0:
            self.ready_seconds = json.loads(finished.stdout.strip().splitlines()[-1])["ready_seconds"]
        return finished

    def down(self) -> None:
        run([str(SCRIPT), "down", "-v"], environment=self.environment(), check=False)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def password(self, name: str = "cassandra_password") -> str:
        return (self.secrets / name).read_text().strip()

    def cql(self, statement: str, *, user: str = APP_USER, password: str | None = None,
            node: str = "cassandra", check: bool = True) -> subprocess.CompletedProcess:
        """cqlsh inside a node's container, to that node, as the given role: over TLS, as every
        client must (the node refuses plain connections); not verified, it is the node's own loopback."""
        return podman("exec", "-e", "SSL_VALIDATE=false", self.container(node), "cqlsh", "--ssl", "-u", user, "-p",
                      password if password is not None else self.password(), "-e", statement,
                      "127.0.0.1", "9042", check=check, timeout=120)

    def stored_ids(self, **options) -> set[str]:
        # The project's own volumes hold only this test's readings: a whole-table read is small.
        output = self.cql("CONSISTENCY LOCAL_QUORUM; SELECT id FROM mnist.predictions_by_slot;", **options).stdout
        return set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", output))

    def wait_until_stored(self, identifiers: set[str], seconds: float = 60.0, **options) -> set[str]:
        deadline = time.monotonic() + seconds
        while True:
            missing = identifiers - self.stored_ids(**options)
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(2)


def make_secrets(directory: pathlib.Path) -> None:
    run([str(REPOSITORY / "scripts" / "make-secrets"), str(directory)])


@pytest.fixture(scope="module")
def prepared() -> dict:
    """scripts/containers setup (podman, runc, podman-compose, the two base images)."""
    if shutil.which("podman") is None and os.geteuid() != 0:
        pytest.fail("podman is not installed and this user cannot install it (apt-get needs root).")
    began = time.monotonic()
    run([str(SCRIPT), "setup"], environment=dict(os.environ), timeout=1800)
    return {"setup_seconds": round(time.monotonic() - began, 1)}


@pytest.fixture(scope="module")
def clean_clone_image(prepared, tmp_path_factory) -> dict:
    """mnist-digits:latest built by `scripts/containers build` in a clean clone of HEAD."""
    clone = tmp_path_factory.mktemp("clone") / "repository"
    run(["git", "clone", "--quiet", "--no-local", str(REPOSITORY), str(clone)])
    began = time.monotonic()
    # --no-cache: the figure is a build from scratch on the stand-in base, not a cache hit.
    run([str(clone / "scripts" / "containers"), "build", "--no-cache"],
        environment=podman_environment(MNIST_CONTAINERS_HOME=str(CONTAINERS_HOME)), cwd=clone)
    seconds = round(time.monotonic() - began, 1)
    inspected = json.loads(podman("image", "inspect", "mnist-digits:latest").stdout)[0]
    figures = {"build_seconds": seconds, "image_megabytes": round(inspected["Size"] / 1e6),
               "clone": clone, "inspected": inspected}
    print(f"\ncontainers: image built in {seconds} s, {figures['image_megabytes']} MB")
    return figures


@pytest.fixture(scope="module")
def stack(clean_clone_image, tmp_path_factory):
    secrets = tmp_path_factory.mktemp("secrets")
    make_secrets(secrets)
    single = Stack("mnist-test", 18591, secrets)
    single.down()
    try:
        finished = single.up()
        # A stack that did not come up is taken down too: its containers would load every later test.
        assert finished.returncode == 0, finished.stderr[-4000:]
        print(f"\ncontainers: single node ready after {single.ready_seconds} s")
        yield single
    finally:
        single.down()


pytestmark = [pytest.mark.containers, pytest.mark.slow]


def _with_build_context_spelled_out(project: dict) -> dict:
    """podman-compose writes `build: .` as its long form with an absolute context."""
    services = {}
    for name, service in project["services"].items():
        if isinstance(service.get("build"), str):
            service = {**service, "build": {"context": str((REPOSITORY / service["build"]).resolve())}}
        services[name] = service
    return {**project, "services": services}


@pytest.mark.parametrize(("command", "project_loader"), [("config", single_node_project),
                                                         ("config-cluster", cluster_project)],
                         ids=["single", "cluster"])
def test_the_deployment_tests_read_the_compose_files_as_podman_compose_does(prepared, command,
                                                                             project_loader):
    """The tests in tests/deployment/ merge and interpolate the compose files themselves, so
    their checks run in seconds without an engine; they are worth only as much as that
    reading is right."""
    # Only what an operator sets: nothing else from this shell may fill in a variable.
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
                   "CONTAINERS_CONF": str(CONTAINERS_HOME / "containers.conf"), **OPERATOR_ENVIRONMENT}
    real = yaml.safe_load(run([str(SCRIPT), command], environment=environment).stdout)
    ours = _with_build_context_spelled_out(interpolate_all(project_loader(), OPERATOR_ENVIRONMENT))
    assert set(real["services"]) == set(ours["services"])
    for name, service in ours["services"].items():
        assert real["services"][name] == service, name
    # Top-level x- fields are compose's place for anchors: no engine reads them (podman-compose
    # even concatenates their lists when merging), so only what runs is compared.
    def what_runs(project: dict) -> dict:
        return {key: value for key, value in project.items()
                if key != "services" and not key.startswith("x-")}
    assert what_runs(real) == what_runs(ours)


def test_image_is_built_from_a_clean_clone_with_the_unchanged_dockerfile(clean_clone_image):
    clone = clean_clone_image["clone"]
    committed = subprocess.run(["git", "show", "HEAD:Dockerfile"], capture_output=True, cwd=REPOSITORY,
                               check=True).stdout
    assert (clone / "Dockerfile").read_bytes() == committed
    configuration = clean_clone_image["inspected"]["Config"]
    # Docker format, so the HEALTHCHECK survived the build.
    assert "urlopen" in " ".join(clean_clone_image["inspected"]["Healthcheck"]["Test"])
    assert configuration["User"] == "10001:10001"


def test_image_holds_only_what_dockerignore_lets_in(clean_clone_image):
    listing = podman("run", "--rm", "--pull=never", "--entrypoint", "find", "mnist-digits:latest",
                     "/app", "-mindepth", "1").stdout.split()
    top_level = {path.removeprefix("/app/").split("/")[0] for path in listing}
    assert top_level == {"requirements.txt", "Home.py", "app_pages", "dashboard", "mnist_core",
                         "models", ".streamlit"}
    assert not [path for path in listing if path.endswith(".keras") or "__pycache__" in path]
    assert {path.removeprefix("/app/") for path in listing if path.startswith("/app/.streamlit/")} == {
        ".streamlit/config.toml"}


def test_stack_comes_up_in_order_and_the_app_is_healthy(stack):
    ready = stack.ready_seconds
    assert ready["tls-certificates"] <= ready["cassandra"] < ready["cassandra-init"] < ready["schema"] < ready["app"]
    assert podman("healthcheck", "run", stack.container("app"), check=False).returncode == 0
    assert podman("exec", stack.container("app"), "id", "-u").stdout.strip() == "10001"
    # No password in any container's environment: the secrets are files.
    for service in ("app", "schema", "cassandra-init"):
        environment = podman("inspect", "--format", "{{json .Config.Env}}", stack.container(service)).stdout
        assert stack.password() not in environment
        assert stack.password("cassandra_admin_password") not in environment


def test_app_stores_readings_through_its_own_role(stack):
    answers = [post_prediction(stack.port, seed=seed) for seed in range(3)]
    assert all(answer["stored"] in ("stored", "accepted") and answer["digit"] == 1 for answer in answers)
    identifiers = {answer["id"] for answer in answers}
    assert stack.wait_until_stored(identifiers) == set()
    environment = podman("inspect", "--format", "{{json .Config.Env}}", stack.container("app")).stdout
    assert f"MNIST_CASSANDRA_USERNAME={APP_USER}" in environment
    # The app's role reads and writes its keyspace and cannot change its schema.
    refused = stack.cql("CREATE TABLE mnist.intruder (id int PRIMARY KEY);", check=False)
    assert refused.returncode != 0 and "Unauthorized" in refused.stdout + refused.stderr


def test_built_in_superuser_no_longer_logs_in(stack):
    refused = stack.cql("SELECT release_version FROM system.local;", user="cassandra", password="cassandra",
                        check=False)
    assert refused.returncode != 0
    assert "AuthenticationFailed" in refused.stdout + refused.stderr or "Bad credentials" in refused.stdout + refused.stderr
    administrator = stack.cql("SELECT release_version FROM system.local;", user=ADMIN_USER,
                              password=stack.password("cassandra_admin_password"))
    assert "5.0" in administrator.stdout


def test_rotating_the_app_password_with_up(stack):
    old_password = stack.password()
    new_password = uuid.uuid4().hex
    (stack.secrets / "cassandra_password").write_text(new_password)
    finished = stack.up()
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert stack.cql("SELECT release_version FROM system.local;", password=old_password,
                     check=False).returncode != 0
    answer = post_prediction(stack.port, seed=7)
    assert stack.wait_until_stored({answer["id"]}) == set()
    print(f"\ncontainers: up again (rotated password) in {stack.up_seconds:.1f} s: {stack.ready_seconds}")


def test_missing_password_file_stops_up_and_leaves_the_stack_alone(stack, tmp_path):
    finished = stack.up(CASSANDRA_PASSWORD_FILE=str(tmp_path / "no-such-password"))
    assert finished.returncode != 0
    assert 'secret "cassandra_password" file' in finished.stderr and "not found" in finished.stderr
    # Nothing was stopped: the running app still answers and stores.
    answer = post_prediction(stack.port, seed=11)
    assert stack.wait_until_stored({answer["id"]}) == set()


@pytest.mark.containers_cluster
def test_three_node_stack_replicates_and_keeps_storing_with_one_node_down(prepared, clean_clone_image,
                                                                          tmp_path):
    secrets = tmp_path / "secrets"
    make_secrets(secrets)
    cluster = Stack("mnist-cluster-test", 18592, secrets, layout="up-cluster")
    cluster.down()
    try:
        finished = cluster.up()
        assert finished.returncode == 0, finished.stderr[-4000:]
        print(f"\ncontainers: three nodes ready after {cluster.ready_seconds} s")
        replication = cluster.cql("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = 'mnist';").stdout
        assert "'datacenter1': '3'" in replication
        ring = podman("exec", cluster.container("cassandra"), "nodetool", "status").stdout
        assert len(re.findall(r"^UN ", ring, flags=re.MULTILINE)) == 3, ring

        before = {post_prediction(cluster.port, seed=seed)["id"] for seed in range(5)}
        assert cluster.wait_until_stored(before) == set()
        # A real fault: the third node's JVM is killed (SIGKILL), not stopped politely.
        podman("kill", "--signal", "KILL", cluster.container("cassandra-3"))
        during = {post_prediction(cluster.port, seed=seed)["id"] for seed in range(5, 25)}
        assert cluster.wait_until_stored(before | during, seconds=120) == set()
    finally:
        cluster.down()
