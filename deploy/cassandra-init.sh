#!/usr/bin/env bash
# The cassandra-init service of compose.yaml: sets up Cassandra's roles, once per `up`, and exits.
#
# First boot (the built-in superuser cassandra/cassandra still logs in): replicate system_auth to
# every node, then create the administrator role (ADMIN_USERNAME, ADMIN_PASSWORD). Every run,
# logged in as that administrator: keep system_auth replicated, create or update the app's role
# (APP_USERNAME, APP_PASSWORD) with no right to change any schema (compose's schema job, as the
# administrator, creates the keyspace and its tables and grants the app SELECT and MODIFY on it),
# and lock the built-in superuser (a random
# password, no login, no superuser). Later runs find cassandra/cassandra locked and go straight
# to the administrator, so running this on every `docker compose up` is safe.
#
# Environment:
#   ADMIN_PASSWORD_FILE, APP_PASSWORD_FILE
#                                  files holding the passwords (compose mounts its secrets there,
#                                  so no password is in any container's environment); or
#   ADMIN_PASSWORD, APP_PASSWORD   the passwords themselves (one of each pair is required)
#   ADMIN_USERNAME                 default mnist_admin
#   APP_USERNAME, APP_KEYSPACE     default mnist, mnist
#   CASSANDRA_HOST, CASSANDRA_PORT default cassandra, 9042
#   AUTH_DATACENTER                default datacenter1 (the nodes' CASSANDRA_DC)
#   AUTH_REPLICATION_FACTOR        replicas of system_auth: default 1; 3 for the three-node cluster
#   INIT_WAIT_SECONDS              how long to keep trying to log in (default 300: the built-in
#                                  superuser appears about 10 s after a node opens its CQL port)
#   INIT_RETRY_SECONDS             pause between attempts (default 5)
#   CQLSH_CA_FILE                  when set, connect with TLS and verify the node against this CA
set -euo pipefail
umask 077

say() {
    echo "cassandra-init: $*" >&2
}

fail() {
    say "$*"
    exit 1
}

host="${CASSANDRA_HOST:-cassandra}"
port="${CASSANDRA_PORT:-9042}"
# A password from NAME_FILE (its first line) when that is set, else from NAME.
password_from() {
    local name="$1" file_variable="${1}_FILE"
    local file="${!file_variable:-}"
    if [[ -n "$file" ]]; then
        [[ -r "$file" ]] || fail "$file_variable=$file cannot be read."
        head -n 1 "$file" | tr -d '\r\n'
    else
        printf '%s' "${!name:-}"
    fi
}

admin_username="${ADMIN_USERNAME:-mnist_admin}"
admin_password="$(password_from ADMIN_PASSWORD)"
app_username="${APP_USERNAME:-mnist}"
app_password="$(password_from APP_PASSWORD)"
keyspace="${APP_KEYSPACE:-mnist}"
datacenter="${AUTH_DATACENTER:-datacenter1}"
replication_factor="${AUTH_REPLICATION_FACTOR:-1}"
wait_seconds="${INIT_WAIT_SECONDS:-300}"
retry_seconds="${INIT_RETRY_SECONDS:-5}"
default_superuser="cassandra"

# --- Check the inputs: names are written into CQL, so only plain identifiers are accepted -----

name_pattern='^[A-Za-z][A-Za-z0-9_]{0,47}$'
for pair in "ADMIN_USERNAME=$admin_username" "APP_USERNAME=$app_username" "APP_KEYSPACE=$keyspace"; do
    [[ "${pair#*=}" =~ $name_pattern ]] ||
        fail "${pair%%=*}='${pair#*=}' must start with a letter and hold at most 48 letters, digits or underscores."
