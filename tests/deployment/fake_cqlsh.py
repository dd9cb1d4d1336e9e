"""A stand-in for cqlsh, for running deploy/cassandra-init.sh without Cassandra: a Python program
that logs in against roles kept in a JSON state file and runs the statements the init script
sends the way Cassandra would for them, and FakeCassandra, which puts it on PATH and runs the init.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import stat
import subprocess
import sys

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[2]
INIT_SCRIPT = REPOSITORY_ROOT / "deploy" / "cassandra-init.sh"


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


def install_fake_cassandra(directory: pathlib.Path) -> FakeCassandra:
    """The fake cqlsh in directory/bin and a fresh cluster: only the built-in superuser
    cassandra/cassandra, no keyspace yet."""
    bin_directory = directory / "bin"
    bin_directory.mkdir()
    cqlsh = bin_directory / "cqlsh"
    cqlsh.write_text(f"#!{sys.executable}\n{FAKE_CQLSH}")
    cqlsh.chmod(cqlsh.stat().st_mode | stat.S_IXUSR)
    fake = FakeCassandra(directory)
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
