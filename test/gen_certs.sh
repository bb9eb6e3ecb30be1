#!/bin/bash
# gen_certs.sh DIR -- test certificates for the fake OAuth provider.
#
# Creates in DIR:
#   ca.crt / ca.key                test CA
#   server.crt / server.key        CN=localhost, SAN IP:127.0.0.1,DNS:localhost,
#                                  serverAuth EKU, signed by the test CA
#   untrusted.crt / untrusted.key  self-signed, same names, NOT signed by the CA
#   client.crt / client.key        CN=oauth-test-client, clientAuth EKU, signed
#                                  by the test CA (tls_client_auth)
# Idempotent: existing files are kept while server.crt still verifies against
# ca.crt and nothing expires within a day.  Quiet unless openssl fails.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"

# Run a command, showing its output only when it fails.
q() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "gen_certs.sh: failed: $*" >&2
        return 1
    fi
}

valid() {
    local f
    for f in ca.crt ca.key server.crt server.key untrusted.crt untrusted.key client.crt client.key; do
        [ -s "$f" ] || return 1
    done
    openssl verify -CAfile ca.crt server.crt >/dev/null 2>&1 || return 1
    openssl verify -CAfile ca.crt client.crt >/dev/null 2>&1 || return 1
    for f in ca.crt server.crt untrusted.crt client.crt; do
        openssl x509 -in "$f" -noout -checkend 86400 >/dev/null 2>&1 || return 1
    done
}

if valid; then
    exit 0
fi

tmp=$(mktemp -d "./.gen_certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt             = no
[dn]
CN = localhost
[v3_ca]
basicConstraints       = critical,CA:TRUE
keyUsage               = critical,keyCertSign,cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
[v3_server]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature,keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid,issuer
[v3_client]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature,keyEncipherment
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid,issuer
[v3_selfsigned]
basicConstraints       = critical,CA:FALSE
keyUsage               = critical,digitalSignature,keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier   = hash
EOF
cnf=$tmp/openssl.cnf
serial() { echo "0x$(openssl rand -hex 16)"; }

# test CA
q openssl req -x509 -new -config "$cnf" -newkey rsa:2048 -nodes -sha256 \
    -days 3650 -subj "/CN=pg-oauth test CA" -extensions v3_ca \
    -set_serial "$(serial)" -keyout "$tmp/ca.key" -out "$tmp/ca.crt"

# server certificate signed by the CA
q openssl req -new -config "$cnf" -newkey rsa:2048 -nodes -sha256 \
    -subj "/CN=localhost" -keyout "$tmp/server.key" -out "$tmp/server.csr"
q openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
    -set_serial "$(serial)" -days 825 -sha256 \
    -extfile "$cnf" -extensions v3_server -out "$tmp/server.crt"

# client certificate signed by the CA (tls_client_auth)
q openssl req -new -config "$cnf" -newkey rsa:2048 -nodes -sha256 \
    -subj "/CN=oauth-test-client" -keyout "$tmp/client.key" -out "$tmp/client.csr"
q openssl x509 -req -in "$tmp/client.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
    -set_serial "$(serial)" -days 825 -sha256 \
    -extfile "$cnf" -extensions v3_client -out "$tmp/client.crt"

# self-signed certificate the CA knows nothing about
q openssl req -x509 -new -config "$cnf" -newkey rsa:2048 -nodes -sha256 \
    -days 825 -subj "/CN=localhost" -extensions v3_selfsigned \
    -set_serial "$(serial)" -keyout "$tmp/untrusted.key" -out "$tmp/untrusted.crt"

q openssl verify -CAfile "$tmp/ca.crt" "$tmp/server.crt"

chmod 600 "$tmp"/*.key
chmod 644 "$tmp"/*.crt
for f in ca.key ca.crt server.key server.crt untrusted.key untrusted.crt client.key client.crt; do
    mv -f "$tmp/$f" "./$f"
done
