"""deploy/cassandra-init.sh against the fake cqlsh (tests/deployment/fake_cqlsh.py): the roles it
creates, the built-in superuser it locks, a second run as the administrator, a node down,
passwords with quotes and from secret files, TLS, and the unsafe settings it refuses.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.deployment.fake_cqlsh import FakeCassandra, install_fake_cassandra


@pytest.fixture()
def fake_cassandra(tmp_path: pathlib.Path) -> FakeCassandra:
    """A fresh cluster: only the built-in superuser cassandra/cassandra, no keyspace yet."""
    return install_fake_cassandra(tmp_path)


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
