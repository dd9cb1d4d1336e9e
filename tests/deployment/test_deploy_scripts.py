"""The scripts in deploy/ and scripts/make-secrets, run against stand-ins: the CQL health probe
against a fake CQL server, the Cassandra entrypoint against a fake docker-entrypoint.sh, make-tls.sh
with a TLS handshake on loopback, and make-secrets in a temporary folder.
(deploy/cassandra-init.sh has its own module, tests/deployment/test_cassandra_init.py.)
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import textwrap
import threading
from collections.abc import Iterator

import pytest
import yaml

from tests.deployment.compose_files import COMPOSE_FILE, REPOSITORY_ROOT, load_yaml
from tests.deployment.fake_cqlsh import INIT_SCRIPT

DEPLOY_DIRECTORY = REPOSITORY_ROOT / "deploy"
CQL_PROBE_SCRIPT = DEPLOY_DIRECTORY / "cql-answers.sh"
ENTRYPOINT_SCRIPT = DEPLOY_DIRECTORY / "cassandra-entrypoint.sh"

CQL_OPTIONS_FRAME_V4 = bytes([0x04, 0, 0, 0, 0x05, 0, 0, 0, 0])


def test_deploy_scripts_named_by_the_compose_files_exist_and_are_bash() -> None:
    for script in (CQL_PROBE_SCRIPT, ENTRYPOINT_SCRIPT, INIT_SCRIPT):
        assert script.is_file()
        assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
        subprocess.run(["bash", "-n", str(script)], check=True)


@contextlib.contextmanager
def fake_cql_server(answer: bytes | None, tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server that reads one 9-byte frame header and sends `answer` (None: never answers);
    with ``tls``, only inside a TLS session, as a node with required client encryption does."""
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
            if tls is not None:
                connection.settimeout(5)
                try:
                    connection = tls.wrap_socket(connection, server_side=True)
                except (ssl.SSLError, OSError):
                    connection.close()  # a plain client: refused, as Cassandra refuses it
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
        env={**os.environ, "CQL_PROBE_TIMEOUT_SECONDS": "2", "CQL_PROBE_TLS_ANSWER_SECONDS": "0.5"},
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


@pytest.fixture
def server_tls(tmp_path: pathlib.Path) -> ssl.SSLContext:
    """A server context with a throw-away self-signed certificate (made by openssl, as make-tls.sh's is by keytool)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, certificate = tmp_path / "key.pem", tmp_path / "certificate.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(certificate), "-days", "1", "-subj", "/CN=cassandra"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    return context


def test_cql_probe_passes_over_tls_when_the_node_accepts_only_tls_clients(server_tls) -> None:
    supported = bytes([0x84, 0, 0, 0, 0x06, 0, 0, 0, 2, 0, 0])
    with fake_cql_server(supported, tls=server_tls) as (port, received):
        result = run_cql_probe(port)
    assert result.returncode == 0, result.stderr
    assert received == [CQL_OPTIONS_FRAME_V4], "the frame arrived inside TLS"


def test_cql_probe_over_tls_still_wants_supported(server_tls) -> None:
    with fake_cql_server(bytes([0x84, 0, 0, 0, 0x00, 0, 0, 0, 0]), tls=server_tls) as (port, _):
        assert run_cql_probe(port).returncode != 0


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
    assert "client_encryption_options" not in configuration_after, "no keystore: no TLS to turn on"


def test_entrypoint_requires_tls_from_every_client_when_the_node_has_a_keystore(tmp_path: pathlib.Path) -> None:
    configuration = tmp_path / "conf"
    configuration.mkdir()
    (configuration / "cassandra.yaml").write_text(SAMPLE_CASSANDRA_YAML)
    nodes = tmp_path / "tls-nodes"
    nodes.mkdir()
    (nodes / "cassandra-2.p12").write_bytes(b"not read here")
    (nodes / "keystore.password").write_text("keystore-secret\n")
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    (bin_directory / "docker-entrypoint.sh").write_text("#!/usr/bin/env bash\nexit 0\n")
    (bin_directory / "docker-entrypoint.sh").chmod(0o755)
    subprocess.run(["bash", str(ENTRYPOINT_SCRIPT), "cassandra", "-f"], check=True, timeout=30, env={
        **os.environ, "PATH": f"{bin_directory}:{os.environ['PATH']}", "CASSANDRA_CONF": str(configuration),
        "TLS_NODE_DIRECTORY": str(nodes), "CASSANDRA_TLS_HOST": "cassandra-2"})
    encryption = yaml.safe_load((configuration / "cassandra.yaml").read_text())["client_encryption_options"]
    # Required, not optional: a client that skips TLS cannot send its password in clear.
    assert encryption == {"enabled": True, "optional": False, "keystore": str(nodes / "cassandra-2.p12"),
                          "keystore_password": "keystore-secret", "store_type": "PKCS12"}


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
