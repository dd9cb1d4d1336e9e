#!/usr/bin/env bash
# Entry point of every Cassandra node in compose.yaml: turns on password authentication,
# role-based permissions, batch commit log sync and TLS for clients, then hands over to the official image's
# own entry point. Batch sync acknowledges a write only once it is fsync'd (together with
# whatever arrived meanwhile); the image's default, periodic sync every 10 s, lets a killed
# node lose writes it had already acknowledged.
#
# The official cassandra image has no environment variable for the authenticator or the
# authorizer, so this edits the container's copy of cassandra.yaml: it drops the existing
# top-level `authenticator:`, `authorizer:` and `commitlog_sync*:` entries (a one-line value or
# an indented block, depending on the release) and appends its own. Running it again on a restarted container
# gives the same file. The image's entry point then applies the CASSANDRA_* variables
# (cluster name, seeds, snitch, datacenter) and starts Cassandra as the cassandra user.
set -euo pipefail

config_directory="${CASSANDRA_CONF:-${CASSANDRA_CONFIG:-/etc/cassandra}}"
config_file="$config_directory/cassandra.yaml"
marker="# Set by deploy/cassandra-entrypoint.sh: clients need a role and a password; writes are fsync'd before they are acknowledged."

if [[ ! -f "$config_file" ]]; then
    echo "cassandra-entrypoint: $config_file not found; is this the official cassandra image?" >&2
    exit 1
fi

edited="$(mktemp)"
awk -v marker="$marker" '
    $0 == marker { next }
    /^(authenticator|authorizer|commitlog_sync|commitlog_sync_period|commitlog_sync_group_window|commitlog_sync_batch_window_in_ms|client_encryption_options):/ { skipping = 1; next }
    skipping && /^[[:space:]]/ { next }
    { skipping = 0; print }
' "$config_file" >"$edited"
cat >>"$edited" <<EOF
$marker
authenticator: PasswordAuthenticator
authorizer: CassandraAuthorizer
commitlog_sync: batch
EOF
# TLS for clients, with the certificate deploy/make-tls.sh made for this host, and required: a
# client that skips TLS is refused rather than sending its password in clear. The app, the
# schema job and cassandra-init connect with TLS and verify the certificate; the healthcheck
# (deploy/cql-answers.sh) sends its OPTIONS probe inside TLS too.
tls_host="${CASSANDRA_TLS_HOST:-$(hostname)}"
keystore="${TLS_NODE_DIRECTORY:-/tls-nodes}/$tls_host.p12"
if [[ -f "$keystore" ]]; then
    cat >>"$edited" <<EOF
client_encryption_options:
  enabled: true
  optional: false
  keystore: $keystore
  keystore_password: $(cat "${TLS_NODE_DIRECTORY:-/tls-nodes}/keystore.password")
  store_type: PKCS12
EOF
else
    echo "cassandra-entrypoint: no $keystore; clients connect without TLS." >&2
fi
# Write in place (not mv): the file may be a bind mount.
cat "$edited" >"$config_file"
rm -f "$edited"

exec docker-entrypoint.sh "$@"
