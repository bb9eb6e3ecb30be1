#!/bin/bash
# CI stage: the application examples (examples/python, examples/node) against
# a cluster with the extension, as the README's application role `app`, and
# the test provider as both the OAuth provider and the API:
#   1. `call`: a token (refreshed through the worker: the stored one had
#      expired), GET /api/me -> 200;
#   2. the token revoked at the provider: `call` gets 401, reports it with
#      token_rejected, retries once with the refreshed token -> 200;
#   3. `listen`: the grant dies at the provider, an admin refresh turns the
#      connection reauth_required; the example hears the NOTIFY, resolves the
#      event id with oauth.connection_event and says so.
# Each example's output is checked.  Installs what is missing (python3-psycopg;
# node and npm: Debian's nodejs and npm; `pg` from the npm registry), builds
# and installs the extension into PostgreSQL 15.  Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$(pwd)
t0=$(date +%s)
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
extra=(python3-psycopg)
command -v node >/dev/null && command -v npm >/dev/null || extra+=(nodejs npm)
bash scripts/setup.sh "${extra[@]}"
BIN=$($PG_CONFIG --bindir)
make -s PG_CONFIG=$PG_CONFIG >/dev/null
make -s PG_CONFIG=$PG_CONFIG install >/dev/null

DIR=$(mktemp -d /tmp/oauth_tokens_examples.XXXXXX)
chmod 755 "$DIR"
chown postgres: "$DIR"
AS=(runuser -u postgres --)
cleanup() {
    "${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null 2>&1 || true
    [ -n "${PROV:-}" ] && kill "$PROV" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# the examples, with node-postgres from the npm registry
cp -r examples "$DIR/examples"
(cd "$DIR/examples/node" && npm install --no-audit --no-fund --loglevel=error >/dev/null)

"${AS[@]}" "$BIN/initdb" -D "$DIR/data" -A trust >/dev/null
cat >> "$DIR/data/postgresql.conf" <<EOC
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'oauth_tokens'
oauth.database = 'postgres'
oauth.allow_http = on                  # the test provider is plain HTTP on 127.0.0.1
oauth.allow_private_addresses = on
EOC
"${AS[@]}" bash -c "umask 077; python3 -c 'import base64, os; print(\"k1:\" + base64.b64encode(os.urandom(32)).decode())' > '$DIR/data/oauth_tokens.keys'"
"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
"${AS[@]}" python3 test/provider.py --port 0 --port-file "$DIR/provider.port" >/dev/null 2>&1 &
PROV=$!
for _ in $(seq 100); do [ -s "$DIR/provider.port" ] && break; sleep 0.1; done
P=http://127.0.0.1:$(cat "$DIR/provider.port")
ctl() { curl -sf -X POST -H 'Content-Type: application/json' -d "$2" "$P/_control/$1" >/dev/null; }
admin() { "${AS[@]}" "$BIN/psql" -X -q -At -h "$DIR" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# the application role of the README's grant block
admin >/dev/null <<EOS
CREATE EXTENSION oauth_tokens CASCADE;
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA oauth TO app;
GRANT EXECUTE ON FUNCTION oauth.bind_workspace(text),
                          oauth.valid_token(text, uuid, interval),
                          oauth.token_rejected(text, uuid, text),
                          oauth.connection_event(bigint) TO app;
GRANT SELECT ON oauth.connection_status TO app;
ALTER ROLE app SET oauth.require_workspace = on;
SELECT oauth.register_provider('acme', '$P/token', 'client-1', 'secret-1',
                               revoke_url => '$P/revoke');
EOS

export PGHOST=$DIR PGUSER=app PGDATABASE=postgres API_URL=$P/api/me LISTEN_SECONDS=30
failed=0
check() {   # check NAME FILE REGEX...
    local name=$1 file=$2; shift 2
    local re
    for re in "$@"; do
        if ! grep -Eq "$re" "$file"; then
            echo "FAIL: $name: no line matching /$re/ in:"; sed 's/^/    /' "$file"
            failed=1
            return
        fi
    done
    echo "ok: $name"; sed 's/^/    /' "$file"
}

for lang in python node; do
    case $lang in
        # Debian's python3, which has python3-psycopg (not one earlier on PATH)
        python) run=(/usr/bin/python3 "$DIR/examples/python/app.py") ;;
        node) run=(node "$DIR/examples/node/app.js") ;;
    esac
    ws=ws-$lang
    # an expired token: the first valid_token refreshes it (grant g-<lang>)
    export OAUTH_WORKSPACE=$ws
    OAUTH_CONNECTION=$(admin -c "SELECT oauth.create_connection('$ws', 'acme', 'customer-1',
        'at-expired', 'g$lang.0', now() - interval '1 minute')")
    export OAUTH_CONNECTION
    "${run[@]}" call > "$DIR/$lang.1" 2>&1 || true
    check "$lang call" "$DIR/$lang.1" "^GET $P/api/me -> 200: .*\"grant\": \"g$lang\""

    # the customer revoked the token at the provider: 401, token_rejected, one retry
    curl -sf -X POST -d "token=at-g$lang-1" "$P/revoke" >/dev/null
    "${run[@]}" call > "$DIR/$lang.2" 2>&1 || true
    check "$lang call after a revocation" "$DIR/$lang.2" \
        "^GET $P/api/me -> 401: reported with token_rejected, retrying once" \
        "^GET $P/api/me -> 200 after the retry"
    [ "$(admin -c "SELECT count(*) FROM oauth.events WHERE event = 'token_rejected'
                    AND connection_id = '$OAUTH_CONNECTION'")" = 1 ] ||
        { echo "FAIL: $lang: no token_rejected event"; failed=1; }

    # the grant dies: the listener hears it and resolves the event id
    "${run[@]}" listen > "$DIR/$lang.3" 2>&1 &
    lpid=$!
    for _ in $(seq 100); do grep -q listening "$DIR/$lang.3" && break; sleep 0.1; done
    ctl grant "{\"grant\": \"g$lang\", \"mode\": \"invalid_grant\"}"
    admin -c "SELECT oauth.refresh('$ws', '$OAUTH_CONNECTION')" >/dev/null
    wait $lpid || true
    check "$lang listen" "$DIR/$lang.3" "^listening on oauth_connection_state" \
        "^connection $OAUTH_CONNECTION needs re-authorization \(invalid_grant\)"
done
echo "== 50-examples: $([ $failed = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - t0)) s =="
exit $failed
