#!/usr/bin/env bash
# Exit 0 only when a CQL server answers on HOST:PORT (default 127.0.0.1:9042); the compose
# healthcheck of every Cassandra node.
#
# It sends a protocol-v4 OPTIONS frame and expects a SUPPORTED frame back. That needs no
# credentials, so it works the same before and after cassandra-init has changed the roles, and
# it needs only bash and coreutils (the official image has no nc or curl). A node's native port
# opens only once the node has started (and, for a joining node, finished bootstrapping), so
# "answers OPTIONS" is the moment clients and the next node may go ahead.
set -uo pipefail

host="${1:-127.0.0.1}"
port="${2:-9042}"
seconds="${CQL_PROBE_TIMEOUT_SECONDS:-4}"

# The connect and the read both run under one bounded timeout: a half-open port must not hang.
# shellcheck disable=SC2016 # the inner script expands its own variables
timeout "$seconds" bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    # version 0x04 (request), flags 0, stream 0, opcode 0x05 OPTIONS, body length 0
    printf "\x04\x00\x00\x00\x05\x00\x00\x00\x00" >&3
    header="$(head -c 9 <&3 | od -An -tx1 | tr -d " \n")"
    # version 0x84 (response to v4) and opcode 0x06 SUPPORTED
    [[ "${header:0:2}" == "84" && "${header:8:2}" == "06" ]]
' "$host" "$port" 2>/dev/null
