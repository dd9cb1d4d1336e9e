"""Security checks: CQL injection, the optional API key, body limits, XSRF, secrets in git, known vulnerabilities.

- CQL injection: text that reaches Cassandra is bound, never formatted into a statement.
  Hostile text is stored and read back literally (also second-order, through a correction),
  and a scan of ``mnist_core`` finds no query text built from values except the keyspace
  name, which is validated first.
- The REST API key (``MNIST_API_KEY``): without it the API stays open as before; with it,
  /api/predict and /api/stats answer 401 and store nothing unless the key comes as
  ``X-API-Key`` or ``Authorization: Bearer``; /api/health stays open, its internals (error
  sentences naming hosts and roles) only for a caller with the key.
- Bodies over the limit: 413 with nothing stored. tests/test_rest_api.py checks the message
  for a declared length and tests/test_fuzz_rest_api.py sends many such bodies; here the
  chunked case and "nothing stored" are checked without relying on chance.
- XSRF protection stays on for the Streamlit server (the upload box posts through it), and
  an unexpected error shows users a generic sentence, never its message or a traceback.
- No credentials in the files git tracks or would add; the scanner proves it catches fakes.
- No known vulnerability in requirements.txt, with evidence for every pin: pip-audit (OSV or
  PyPI's per-release JSON) where it can audit the pin, else PyPI's per-project JSON, whose
  advisories are those of the latest release and so vouch only for a pin that is that release
  (tests/dependency_audit.py). A pin nothing could check fails the test, unless it is the
  newest release that runs on this Python (nothing to upgrade to): that pin is named in a
  warning as unaudited.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import os
import pathlib
import platform
import re
import secrets
import subprocess
import sys
import types
import tomllib
import warnings

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mnist_core import rest_api
from mnist_core.settings import Replication, settings_from_mapping
from tests import dependency_audit
from tests.conftest import REPOSITORY_ROOT, build_record
from tests.dependency_audit import Pin, PipAuditRun
from tests.stored_rows import slot_of

# ---------------------------------------------------------------------------------------
# CQL injection
# ---------------------------------------------------------------------------------------

HOSTILE_TEXTS = (
    "'); DROP TABLE predictions_by_day; --",
    "x' OR '1'='1",
    "v1'; TRUNCATE predictions_by_day; //",
    "$$; DROP KEYSPACE mnist; $$",
    "\"; DELETE FROM predictions_by_day WHERE day = '2026-01-01'; /*",
    "model\\'); INSERT INTO predictions_by_day (day) VALUES ('2026-01-01'); --",
    "名前'); DROP TABLE x; -- \u202e",
)


def keyspace_tables(raw_session, keyspace: str) -> set[str]:
    rows = raw_session.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))
    return {row.table_name for row in rows}


@pytest.mark.cassandra
def test_hostile_text_is_stored_and_read_back_literally(store, raw_session) -> None:
    keyspace = store.settings.cassandra_keyspace
    store.latest(1)  # connects and applies the schema
    tables_before = keyspace_tables(raw_session, keyspace)
    records = [build_record(digit=index % 10, model_version=text) for index, text in enumerate(HOSTILE_TEXTS)]
    for record in records:
        store.store(record)

    store.flush()
    read_back = {record.id: record for record in store.latest(100)}
    for record in records:
        assert read_back[record.id] == record, record.model_version
    assert keyspace_tables(raw_session, keyspace) == tables_before
    stored = {row.model_version for row in raw_session.execute(f"SELECT model_version FROM {keyspace}.predictions_by_slot")}
    assert set(HOSTILE_TEXTS) <= stored


@pytest.mark.cassandra
def test_hostile_text_read_from_cassandra_is_bound_again_when_a_correction_copies_it(store, raw_session) -> None:
    """write_correction reads the prediction's model_version back and writes it into corrections_by_slot."""
    keyspace = store.settings.cassandra_keyspace
    record = build_record(digit=4, model_version=HOSTILE_TEXTS[0])
    store.store(record)
    store.record_correction(record.id, 9)
    store.flush()

    day = record.created_at.date()
    accuracy = store.accuracy(start=day - datetime.timedelta(days=1), end=day + datetime.timedelta(days=1))
    assert accuracy.corrections >= 1
    copied = raw_session.execute(
        f"SELECT model_version, true_label FROM {keyspace}.corrections_by_slot WHERE slot_start = %s "
        "AND prediction_id = %s", (slot_of(record.created_at), record.id),
    ).one()
    assert (copied.model_version, copied.true_label) == (HOSTILE_TEXTS[0], 9)
    assert "predictions_by_slot" in keyspace_tables(raw_session, keyspace)


