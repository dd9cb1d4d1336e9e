"""With PasswordAuthenticator and TLS on a real node: the right credentials work, wrong ones fail with a clear
sentence, and sessions made with the node's CA are encrypted."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from mnist_core.storage import (PredictionStore, StorageAuthenticationError, StorageUnavailable, StoreOutcome, connection,
                                migrations)
from tests.conftest import AUTH_NODE_CA_FILE

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]

SUPERUSER_WAIT_SECONDS = 60
# A role of its own per run: Cassandra 5 refuses to change one role's password twice within 5 s.
APPLICATION_ROLE = "mnist_app_" + uuid.uuid4().hex[:8]
APPLICATION_PASSWORD = "app-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def superuser_session(auth_cassandra_node, plain_cluster):
    """A session as the default superuser (created a moment after start-up)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import NoHostAvailable

    deadline = time.monotonic() + SUPERUSER_WAIT_SECONDS
    while True:
        cluster = plain_cluster(auth_cassandra_node, auth_provider=PlainTextAuthProvider("cassandra", "cassandra"))
        try:
            session = cluster.connect()
            break
        except NoHostAvailable:
            cluster.shutdown()
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    try:
        yield session
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def application_role(superuser_session, module_keyspace):
    """The app's own role, allowed to create its keyspace."""
    session = superuser_session
    session.execute(
        f"CREATE ROLE IF NOT EXISTS {APPLICATION_ROLE} WITH LOGIN = true AND PASSWORD = %s", (APPLICATION_PASSWORD,)
    )
    session.execute(f"GRANT CREATE ON ALL KEYSPACES TO {APPLICATION_ROLE}")
    yield APPLICATION_ROLE
    session.execute(f"DROP KEYSPACE IF EXISTS {module_keyspace}", timeout=60)
    session.execute(f"DROP ROLE IF EXISTS {APPLICATION_ROLE}")


def test_a_role_that_may_only_read_and_write_runs_on_a_schema_an_administrator_applied(
        superuser_session, auth_cassandra_node, settings_for, make_record, tmp_path) -> None:
    """Least privilege, as compose sets it up: the administrator applies the schema with
    `python -m mnist_core migrate`; the app's role holds SELECT and MODIFY on the keyspace only."""
    import os
    import sys

    from mnist_core.storage import SchemaMigrationError

    suffix = uuid.uuid4().hex[:8]
    keyspace, behind, role, password = f"least_{suffix}", f"behind_{suffix}", f"writer_{suffix}", "w-" + suffix
    administrator = {**os.environ, "MNIST_CASSANDRA_CONTACT_POINTS": auth_cassandra_node,
                     "MNIST_CASSANDRA_KEYSPACE": keyspace, "MNIST_CASSANDRA_USERNAME": "cassandra",
                     "MNIST_CASSANDRA_PASSWORD": "cassandra", "MNIST_DATA_DIR": str(tmp_path / "admin")}
    session = superuser_session
    migrate = [sys.executable, "-m", "mnist_core", "migrate", "--grant-to", role]
    try:
        session.execute(f"CREATE ROLE {role} WITH LOGIN = true AND PASSWORD = %s", (password,))
        migrated = subprocess.run(migrate, env=administrator, capture_output=True, text=True, timeout=300, check=False)
        assert migrated.returncode == 0, migrated.stderr
        every_version = [migration.version for migration in migrations.load_migrations()]
        assert json.loads(migrated.stdout)["applied"] == every_version
        again = subprocess.run(migrate, env=administrator, capture_output=True, text=True, timeout=300, check=False)
        assert '"applied": []' in again.stdout, again.stdout + again.stderr
        permissions = {row.permission for row in session.execute(f"LIST ALL PERMISSIONS OF {role}")}
        assert permissions == {"SELECT", "MODIFY"}, permissions
        session.execute(f"CREATE KEYSPACE {behind} WITH replication = {{'class': 'SimpleStrategy', "
                        "'replication_factor': 1}", timeout=60)
        session.execute(f"GRANT SELECT ON KEYSPACE {behind} TO {role}")
        session.execute(f"GRANT MODIFY ON KEYSPACE {behind} TO {role}")

        store = PredictionStore(settings_for(MNIST_CASSANDRA_CONTACT_POINTS=auth_cassandra_node,
                                             MNIST_CASSANDRA_KEYSPACE=keyspace, MNIST_CASSANDRA_USERNAME=role,
                                             MNIST_CASSANDRA_PASSWORD=password), background=False)
        try:
            store.connect()
            record = make_record(digit=4)
            store.store(record)
            assert store.flush() == 1
            assert store.latest(1) == [record]
        finally:
            store.close()

        # A keyspace whose schema is behind: the role cannot apply it, and says who can.
        lagging = PredictionStore(settings_for(MNIST_CASSANDRA_CONTACT_POINTS=auth_cassandra_node,
                                               MNIST_CASSANDRA_KEYSPACE=behind, MNIST_CASSANDRA_USERNAME=role,
                                               MNIST_CASSANDRA_PASSWORD=password,
                                               MNIST_DATA_DIR=str(tmp_path / "lagging")), background=False)
        try:
            with pytest.raises(SchemaMigrationError, match="python -m mnist_core migrate"):
                lagging.connect()
        finally:
            lagging.close()
    finally:
        for dropped in (keyspace, behind):
            session.execute(f"DROP KEYSPACE IF EXISTS {dropped}", timeout=60)
        session.execute(f"DROP ROLE IF EXISTS {role}")


