"""CQL injection: text that reaches Cassandra is bound, never formatted into a statement.

Hostile text is stored and read back literally (also second-order, through a correction), and a
scan of ``mnist_core`` finds no query text built from values except the keyspace name, which is
validated first.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import pathlib
import re

import pytest

from harness.stored_rows import slot_of
from mnist_core.settings import Replication, settings_from_mapping
from tests.conftest import REPOSITORY_ROOT, build_record

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
