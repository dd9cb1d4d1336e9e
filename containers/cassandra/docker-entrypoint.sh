#!/usr/bin/env bash
# Entry point of the cassandra:5.0 stand-in. It follows the environment contract that the
# official image documents on Docker Hub (written here from that documentation):
#
#   CASSANDRA_LISTEN_ADDRESS      address for other nodes; "auto" (the default) is this
#                                 container's own address
#   CASSANDRA_BROADCAST_ADDRESS   address told to other nodes (default: the listen address)
#   CASSANDRA_RPC_ADDRESS         address clients connect to (default 0.0.0.0, every interface)
#   CASSANDRA_BROADCAST_RPC_ADDRESS  address told to clients (default: the broadcast address)
#   CASSANDRA_SEEDS               comma-separated seeds (default: the broadcast address)
#   CASSANDRA_CLUSTER_NAME, CASSANDRA_NUM_TOKENS, CASSANDRA_ENDPOINT_SNITCH
#   CASSANDRA_DC, CASSANDRA_RACK  written to cassandra-rackdc.properties (for
#                                 GossipingPropertyFileSnitch)
#   MAX_HEAP_SIZE, HEAP_NEWSIZE   the heap, read by `cassandra` (set both or neither)
#
# An argument list that starts with an option is run as `cassandra <options>`; `cassandra` as
# root first makes /var/lib/cassandra the cassandra user's and then runs as that user; any other
# command (cqlsh, nodetool, bash, keytool) runs as it is, as the official image does.
set -euo pipefail

if [[ "${1:-}" == -* ]]; then
    set -- cassandra "$@"
fi

if [[ "${1:-}" != cassandra ]]; then
    exec "$@"
fi

if [[ "$(id -u)" == 0 ]]; then
    chown -R cassandra:cassandra /var/lib/cassandra /var/log/cassandra "${CASSANDRA_CONF:-/etc/cassandra}"
    exec setpriv --reuid=cassandra --regid=cassandra --init-groups "$BASH_SOURCE" "$@"
fi

conf="${CASSANDRA_CONF:-/etc/cassandra}"
config_file="$conf/cassandra.yaml"

own_address() {
    # The first address this container's host name resolves to (podman and Docker put it in /etc/hosts).
    getent ahostsv4 "$(hostname)" | awk 'NR == 1 { print $1 }'
}

listen_address="${CASSANDRA_LISTEN_ADDRESS:-auto}"
[[ "$listen_address" == auto ]] && listen_address="$(own_address)"
broadcast_address="${CASSANDRA_BROADCAST_ADDRESS:-$listen_address}"
rpc_address="${CASSANDRA_RPC_ADDRESS:-0.0.0.0}"
broadcast_rpc_address="${CASSANDRA_BROADCAST_RPC_ADDRESS:-$broadcast_address}"
seeds="${CASSANDRA_SEEDS:-$broadcast_address}"

# Replace a top-level `name: value` line of cassandra.yaml, or add it when there is none.
set_option() {
    local name="$1" value="$2" edited
    edited="$(mktemp)"
    awk -v name="$name" -v value="$value" '
        index($0, name ":") == 1 { print name ": " value; found = 1; next }
        { print }
        END { if (!found) print name ": " value }
    ' "$config_file" >"$edited"
    cat "$edited" >"$config_file"
    rm -f "$edited"
}

set_option listen_address "$listen_address"
set_option broadcast_address "$broadcast_address"
set_option rpc_address "$rpc_address"
set_option broadcast_rpc_address "$broadcast_rpc_address"
[[ -n "${CASSANDRA_CLUSTER_NAME:-}" ]] && set_option cluster_name "'$CASSANDRA_CLUSTER_NAME'"
[[ -n "${CASSANDRA_NUM_TOKENS:-}" ]] && set_option num_tokens "$CASSANDRA_NUM_TOKENS"
[[ -n "${CASSANDRA_ENDPOINT_SNITCH:-}" ]] && set_option endpoint_snitch "$CASSANDRA_ENDPOINT_SNITCH"

# The seeds line sits inside seed_provider's parameters.
edited="$(mktemp)"
awk -v seeds="$seeds" '
    /^[[:space:]]*- seeds:/ { sub(/seeds:.*/, "seeds: \"" seeds "\"") }
    { print }
' "$config_file" >"$edited"
cat "$edited" >"$config_file"
rm -f "$edited"

printf 'dc=%s\nrack=%s\n' "${CASSANDRA_DC:-datacenter1}" "${CASSANDRA_RACK:-rack1}" >"$conf/cassandra-rackdc.properties"

exec "$@"