@pytest.mark.parametrize("field", ["source", "number"])
def test_the_other_text_fields_refuse_anything_but_their_values(field: str) -> None:
    """source is one of three names and number only digits, so hostile text cannot even reach a statement."""
    with pytest.raises(ValueError, match=field):
        build_record(**{field: HOSTILE_TEXTS[0]})


@dataclasses.dataclass(frozen=True)
class BuiltQuery:
    """A place in mnist_core where query text (CQL or SQL) is built from something other than literals."""

    path: str
    function: str
    how: str
    line: int


QUERY_VERBS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|TRUNCATE|GRANT|REVOKE|BATCH|USE)\b")
# The only values ever formatted into statements: the keyspace name (and, for CREATE KEYSPACE,
# the replication map made from validated settings). Cassandra cannot bind identifiers.
ALLOWED_BUILT_QUERIES = {
    ("mnist_core/storage/repository.py", "_prepare", "query.format(keyspace=...)"),
    ("mnist_core/storage/migrations.py", "create_keyspace", "f-string with {keyspace}, {replication.as_cql_map()}"),
    # Names cannot be bound; both functions validate the keyspace (and role) name first.
    ("mnist_core/storage/migrations.py", "_versions_not_applied", "f-string with {keyspace}"),
    ("mnist_core/storage/migrations.py", "grant_reading_and_writing", "f-string with {keyspace}, {role}"),
}


