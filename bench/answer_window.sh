#!/bin/bash
# bench/answer_window.sh: the window that remains between a provider's answer
# and the moment it is durable (recorded in oauth.pending_answers and
# committed), on a cluster with PostgreSQL's default durability (fsync on,
# synchronous_commit on), unlike make bench's throwaway cluster.
#
#   bash bench/answer_window.sh            # N=300 forced refreshes, 4 at a time
#
# Each refreshed event carries durable_us: the microseconds from the moment
# the worker had the answer to the commit of its record.  Prints n, p50, p99
# and max.  Environment: PG_BIN (default /usr/lib/postgresql/15/bin), N,
# CLIENTS.  Everything it starts is stopped and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
N=${N:-300}
CLIENTS=${CLIENTS:-4}
make -s PG_CONFIG=$PG_BIN/pg_config install >/dev/null
RUN=()
[ "$(id -u)" -eq 0 ] && RUN=(runuser -u postgres --)
TMP=$(mktemp -d /tmp/oauth_tokens_window.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP"
cleanup() {
    set +e
    [ -f "$TMP/provider.pid" ] && kill "$(cat "$TMP/provider.pid")" 2>/dev/null
    "${RUN[@]}" $PG_BIN/pg_ctl -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1
    [ -n "${WINDOW_DEBUG:-}" ] && { tail -30 "$TMP/server.log"; tail -5 "$TMP/provider.log"; q "SELECT pid, state, wait_event, left(query, 60) FROM pg_stat_activity"; } >&2
    rm -rf "$TMP"
}
trap cleanup EXIT
PORT=$(python3 bench/benchlib.py free-port)
"${RUN[@]}" $PG_BIN/initdb -D "$TMP/data" -A trust --no-locale >/dev/null
"${RUN[@]}" bash -c "umask 077; printf 'k1:%s\n' \"\$(openssl rand -base64 32)\" > '$TMP/data/oauth_tokens.keys'"
"${RUN[@]}" bash -c "cat >> '$TMP/data/postgresql.conf'" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$TMP'
shared_preload_libraries = 'oauth_tokens'
oauth.database = 'postgres'
oauth.allow_http = on
oauth.allow_private_addresses = on
oauth.sweep_interval = 0
EOF
"${RUN[@]}" $PG_BIN/pg_ctl -D "$TMP/data" -l "$TMP/server.log" -w start >/dev/null
cp test/provider.py "$TMP/"
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP/provider.py"
"${RUN[@]}" python3 "$TMP/provider.py" --port 0 --port-file "$TMP/provider.port" --log "$TMP/provider.log" >/dev/null 2>&1 &
echo $! > "$TMP/provider.pid"
for _ in $(seq 100); do [ -s "$TMP/provider.port" ] && break; sleep 0.1; done
PURL=http://127.0.0.1:$(cat "$TMP/provider.port")
q() { "${RUN[@]}" $PG_BIN/psql -X -q -At -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -d postgres -c "$1"; }
q "CREATE EXTENSION oauth_tokens CASCADE" 2>/dev/null
python3 bench/benchlib.py post "$PURL/_control/default" '{"rotate": true}' >/dev/null
q "SELECT oauth.register_provider('w', '$PURL/token', 'cid', 'secret')" >/dev/null
q "CREATE TABLE ids AS SELECT g, oauth.create_connection('ws', 'w', 'a' || g, 'at', 'g' || g || '.0',
                                                           now() + interval '1 hour') AS id
     FROM generate_series(1, $CLIENTS) g" >/dev/null
pids=()
for c in $(seq "$CLIENTS"); do
    ( for _ in $(seq $((N / CLIENTS))); do
          q "SELECT oauth.refresh('ws', id) FROM ids WHERE g = $c" >/dev/null
      done ) &
    pids+=($!)
done
wait "${pids[@]}"      # not the provider
q "SELECT format('durable window (answer received -> record committed), %s refreshes, fsync %s, synchronous_commit %s: p50 %s us, p99 %s us, max %s us',
                 count(*), current_setting('fsync'), current_setting('synchronous_commit'),
                 percentile_disc(0.5) WITHIN GROUP (ORDER BY v), percentile_disc(0.99) WITHIN GROUP (ORDER BY v), max(v))
     FROM (SELECT (detail->>'durable_us')::bigint AS v FROM oauth.events
            WHERE event = 'refreshed' AND detail ? 'durable_us') s"
