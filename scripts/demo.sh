#!/bin/bash
# make demo: a throwaway cluster, the local test provider, and one customer
# connection walked through its whole life.  Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

# PG_CONFIG chooses the PostgreSQL to run against (default: Debian's 15)
if [ -z "${PG_CONFIG:-}" ]; then
    bash scripts/setup.sh
    PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
fi
export PATH=$("$PG_CONFIG" --bindir):$PATH
make -s PG_CONFIG="$PG_CONFIG"
make -s PG_CONFIG="$PG_CONFIG" install >/dev/null

if [ "$(id -u)" -eq 0 ]; then AS=(runuser -u postgres --); else AS=(); fi
DIR=$(mktemp -d /tmp/oauth_tokens_demo.XXXXXX)
chmod 755 "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
PORT=$((20000 + RANDOM % 20000))
PGDATA=$DIR/data

cleanup() {
    "${AS[@]}" pg_ctl -D "$PGDATA" stop -m immediate >/dev/null 2>&1 || true
    [ -n "${PROV_PID:-}" ] && kill "$PROV_PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sql() { "${AS[@]}" psql -X -q -h "$DIR" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 "$@"; }
ctl() { curl -s -X POST -H 'Content-Type: application/json' -d "$2" "http://127.0.0.1:$PPORT/_control/$1" >/dev/null; }
stat_grant() { curl -s "http://127.0.0.1:$PPORT/_control/grant/$1"; }

step "A throwaway cluster with oauth_tokens preloaded"
"${AS[@]}" initdb -D "$PGDATA" -A trust >/dev/null
cat >> "$PGDATA/postgresql.conf" <<EOC
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'oauth_tokens'
oauth.database = 'postgres'
oauth.allow_http = on            # the demo provider is plain HTTP on 127.0.0.1
oauth.allow_private_addresses = on
oauth.sweep_interval = '2s'
EOC
"${AS[@]}" bash -c "umask 077; echo \"k1:\$(openssl rand -base64 32)\" > '$PGDATA/oauth_tokens.keys'"
"${AS[@]}" pg_ctl -D "$PGDATA" -l "$DIR/server.log" -w start >/dev/null
echo "cluster on socket $DIR port $PORT; key ring $PGDATA/oauth_tokens.keys"

step "The local test provider (127.0.0.1 only)"
"${AS[@]}" python3 test/provider.py --port 0 --port-file "$DIR/provider.port" >/dev/null 2>&1 &
PROV_PID=$!
for _ in $(seq 50); do [ -s "$DIR/provider.port" ] && break; sleep 0.1; done
PPORT=$(cat "$DIR/provider.port")
echo "token endpoint http://127.0.0.1:$PPORT/token"

step "Install the extension and register the provider"
sql <<EOS
CREATE EXTENSION oauth_tokens CASCADE;
SELECT oauth.register_provider('acme', 'http://127.0.0.1:$PPORT/token', 'demo-client', 'demo-secret',
       revoke_url => 'http://127.0.0.1:$PPORT/revoke',
       authorize_url => 'https://acme.example/oauth/authorize',
       refresh_buffer => '5 minutes');
SELECT name, token_url, auth_method, client_secret_ciphertext IS NOT NULL AS secret_encrypted
  FROM oauth.providers;
EOS

step "1. Send the customer to the authorize URL (with a PKCE challenge)"
VERIFIER=demo-verifier-0123456789-abcdefghijklmnopqrstuvwxyz
CHALLENGE=$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=')
sql -c "SELECT oauth.authorize_url('acme', 'https://app.example/callback', 'state-42', '{contacts.read}', '$CHALLENGE') AS send_the_customer_to;"

step "2. The customer consents; the callback exchanges the code"
ctl code "{\"code\": \"code-1\", \"grant\": \"cust1\", \"code_challenge\": \"$CHALLENGE\"}"
ctl grant '{"grant": "cust1", "rotate": true, "strict": true, "expires_in": 3600}'
sql <<EOS
SELECT oauth.exchange_code('ws-acme', 'acme', 'code-1', 'https://app.example/callback',
                           code_verifier => '$VERIFIER', provider_account_id => 'customer-1') AS id \gset
\echo connection :id
SELECT state, expires_at > now() AS fresh, has_refresh_token FROM oauth.connection_status;
\echo 'the same code again is refused, not sent twice:'
\set ON_ERROR_STOP 0
SELECT oauth.exchange_code('ws-acme', 'acme', 'code-1', 'https://app.example/callback', '$VERIFIER');
EOS
ID=$(sql -At -c "SELECT id FROM oauth.connections")

step "3. Application SQL asks for a token (fast path: no lock, no write)"
sql -c "SELECT oauth.valid_token('ws-acme', '$ID') AS token;"
echo "another workspace asking for it is told it does not exist:"
sql -c "SELECT oauth.valid_token('ws-other', '$ID');" 2>&1 | sed 's/^/  /' || true

step "4. The token expires; 20 sessions ask at once; the provider sees ONE refresh"
ctl grant '{"grant": "cust1", "latency_ms": 300}'
sql -c "UPDATE oauth.connections SET expires_at = now() - interval '1 second'"
for i in $(seq 20); do
    sql -At -c "SELECT oauth.valid_token('ws-acme', '$ID')" > "$DIR/out.$i" &
done
wait $(jobs -p | grep -v "^$PROV_PID$") 2>/dev/null || true
echo "tokens the 20 sessions got: $(cat "$DIR"/out.* | sort | uniq -c | tr -s ' ')"
echo "provider: $(stat_grant cust1)"

step "5. The refresh token was rotated and the new one committed"
echo "(the provider now accepts only its newest refresh token; a forced refresh proves we kept it)"
sql -c "SELECT oauth.refresh('ws-acme', '$ID') AS outcome;"
sql -c "SELECT event, detail->>'rotated' AS rotated, detail->>'trigger' AS trigger FROM oauth.events WHERE event = 'refreshed' ORDER BY id;"

step "6. A caller that rolls back loses nothing"
sql -c "UPDATE oauth.connections SET expires_at = now()"
sql <<EOS
BEGIN;
SELECT oauth.valid_token('ws-acme', '$ID') AS token_inside_rolled_back_txn;
ROLLBACK;
SELECT oauth.refresh('ws-acme', '$ID') AS next_refresh_still_works;
EOS

step "7. The customer revokes access at the provider: the grant turns into reauth_required"
ctl grant '{"grant": "cust1", "mode": "invalid_grant", "latency_ms": 0}'
sql -c "UPDATE oauth.connections SET expires_at = now()"
sql -c "SELECT oauth.valid_token('ws-acme', '$ID');" 2>&1 | sed 's/^/  /' || true
sql -c "SELECT state, last_refresh_error FROM oauth.connection_status;"
c=$(stat_grant cust1); echo "provider requests so far: $c"
sql -c "SELECT oauth.valid_token('ws-acme', '$ID');" >/dev/null 2>&1 || true
echo "asking again does not call the provider: $(stat_grant cust1)"

step "8. The customer consents again: re-authorize"
ctl grant '{"grant": "cust1", "mode": "ok"}'
ctl code "{\"code\": \"code-2\", \"grant\": \"cust1\", \"code_challenge\": \"$CHALLENGE\"}"
sql -c "SELECT oauth.exchange_code('ws-acme', 'acme', 'code-2', 'https://app.example/callback', '$VERIFIER', 'customer-1') = '$ID' AS same_connection;"
sql -c "SELECT state FROM oauth.connection_status; SELECT oauth.valid_token('ws-acme', '$ID') AS token;"

step "9. The customer disconnects: revoke at the provider (RFC 7009) and erase"
sql -c "SELECT oauth.revoke('ws-acme', '$ID');"
sql -c "SELECT state, access_token_ciphertext IS NULL AND refresh_token_ciphertext IS NULL AS erased FROM oauth.connection_status s JOIN oauth.connections c USING (id);"
sql -c "SELECT oauth.valid_token('ws-acme', '$ID');" 2>&1 | sed 's/^/  /' || true

step "The audit trail (no secret in it)"
sql -c "SELECT id, event, detail FROM oauth.events ORDER BY id;"
sql -c "SELECT * FROM oauth.stats();"

step "Done: stopping and removing the cluster"
