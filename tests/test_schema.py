"""The versioned schema files: applied once, recorded, idempotent, and each table says what query it serves."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from mnist_core.settings import Replication
from mnist_core.storage import SchemaMigrationError, migrations

pytestmark = pytest.mark.cassandra


def _schema_snapshot(session, keyspace: str):
    tables = session.execute(
        "SELECT table_name, comment, gc_grace_seconds, default_time_to_live FROM system_schema.tables WHERE keyspace_name = %s",
        (keyspace,),
    )
    columns = session.execute(
        "SELECT table_name, column_name, type, kind, position, clustering_order FROM system_schema.columns "
        "WHERE keyspace_name = %s",
        (keyspace,),
    )
    return sorted(map(tuple, tables)), sorted(map(tuple, columns))


SINGLE_NODE = Replication(strategy="SimpleStrategy", replication_factor=1)


@pytest.fixture(scope="module")
def cluster(cassandra_node, module_keyspace: str):
    """A driver cluster, with the module's keyspace already migrated once."""
    from cassandra.cluster import Cluster

    driver_cluster = Cluster([cassandra_node], protocol_version=5)
    migrations.apply_migrations(driver_cluster, keyspace=module_keyspace, replication=SINGLE_NODE)
    yield driver_cluster
    driver_cluster.shutdown()


def test_a_fresh_keyspace_gets_every_file_in_order(cluster, raw_session, module_keyspace: str) -> None:
    fresh_keyspace = f"{module_keyspace}_fresh"
    try:
        applied = migrations.apply_migrations(cluster, keyspace=fresh_keyspace, replication=SINGLE_NODE)
        assert applied == [migration.version for migration in migrations.load_migrations()]
        assert applied == sorted(applied)
    finally:
        raw_session.execute(f"DROP KEYSPACE IF EXISTS {fresh_keyspace}", timeout=60)


def test_migration_run_twice_changes_nothing(cluster, raw_session, module_keyspace: str) -> None:
    # The fixture ran the migrations once already; this is the second run.
    replication = SINGLE_NODE
    assert migrations.apply_migrations(cluster, keyspace=module_keyspace, replication=replication) == []
    snapshot_after_first = _schema_snapshot(raw_session, module_keyspace)
    records_after_first = sorted(
        map(tuple, raw_session.execute(f"SELECT version, name, checksum, applied_at FROM {module_keyspace}.schema_migrations"))
    )

    third = migrations.apply_migrations(cluster, keyspace=module_keyspace, replication=replication)

    assert third == []
    assert _schema_snapshot(raw_session, module_keyspace) == snapshot_after_first
    records_after_second = sorted(
        map(tuple, raw_session.execute(f"SELECT version, name, checksum, applied_at FROM {module_keyspace}.schema_migrations"))
    )
    assert records_after_second == records_after_first
    assert [record[0] for record in records_after_first] == [
        migration.version for migration in migrations.load_migrations()
    ]


def test_keyspace_uses_the_configured_replication(raw_session, module_keyspace: str) -> None:
    row = raw_session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (module_keyspace,)
    ).one()
    assert row.replication["class"].endswith("SimpleStrategy")
    assert row.replication["replication_factor"] == "1"


def test_tables_are_named_by_key_and_say_what_they_serve(raw_session, module_keyspace: str) -> None:
    tables, _ = _schema_snapshot(raw_session, module_keyspace)
    names = {table[0] for table in tables}
    assert {"predictions_by_slot", "prediction_digits_by_slot", "digit_counts_by_day", "count_slots_to_refresh_by_day",
            "corrections_by_slot", "prediction_slots_by_day"} <= names
    for name, comment, *_ in tables:
        assert name == "schema_migrations" or "_by_" in name, name
        assert comment.startswith("Serves:"), f"{name} has no 'Serves:' comment"


def test_time_series_are_newest_first(raw_session, module_keyspace: str) -> None:
    clustering = {
        (row.table_name, row.column_name): row.clustering_order
        for row in raw_session.execute(
            "SELECT table_name, column_name, clustering_order FROM system_schema.columns WHERE keyspace_name = %s",
            (module_keyspace,),
        )
    }
    assert clustering[("predictions_by_slot", "created_at")] == "desc"
    assert clustering[("digit_counts_by_day", "slot_start")] == "desc"


def test_an_edited_applied_file_stops_start_up(cluster, module_keyspace: str, tmp_path: pathlib.Path) -> None:
    edited_directory = tmp_path / "schema"
    shutil.copytree(migrations.SCHEMA_DIRECTORY, edited_directory)
    predictions_file = next(edited_directory.glob("001_*.cql"))
    predictions_file.write_text(predictions_file.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(SchemaMigrationError, match="changed after it was applied"):
        migrations.apply_migrations(
            cluster,
            keyspace=module_keyspace,
            replication=SINGLE_NODE,
            directory=edited_directory,
        )


def test_a_new_file_is_applied_on_the_next_start(cluster, raw_session, module_keyspace: str, tmp_path: pathlib.Path) -> None:
    extended_directory = tmp_path / "schema"
    shutil.copytree(migrations.SCHEMA_DIRECTORY, extended_directory)
    (extended_directory / "900_scratch.cql").write_text(
        "-- Serves: nothing; a test table.\n"
        "CREATE TABLE IF NOT EXISTS scratch_by_id (id int PRIMARY KEY) WITH comment = 'Serves: this test';\n"
    )
    applied = migrations.apply_migrations(
        cluster,
        keyspace=module_keyspace,
        replication=SINGLE_NODE,
        directory=extended_directory,
    )
    assert applied == [900]
    assert raw_session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = 'scratch_by_id'",
        (module_keyspace,),
    ).one() is not None
