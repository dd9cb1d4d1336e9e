"""Applies the versioned CQL files in ``mnist_core/schema`` at start-up, each once, recorded in schema_migrations.

Files are named ``NNN_description.cql`` and run in version order. Every statement in them is
``IF NOT EXISTS``, so running the whole set again (two app processes starting together, or a
test calling this twice) changes nothing. An applied file must not be edited: its checksum is
recorded, and a mismatch stops start-up with a sentence saying to add a new file instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import pathlib
import re

from cassandra import InvalidRequest, Unauthorized
from cassandra.cluster import Cluster, Session

from mnist_core.settings import KEYSPACE_NAME_PATTERN, Replication
from mnist_core.storage import partition_move
from mnist_core.storage.errors import SchemaMigrationError

SCHEMA_DIRECTORY = pathlib.Path(__file__).resolve().parents[1] / "schema"
FILE_NAME_PATTERN = re.compile(r"^(\d{3})_([a-z0-9_]+)\.cql$")
BOOKKEEPING_VERSION = 0
# Files whose tables replace older ones: the rows are copied after the file's statements and
# before it is recorded, so an interrupted copy runs again at the next start.
DATA_MOVES = {"005_slot_partitions_and_retention.cql": partition_move.move_day_partitions}


@dataclasses.dataclass(frozen=True)
class Migration:
    """One schema file: its version, name, statements and checksum."""

    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


def split_statements(text: str) -> tuple[str, ...]:
    """CQL statements of a file, without ``--`` comment lines (the files keep ';' out of comments and strings)."""
    kept_lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    statements = tuple(statement.strip() for statement in "\n".join(kept_lines).split(";") if statement.strip())
    for statement in statements:
        if statement.count("'") % 2:
            raise SchemaMigrationError(f"A schema statement has an unclosed quote (a ';' inside a string?): {statement[:80]}")
    return statements


def load_migrations(directory: pathlib.Path = SCHEMA_DIRECTORY) -> list[Migration]:
    """Every schema file in version order; duplicate versions or stray names are an error."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.cql")):
        match = FILE_NAME_PATTERN.match(path.name)
        if match is None:
            raise SchemaMigrationError(f"Schema file {path.name} must be named NNN_description.cql.")
        version = int(match.group(1))
        if version in migrations:
            raise SchemaMigrationError(f"Two schema files share version {version:03d}.")
        text = path.read_text(encoding="utf-8")
        migrations[version] = Migration(
            version=version,
            name=path.name,
            statements=split_statements(text),
            checksum=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )
    if BOOKKEEPING_VERSION not in migrations:
        raise SchemaMigrationError(f"{directory} has no 000_*.cql file creating schema_migrations.")
    return [migrations[version] for version in sorted(migrations)]


def create_keyspace(session: Session, *, keyspace: str, replication: Replication) -> None:
    """CREATE KEYSPACE IF NOT EXISTS; names cannot be bound, so the keyspace name is validated first."""
    if not KEYSPACE_NAME_PATTERN.match(keyspace):
        raise ValueError(f"{keyspace!r} is not a valid keyspace name.")
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication.as_cql_map()}"
    )


def apply_migrations(
    cluster: Cluster,
    *,
    keyspace: str,
    replication: Replication,
    directory: pathlib.Path = SCHEMA_DIRECTORY,
    retention_days: int | None = None,
) -> list[int]:
    """Create the keyspace and run every schema file not yet recorded in it.

    The files use unqualified table names, so they run in a short-lived session bound to the
    keyspace; the app's own session stays unbound and qualifies names (Cassandra 5 warns about
    prepared statements on a session that ran USE). Returns the versions applied by this call
    (empty when the schema was already current).
    """
    migrations = load_migrations(directory)
    schema_session = cluster.connect()
    try:
        missing = _versions_not_applied(schema_session, migrations, keyspace=keyspace)
        if not missing:
            # Nothing to change: a role without schema rights (SELECT and MODIFY on its keyspace,
            # as compose grants the app) starts, and never sends a DDL statement.
            return []
        try:
            create_keyspace(schema_session, keyspace=keyspace, replication=replication)
            schema_session.set_keyspace(keyspace)
            return _apply_files(schema_session, migrations, keyspace=keyspace, retention_days=retention_days)
        except Unauthorized as error:
            raise SchemaMigrationError(
                f"Keyspace {keyspace} needs schema file(s) {', '.join(f'{version:03d}' for version in missing)}, "
                f"and this role may not change the schema ({error.args[0] if error.args else error}). Apply them as "
                "an administrator: python -m mnist_core migrate, with that role's MNIST_CASSANDRA_USERNAME and "
                "password (compose's schema job does this before the app starts)."
            ) from None
    finally:
        schema_session.shutdown()