def _literal_text(node: ast.AST) -> str:
    """The literal parts of a string expression (the text between the placeholders of an f-string)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal_text(value) for value in node.values)
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) + _literal_text(node.right)
    return ""


def built_queries(path: pathlib.Path, root: pathlib.Path = REPOSITORY_ROOT) -> list[BuiltQuery]:
    """f-strings, str.format, % and + that produce text containing a query verb, with their enclosing function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    relative = path.relative_to(root).as_posix()
    found: list[BuiltQuery] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        how = None
        if isinstance(node, ast.JoinedStr) and QUERY_VERBS.search(_literal_text(node)):
            placeholders = ", ".join("{" + ast.unparse(value.value) + "}" for value in node.values
                                     if isinstance(value, ast.FormattedValue))
            how = f"f-string with {placeholders}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            receiver = node.func.value
            if not isinstance(receiver, ast.Constant) or QUERY_VERBS.search(_literal_text(receiver)):
                arguments = [ast.unparse(argument) for argument in node.args]
                arguments += [f"{keyword.arg}=..." for keyword in node.keywords]
                how = f"{ast.unparse(receiver)}.format({', '.join(arguments)})"
        elif (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add))
              and QUERY_VERBS.search(_literal_text(node))
              and not (_is_literal(node.left) and _is_literal(node.right))):
            how = f"{type(node.op).__name__} on query text"
        if how is not None:
            found.append(BuiltQuery(relative, function, how, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp):
        return _is_literal(node.left) and _is_literal(node.right)
    return isinstance(node, ast.Constant)


def test_no_query_text_is_built_from_values() -> None:
    modules = sorted((REPOSITORY_ROOT / "mnist_core").rglob("*.py"))
    assert len(modules) > 10
    found = [query for path in modules for query in built_queries(path)]
    unexpected = [query for query in found if (query.path, query.function, query.how) not in ALLOWED_BUILT_QUERIES]
    assert not unexpected, "query text built from values (bind them with ? or %s instead):\n" + "\n".join(map(str, unexpected))
    # Each allowed place is still there: otherwise the list above hides nothing and should shrink.
    assert {(query.path, query.function, query.how) for query in found} == ALLOWED_BUILT_QUERIES


def test_the_scan_notices_a_value_formatted_into_a_query(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def latest(session, version):\n"
        "    session.execute(f\"SELECT * FROM predictions_by_day WHERE model_version = '{version}'\")\n"
        "    session.execute(\"DELETE FROM t WHERE id = %s\" % version)\n"
        "    session.execute(\"UPDATE t SET v = 1 WHERE id = \" + version)\n"
        "    session.execute(\"SELECT * FROM {table} WHERE id = ?\".format(table=version), (version,))\n"
        "    session.execute(\"SELECT * FROM t WHERE id = ?\", (version,))\n"
        "    raise ValueError(f\"No prediction has the id {version}.\")\n"
    )
    found = built_queries(sample, root=tmp_path)
    assert [(query.function, query.line) for query in found] == [("latest", 2), ("latest", 3), ("latest", 4), ("latest", 5)]


def test_the_formatted_identifiers_are_validated_before_use() -> None:
    """The keyspace and the replication map are the only formatted parts; hostile values never get that far."""
    from mnist_core.storage import migrations
    from mnist_core.storage.repository import PredictionRepository

    class NoSession:
        def __getattr__(self, name):
            raise AssertionError(f"the session was used ({name}) before the keyspace name was checked")

    hostile_keyspace = "mnist; DROP KEYSPACE mnist"
    with pytest.raises(ValueError, match="keyspace"):
        PredictionRepository(NoSession(), keyspace=hostile_keyspace, request_timeout_seconds=1.0)
    with pytest.raises(ValueError, match="keyspace"):
        migrations.create_keyspace(NoSession(), keyspace=hostile_keyspace, replication=Replication.parse("1"))
    with pytest.raises(ValueError, match="MNIST_CASSANDRA_KEYSPACE"):
        settings_from_mapping({"MNIST_CASSANDRA_KEYSPACE": hostile_keyspace})
    for text in ("dc1=3}; DROP KEYSPACE mnist; --", "SimpleStrategy:1}; DROP", "dc'1=3"):
        with pytest.raises(ValueError, match="MNIST_CASSANDRA_REPLICATION"):
            Replication.parse(text)


# ---------------------------------------------------------------------------------------
# The optional API key
# ---------------------------------------------------------------------------------------

API_KEY = secrets.token_urlsafe(32)
SHORT_KEY = API_KEY[:15]


def test_the_api_key_setting_is_optional_validated_and_never_shown() -> None:
    assert settings_from_mapping({}).api_key is None
    assert settings_from_mapping({"MNIST_API_KEY": "  "}).api_key is None
    configured = settings_from_mapping({"MNIST_API_KEY": f" {API_KEY} "})
    assert configured.api_key == API_KEY
    assert API_KEY not in repr(configured)
    with pytest.raises(ValueError, match="MNIST_API_KEY must be at least 16 characters") as too_short:
        settings_from_mapping({"MNIST_API_KEY": SHORT_KEY})
    assert SHORT_KEY not in str(too_short.value)
    with pytest.raises(ValueError, match="visible ASCII"):
        settings_from_mapping({"MNIST_API_KEY": API_KEY[:10] + " " + API_KEY[10:]})
    with pytest.raises(ValueError, match="visible ASCII"):
        settings_from_mapping({"MNIST_API_KEY": API_KEY + "é"})


class StoreThatMustNotBeUsed:
    """Stands in for the store where a request must be refused before anything is read or written."""

    def __getattr__(self, name):
        raise AssertionError(f"the store was used ({name}) for a request that should have been refused")


class RecognizerThatMustNotBeUsed:
    model_version = "never-loaded"


def routes_without_storage(**options) -> Starlette:
    return Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: RecognizerThatMustNotBeUsed(),
        get_store=lambda: StoreThatMustNotBeUsed(),
        default_timezone="UTC",
        **options,
    ))


