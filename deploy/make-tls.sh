#!/usr/bin/env bash
# The tls-certificates service of compose.yaml: a private certificate authority and one
# certificate per Cassandra node, made once and kept in volumes, so the app, the schema job and
# cassandra-init talk to Cassandra over TLS and verify whom they talk to.
#
# Only keytool is needed (the cassandra image's JRE has it). Writes:
#   $TLS_CA_DIRECTORY/ca.pem              the authority's certificate: all clients trust it
#   $TLS_NODE_DIRECTORY/<host>.p12        each node's key and certificate (SAN dns:<host>), signed
#                                         by the authority, in a PKCS12 keystore
#   $TLS_NODE_DIRECTORY/keystore.password the keystores' password (random)
#   $TLS_NODE_DIRECTORY/ca.p12            the authority's key: it never leaves the nodes' volume
# Files that exist are kept, so every `docker compose up` runs it again safely; a host added to
# TLS_HOSTS later gets its certificate from the same authority.
#
# Environment:
#   TLS_HOSTS          comma-separated node host names (default cassandra)
#   TLS_CA_DIRECTORY   default /tls-ca (mounted read-only by the clients)
#   TLS_NODE_DIRECTORY default /tls-nodes (mounted read-only by the nodes)
#   TLS_VALIDITY_DAYS  default 825
set -euo pipefail

hosts="${TLS_HOSTS:-cassandra}"
ca_directory="${TLS_CA_DIRECTORY:-/tls-ca}"
node_directory="${TLS_NODE_DIRECTORY:-/tls-nodes}"
validity="${TLS_VALIDITY_DAYS:-825}"

say() {
    echo "tls-certificates: $*" >&2
}

command -v keytool >/dev/null 2>&1 || { say "keytool was not found (it comes with Java)."; exit 1; }
[[ "$validity" =~ ^[1-9][0-9]*$ ]] || { say "TLS_VALIDITY_DAYS='$validity' must be a whole number of days."; exit 1; }
mkdir -p "$ca_directory" "$node_directory"

password_file="$node_directory/keystore.password"
if [[ ! -s "$password_file" ]]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$password_file")
fi
password="$(cat "$password_file")"
authority="$node_directory/ca.p12"

if [[ ! -f "$authority" ]]; then
    say "making the certificate authority."
    (umask 077 && keytool -genkeypair -alias ca -keyalg RSA -keysize 3072 -validity "$validity" \
        -dname "CN=mnist compose CA, O=mnist" -ext bc:c -ext ku:c=keyCertSign,cRLSign \
        -storetype PKCS12 -keystore "$authority" -storepass "$password" >/dev/null 2>&1)
fi
keytool -exportcert -rfc -alias ca -keystore "$authority" -storepass "$password" -file "$ca_directory/ca.pem" \
    >/dev/null 2>&1

for host in ${hosts//,/ }; do
    [[ "$host" =~ ^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$ ]] || { say "'$host' is not a host name."; exit 1; }
    keystore="$node_directory/$host.p12"
    [[ -f "$keystore" ]] && continue
    say "making the certificate of $host."
    work="$(mktemp -d)"
    keytool -genkeypair -alias node -keyalg RSA -keysize 2048 -validity "$validity" -dname "CN=$host, O=mnist" \
        -storetype PKCS12 -keystore "$work/node.p12" -storepass "$password" >/dev/null 2>&1
    keytool -certreq -alias node -keystore "$work/node.p12" -storepass "$password" -file "$work/node.csr" \
        >/dev/null 2>&1
    keytool -gencert -alias ca -keystore "$authority" -storepass "$password" -infile "$work/node.csr" \
        -outfile "$work/node.pem" -rfc -validity "$validity" -ext "SAN=dns:$host" \
        -ext ku:c=digitalSignature,keyEncipherment -ext eku=serverAuth >/dev/null 2>&1
    # The chain: the authority first, then the node's signed certificate replaces its self-signed one.
    keytool -importcert -noprompt -alias ca -file "$ca_directory/ca.pem" -keystore "$work/node.p12" \
        -storepass "$password" >/dev/null 2>&1
    keytool -importcert -noprompt -alias node -file "$work/node.pem" -keystore "$work/node.p12" \
        -storepass "$password" >/dev/null 2>&1
    mv "$work/node.p12" "$keystore"
    rm -rf "$work"
done

# Cassandra runs as its own user in the node containers and reads the keystore and its password;
# the authority's key stays readable by root only.
chmod 644 "$ca_directory/ca.pem" "$password_file" "$node_directory"/*.p12
chmod 600 "$authority"
say "done: nodes ${hosts//,/, } have certificates; clients trust $ca_directory/ca.pem."