def test_correct_credentials_store_and_read(settings_for, application_role, auth_cassandra_node, make_record) -> None:
    settings = settings_for(
        MNIST_CASSANDRA_CONTACT_POINTS=auth_cassandra_node,
        MNIST_CASSANDRA_USERNAME=application_role,
        MNIST_CASSANDRA_PASSWORD=APPLICATION_PASSWORD,
    )
    store = PredictionStore(settings, background=False)
    try:
        store.connect()
        record = make_record(digit=5)
        assert store.store(record) is StoreOutcome.ACCEPTED
        assert store.flush() == 1  # sent to Cassandra with these credentials
        assert store.latest(1) == [record]
        assert store.status().connected
    finally:
        store.close()


def test_wrong_password_fails_at_once_with_a_clear_message(settings_for, application_role, auth_cassandra_node) -> None:
    settings = settings_for(
        MNIST_CASSANDRA_CONTACT_POINTS=auth_cassandra_node,
        MNIST_CASSANDRA_USERNAME=application_role,
        MNIST_CASSANDRA_PASSWORD="not-the-password",
    )
    waits: list[float] = []
    with pytest.raises(StorageAuthenticationError) as raised:
        connection.connect(settings, attempts=5, retry_delay_seconds=1.0, sleep=waits.append)
    assert waits == [], "a rejected password must not be retried"
    message = str(raised.value)
    assert f"rejected the username '{application_role}'" in message
    assert "MNIST_CASSANDRA_PASSWORD" in message
    assert "not-the-password" not in message


def test_no_credentials_against_an_authenticating_node_fail_clearly(settings_for, auth_cassandra_node) -> None:
    settings = settings_for(MNIST_CASSANDRA_CONTACT_POINTS=auth_cassandra_node)
    with pytest.raises(StorageAuthenticationError, match="rejected"):
        connection.connect(settings, attempts=1)


def test_wrong_password_keeps_predictions_in_the_outbox(settings_for, application_role, auth_cassandra_node,
                                                        make_record) -> None:
    settings = settings_for(
        MNIST_CASSANDRA_CONTACT_POINTS=auth_cassandra_node,
        MNIST_CASSANDRA_USERNAME=application_role,
        MNIST_CASSANDRA_PASSWORD="not-the-password",
    )
    store = PredictionStore(settings, background=False)
    try:
        assert store.store(make_record(digit=2)) is StoreOutcome.QUEUED
        assert store.writer.run_once() == 0  # one round of the writer: the node refuses the password
        status = store.status()
        assert status.state == "degraded" and status.pending == 1
        assert "rejected" in status.message
    finally:
        store.close()


def test_tls_with_credentials_stores_and_reads_over_an_encrypted_connection(
        settings_for, application_role, auth_cassandra_node, make_record, plain_cluster) -> None:
    """The node's own CA (MNIST_CASSANDRA_TLS_CA_FILE), hostname checked: the server lists our sessions as TLS."""
    settings = settings_for(
        MNIST_CASSANDRA_CONTACT_POINTS=auth_cassandra_node,
        MNIST_CASSANDRA_USERNAME=application_role,
        MNIST_CASSANDRA_PASSWORD=APPLICATION_PASSWORD,
        MNIST_CASSANDRA_TLS_CA_FILE=str(AUTH_NODE_CA_FILE),
    )
    assert settings.tls_enabled and settings.cassandra_tls_verify_hostname
    store = PredictionStore(settings, background=False)
    try:
        store.connect()
        record = make_record(digit=7)
        assert store.store(record) is StoreOutcome.ACCEPTED
        assert store.flush() == 1  # sent to Cassandra with these credentials
        assert store.latest(1) == [record]
        # The server's own list of client connections, read by the superuser over a plain connection.
        from cassandra.auth import PlainTextAuthProvider

        observer = plain_cluster(auth_cassandra_node, auth_provider=PlainTextAuthProvider("cassandra", "cassandra"))
        try:
            sessions = [row for row in observer.connect().execute(
                "SELECT ssl_enabled, ssl_protocol, username FROM system_views.clients") if row.username == application_role]
        finally:
            observer.shutdown()
        assert sessions, "the server does not list our connections"
        assert all(row.ssl_enabled and row.ssl_protocol.startswith("TLS") for row in sessions)
    finally:
        store.close()


def test_tls_with_an_untrusted_certificate_fails_with_a_clear_message(
        settings_for, application_role, auth_cassandra_node, tmp_path) -> None:
    """A CA the node's certificate was not issued by: refused, and the sentence says it is a connection problem."""
    other_keystore = tmp_path / "other.p12"
    other_ca = tmp_path / "other-ca.pem"
    for arguments in (
        ["-genkeypair", "-alias", "other", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=127.0.0.9",
         "-storetype", "PKCS12", "-keystore", str(other_keystore), "-storepass", "not-secret"],
        ["-exportcert", "-rfc", "-alias", "other", "-keystore", str(other_keystore), "-storepass", "not-secret",
         "-file", str(other_ca)],
    ):
        subprocess.run(["keytool", *arguments], check=True, capture_output=True, timeout=60)
    settings = settings_for(
        MNIST_CASSANDRA_CONTACT_POINTS=auth_cassandra_node,
        MNIST_CASSANDRA_USERNAME=application_role,
        MNIST_CASSANDRA_PASSWORD=APPLICATION_PASSWORD,
        MNIST_CASSANDRA_TLS_CA_FILE=str(other_ca),
    )
    with pytest.raises(StorageUnavailable) as raised:
        connection.connect(settings, attempts=1)
    assert "127.0.0.9" in str(raised.value)