@pytest.fixture
def guarded_client():
    with TestClient(routes_without_storage(api_key=API_KEY, max_body_bytes=64 * 1024)) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": API_KEY[:-1]},
        {"X-API-Key": API_KEY + "x"},
        {"X-API-Key": API_KEY.swapcase()},
        {"Authorization": f"Bearer {API_KEY[1:]}"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
        {"Authorization": "Bearer"},
        {"X-API-Key": "é".encode().decode("latin-1") * 20},
    ],
    ids=["none", "empty", "shorter", "longer", "other-case", "wrong-bearer", "basic-scheme", "no-scheme",
         "bearer-without-key", "non-ascii"],
)
def test_a_missing_or_wrong_key_is_401_and_nothing_is_read_or_stored(guarded_client, headers) -> None:
    sent = {name: value.encode("latin-1") for name, value in headers.items()}
    for response in (
        guarded_client.post("/api/predict", content=b"\x89PNG\r\n\x1a\n", headers=sent),
        guarded_client.get("/api/stats", headers=sent),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_key_is_checked_before_the_body_is_read(guarded_client) -> None:
    """An oversized body without the key is refused for the key (401), not read up to the limit (413)."""
    response = guarded_client.post("/api/predict", content=bytes(1024 * 1024))
    assert response.status_code == 401


def test_the_key_can_be_read_per_request() -> None:
    """Home.py passes a callable, so the key comes from settings once Streamlit's secrets are loaded."""
    current = {"key": None}
    with TestClient(routes_without_storage(api_key=lambda: current["key"])) as client:
        assert client.post("/api/predict", content=b"").status_code == 400  # open: the empty body is the problem
        current["key"] = API_KEY
        assert client.post("/api/predict", content=b"").status_code == 401
        assert client.post("/api/predict", content=b"", headers={"X-API-Key": API_KEY}).status_code == 400


def test_health_stays_open_with_a_key() -> None:
    class ConnectedStore:
        def status(self):
            from mnist_core.storage import StorageStatus

            return StorageStatus(state="connected", pending=0, message="Connected to Cassandra.")

    application = Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: RecognizerThatMustNotBeUsed(), get_store=lambda: ConnectedStore(), api_key=API_KEY))
    with TestClient(application) as client:
        response = client.get("/api/health")
    assert response.status_code == 200 and response.json()["status"] == "ok", response.text


@pytest.fixture(scope="module")
def digit_png(mnist) -> bytes:
    import io

    from PIL import Image

    from train.drawings import redraw

    canvas = redraw(mnist.test_images[0], "fill", np.random.default_rng(1))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.cassandra