def _versions_not_applied(session: Session, migrations: list[Migration], *, keyspace: str) -> list[int]:
    """The versions the keyspace has not recorded (all of them when it or its bookkeeping is missing).

    Reads only (system_schema and schema_migrations); an applied file that changed since is an
    error here too, whoever runs it.
    """
    if not KEYSPACE_NAME_PATTERN.match(keyspace):
        raise ValueError(f"{keyspace!r} is not a valid keyspace name.")
    every_version = [migration.version for migration in migrations]
    exists = session.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
                             (keyspace,)).one()
    if exists is None:
        return every_version
    try:
        rows = session.execute(f"SELECT version, checksum FROM {keyspace}.schema_migrations")
    except InvalidRequest:  # the keyspace exists, its bookkeeping table not yet
        return every_version
    recorded = {row.version: row.checksum for row in rows}
    _refuse_changed_files(migrations, recorded, keyspace=keyspace)
    return [version for version in every_version if version not in recorded]


def _refuse_changed_files(migrations: list[Migration], recorded: dict[int, str], *, keyspace: str) -> None:
    """An applied file must not be edited: its recorded checksum must still match."""
    for migration in migrations:
        if migration.version in recorded and recorded[migration.version] != migration.checksum:
            raise SchemaMigrationError(
                f"Schema file {migration.name} changed after it was applied to keyspace {keyspace}; "
                "add a new numbered file instead of editing an applied one."
            )


def _apply_files(session: Session, migrations: list[Migration], *, keyspace: str,
                 retention_days: int | None) -> list[int]:
    bookkeeping = migrations[0]
    for statement in bookkeeping.statements:
        session.execute(statement)
    recorded = {row.version: row.checksum for row in session.execute("SELECT version, checksum FROM schema_migrations")}
    insert_record = "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (%s, %s, %s, %s)"
    _refuse_changed_files(migrations, recorded, keyspace=keyspace)
    applied_now: list[int] = []
    for migration in migrations:
        if migration.version in recorded:
            continue
        if migration.version != BOOKKEEPING_VERSION:
            for statement in migration.statements:
                session.execute(statement)
            data_move = DATA_MOVES.get(migration.name)
            if data_move is not None:
                data_move(session, retention_days=retention_days)
        session.execute(
            insert_record,
            (migration.version, migration.name, migration.checksum, datetime.datetime.now(datetime.timezone.utc)),
        )
        applied_now.append(migration.version)
    return applied_now


def grant_reading_and_writing(cluster: Cluster, *, keyspace: str, role: str) -> None:
    """Leave `role` SELECT and MODIFY on the keyspace and no other right there (an administrator's
    job, after the schema is applied): the app needs nothing that changes or drops the schema.
    Earlier rights on the keyspace (setups that let the app create it held them all) are revoked.
    Names cannot be bound in CQL, so both are validated first."""
    for name, value in (("keyspace", keyspace), ("role", role)):
        if not KEYSPACE_NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a valid {name} name.")
    session = cluster.connect()
    try:
        session.execute(f"REVOKE ALL PERMISSIONS ON KEYSPACE {keyspace} FROM {role}")
        session.execute(f"GRANT SELECT ON KEYSPACE {keyspace} TO {role}")
        session.execute(f"GRANT MODIFY ON KEYSPACE {keyspace} TO {role}")
    finally:
        session.shutdown()


def replication_drift(keyspace: str, reported: dict[str, str] | None, wanted: Replication) -> str | None:
    """A warning when the keyspace is replicated otherwise than the settings ask (None when they agree).

    ``CREATE KEYSPACE IF NOT EXISTS`` never changes an existing keyspace, so a keyspace made with
    one replica stays at one after the settings ask for three, and LOCAL_QUORUM of one succeeds:
    nothing else would tell the operator.
    """
    if reported is None:
        return None
    strategy = reported.get("class", "").rsplit(".", 1)[-1]
    if strategy == "SimpleStrategy":
        actual = Replication(strategy=strategy, replication_factor=int(reported.get("replication_factor", 0)))
    else:
        factors = tuple(sorted((name, int(value)) for name, value in reported.items() if name != "class"))
        actual = Replication(strategy=strategy, datacenter_factors=factors)
    expected = dataclasses.replace(wanted, datacenter_factors=tuple(sorted(wanted.datacenter_factors)))
    if actual == expected:
        return None
    return (f"Keyspace {keyspace} is replicated as {actual.as_cql_map()} but MNIST_CASSANDRA_REPLICATION asks for "
            f"{wanted.as_cql_map()}: " + "alter the keyspace's replication to match, then run a repair.")
