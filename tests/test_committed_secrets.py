"""No credentials in the files git tracks or would add; the scanner proves it catches fakes."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest

from tests.conftest import REPOSITORY_ROOT
from tests.repository_files import repository_files


@dataclasses.dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    value: str

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 8 else self.value[:4] + "..."
        return f"{self.path}:{self.line}: {self.rule} ({shown!r})"


CONFIGURATION_SUFFIXES = {".toml", ".yaml", ".yml", ".ini", ".cfg", ".conf", ".env", ".properties", ".json", ".xml",
                          ".sh", ".example", ".sample", ".template"}
CONFIGURATION_NAMES = {"Dockerfile", "cqlshrc", ".dockerignore", ".env"}
VALUE = r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"'#,;)]+)"
CONTENT_RULES = (
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"), "all"),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "all"),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"), "all"),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "all"),
    # MNIST_CASSANDRA_PASSWORD=..., "MNIST_API_KEY": "...", MNIST_..._SECRET: ... with a literal value.
    ("MNIST secret setting", re.compile(r"\bMNIST_[A-Z0-9_]*(?:PASSWORD|API_KEY|SECRET|TOKEN)\b[\"']?\s*[:=]\s*" + VALUE),
     "all"),
    ("Cassandra driver credentials", re.compile(
        r"PlainTextAuthProvider\(\s*(?:username\s*=\s*)?[\"'][^\"']*[\"']\s*,\s*(?:password\s*=\s*)?"
        r"(?P<value>\"[^\"\n]*\"|'[^'\n]*')"), "all"),
    ("CQL password literal", re.compile(r"(?i)\bPASSWORD\s*=\s*(?P<value>'[^'\n]*')"), "all"),
    ("password in a configuration file", re.compile(
        r"(?im)^[ \t]*(?:#[ \t]*)?(?:export[ \t]+)?[\"']?[\w.-]*(?:password|passwd|secret|api_?key|access_?key|"
        r"private_?key|auth_?token)[\"']?[ \t]*[:=][ \t]*" + VALUE), "configuration"),
)
KEYSTORE_SUFFIXES = {".jks", ".p12", ".pfx", ".keystore", ".truststore"}
PRIVATE_KEY_FILE_NAMES = {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"}
ALLOWED_ENVIRONMENT_FILES = {".env.example", ".env.sample", ".env.template"}
# Fake credentials that tests need, each allowed in one file only, with the reason.
ALLOWED_FINDINGS = {
    ("tests/test_settings.py", "MNIST secret setting", "s3cret"): "a made-up password for the parsing tests",
    ("tests/test_storage_auth.py", "MNIST secret setting", "not-the-password"): "a deliberately wrong password",
    ("tests/test_storage_auth.py", "MNIST secret setting", "cassandra"):
        "Cassandra's built-in superuser on the throwaway auth test node, running migrate as an administrator",
    ("tests/test_dashboard_login.py", "MNIST secret setting", "short"): "a password refused for its length",
    ("tests/test_settings.py", "MNIST secret setting", "k"): "a made-up key (twenty k's) for the file tests",
    ("tests/test_storage_auth.py", "Cassandra driver credentials", "cassandra"):
        "Cassandra's built-in superuser on the throwaway auth test node "
        "(127.0.0.9, MNIST_CASSANDRA_AUTH=1 in scripts/cassandra)",
}


def is_placeholder(value: str) -> bool:
    """Empty, a variable reference, a template slot or an ellipsis: not a secret."""
    value = value.strip().strip("\"'").strip()
    if not value or value.lower() in {"none", "null", "nil", "~", "true", "false"}:
        return True
    if value[0] in "$<@%{" or value.startswith("os.environ") or value.startswith("getenv"):
        return True
    return set(value) <= set(".*xX-_")


def is_configuration_file(path: str) -> bool:
    name = pathlib.PurePosixPath(path).name
    return (pathlib.PurePosixPath(path).suffix in CONFIGURATION_SUFFIXES or name in CONFIGURATION_NAMES
            or name.startswith(".env") or name.startswith("compose") or path.startswith("scripts/"))


def find_secrets(path: str, text: str | None) -> list[Finding]:
    """Credentials in one file: by its name (environment files, keystores, SSH keys) and by its text."""
    name = pathlib.PurePosixPath(path).name
    findings = []
    if (name == ".env" or name.startswith(".env.")) and name not in ALLOWED_ENVIRONMENT_FILES:
        findings.append(Finding(path, 0, "environment file", name))
    if pathlib.PurePosixPath(path).suffix.lower() in KEYSTORE_SUFFIXES:
        findings.append(Finding(path, 0, "keystore", name))
    if name in PRIVATE_KEY_FILE_NAMES or path.endswith(".streamlit/secrets.toml"):
        findings.append(Finding(path, 0, "credentials file", name))
    if text is None:
        return findings
    for rule, pattern, scope in CONTENT_RULES:
        if scope == "configuration" and not is_configuration_file(path):
            continue
        for match in pattern.finditer(text):
            value = match.groupdict().get("value") or match.group(0)
            quoted = value[:1] in "\"'"
            if "value" in match.groupdict():
                # In Python an unquoted value is a name (a variable), not a literal.
                if path.endswith(".py") and not quoted:
                    continue
                if is_placeholder(value):
                    continue
            findings.append(Finding(path, text.count("\n", 0, match.start()) + 1, rule, value.strip("\"'")))
    return findings


def scan_repository() -> list[Finding]:
    findings = []
    for path in repository_files():
        data = (REPOSITORY_ROOT / path).read_bytes()
        text = None if b"\0" in data[:8192] else data.decode("utf-8", errors="replace")
        findings.extend(find_secrets(path, text))
    return findings


def test_no_credentials_are_committed() -> None:
    findings = scan_repository()
    assert len(repository_files()) > 50
    leaks = [finding for finding in findings if (finding.path, finding.rule, finding.value) not in ALLOWED_FINDINGS]
    assert not leaks, "possible credentials (move them to the environment or st.secrets):\n" + "\n".join(map(str, leaks))
    # Each allowance is still needed, so the list stays as narrow as the tests it covers.
    used = {(finding.path, finding.rule, finding.value) for finding in findings}
    assert set(ALLOWED_FINDINGS) <= used, set(ALLOWED_FINDINGS) - used


# Fakes assembled at run time, so this file itself holds no match.
FAKE_PRIVATE_KEY = "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END " + "RSA PRIVATE KEY-----\n"
FAKE_AWS_KEY_ID = "AKIA" + "Z7EXAMPLEQ2W3E4R"
FAKE_PASSWORD = "Tr0ub4dor" + "-and-3"


@pytest.mark.parametrize(
    ("path", "text", "rule"),
    [
        ("deploy/server.pem", FAKE_PRIVATE_KEY, "private key"),
        ("bench/aws.py", f"KEY_ID = '{FAKE_AWS_KEY_ID}'\n", "AWS access key id"),
        ("scripts/run-prod", "export MNIST_CASSANDRA_" + f"PASSWORD={FAKE_PASSWORD}\n", "MNIST secret setting"),
        ("mnist_core/config.py", '{"MNIST_API_' + f'KEY": "{FAKE_PASSWORD}"}}\n', "MNIST secret setting"),
        ("compose.yaml", "    CASSANDRA_" + f"PASSWORD: {FAKE_PASSWORD}\n", "password in a configuration file"),
        ("cassandra/conf/cassandra.yaml", "  keystore_" + f"password: {FAKE_PASSWORD}\n", "password in a configuration file"),
        (".streamlit/config.toml", "# mnist_" + f'password = "{FAKE_PASSWORD}"\n', "password in a configuration file"),
        ("tests/test_new.py", "PlainTextAuthProvider(" + f"'app', '{FAKE_PASSWORD}')\n", "Cassandra driver credentials"),
        ("deploy/init.cql", "CREATE ROLE app WITH " + f"PASSWORD = '{FAKE_PASSWORD}';\n", "CQL password literal"),
        (".env", "", "environment file"),
        ("deploy/.env.production", "", "environment file"),
        ("deploy/keystore.jks", None, "keystore"),
        (".streamlit/secrets.toml", "", "credentials file"),
    ],
    ids=["pem", "aws", "shell-export", "python-dict", "compose", "cassandra-yaml", "commented-toml", "driver",
         "cql", "dotenv", "dotenv-production", "jks", "streamlit-secrets"],
)
def test_the_scanner_catches_fake_credentials(path: str, text: str | None, rule: str) -> None:
    assert rule in {finding.rule for finding in find_secrets(path, text)}


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("compose.yaml", "      MNIST_CASSANDRA_" + "PASSWORD: ${CASSANDRA_PASSWORD:?set it}\n"),
        (".env.example", "CASSANDRA_" + "PASSWORD=\n"),
        ("deploy/init.sh", 'admin_' + 'password="${ADMIN_PASSWORD:-}"\n'),
        ("tests/test_new.py", "settings_for(MNIST_CASSANDRA_" + "PASSWORD=APPLICATION_PASSWORD)\n"),
        ("README.md", "MNIST_CASSANDRA_" + "PASSWORD=... scripts/run-app\n"),
        ("cassandra/conf/cassandra.yaml", "num_tokens: 1\n"),
    ],
)
def test_the_scanner_lets_placeholders_and_references_pass(path: str, text: str) -> None:
    assert find_secrets(path, text) == []


def test_an_allowance_covers_one_file_only() -> None:
    (allowed_path, rule, value), = [key for key in ALLOWED_FINDINGS if key[2] == "s3cret"]
    moved = find_secrets("tests/test_other.py", '{"MNIST_CASSANDRA_' + f'PASSWORD": "{value}"}}')
    assert [(finding.path, finding.rule, finding.value) for finding in moved] == [("tests/test_other.py", rule, value)]
    assert ("tests/test_other.py", rule, value) not in ALLOWED_FINDINGS
