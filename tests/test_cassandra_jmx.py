"""The local node's JMX (what nodetool uses to manage it): loopback only, and a password required."""

from __future__ import annotations

import os
import socket
import stat
import subprocess

import pytest

from tests.conftest import CASSANDRA_SCRIPT, REPOSITORY_ROOT

pytestmark = pytest.mark.cassandra

JMX_PORT = 7199  # node 1: MNIST_CASSANDRA_JMX_PORT_BASE (7198) + 1
DEFAULT_NODE_HOME = REPOSITORY_ROOT / ".cassandra" / "node1"
JAVA_MODULE_OPTIONS = ["--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
                       "--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED",
                       "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED", "--add-opens=java.base/java.nio=ALL-UNNAMED"]


def _nodetool_without_credentials() -> subprocess.CompletedProcess:
    library = os.environ.get("MNIST_CASSANDRA_LIB", str(REPOSITORY_ROOT / ".cassandra" / "lib"))
    return subprocess.run(["java", *JAVA_MODULE_OPTIONS, "-cp", f"{library}/*", "org.apache.cassandra.tools.NodeTool",
                           "-h", "127.0.0.1", "-p", str(JMX_PORT), "version"],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def node_home(cassandra_node):
    home = DEFAULT_NODE_HOME if "MNIST_CASSANDRA_HOME" not in os.environ else (
        REPOSITORY_ROOT / os.environ["MNIST_CASSANDRA_HOME"] / "node1")
    if not (home / "conf" / "jmxremote.password").exists():
        pytest.fail(f"The node in {home} was started without JMX authentication (by an older "
                    "scripts/cassandra?): stop it with `scripts/cassandra stop 1` and run again.", pytrace=False)
    return home


def test_nodetool_through_the_script_passes_the_node_s_own_credentials(node_home):
    result = subprocess.run([str(CASSANDRA_SCRIPT), "nodetool", "1", "version"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ReleaseVersion: 5.0"), result.stdout[:500]


def test_jmx_without_credentials_is_refused(node_home):
    result = _nodetool_without_credentials()
    assert result.returncode != 0
    assert "Authentication failed" in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]


def test_the_password_file_is_the_owner_s_alone(node_home):
    mode = stat.S_IMODE((node_home / "conf" / "jmxremote.password").stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_jmx_listens_on_127_0_0_1_only(node_home):
    with socket.create_connection(("127.0.0.1", JMX_PORT), timeout=5):
        pass
    # Any other address of this machine (here another loopback address) finds nothing listening.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", JMX_PORT), timeout=5).close()