def test_with_the_right_key_predictions_are_answered_and_stored_and_without_it_none(
    recognizer, store, raw_session, digit_png
) -> None:
    keyspace = store.settings.cassandra_keyspace
    application = Starlette(routes=rest_api.create_routes(
        get_recognizer=lambda: recognizer, get_store=lambda: store, default_timezone="UTC", api_key=API_KEY))
    with TestClient(application) as client:
        assert client.get("/api/health").status_code == 200  # open, and connects the store
        rows_before = {row.id for row in raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot")}
        refused = [
            client.post("/api/predict", content=digit_png),
            client.post("/api/predict", content=digit_png, headers={"X-API-Key": API_KEY[::-1]}),
            client.post("/api/predict", content=digit_png, headers={"Authorization": f"Bearer {SHORT_KEY}"}),
        ]
        assert [response.status_code for response in refused] == [401, 401, 401]
        rows_after_refusals = {row.id for row in raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot")}
        assert rows_after_refusals == rows_before

        answered = [
            client.post("/api/predict", content=digit_png, headers={"X-API-Key": API_KEY}),
            client.post("/api/predict", content=digit_png, headers={"Authorization": f"Bearer {API_KEY}"}),
            client.post("/api/predict", content=digit_png, headers={"authorization": f"bearer  {API_KEY} "}),
        ]
        assert [response.status_code for response in answered] == [200, 200, 200], [r.text for r in answered]
        store.flush()
        stats = client.get("/api/stats", headers={"X-API-Key": API_KEY})
        assert stats.status_code == 200 and stats.json()["total"] >= 3
    rows_after = {str(row.id) for row in raw_session.execute(f"SELECT id FROM {keyspace}.predictions_by_slot")}
    assert rows_after == {str(row_id) for row_id in rows_before} | {response.json()["id"] for response in answered}


def test_home_wires_the_api_key_from_the_settings() -> None:
    """Import Home.py as the server does (in a child process: st.App pins process-wide Streamlit state)."""
    probe = (
        "import Home\n"
        "from starlette.applications import Starlette\n"
        "from starlette.testclient import TestClient\n"
        "client = TestClient(Starlette(routes=Home.app._user_routes))\n"
        "print(client.post('/api/predict', content=b'').status_code)\n"
    )
    answers = {}
    for label, key in (("open", None), ("keyed", API_KEY)):
        environment = {name: value for name, value in os.environ.items() if name != "MNIST_API_KEY"}
        if key is not None:
            environment["MNIST_API_KEY"] = key
        result = subprocess.run([sys.executable, "-c", probe], cwd=REPOSITORY_ROOT, env=environment,
                                capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        answers[label] = result.stdout.strip().splitlines()[-1]
    assert answers == {"open": "400", "keyed": "401"}


# ---------------------------------------------------------------------------------------
# Bodies over the limit
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413_and_nothing_is_read_or_stored(chunked: bool) -> None:
    limit = 64 * 1024
    body = b"\x89PNG\r\n\x1a\n" + bytes(limit)
    content = iter([body[start:start + 8192] for start in range(0, len(body), 8192)]) if chunked else body
    with TestClient(routes_without_storage(max_body_bytes=limit)) as client:
        response = client.post("/api/predict", content=content, headers={"Content-Type": "image/png"})
    assert response.status_code == 413, response.text
    assert "64 kB" in response.json()["error"]


# ---------------------------------------------------------------------------------------
# XSRF
# ---------------------------------------------------------------------------------------

XSRF_OFF = re.compile(
    r"(?i)(enable_?xsrf_?protection[\"']?\s*[=:]\s*[\"']?false|--server\.enableXsrfProtection[= ]+false"
    r"|STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION\s*[=:]\s*[\"']?(false|0))"
)


def test_xsrf_protection_is_on_in_the_streamlit_configuration() -> None:
    configuration = tomllib.loads((REPOSITORY_ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    server = configuration["server"]
    assert server.get("enableXsrfProtection") is True
    # Streamlit turns CORS back on when XSRF protection is on; a config asking for both off would be a change of policy.
    assert server.get("enableCORS", True) is not False


def test_users_never_see_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(REPOSITORY_ROOT)
    configuration = tomllib.loads((REPOSITORY_ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert configuration["client"]["showErrorDetails"] == "none"
    # A page that fails unexpectedly, run with the project's configuration (read from the working
    # directory, as `streamlit run` does): the user sees a generic sentence, not the error or a path.
    app = AppTest.from_string("raise RuntimeError('cannot open /srv/secret/model.tflite')")
    app.run()
    shown = " ".join(str(element.message) + " " + str(getattr(element, "stack_trace", "")) for element in app.exception)
    assert app.exception and "redacted" in shown
    assert "/srv/secret" not in shown and "RuntimeError" not in shown


def test_no_file_turns_xsrf_protection_off() -> None:
    offenders = [
        f"{path}:{line_number}"
        for path, text in repository_text_files()
        if path != "tests/test_security.py"
        for line_number, line in enumerate(text.splitlines(), 1)
        if XSRF_OFF.search(line)
    ]
    assert not offenders, offenders


def test_streamlit_reads_xsrf_protection_as_on() -> None:
    """What Streamlit itself makes of the repository's configuration (cwd = the repository, as scripts/run-app runs it)."""
    probe = (
        "from streamlit import config\n"
        "config.get_config_options(force_reparse=True)\n"
        "print(config.get_option('server.enableXsrfProtection'), config.get_option('server.maxUploadSize'))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPOSITORY_ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["True", "2"]


# ---------------------------------------------------------------------------------------
# Secrets in git
# ---------------------------------------------------------------------------------------


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


def repository_files() -> list[str]:
    """Files git tracks, plus new files it would add (untracked and not ignored): what a commit could publish."""
    result = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPOSITORY_ROOT,
                            capture_output=True, check=True, timeout=60)
    return sorted({path for path in result.stdout.decode().split("\0") if path and (REPOSITORY_ROOT / path).is_file()})


def repository_text_files() -> list[tuple[str, str]]:
    texts = []
    for path in repository_files():
        data = (REPOSITORY_ROOT / path).read_bytes()
        if b"\0" not in data[:8192]:
            texts.append((path, data.decode("utf-8", errors="replace")))
    return texts


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


# ---------------------------------------------------------------------------------------
# Known vulnerabilities in the pinned runtime dependencies
# ---------------------------------------------------------------------------------------

PIP_AUDIT = pathlib.Path(sys.executable).with_name("pip-audit")


@pytest.mark.parametrize("file_name", ["requirements.txt", "requirements-train.txt"])
def test_requirements_have_no_known_vulnerabilities(tmp_path: pathlib.Path, file_name: str) -> None:
    """pip-audit (OSV or PyPI per release), else PyPI's advisories for the latest release; no evidence fails."""
    assert PIP_AUDIT.exists(), f"{PIP_AUDIT} is missing: install requirements-dev.txt"
    requirements = REPOSITORY_ROOT / file_name
    runs, verdicts = dependency_audit.audit_requirements(PIP_AUDIT, requirements, tmp_path / "pip-audit-cache")
    assert len(verdicts) == len(dependency_audit.read_pins(requirements)) >= 2
    evidence = "\n".join(f"  {verdict.pin}: {verdict.evidence}" for verdict in verdicts)
    summary = f"{dependency_audit.describe_runs(runs)}\nevidence per pin:\n{evidence}"
    problems = [problem for verdict in verdicts for problem in verdict.problems]
    if problems:
        pytest.fail(f"{file_name} has known vulnerabilities or pins nothing could check:\n"
                    + "\n".join(problems) + "\n\n" + summary, pytrace=False)
    unaudited = [verdict.unaudited_reason for verdict in verdicts if verdict.unaudited_reason]
    if unaudited:
        warnings.warn("Pins left unaudited here: " + " ".join(unaudited), stacklevel=1)
    print(summary)  # shown with -rP: which source vouched for each pin


def fake_project(version: str, vulnerabilities: list[dict] | None = None, requires_python: str = ">=3.11") -> dict:
    """The parts of PyPI's per-project JSON that the fallback reads."""
    return {"info": {"version": version, "requires_python": requires_python}, "vulnerabilities": vulnerabilities or []}


def fake_advisory(advisory_id: str, fixed_in: list[str], withdrawn: str | None = None) -> dict:
    return {"id": advisory_id, "aliases": ["CVE-2099-0001"], "fixed_in": fixed_in, "withdrawn": withdrawn,
            "summary": "made up for the test"}


UNREACHABLE_OSV = PipAuditRun("osv", None, "exit 1: Failed to resolve 'api.osv.dev'")


def skipped_everything(*pins: Pin) -> PipAuditRun:
    """pip-audit's pypi report when the per-release JSON answers 404 for every pin (as on this machine)."""
    return PipAuditRun("pypi", {"dependencies": [
        {"name": pin.name, "skip_reason": f"Dependency not found on PyPI and could not be audited: {pin.name} "
                                          f"({pin.version})"} for pin in pins], "fixes": []})


def test_the_fallback_vouches_for_a_clean_latest_pin_and_fails_every_pin_without_evidence() -> None:
    clean_latest, vulnerable_latest, older, unreadable = (
        Pin("Clean_Package", "2.0"), Pin("vulnerable", "1.4.0"), Pin("older", "2.4.6"), Pin("unreadable", "1.0"))
    pins = [clean_latest, vulnerable_latest, older, unreadable]
    projects = {
        "clean-package": fake_project("2.0.0", [fake_advisory("PYSEC-2099-2", ["1.9"], withdrawn="2099-01-02")]),
        "vulnerable": fake_project("1.4.0", [fake_advisory("GHSA-aaaa-bbbb-cccc", ["1.4.1"]),
                                             fake_advisory("PYSEC-2099-3", [])]),
        "older": fake_project("2.5.5", requires_python=">=3.99"),
        "unreadable": "https://pypi.org/pypi/unreadable/json: HTTP Error 503",
    }
    verdicts = {verdict.pin: verdict for verdict in dependency_audit.decide(
        pins, [UNREACHABLE_OSV, skipped_everything(*pins)], projects)}

    # Latest release without advisories (a withdrawn one does not count): evidence, no problem.
    assert verdicts[clean_latest].problems == ()
    assert verdicts[clean_latest].evidence == "PyPI project JSON (latest release 2.0.0)"
    # Latest release with advisories: each listed with its id and fixed versions.
    assert verdicts[vulnerable_latest].problems == (
        "vulnerable==1.4.0: GHSA-aaaa-bbbb-cccc (CVE-2099-0001), fixed in 1.4.1 (PyPI project JSON)",
        "vulnerable==1.4.0: PYSEC-2099-3 (CVE-2099-0001), fixed in no fixed release yet (PyPI project JSON)",
    )
    # Not the latest release: PyPI's list says nothing about it, so it fails with what to do.
    (message,) = verdicts[older].problems
    assert message.startswith("older==2.4.6 could not be checked")
    assert "latest release 2.5.5 (which needs Python >=3.99" in message
    assert "Upgrade the pin to 2.5.5, or run this test where https://api.osv.dev is reachable." in message
    # PyPI could not be read either: no evidence, a failure.
    (message,) = verdicts[unreadable].problems
    assert "unreadable==1.0 could not be checked" in message and "HTTP Error 503" in message
    # A pin PyPI was not even asked about is no pass either.
    (missing,) = dependency_audit.decide([Pin("absent", "1.0")], [UNREACHABLE_OSV], {})
    assert missing.problems and missing.evidence == "none"


def test_a_pin_with_no_newer_release_for_this_python_is_named_unaudited_not_failed() -> None:
    here = platform.python_version()
    stuck, upgradable = Pin("stuck", "2.4.6"), Pin("upgradable", "2.4.5")
    releases = {
        "2.4.5": [{"requires_python": ">=3.10", "yanked": False}],
        "2.4.6": [{"requires_python": ">=3.10", "yanked": False}],
        "2.4.7rc1": [{"requires_python": ">=3.10", "yanked": False}],
        "2.5.5": [{"requires_python": ">=3.99", "yanked": False}],
    }
    projects = {name: {**fake_project("2.5.5", requires_python=">=3.99"), "releases": releases}
                for name in ("stuck", "upgradable")}
    verdicts = {verdict.pin: verdict for verdict in dependency_audit.decide(
        [stuck, upgradable], [UNREACHABLE_OSV, skipped_everything(stuck, upgradable)], projects)}

    assert verdicts[stuck].problems == ()
    assert f"newest release for Python {here}" in verdicts[stuck].unaudited_reason
    # An older pin could be upgraded to 2.4.6 on this Python: without evidence it still fails.
    assert verdicts[upgradable].problems and not verdicts[upgradable].unaudited_reason


def test_what_pip_audit_audited_decides_without_pypi() -> None:
    clean_older, vulnerable_older = Pin("clean", "1.0"), Pin("tensorflow_cpu", "2.20.0")
    osv_report = PipAuditRun("osv", {"dependencies": [
        {"name": "clean", "version": "1.0", "vulns": []},
        {"name": "tensorflow-cpu", "version": "2.20.0", "vulns": [
            {"id": "PYSEC-2099-7", "aliases": ["GHSA-dddd-eeee-ffff"], "fix_versions": ["2.20.1", "2.21.0"]}]},
    ], "fixes": []})
    runs = [osv_report, skipped_everything(clean_older, vulnerable_older)]
    assert dependency_audit.pins_pip_audit_missed([clean_older, vulnerable_older], runs) == []
    # Older than the latest releases below, yet audited, so PyPI's project JSON is not consulted.
    projects = {"clean": fake_project("9.0"), "tensorflow-cpu": fake_project("9.0")}
    clean, vulnerable = dependency_audit.decide([clean_older, vulnerable_older], runs, projects)
    assert (clean.evidence, clean.problems) == ("pip-audit (osv)", ())
    assert vulnerable.problems == (
        "tensorflow_cpu==2.20.0: PYSEC-2099-7 (GHSA-dddd-eeee-ffff), fixed in 2.20.1, 2.21.0 (pip-audit, osv)",)
    # An entry for another version is not an audit of the pin.
    assert dependency_audit.pins_pip_audit_missed([Pin("clean", "1.1")], runs) == [Pin("clean", "1.1")]


def test_only_exact_pins_are_audited(tmp_path: pathlib.Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy==2.4.6\n\nscipy==1.17.1  # why\n")
    assert dependency_audit.read_pins(requirements) == [Pin("numpy", "2.4.6"),
                                                        Pin("scipy", "1.17.1")]
    requirements.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        dependency_audit.read_pins(requirements)


def test_health_tells_its_internals_only_to_a_caller_with_the_key() -> None:
    class BrokenStore:
        def status(self):
            from mnist_core.storage import StorageStatus

            return StorageStatus(state="degraded", pending=3,
                                 message="Cassandra at cassandra-7.internal (10.2.3.4:9042) refused role 'mnist_app'.",
                                 warnings=("replication drift on 10.2.3.4",))

    def routes(api_key):
        return rest_api.create_routes(get_recognizer=lambda: types.SimpleNamespace(model_version="m1"),
                                      get_store=lambda: BrokenStore(), api_key=api_key)

    for api_key, headers in ((None, {}), (API_KEY, {}), (API_KEY, {"X-API-Key": "wrong-" + API_KEY})):
        with TestClient(Starlette(routes=routes(api_key)), headers=headers) as client:
            answer = client.get("/api/health")
        assert answer.status_code == 200
        assert answer.json()["storage"] == {"state": "degraded", "pending": 3, "dead_letters": 0,
                                            "other_target_pending": 0}
        assert "10.2.3.4" not in answer.text and "mnist_app" not in answer.text
    with TestClient(Starlette(routes=routes(API_KEY)), headers={"X-API-Key": API_KEY}) as client:
        detailed = client.get("/api/health").json()
    assert "10.2.3.4" in detailed["storage"]["message"] and detailed["storage"]["warnings"]


@pytest.mark.cassandra
@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},  # a form on another site, today's browsers
    {"Origin": "https://evil.example"},  # a browser that does not send Sec-Fetch-Site
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Sec-Fetch-Site": "same-site"},  # another app on a sibling subdomain
], ids=["cross-site", "other-origin", "opaque-origin", "same-site"])
def test_a_form_posted_from_another_site_is_refused_and_stores_nothing(headers, recognizer, store, mnist) -> None:
    from tests.test_rest_api import digit_pngs

    (body,) = digit_pngs(recognizer, mnist, 1, seed=11)
    application = Starlette(routes=rest_api.create_routes(get_recognizer=lambda: recognizer, get_store=lambda: store))
    known = {record.id for record in store.latest(100)}
    with TestClient(application, base_url="http://digits.example:8501") as client:
        refused = client.post("/api/predict", files={"image": ("digit.png", body, "image/png")}, headers=headers)
        text_plain = client.post("/api/predict", content=body, headers={**headers, "Content-Type": "text/plain"})
        same_origin = client.post("/api/predict", files={"image": ("digit.png", body, "image/png")},
                                  headers={"Origin": "http://digits.example:8501", "Sec-Fetch-Site": "same-origin"})
        script = client.post("/api/predict", content=body)  # curl and scripts send no Origin
        # Behind a proxy that terminates TLS the Origin's scheme differs; the browser's verdict holds.
        proxied = client.post("/api/predict", files={"image": ("digit.png", body, "image/png")},
                              headers={"Origin": "https://digits.example", "Sec-Fetch-Site": "same-origin"})
    assert refused.status_code == 403 and "refused" in refused.json()["error"]
    assert text_plain.status_code == 403
    assert same_origin.status_code == 200, same_origin.text
    assert script.status_code == 200, script.text
    assert proxied.status_code == 200, proxied.text
    store.flush()
    stored = [record for record in store.latest(100) if record.id not in known]
    assert sorted(str(record.id) for record in stored) == sorted(
        answer.json()["id"] for answer in (same_origin, script, proxied))
