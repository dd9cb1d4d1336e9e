#!/usr/bin/env bash
# Exit 0 only when a CQL server answers on HOST:PORT (default 127.0.0.1:9042): the compose
# healthcheck of every Cassandra node, and scripts/cassandra's test of a local node.
#
# It sends a protocol-v4 OPTIONS frame and expects a SUPPORTED frame back. That needs no
# credentials, so it works the same before and after cassandra-init has changed the roles. A
# node's native port opens only once the node has started (and, for a joining node, finished
# bootstrapping), so "answers OPTIONS" is the moment clients and the next node may go ahead.
#
# The frame goes in plain CQL first, then, if that got no SUPPORTED, inside TLS (openssl
# s_client): compose's nodes accept TLS clients only. The TLS probe does not verify the
# certificate: it asks whether this node answers, not who it is (clients verify it). It needs
# only bash, coreutils and openssl (the official image has no nc or curl; openssl comes with
# its ca-certificates).
set -uo pipefail

host="${1:-127.0.0.1}"
port="${2:-9042}"
seconds="${CQL_PROBE_TIMEOUT_SECONDS:-4}"

# version 0x04 (request), flags 0, stream 0, opcode 0x05 OPTIONS, body length 0
options_frame='\x04\x00\x00\x00\x05\x00\x00\x00\x00'

# True when the 9-byte header on stdin is version 0x84 (response to v4) with opcode 0x06 SUPPORTED.
is_supported() {
    local header
    header="$(head -c 9 | od -An -tx1 | tr -d ' \n')"
    [[ "${header:0:2}" == "84" && "${header:8:2}" == "06" ]]
}
export -f is_supported

# The connect and the read both run under one bounded timeout: a half-open port must not hang.
# shellcheck disable=SC2016 # the inner scripts expand their own variables
timeout "$seconds" bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "$2" >&3
    is_supported <&3
' "$host" "$port" "$options_frame" 2>/dev/null && exit 0

command -v openssl >/dev/null 2>&1 || exit 1
# s_client sends the frame, prints what comes back and, because its input then ends
# (-no_ign_eof after -quiet), closes the session and exits: the node keeps a quiet connection
# open, so s_client would otherwise linger until the timeout killed it (and the probe with it).
# The input stays open this long for the answer to arrive first.
answer_wait="${CQL_PROBE_TLS_ANSWER_SECONDS:-2}"
# shellcheck disable=SC2016
timeout "$seconds" bash -c '
    { printf "$2"; sleep "$3"; } | openssl s_client -connect "$0:$1" -quiet -no_ign_eof 2>/dev/null | is_supported
' "$host" "$port" "$options_frame" "$answer_wait" 2>/dev/null