done
[[ "$datacenter" =~ ^[A-Za-z0-9_.-]+$ ]] || fail "AUTH_DATACENTER='$datacenter' is not a datacenter name."
[[ "$replication_factor" =~ ^[1-9][0-9]*$ ]] || fail "AUTH_REPLICATION_FACTOR='$replication_factor' must be a whole number of at least 1."
[[ "$wait_seconds" =~ ^[0-9]+$ && "$retry_seconds" =~ ^[0-9]+$ ]] || fail "INIT_WAIT_SECONDS and INIT_RETRY_SECONDS must be whole numbers."
for name in "$admin_username" "$app_username"; do
    [[ "${name,,}" != "$default_superuser" ]] || fail "'$name' is the built-in superuser, which this script locks; choose another role name."
done
[[ "$admin_username" != "$app_username" ]] || fail "ADMIN_USERNAME and APP_USERNAME must differ: the app must not run as a superuser."
for pair in "ADMIN_PASSWORD=$admin_password" "APP_PASSWORD=$app_password"; do
    value="${pair#*=}"
    [[ -n "$value" ]] || fail "Set ${pair%%=*} or ${pair%%=*}_FILE (compose mounts the secrets of scripts/make-secrets)."
    [[ "$value" != "$default_superuser" ]] || fail "${pair%%=*} must not be the well-known default password."
    # The credentials file handed to cqlsh is an INI file: no line breaks, no edge spaces.
    [[ "$value" != *$'\n'* && "$value" == "${value#[[:space:]]}" && "$value" == "${value%[[:space:]]}" ]] ||
        fail "${pair%%=*} must be one line without leading or trailing spaces."
done

# --- Talking to Cassandra ---------------------------------------------------------------------

# A CQL string literal: single quotes doubled.
quoted() {
    local text="$1"
    printf "'%s'" "${text//\'/\'\'}"
}

# Run the CQL read from standard input as USER; the password goes through a private
# credentials file, never the command line. cqlsh exits non-zero on a failed login or statement.
# With CQLSH_CA_FILE (compose: the authority of deploy/make-tls.sh), cqlsh talks TLS and checks
# the node's certificate against it (cqlsh reads SSL_CERTFILE and SSL_VALIDATE).
tls_options=()
if [[ -n "${CQLSH_CA_FILE:-}" ]]; then
    [[ -r "$CQLSH_CA_FILE" ]] || fail "CQLSH_CA_FILE=$CQLSH_CA_FILE cannot be read."
    export SSL_CERTFILE="$CQLSH_CA_FILE" SSL_VALIDATE=true
    tls_options=(--ssl)
fi

cql_as() {
    local username="$1" password="$2" credentials statements status=0
    credentials="$(mktemp)"
    statements="$(mktemp)"
    printf '[PlainTextAuthProvider]\nusername = %s\npassword = %s\n' "$username" "$password" >"$credentials"
    cat >"$statements"
    cqlsh "${tls_options[@]}" --credentials="$credentials" --request-timeout=60 -f "$statements" "$host" "$port" ||
        status=$?
    rm -f "$credentials" "$statements"
    return "$status"
}

logs_in() {
    echo "SELECT release_version FROM system.local;" | cql_as "$1" "$2" >/dev/null 2>&1
}

auth_replication="{'class': 'NetworkTopologyStrategy', '$datacenter': $replication_factor}"

# --- Log in as the administrator, creating it with the built-in superuser on first boot -------

deadline=$((SECONDS + wait_seconds))
first_boot=0
until logs_in "$admin_username" "$admin_password"; do
    if logs_in "$default_superuser" "$default_superuser"; then
        say "first boot: creating the administrator role '$admin_username' with the built-in superuser."
        first_boot=1
        # system_auth is replicated first, so the new role is written to every node.
        # A failure here is retried like a refused login, within the same deadline.
        cql_as "$default_superuser" "$default_superuser" <<EOF || say "creating '$admin_username' failed; trying again."
ALTER KEYSPACE system_auth WITH replication = $auth_replication;
CREATE ROLE IF NOT EXISTS $(quoted "$admin_username") WITH PASSWORD = $(quoted "$admin_password") AND SUPERUSER = true AND LOGIN = true;
ALTER ROLE $(quoted "$admin_username") WITH SUPERUSER = true AND LOGIN = true;
EOF
        logs_in "$admin_username" "$admin_password" && break
        # The role was there already with another password (an earlier, interrupted first boot).
        # Cassandra 5.0 refuses a second password change of a role within 5 s, hence the pause.
        sleep 6
        echo "ALTER ROLE $(quoted "$admin_username") WITH PASSWORD = $(quoted "$admin_password");" |
            cql_as "$default_superuser" "$default_superuser" || say "setting the password of '$admin_username' failed; trying again."
        logs_in "$admin_username" "$admin_password" && break
    fi
    if ((SECONDS >= deadline)); then
        fail "neither '$admin_username' nor the built-in superuser could log in to $host:$port within ${wait_seconds}s. If this cluster was set up before, CASSANDRA_ADMIN_PASSWORD must be the password it was set up with."
    fi
    say "Cassandra at $host:$port does not accept a login yet; trying again in ${retry_seconds}s."
    sleep "$retry_seconds"
done

# --- As the administrator: the app's role, its rights, and the locked built-in superuser ------

say "logged in as '$admin_username'; setting up the role '$app_username' for keyspace '$keyspace'."
cql_as "$admin_username" "$admin_password" <<EOF
ALTER KEYSPACE system_auth WITH replication = $auth_replication;
CREATE ROLE IF NOT EXISTS $(quoted "$app_username") WITH PASSWORD = $(quoted "$app_password") AND LOGIN = true;
ALTER ROLE $(quoted "$app_username") WITH LOGIN = true AND SUPERUSER = false;
REVOKE CREATE ON ALL KEYSPACES FROM $(quoted "$app_username");
EOF
# A password is set only when it changed (a rotated secret): Cassandra 5.0 refuses to change a
# role's password twice within 5 s, so setting it on every run would fail right after the CREATE.
if ! logs_in "$app_username" "$app_password"; then
    say "the password of '$app_username' changed; setting the new one."
    echo "ALTER ROLE $(quoted "$app_username") WITH PASSWORD = $(quoted "$app_password");" |
        cql_as "$admin_username" "$admin_password"
    # Each node caches credentials for a few seconds (credentials_validity), so the new password
    # may be refused briefly.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        logs_in "$app_username" "$app_password" && break
        ((attempt < 10)) || fail "'$app_username' cannot log in with the new password."
        sleep 2
    done
fi
# The app's rights on its keyspace (SELECT and MODIFY, nothing that changes the schema) are
# granted by compose's schema job once it has made the keyspace as the administrator
# (python -m mnist_core migrate --grant-to); the REVOKE above takes back what setups before
# that gave the app (the right to create any keyspace).

# Read at ALL: on a cluster's first boot the built-in role was written while system_auth had one
# replica, so a read from fewer nodes could miss it (and leave it unlocked); reading every node
# also repairs the row onto all of them, which the ALTER below needs. On a later run a node may
# be down; the role was locked on first boot, so that run only warns.
role_query="CONSISTENCY ALL; SELECT role FROM system_auth.roles WHERE role = $(quoted "$default_superuser");"
if ! role_rows="$(echo "$role_query" | cql_as "$admin_username" "$admin_password")"; then
    ((first_boot == 0)) || fail "could not read the built-in superuser from every node, so it is not locked yet; run cassandra-init again once every node is up."
    say "warning: not every node answered; the built-in superuser (locked on first boot) was not checked again."
elif grep -q '^(1 rows)$' <<<"$role_rows"; then
    locked_password="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    echo "ALTER ROLE $(quoted "$default_superuser") WITH PASSWORD = $(quoted "$locked_password") AND SUPERUSER = false AND LOGIN = false;" |
        cql_as "$admin_username" "$admin_password"
fi

say "done: '$app_username' is set up (its rights on keyspace '$keyspace' come from the schema job); the built-in superuser cannot log in."
