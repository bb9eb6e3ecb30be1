#!/bin/bash
# make bench: the benchmark suite of oauth_tokens.
#
# Builds and installs the extension, starts a throwaway PostgreSQL 15 cluster
# (as the postgres OS user when run as root) and the fake OAuth provider, and
# measures:
#   1. valid_token's fast path against a plain primary-key lookup (the floor)
#      and against the design article's reference pattern, in the same run;
#   2. a stampede: 200 sessions asking for the same expired token at once;
#   3. a sweep of 10,000 due connections through the worker;
#   4. the sweep's due query among 1,000,000 connections;
#   5. provider calls per needed refresh under a mixed load;
#   6. caller wait while 2,000 due connections crawl through a slow provider;
#   7. rotate_key over 100,000 connections while callers need refreshes: the
#      longest caller wait during the rotation (and, for contrast, during the
#      former single-transaction rotation);
#   8. refreshes per second against a fast local TLS endpoint (nginx on
#      loopback, keep-alive, new tokens in every answer) with fsync and
#      synchronous_commit on, beside the endpoint's own limit measured by wrk
#      at the same concurrency.
# Prints a report and writes it to bench/results.md.  Everything it starts is
# stopped and removed on exit.
#
# Environment:
#   BENCH_SECONDS     pgbench duration of each part-1 workload (10)
#   BENCH_ROUNDS      part-1 rounds, every other one in reverse order; the best
#                     tps of each workload counts (2)
#   PG_CONFIG         the PostgreSQL to build and run against (default: Debian's 15)
#   SEED_SQL          the reference pattern and floor (bench/reference.sql)
#   STAMPEDE_CLIENTS  sessions in part 2 (200)
#   STAMPEDE_ROUNDS   stampede rounds in part 2; the median round counts (3)
#   SWEEP_PASSES      sweeps in part 3; the worst counts (2)
#   SWEEP_TIMEOUT     seconds part 3 waits for one sweep (120)
#   BENCH_PROVIDER    tuned (default) | stock: see bench/provider_bench.py
#   BENCH_PARTS       which parts to run ("1 2 3 4 5 6 7 8"); a subset is for development
#                     and does not overwrite bench/results.md
#   BENCH_KEEP_TMP    1: keep the temp dir (logs, pgbench logs) after the run
#   BENCH_EXTRA_CONF  lines appended to postgresql.conf (for investigations)
#   FAST_N            part 8: connections due at once (20000)
#   FAST_CONCURRENCY  part 8: oauth.max_concurrent_refreshes and wrk's connections (64)
#   BENCH_PERF        1: part 8 records a perf profile of the worker (needs perf)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
SEED_SQL=${SEED_SQL:-$SRC/bench/reference.sql}
STAMPEDE_CLIENTS=${STAMPEDE_CLIENTS:-200}
STAMPEDE_ROUNDS=${STAMPEDE_ROUNDS:-3}
SWEEP_PASSES=${SWEEP_PASSES:-2}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-120}
CALLS_LIST=""
BENCH_PROVIDER=${BENCH_PROVIDER:-tuned}
BENCH_PARTS=${BENCH_PARTS:-1 2 3 4 5 6 7 8}
FAST_N=${FAST_N:-20000}
FAST_CONCURRENCY=${FAST_CONCURRENCY:-64}
BENCH_PERF=${BENCH_PERF:-0}
ROTATE_N=${ROTATE_N:-100000}        # part 7: connections re-encrypted
ROTATE_CLIENTS=${ROTATE_CLIENTS:-8} # part 7: callers forcing refreshes meanwhile
BENCH_KEEP_TMP=${BENCH_KEEP_TMP:-0}
PROVIDER_LATENCY_MS=50
SWEEP_CONCURRENCY=64
N_CONN=10000
N_BIG=1000000
N_DUE=1000

# part 8's endpoint and load generator, from Debian
EXTRA_PKGS=()
if [[ " $BENCH_PARTS " == *" 8 "* ]]; then
    [ -x /usr/sbin/nginx ] || EXTRA_PKGS+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || EXTRA_PKGS+=(wrk)
fi
if [ -z "${PG_CONFIG:-}" ] || [ ${#EXTRA_PKGS[@]} -gt 0 ]; then
    bash scripts/setup.sh "${EXTRA_PKGS[@]}"
fi
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_BIN=$("$PG_CONFIG" --bindir)
DB=postgres

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
part() { [[ " $BENCH_PARTS " == *" $1 "* ]]; }

if [ "$STAMPEDE_CLIENTS" -gt 290 ]; then
    die "STAMPEDE_CLIENTS must be at most 290 (max_connections = 300)"
fi
if [ ! -r "$SEED_SQL" ]; then
    die "reference pattern not found: $SEED_SQL (bench/reference.sql, or set SEED_SQL)"
fi

# ---- build and install ------------------------------------------------------
log "build and install"
make -s PG_CONFIG=$PG_CONFIG
make -s PG_CONFIG=$PG_CONFIG install

if [ "$(id -u)" -eq 0 ]; then
    RUN=(runuser -u postgres --)
else
    RUN=()
fi

TMP=$(mktemp -d /tmp/oauth_tokens_bench.XXXXXX)
chmod 700 "$TMP"
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP"
DATA=$TMP/data
RES=$TMP/results.md
PGBENCH_BG=""
ORCH_BG=""
STARTED=""

cleanup() {
    local rc=$?
    set +e
    for p in $PGBENCH_BG $ORCH_BG; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ -f "$TMP/provider.pid" ]; then
        kill "$(cat "$TMP/provider.pid")" 2>/dev/null
    fi
    if [ -f "$TMP/nginx/nginx.pid" ]; then
        kill "$(cat "$TMP/nginx/nginx.pid")" 2>/dev/null
    fi
    if [ -n "$STARTED" ]; then
        "${RUN[@]}" $PG_BIN/pg_ctl -D "$DATA" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ $rc -ne 0 ]; then
        log "exit status $rc; server log tail:"
        tail -30 "$TMP/server.log" 2>/dev/null >&2
        if [ -f "$RES" ]; then
            log "partial results:"
            cat "$RES" >&2
        fi
    fi
    if [ "$BENCH_KEEP_TMP" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run as the cluster's owner, in the temp dir
as_pg() { (cd "$TMP" && "${RUN[@]}" "$@"); }

PORT=$(python3 bench/benchlib.py free-port)
PSQL=($PG_BIN/psql -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -d "$DB")
# q SQL: one value (or rows) unaligned, tuples only
q() { as_pg "${PSQL[@]}" -At -c "$1"; }
# qf FILE: run a script file
qf() { as_pg "${PSQL[@]}" -f "$1"; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# status VALUE OP TARGET -> "met" / "MISSED"
status() { awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
    ok = (op == ">=") ? v >= t : (op == "<=") ? v <= t : (op == "<") ? v < t : (op == "==") ? v == t : 0;
    print ok ? "met" : "MISSED" }'; }

# ---- cluster ------------------------------------------------------------------
log "initdb in $DATA (port $PORT)"
as_pg $PG_BIN/initdb -D "$DATA" -A trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 \
    || { cat "$TMP/initdb.log" >&2; die "initdb"; }
as_pg bash -c "umask 077; printf 'k1:%s\n' \"\$(openssl rand -base64 32)\" > '$DATA/oauth_tokens.keys'"
as_pg chmod 600 "$DATA/oauth_tokens.keys"
as_pg bash -c "cat >> '$DATA/postgresql.conf'" <<EOF

# ---- oauth_tokens bench ----
port = $PORT
listen_addresses = ''
unix_socket_directories = '$TMP'
max_connections = 300
shared_buffers = 256MB
# durability off: this cluster is thrown away after the run
fsync = off
synchronous_commit = off
full_page_writes = off
shared_preload_libraries = 'oauth_tokens'
oauth.database = '$DB'
oauth.allow_http = on
oauth.allow_private_addresses = on
oauth.sweep_interval = 0
log_min_messages = warning
${BENCH_EXTRA_CONF:-}
EOF
as_pg $PG_BIN/pg_ctl -D "$DATA" -l "$TMP/server.log" -w -t 60 start >/dev/null \
    || die "server did not start"
STARTED=1

# ---- provider -----------------------------------------------------------------
cp test/provider.py bench/provider_bench.py bench/benchlib.py "$TMP"/
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP"/*.py
as_pg python3 "$TMP/provider_bench.py" "$TMP/provider.py" "$TMP/provider.pid" "$BENCH_PROVIDER" \
    --port 0 --port-file "$TMP/provider.port" >"$TMP/provider.log" 2>&1 &
for _ in $(seq 100); do [ -s "$TMP/provider.port" ] && break; sleep 0.1; done
[ -s "$TMP/provider.port" ] || { cat "$TMP/provider.log" >&2; die "fake provider did not start"; }
PPORT=$(cat "$TMP/provider.port")
PURL=http://127.0.0.1:$PPORT
ctl() { python3 bench/benchlib.py "$@" >/dev/null; }
log "fake provider on $PURL ($BENCH_PROVIDER)"

# ---- machine --------------------------------------------------------------------
PGVERSION=$(q "SELECT version()")
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
{
    echo "# oauth_tokens benchmark results"
    echo
    echo "| machine | |"
    echo "|---|---|"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M:%S UTC') |"
    echo "| CPUs (nproc) | $(nproc) |"
    echo "| CPU model | ${CPU_MODEL:-unknown} |"
    echo "| memory | $MEM |"
    echo "| load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |"
    echo "| PostgreSQL | $PGVERSION |"
    echo "| commit | $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$SRC" diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ has uncommitted changes)') |"
    echo
    echo "Cluster: throwaway, shared_buffers = 256MB, max_connections = 300,"
    echo "**fsync = off, synchronous_commit = off, full_page_writes = off** (benchmark only)."
    echo "Absolute numbers are noisy on a shared 2-core machine; the ratios, measured"
    echo "side by side in one run, are what counts."
    echo
    if [ "$BENCH_PROVIDER" = tuned ]; then
        echo "Fake provider: test/provider.py run through bench/provider_bench.py with a"
        echo "listen backlog of 1024 (instead of 5) and TCP_NODELAY (without it every"
        echo "keep-alive answer waits ~40 ms for a delayed ACK). BENCH_PROVIDER=stock runs"
        echo "it unchanged."
    else
        echo "Fake provider: test/provider.py unchanged (BENCH_PROVIDER=stock)."
    fi
    echo
} > "$RES"

# ---- data shared by parts 1-3 -------------------------------------------------------
log "loading the reference seed and $N_CONN connections"
cp "$SEED_SQL" "$TMP/seed_reference.sql"
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP/seed_reference.sql"
q "CREATE EXTENSION oauth_tokens CASCADE"
qf "$TMP/seed_reference.sql" >/dev/null
t0=$(date +%s.%N)
q "SELECT oauth.register_provider('fake', '$PURL/token', 'bench-client', 'bench-secret')" >/dev/null
q "CREATE SCHEMA bench;
   CREATE TABLE bench.ids (n int PRIMARY KEY, workspace_id text NOT NULL, id uuid NOT NULL);
   INSERT INTO bench.ids
   SELECT g, 'ws' || (g % 100),
          oauth.create_connection('ws' || (g % 100), 'fake', 'acct' || g,
                                  'access-token-' || g || repeat('x', 200), 'g' || g || '.0',
                                  now() + interval '1 day')
     FROM generate_series(1, $N_CONN) g;
   ANALYZE bench.ids, oauth.connections;"
t1=$(date +%s.%N)
log "created $N_CONN connections in $(calc %.1f "$t1 - $t0") s"
ok=$(q "SELECT oauth.valid_token(b.workspace_id, b.id) = 'access-token-1' || repeat('x', 200)
          FROM bench.ids b WHERE b.n = 1")
[ "$ok" = t ] || die "valid_token did not return the stored token"

SUMMARY=()
# target LABEL VALUE OP TARGET: a row of the summary
target() { SUMMARY+=("| $1 | $2 | $(status "$2" "$3" "$4") |"); }

# ---- part 1: fast path against the floor ----------------------------------------
part1() {
log "part 1: fast path against the floor"
cat > "$TMP/a_floor.sql" <<'EOF'
\set n random(1, 10000)
SELECT access_token FROM seedref.plain WHERE id = (SELECT id FROM seedref.ids WHERE n = :n);
EOF
cat > "$TMP/b_reference.sql" <<'EOF'
\set n random(1, 10000)
SELECT seedref.get_valid_access_token((SELECT id FROM seedref.ids WHERE n = :n), 'k3y');
EOF
cat > "$TMP/c_valid_token.sql" <<'EOF'
\set n random(1, 10000)
SELECT oauth.valid_token(b.workspace_id, b.id) FROM bench.ids b WHERE b.n = :n;
EOF
cat > "$TMP/d_valid_token_one.sql" <<'EOF'
\set n 1
SELECT oauth.valid_token(b.workspace_id, b.id) FROM bench.ids b WHERE b.n = :n;
EOF
cat > "$TMP/e_reference_one.sql" <<'EOF'
\set n 1
SELECT seedref.get_valid_access_token((SELECT id FROM seedref.ids WHERE n = :n), 'k3y');
EOF
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP"/*.sql

declare -gA TPS LAT ALL
IFS='|' read -r p1_att p1_waits < <(q "SELECT refreshes_attempted, waits FROM oauth.stats()")
WORKLOADS=(a_floor b_reference c_valid_token d_valid_token_one e_reference_one)
declare -gA LABEL=(
    [a_floor]="a. floor: plain primary-key lookup (seedref.plain)"
    [b_reference]="b. reference pattern, random connection"
    [c_valid_token]="c. oauth.valid_token, random connection"
    [d_valid_token_one]="d. oauth.valid_token, all clients on one connection"
    [e_reference_one]="e. reference pattern, all clients on one connection")
for round in $(seq "$BENCH_ROUNDS"); do
    order=("${WORKLOADS[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=()
        for ((k = ${#WORKLOADS[@]} - 1; k >= 0; k--)); do order+=("${WORKLOADS[$k]}"); done
    fi
    for w in "${order[@]}"; do
        out=$TMP/pgbench_$w.out
        if ! as_pg $PG_BIN/pgbench -n -M prepared -c 8 -j 2 -T "$BENCH_SECONDS" \
                -h "$TMP" -p "$PORT" -f "$TMP/$w.sql" "$DB" >"$out" 2>&1; then
            cat "$out" >&2
            die "pgbench $w"
        fi
        grep -q '^number of failed transactions: 0 ' "$out" || { cat "$out" >&2; die "pgbench $w had failed transactions"; }
        tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")
        lat=$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$out")
        [ -n "$tps" ] || { cat "$out" >&2; die "no tps in pgbench output"; }
        log "round $round $w: $tps tps, $lat ms"
        ALL[$w]="${ALL[$w]:+${ALL[$w]} / }$(calc %.0f "$tps")"
        if [ -z "${TPS[$w]:-}" ] || awk -v a="$tps" -v b="${TPS[$w]}" 'BEGIN { exit !(a > b) }'; then
            TPS[$w]=$tps
            LAT[$w]=$lat
        fi
    done
done
IFS='|' read -r p1_att2 p1_waits2 < <(q "SELECT refreshes_attempted, waits FROM oauth.stats()")
# Cost per call in one session, no concurrency: where valid_token's time goes.
q "CREATE FUNCTION bench.us_per_row(sql text) RETURNS numeric LANGUAGE plpgsql AS \$\$
   DECLARE
       t0 timestamptz;
       n bigint;
       best numeric;
   BEGIN
       FOR i IN 1..3 LOOP
           t0 := clock_timestamp();
           EXECUTE sql INTO n;
           best := least(best, extract(epoch FROM clock_timestamp() - t0) * 1e6 / n);
       END LOOP;
       RETURN round(best, 2);
   END \$\$"
US_VT=$(q "SELECT bench.us_per_row('SELECT count(oauth.valid_token(b.workspace_id, b.id)) FROM bench.ids b')")
US_JOIN=$(q "SELECT bench.us_per_row('SELECT count(c.access_token_ciphertext) FROM bench.ids b JOIN oauth.connections c ON c.id = b.id')")
US_OPEN=$(q "SELECT bench.us_per_row('SELECT count(oauth._open(c.access_token_ciphertext, ''connection/'' || c.id || ''/access'')) FROM bench.ids b JOIN oauth.connections c ON c.id = b.id')")
US_REF=$(q "SELECT bench.us_per_row('SELECT count(seedref.get_valid_access_token(i.id, ''k3y'')) FROM seedref.ids i WHERE i.n <= 1000')")
US_PLAIN=$(q "SELECT bench.us_per_row('SELECT count(p.access_token) FROM seedref.ids i JOIN seedref.plain p ON p.id = i.id')")
ratio() { calc %.3f "${TPS[$1]} / ${TPS[$2]}"; }
R_CA=$(ratio c_valid_token a_floor)
R_DA=$(ratio d_valid_token_one a_floor)
R_DC=$(ratio d_valid_token_one c_valid_token)
R_BA=$(ratio b_reference a_floor)
R_EA=$(ratio e_reference_one a_floor)
{
    echo "## 1. Fast path against the primary-key floor"
    echo
    echo "pgbench -n -M prepared -c 8 -j 2 -T $BENCH_SECONDS, $N_CONN connections in 100 workspaces,"
    echo "tokens valid for a day, one after the other in this run$( [ "$BENCH_ROUNDS" -gt 1 ] && echo ": $BENCH_ROUNDS rounds, every other one in reverse order, best tps of each workload")."
    echo
    echo "| workload | tps | avg latency (ms) | vs floor | tps of each round |"
    echo "|---|---:|---:|---:|---:|"
    for w in "${WORKLOADS[@]}"; do
        echo "| ${LABEL[$w]} | $(calc %.0f "${TPS[$w]}") | ${LAT[$w]} | $(ratio "$w" a_floor) | ${ALL[$w]} |"
    done
    echo
    echo "Refreshes started / waits during part 1: $((p1_att2 - p1_att)) / $((p1_waits2 - p1_waits)) (the fast path never refreshes)."
    echo
    echo "Cost per call in one session (best of 3 statements over all $N_CONN rows, 1,000 for the reference):"
    echo
    echo "| call | us per row |"
    echo "|---|---:|"
    echo "| oauth.valid_token (row read by the function, decrypt) | $US_VT |"
    echo "| oauth._open, the decrypt alone (join to the row: $US_JOIN us/row, subtracted) | $(calc %.2f "$US_OPEN - $US_JOIN") |"
    echo "| seedref.get_valid_access_token (row lock, pgp_sym_decrypt) | $US_REF |"
    echo "| seedref.plain, token read in a hash join (no per-row index probe) | $US_PLAIN |"
    echo
    echo "| ratio | value | target | |"
    echo "|---|---:|---|---|"
    echo "| c/a valid_token random / floor | $R_CA | >= 0.7 | $(status "$R_CA" '>=' 0.7) |"
    echo "| d/a valid_token one connection / floor | $R_DA | | |"
    echo "| d/c one connection / random | $R_DC | >= 0.9 | $(status "$R_DC" '>=' 0.9) |"
    echo "| b/a reference random / floor | $R_BA | (README: 0.062) | |"
    echo "| e/a reference one connection / floor | $R_EA | (README: 0.035) | |"
    echo "| c/b valid_token / reference, random | $(ratio c_valid_token b_reference) | | |"
    echo
} >> "$RES"
target "1. c/a (valid_token random / floor) >= 0.7" "$R_CA" '>=' 0.7
target "1. d/c (one connection / random) >= 0.9" "$R_DC" '>=' 0.9
}

# ---- part 2: stampede ---------------------------------------------------------------
# One stampede round: STAMPEDE_CLIENTS pgbench sessions each call
# bench.stampede_call(kind, label), which calls valid_token once while the
# token is fresh (a new session's first call loads caches and the key ring;
# application sessions are long-lived), waits at a barrier (a shared
# advisory lock that an orchestrator session holds exclusively), then does
# the measured step, recording clock_timestamp() before and after it, and
# then sleeps a second before it records the result, so that no session's
# own follow-up work (INSERT, commit, the answer to pgbench) competes for the
# CPUs with the others' measured step.  Kinds:
#   refresh   the orchestrator expires the token, then opens the barrier:
#             every session needs the same refresh (the stampede)
#   fresh     control: the token is fresh (fast path under the same storm)
#   lockwait  control: instead of valid_token, wait for a second advisory
#             lock that the orchestrator releases PROVIDER_LATENCY_MS after
#             the barrier: PostgreSQL's lock manager waking the same crowd
#             after the same delay
# Sets R_N R_DISTINCT R_TOK R_P50 R_P99 R_MAX R_SPREAD R_LAST.
stampede_round() {
    local kind=$1 label=$2 pre="" post=""
    case $kind in
        refresh) pre="UPDATE oauth.connections SET expires_at = now() - interval '1 minute' WHERE id = '$SID';" ;;
        lockwait) pre="SELECT pg_advisory_lock(4243);"
                  post="SELECT pg_sleep($PROVIDER_LATENCY_MS / 1000.0); SELECT pg_advisory_unlock(4243);" ;;
    esac
    echo "SELECT bench.stampede_call('$kind', '$label', 'ws-stampede', '$SID');" > "$TMP/stampede_$label.sql"
    cat > "$TMP/orchestrate_$label.sql" <<EOF
SELECT pg_advisory_lock(4242);
DO \$\$
DECLARE
    t0 timestamptz := clock_timestamp();
    n int;
BEGIN
    LOOP
        SELECT count(*) INTO n FROM pg_locks
         WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted;
        EXIT WHEN n >= $STAMPEDE_CLIENTS;
        IF clock_timestamp() - t0 > interval '60 seconds' THEN
            RAISE EXCEPTION 'only % of $STAMPEDE_CLIENTS sessions reached the barrier', n;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END \$\$;
$pre
\\o $TMP/release_$label.epoch
SELECT extract(epoch FROM clock_timestamp());
\\o
SELECT pg_advisory_unlock(4242);
$post
EOF
    [ "$(id -u)" -eq 0 ] && chown postgres: "$TMP"/*.sql
    as_pg "${PSQL[@]}" -At -f "$TMP/orchestrate_$label.sql" >"$TMP/orchestrate_$label.out" 2>&1 &
    ORCH_BG=$!
    local held=0
    for _ in $(seq 200); do
        held=$(q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")
        [ "$held" = 1 ] && break
        sleep 0.05
    done
    [ "$held" = 1 ] || die "the orchestrator did not take the barrier lock"
    as_pg $PG_BIN/pgbench -n -M prepared -c "$STAMPEDE_CLIENTS" -j 2 -t 1 \
        -h "$TMP" -p "$PORT" -f "$TMP/stampede_$label.sql" "$DB" \
        >"$TMP/pgbench_$label.out" 2>&1 &
    PGBENCH_BG=$!
    # pgbench ends only after the barrier opened: if it ends first, it failed
    while kill -0 "$ORCH_BG" 2>/dev/null; do
        if ! kill -0 "$PGBENCH_BG" 2>/dev/null; then
            cat "$TMP/pgbench_$label.out" >&2
            die "stampede pgbench ($label) ended before the barrier opened"
        fi
        sleep 0.1
    done
    wait "$ORCH_BG" || { cat "$TMP/orchestrate_$label.out" >&2; die "stampede orchestrator ($label)"; }
    ORCH_BG=""
    wait "$PGBENCH_BG" || { cat "$TMP/pgbench_$label.out" >&2; die "stampede pgbench ($label)"; }
    PGBENCH_BG=""
    RELEASE=$(tr -d ' \n' < "$TMP/release_$label.epoch")
    # in session: from asking to having the answer
    IFS='|' read -r R_N R_DISTINCT R_TOK R_P50 R_P99 R_MAX R_SPREAD R_LAST < <(q "
        SELECT count(*), count(DISTINCT token), min(token),
               round(percentile_disc(0.5) WITHIN GROUP (ORDER BY ms), 1),
               round(percentile_disc(0.99) WITHIN GROUP (ORDER BY ms), 1),
               round(max(ms), 1),
               round(extract(epoch FROM max(asked_at) - min(asked_at))::numeric * 1000, 1),
               round((extract(epoch FROM max(got_at)) - $RELEASE)::numeric * 1000, 1)
          FROM (SELECT *, (extract(epoch FROM got_at - asked_at) * 1000)::numeric AS ms
                  FROM bench.stampede_seen WHERE label = '$label') s")
    log "  $label: p50 $R_P50 ms, p99 $R_P99 ms, max $R_MAX ms; asks spread over $R_SPREAD ms"
}

part2() {
log "part 2: stampede of $STAMPEDE_CLIENTS sessions on one expired token"
SID=$(q "SELECT oauth.create_connection('ws-stampede', 'fake', 'acct-stampede', 'stampede-initial',
                                        'stampede.0', now() + interval '1 day')")
q "CREATE TABLE bench.stampede_seen (label text, pid int, token text, asked_at timestamptz, got_at timestamptz);
   CREATE FUNCTION bench.stampede_call(p_kind text, p_label text, p_ws text, p_id uuid) RETURNS void
   LANGUAGE plpgsql AS \$\$
   DECLARE
       t1 timestamptz;
       t2 timestamptz;
       tok text;
   BEGIN
       -- warm this new session up (caches, key ring) as a pooled one would be
       PERFORM oauth.valid_token(p_ws, p_id);
       PERFORM pg_advisory_xact_lock_shared(4242);
       t1 := clock_timestamp();
       IF p_kind = 'lockwait' THEN
           PERFORM pg_advisory_xact_lock_shared(4243);
           tok := 'none';
       ELSE
           tok := oauth.valid_token(p_ws, p_id);
       END IF;
       t2 := clock_timestamp();
       PERFORM pg_sleep(1);
       INSERT INTO bench.stampede_seen VALUES (p_label, pg_backend_pid(), tok, t1, t2);
   END \$\$"
ctl post "$PURL/_control/grant" "{\"grant\": \"stampede\", \"latency_ms\": $PROVIDER_LATENCY_MS}"
S_LIMIT=$((2 * PROVIDER_LATENCY_MS))

stampede_round fresh fresh
F_ROW="| control: valid_token, token fresh | $R_P50 | $R_P99 | $R_MAX | $R_SPREAD | $R_LAST |"

ROUND_ROWS=()
P99S=()
CALLS_ALL=()
SAME_ALL=yes
for r in $(seq "$STAMPEDE_ROUNDS"); do
    calls_before=$(python3 bench/benchlib.py grant-count "$PURL/_control/stats" stampede)
    IFS='|' read -r a0 w0 j0 < <(q "SELECT refreshes_attempted, waits, waiters_served_by_another FROM oauth.stats()")
    stampede_round refresh "refresh$r"
    calls_after=$(python3 bench/benchlib.py grant-count "$PURL/_control/stats" stampede)
    IFS='|' read -r a1 w1 j1 < <(q "SELECT refreshes_attempted, waits, waiters_served_by_another FROM oauth.stats()")
    calls=$((calls_after - calls_before))
    stored=$(q "SELECT oauth.valid_token('ws-stampede', '$SID')")
    same="no"
    [ "$R_N" = "$STAMPEDE_CLIENTS" ] && [ "$R_DISTINCT" = 1 ] && [ "$R_TOK" = "$stored" ] && same="yes"
    [ "$same" = yes ] || SAME_ALL=no
    # where the time went: first ask -> HTTP call starts -> stored -> last waiter served
    IFS='|' read -r d_start d_http d_first d_last < <(q "
        WITH e AS (SELECT at, (detail->>'duration_ms')::numeric AS http_ms FROM oauth.events
                    WHERE connection_id = '$SID' AND event = 'refreshed' ORDER BY id DESC LIMIT 1),
             s AS (SELECT min(asked_at) AS first_ask, max(got_at) AS last_got, min(got_at) AS first_got
                     FROM bench.stampede_seen WHERE label = 'refresh$r')
        SELECT round(extract(epoch FROM e.at - s.first_ask)::numeric * 1000 - e.http_ms, 1), e.http_ms,
               round(extract(epoch FROM s.first_got - e.at)::numeric * 1000, 1),
               round(extract(epoch FROM s.last_got - e.at)::numeric * 1000, 1)
          FROM e, s")
    ROUND_ROWS+=("| $r | $calls | $R_P50 | $R_P99 | $R_MAX | $R_SPREAD | +$((w1 - w0)) | $d_start | $d_http | $d_first / $d_last | $R_LAST | $same (\`$R_TOK\`) |")
    P99S+=("$R_P99")
    CALLS_ALL+=("$calls")
done
S_P99=$(printf '%s\n' "${P99S[@]}" | sort -n | sed -n "$(( (STAMPEDE_ROUNDS + 1) / 2 ))p")
S_CALLS_MAX=$(printf '%s\n' "${CALLS_ALL[@]}" | sort -n | tail -1)
S_CALLS_MIN=$(printf '%s\n' "${CALLS_ALL[@]}" | sort -n | head -1)

stampede_round lockwait lockwait
L_ROW="| control: advisory lock released after $PROVIDER_LATENCY_MS ms | $R_P50 | $R_P99 | $R_MAX | $R_SPREAD | $R_LAST |"

log "stampede: provider calls per round ${CALLS_ALL[*]}, median waiter p99 $S_P99 ms, same token: $SAME_ALL"
{
    echo "## 2. Stampede: $STAMPEDE_CLIENTS sessions, one expired token"
    echo
    echo "Provider latency $PROVIDER_LATENCY_MS ms for the grant. $STAMPEDE_CLIENTS pgbench sessions (-c $STAMPEDE_CLIENTS -j 2 -t 1)"
    echo "each call bench.stampede_call(), which warms the session up with one valid_token call"
    echo "while the token is fresh, waits at a barrier (a shared advisory lock held by an"
    echo "orchestrator session), then calls oauth.valid_token, recording clock_timestamp()"
    echo "before and after: the waiter latency. When all $STAMPEDE_CLIENTS wait at the barrier, the"
    echo "orchestrator expires the token and opens the barrier, so all ask at once, inside the"
    echo "server. Each session then sleeps 1 s before it records its result and commits, so"
    echo "that its own follow-up work does not compete with the others' wait for the CPUs."
    echo "(The pgbench per-transaction log would time the barrier, the sleep and 200 client"
    echo "round trips on 2 pgbench threads, not the wait.) $STAMPEDE_ROUNDS rounds; the headline"
    echo "is the median round."
    echo
    echo "| measure | value | target | |"
    echo "|---|---:|---|---|"
    echo "| provider calls per round | ${CALLS_ALL[*]} | 1 | $( [ "$S_CALLS_MIN" = 1 ] && [ "$S_CALLS_MAX" = 1 ] && echo met || echo MISSED) |"
    echo "| waiter latency p99, in session, median round (ms) | $S_P99 | < $S_LIMIT (2x provider latency) | $(status "$S_P99" '<' "$S_LIMIT") |"
    echo "| every session got the same token, the one stored | $SAME_ALL | yes | $( [ "$SAME_ALL" = yes ] && echo met || echo MISSED) |"
    echo
    echo "| round | provider calls | p50 (ms) | p99 (ms) | max (ms) | asks spread over (ms) | sessions that waited | first ask to HTTP start (ms) | HTTP (ms) | stored to first / last waiter served (ms) | barrier to last served (ms) | same token |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROUND_ROWS[@]}"
    echo
    echo "\"sessions that waited\" is the growth of oauth.stats().waits; the others asked after the"
    echo "new token was stored. The same crowd with nothing to wait for, and waiting on"
    echo "PostgreSQL's lock manager instead, shows what $STAMPEDE_CLIENTS sessions waking at once cost on"
    echo "this machine ($(nproc) CPUs):"
    echo
    echo "| round | p50 (ms) | p99 (ms) | max (ms) | asks spread over (ms) | barrier to last served (ms) |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "$F_ROW"
    echo "$L_ROW"
    echo
} >> "$RES"
SUMMARY+=("| 2. stampede: provider calls == 1 (each round) | ${CALLS_ALL[*]} | $( [ "$S_CALLS_MIN" = 1 ] && [ "$S_CALLS_MAX" = 1 ] && echo met || echo MISSED) |")
target "2. stampede: waiter p99 < $S_LIMIT ms (in session, median round)" "$S_P99" '<' "$S_LIMIT"
SUMMARY+=("| 2. stampede: all sessions got the same token | $SAME_ALL | $( [ "$SAME_ALL" = yes ] && echo met || echo MISSED) |")
}

# ---- part 3: sweep at scale ------------------------------------------------------------
# One sweep pass: make the N_CONN bench connections due, turn the sweep on,
# wait until every one has been refreshed.  Sets P_TIME P_DB P_LEFT P_CALLS
# P_GRANTS P_MAXG P_ATT P_OK P_TRANS P_FAILED P_ANON0 P_ANON_PEAK P_ANON_END.
sweep_pass() {
    local pass=$1 t0 T0 a next_report=1
    ctl post "$PURL/_control/reset" '{}'
    ctl post "$PURL/_control/default" "{\"latency_ms\": $PROVIDER_LATENCY_MS}"
    q "UPDATE oauth.connections c
          SET refresh_after = now() - interval '1 minute', expires_at = now() + interval '4 minutes'
         FROM bench.ids b WHERE b.id = c.id"
    q "VACUUM ANALYZE oauth.connections"
    IFS='|' read -r sa0 ss0 st0 < <(q "SELECT refreshes_attempted, refreshes_succeeded, refreshes_failed_transient FROM oauth.stats()")
    WPID=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'")
    [ -n "$WPID" ] || die "no oauth_tokens worker in pg_stat_activity"
    P_ANON0=$(anon_kb)
    P_ANON_PEAK=$P_ANON0
    q "ALTER SYSTEM SET oauth.max_concurrent_refreshes = $SWEEP_CONCURRENCY" >/dev/null
    q "ALTER SYSTEM SET oauth.sweep_interval = '1s'" >/dev/null
    T0=$(q "SELECT clock_timestamp()")
    t0=$(date +%s.%N)
    q "SELECT pg_reload_conf()" >/dev/null
    while :; do
        P_LEFT=$(q "SELECT count(*) FROM oauth.connections c JOIN bench.ids b ON b.id = c.id
                     WHERE c.refreshed_at IS NULL OR c.refreshed_at < '$T0'")
        P_TIME=$(calc %.2f "$(date +%s.%N) - $t0")
        a=$(anon_kb)
        [ "${a:-0}" -gt "$P_ANON_PEAK" ] && P_ANON_PEAK=$a
        [ "$P_LEFT" -eq 0 ] && break
        if awk -v e="$P_TIME" -v n="$next_report" 'BEGIN { exit !(e >= n) }'; then
            log "  pass $pass, ${P_TIME}s: $P_LEFT left"
            next_report=$((next_report + 2))
        fi
        awk -v e="$P_TIME" -v t="$SWEEP_TIMEOUT" 'BEGIN { exit !(e > t) }' && break
        sleep 0.2
    done
    q "ALTER SYSTEM SET oauth.sweep_interval = 0" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
    P_DB=$(q "SELECT round(extract(epoch FROM max(c.refreshed_at) - '$T0'::timestamptz)::numeric, 2)
                FROM oauth.connections c JOIN bench.ids b ON b.id = c.id WHERE c.refreshed_at >= '$T0'")
    local wpid_end
    wpid_end=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'")
    [ "$wpid_end" = "$WPID" ] || log "the worker restarted during the sweep ($WPID -> $wpid_end)"
    P_ANON_END=$(anon_kb)
    read -r P_CALLS P_GRANTS P_MAXG < <(python3 bench/benchlib.py stats "$PURL/_control/stats")
    IFS='|' read -r sa1 ss1 st1 < <(q "SELECT refreshes_attempted, refreshes_succeeded, refreshes_failed_transient FROM oauth.stats()")
    P_ATT=$((sa1 - sa0)); P_OK=$((ss1 - ss0)); P_TRANS=$((st1 - st0))
    P_FAILED=$(q "SELECT count(*) FROM oauth.events WHERE event = 'refresh_failed' AND at >= '$T0'")
    log "  pass $pass: $N_CONN in $P_TIME s, $P_CALLS provider calls, worker RssAnon $P_ANON0 -> peak $P_ANON_PEAK -> $P_ANON_END kB"
}
anon_kb() { awk '/^RssAnon/ { print $2 }' "/proc/$WPID/status" 2>/dev/null || echo 0; }

part3() {
log "part 3: provider capacity"
ctl post "$PURL/_control/reset" '{}'
ctl post "$PURL/_control/default" "{\"latency_ms\": $PROVIDER_LATENCY_MS}"
CAP_N=$((SWEEP_CONCURRENCY * 40))
t0=$(date +%s.%N)
curl -s -Z --parallel-max "$SWEEP_CONCURRENCY" --parallel-immediate \
    -d 'grant_type=refresh_token&refresh_token=capacity.0' "$PURL/token?[1-$CAP_N]" >/dev/null 2>&1 \
    || die "capacity probe (curl --parallel) failed"
t1=$(date +%s.%N)
read -r cap_total _ _ < <(python3 bench/benchlib.py stats "$PURL/_control/stats")
[ "$cap_total" = "$CAP_N" ] || log "capacity probe: provider counted $cap_total of $CAP_N requests"
CAP_RPS=$(calc %.0f "$CAP_N / ($t1 - $t0)")
CAP_IDEAL=$(calc %.0f "$SWEEP_CONCURRENCY * 1000 / $PROVIDER_LATENCY_MS")
CAP_FLOOR=$(calc %.2f "$N_CONN / $CAP_RPS")
log "provider: $CAP_RPS requests/s at $SWEEP_CONCURRENCY in flight (ideal $CAP_IDEAL)"

log "part 3: sweep of $N_CONN due connections, $SWEEP_PASSES passes"
SW_LIMIT=$(calc %.2f "$N_CONN * $PROVIDER_LATENCY_MS / 1000 / $SWEEP_CONCURRENCY")
PASS_ROWS=()
SW_WORST=0
SW_CALLS_OK=met
SW_TIMED_OUT=""
for pass in $(seq "$SWEEP_PASSES"); do
    sweep_pass "$pass"
    ratio=$(calc %.2f "$P_TIME / $SW_LIMIT")
    if [ "$P_LEFT" -ne 0 ]; then
        SW_TIMED_OUT="pass $pass timed out after $P_TIME s with $P_LEFT left"
        time_cell="**timed out, $P_LEFT left**"
    else
        time_cell=$P_TIME
    fi
    awk -v a="$ratio" -v b="$SW_WORST" 'BEGIN { exit !(a > b) }' && SW_WORST=$ratio
    [ "$P_CALLS" = "$N_CONN" ] || SW_CALLS_OK=MISSED
    PASS_ROWS+=("| $pass | $time_cell | ${P_DB:-n/a} | $ratio | $(calc %.2f "$P_TIME / $CAP_FLOOR") | $P_CALLS ($P_GRANTS grants, max $P_MAXG per grant) | +$P_ATT / +$P_OK / +$P_TRANS | $P_FAILED | $P_ANON0 / $P_ANON_PEAK / $P_ANON_END |")
    CALLS_LIST+=" $P_CALLS"
done
HWM=$(awk '/^VmHWM/ { print $2 " " $3 }' "/proc/$WPID/status" 2>/dev/null || echo unknown)
RSS=$(awk '/^(VmRSS|RssAnon|RssShmem)/ { printf "%s%s %s kB", sep, $1, $2; sep = ", " }' "/proc/$WPID/status" 2>/dev/null || echo unknown)
log "sweep: worst ratio to the limit $SW_WORST, worker VmHWM $HWM"
{
    echo "## 3. Sweep of $N_CONN due connections"
    echo
    echo "All $N_CONN connections due at once (refresh_after in the past, expiring in 4 minutes),"
    echo "provider latency $PROVIDER_LATENCY_MS ms, oauth.max_concurrent_refreshes = $SWEEP_CONCURRENCY,"
    echo "oauth.sweep_interval = 1s (ALTER SYSTEM + pg_reload_conf(); back to 0 after each pass);"
    echo "time from the reload until no connection is left unrefreshed (polled every 200 ms)."
    echo "Limit = $N_CONN x $PROVIDER_LATENCY_MS ms / $SWEEP_CONCURRENCY = $SW_LIMIT s. $SWEEP_PASSES passes on the same worker;"
    echo "the worst pass counts."
    echo
    echo "| measure | value | target | |"
    echo "|---|---:|---|---|"
    if [ -n "$SW_TIMED_OUT" ]; then
        echo "| ratio to the limit (worst pass) | $SW_TIMED_OUT | <= 1.5 | MISSED |"
    else
        echo "| ratio to the limit (worst pass) | $SW_WORST | <= 1.5 | $(status "$SW_WORST" '<=' 1.5) |"
    fi
    echo "| provider calls per pass | ${CALLS_LIST# } | $N_CONN | $SW_CALLS_OK |"
    echo "| worker peak RSS (VmHWM since the server started; includes the shared buffers it touched) | $HWM | | |"
    echo "| worker memory at the end | $RSS | | |"
    echo
    echo "| pass | time (s) | last refreshed_at - reload (s) | / limit | / provider capacity | provider calls | stats(): attempted / succeeded / transient | refresh_failed events | worker RssAnon before / peak / after (kB) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${PASS_ROWS[@]}"
    echo
    echo "Provider capacity, measured just before with curl --parallel-max $SWEEP_CONCURRENCY ($CAP_N requests):"
    echo "$CAP_RPS requests/s (ideal $CAP_IDEAL), so the fake provider alone needs $CAP_FLOOR s for $N_CONN"
    echo "refreshes (\"/ provider capacity\" above)."
    echo
} >> "$RES"
if [ -n "$SW_TIMED_OUT" ]; then
    SUMMARY+=("| 3. sweep: time / limit <= 1.5 (worst pass) | $SW_TIMED_OUT | MISSED |")
else
    target "3. sweep: time / limit <= 1.5 (worst pass)" "$SW_WORST" '<=' 1.5
fi
SUMMARY+=("| 3. sweep: provider calls == $N_CONN (each pass) | ${CALLS_LIST# } | $SW_CALLS_OK |")
}

# ---- part 4: the due query among 1,000,000 connections -----------------------------------
part4() {
log "part 4: inserting $N_BIG connections ($N_DUE due)"
t0=$(date +%s.%N)
q "INSERT INTO oauth.connections (workspace_id, provider, provider_account_id,
                                  access_token_ciphertext, expires_at, refresh_after)
   SELECT 'big-ws-' || (g % 10007), 'fake', 'big-acct-' || g, '\\x00'::bytea,
          ra + interval '5 minutes', ra
     FROM (SELECT g, CASE WHEN g % ($N_BIG / $N_DUE) = 0
                          THEN now() - (g % 600) * interval '1 second'
                          ELSE now() + interval '10 minutes' + (g % 86400) * interval '1 second'
                     END AS ra
             FROM generate_series(1, $N_BIG) g) s"
q "VACUUM ANALYZE oauth.connections"
t1=$(date +%s.%N)
log "inserted and analyzed in $(calc %.1f "$t1 - $t0") s"
due=$(q "SELECT count(*) FROM oauth.connections WHERE refresh_after <= now()")
total=$(q "SELECT count(*) FROM oauth.connections")
# The body of oauth._due_connections as installed, with the limit spelled out.
body=$(q "SELECT regexp_replace(prosrc, '\\mmax_connections\\M|\\\$1\\M', '$N_DUE', 'g')
            FROM pg_proc WHERE oid = 'oauth._due_connections(int)'::regprocedure")
grep -q "LIMIT $N_DUE" <<<"$body" || die "could not find the LIMIT in oauth._due_connections: $body"
printf 'EXPLAIN (ANALYZE, BUFFERS)\n%s;\n' "$body" > "$TMP/due.sql"
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP/due.sql"
times=()
for i in 1 2 3 4 5 6; do
    as_pg "${PSQL[@]}" -At -f "$TMP/due.sql" > "$TMP/due_plan.txt"
    times+=("$(sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p' "$TMP/due_plan.txt")")
done
FIRST=${times[0]}
MEDIAN=$(printf '%s\n' "${times[@]:1}" | sort -n | sed -n 3p)
idx=no
grep -q 'connections_refresh_after_idx' "$TMP/due_plan.txt" && idx=yes
scan=$(grep -m1 'connections_refresh_after_idx' "$TMP/due_plan.txt" | sed 's/^[ >-]*//; s/ *(cost=.*//' || true)
# The same through the function, and as the worker runs it (a prepared plan).
cat > "$TMP/due_fn.sql" <<EOF
EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM oauth._due_connections($N_DUE);
SET plan_cache_mode = force_generic_plan;
PREPARE due(int) AS SELECT id, version FROM oauth._due_connections(\$1);
EXPLAIN (ANALYZE, BUFFERS) EXECUTE due($N_DUE);
EOF
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP/due_fn.sql"
as_pg "${PSQL[@]}" -At -f "$TMP/due_fn.sql" > "$TMP/due_fn_plan.txt"
FN_TIMES=$(sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p' "$TMP/due_fn_plan.txt" | paste -sd/)
log "due query: median $MEDIAN ms (first $FIRST ms), index: $idx"
{
    echo "## 4. Due query among $total connections ($due due)"
    echo
    echo "Rows inserted directly (fake ciphertext), then VACUUM ANALYZE. The body of oauth._due_connections"
    echo "as installed, LIMIT $N_DUE, under EXPLAIN (ANALYZE, BUFFERS);"
    echo "the first run after the load, then the median of five."
    echo
    echo "| measure | value | target | |"
    echo "|---|---:|---|---|"
    echo "| execution time, median of 5 (ms) | $MEDIAN | < 50 | $(status "$MEDIAN" '<' 50) |"
    echo "| execution time, first run (ms) | $FIRST | | |"
    echo "| uses connections_refresh_after_idx | $idx (${scan:-?}) | yes | $( [ "$idx" = yes ] && echo met || echo MISSED) |"
    echo "| through the function / worker's generic plan (ms) | $FN_TIMES | | |"
    echo
    echo '```'
    cat "$TMP/due_plan.txt"
    echo '```'
    echo
    echo "<details><summary>oauth._due_connections($N_DUE) and the worker's prepared (generic) plan</summary>"
    echo
    echo '```'
    cat "$TMP/due_fn_plan.txt"
    echo '```'
    echo "</details>"
    echo
} >> "$RES"

target "4. due query < 50 ms" "$MEDIAN" '<' 50
SUMMARY+=("| 4. due query uses connections_refresh_after_idx | $idx | $( [ "$idx" = yes ] && echo met || echo MISSED) |")
}

# ---- part 7: rotate_key over 100,000 connections while callers refresh ------------------
# Callers (pgbench, ROTATE_CLIENTS sessions) force refreshes of 2,000
# connections through the worker (provider latency 50 ms) while rotate_key
# re-encrypts ROTATE_N connections; every caller's wait comes from pgbench's
# per-transaction log.  The same is measured during the former rotation (one
# transaction holding every row lock), run inline as a DO block.
rotate_window() {   # LOGPREFIX T0 T1 -> "n max p99" of callers overlapping [T0, T1]
    cat "$1".* 2>/dev/null | awk -v t0="$2" -v t1="$3" '
        { end = $5 + $6 / 1e6; start = end - $3 / 1e6;
          if (start < t1 && end > t0) printf "%.1f\n", $3 / 1000.0 }' | sort -n | awk '
        { l[NR] = $1 }
        END { if (NR == 0) { print "0 0 0"; exit }
              k = int(0.99 * NR + 0.999); if (k < 1) k = 1;
              printf "%d %.1f %.1f\n", NR, l[NR], l[k] }'
}
rotate_run() {      # LABEL SQL -> sets R_SECS R_N R_MAX R_P99 R_BASE_MAX R_TRANS
    local label=$1 sql=$2 t0 t1 tr0 tr1 pid
    tr0=$(q "SELECT refreshes_failed_transient FROM oauth.stats()")
    rm -f "$TMP"/rot_"$label".*
    (cd "$TMP" && "${RUN[@]}" $PG_BIN/pgbench -n -h "$TMP" -p "$PORT" -c "$ROTATE_CLIENTS" -j 2 \
        -T "$ROTATE_BENCH_T" -f "$TMP/rotate_callers.sql" -l --log-prefix="rot_$label" "$DB" \
        >"$TMP/rot_$label.out" 2>&1) &
    pid=$!
    PGBENCH_BG="$PGBENCH_BG $pid"
    sleep 3
    t0=$(date +%s.%N)
    q "$sql" >/dev/null
    t1=$(date +%s.%N)
    wait "$pid" || die "pgbench (part 7, $label) failed: $(tail -3 "$TMP/rot_$label.out")"
    R_SECS=$(calc %.2f "$t1 - $t0")
    read -r R_N R_MAX R_P99 < <(rotate_window "$TMP/rot_$label" "$t0" "$t1")
    read -r _ R_BASE_MAX _ < <(rotate_window "$TMP/rot_$label" 0 "$t0")
    tr1=$(q "SELECT refreshes_failed_transient FROM oauth.stats()")
    R_TRANS=$((tr1 - tr0))
    log "  $label: $R_SECS s; callers during it: $R_N, longest wait $R_MAX ms (p99 $R_P99 ms; before it $R_BASE_MAX ms), transient outcomes $R_TRANS"
}
rotate_add_key() {  # put a new key on the first line of the key ring
    as_pg bash -c "umask 077; { printf '$1:%s\n' \"\$(openssl rand -base64 32)\"; cat '$DATA/oauth_tokens.keys'; } > '$DATA/oauth_tokens.keys.new' && mv '$DATA/oauth_tokens.keys.new' '$DATA/oauth_tokens.keys'"
    q "SELECT oauth._reload_keys()" >/dev/null
}
part7() {
# part 4's million rows hold no real ciphertext (rotate_key would refuse them)
q "DELETE FROM oauth.connections WHERE provider_account_id LIKE 'big-acct-%'" >/dev/null
log "part 7: inserting $ROTATE_N connections to re-encrypt"
ctl post "$PURL/_control/reset" '{}'
ctl post "$PURL/_control/default" "{\"latency_ms\": $PROVIDER_LATENCY_MS}"
q "SELECT oauth.register_provider('rot', '$PURL/token', 'bench-client', 'bench-secret')" >/dev/null
q "CREATE SCHEMA IF NOT EXISTS bench;
   CREATE TABLE bench.rot_ids (n int PRIMARY KEY, workspace_id text NOT NULL, id uuid NOT NULL);
   INSERT INTO oauth.connections (id, workspace_id, provider, provider_account_id,
                                  access_token_ciphertext, refresh_token_ciphertext,
                                  expires_at, refresh_after)
   SELECT s.id, 'rws' || (s.g % 100), 'rot', 'racct' || s.g,
          oauth._seal('rot-access-' || s.g, 'connection/' || s.id || '/access'),
          oauth._seal('r' || s.g || '.0', 'connection/' || s.id || '/refresh'),
          now() + interval '1 day', now() + interval '1 day'
     FROM (SELECT g, gen_random_uuid() AS id FROM generate_series(1, $ROTATE_N) g) s;
   INSERT INTO bench.rot_ids
   SELECT row_number() OVER (ORDER BY c.id), c.workspace_id, c.id
     FROM oauth.connections c WHERE c.provider = 'rot' LIMIT 2000;" >/dev/null
q "VACUUM ANALYZE oauth.connections, bench.rot_ids" >/dev/null
printf '%s\n' '\set n random(1, 2000)' \
    'SELECT oauth.refresh(b.workspace_id, b.id) FROM bench.rot_ids b WHERE b.n = :n;' \
    > "$TMP/rotate_callers.sql"
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP/rotate_callers.sql"
total=$(q "SELECT count(*) FROM oauth.connections")
ROTATE_BENCH_T=${ROTATE_BENCH_T:-40}
rotate_add_key k2
log "part 7: rotate_key() over $total connections with $ROTATE_CLIENTS callers refreshing"
rotate_run batched "SELECT oauth.rotate_key()"
B_SECS=$R_SECS; B_N=$R_N; B_MAX=$R_MAX; B_P99=$R_P99; B_BASE=$R_BASE_MAX; B_TRANS=$R_TRANS
left=$(q "SELECT count(*) FROM oauth.connections WHERE oauth._key_id(access_token_ciphertext) <> 'k2'")
rotate_add_key k3
log "part 7: the former rotation (one transaction) for contrast"
rotate_run single "DO \$\$ DECLARE k text := oauth._active_key_id(); r record; ctx text; BEGIN
    FOR r IN SELECT c.id, c.access_token_ciphertext AS a, c.refresh_token_ciphertext AS rt
               FROM oauth.connections c
              WHERE oauth._key_id(c.access_token_ciphertext) <> k OR oauth._key_id(c.refresh_token_ciphertext) <> k
                FOR UPDATE
    LOOP
        ctx := 'connection/' || r.id;
        UPDATE oauth.connections SET
            access_token_ciphertext = CASE WHEN r.a IS NULL THEN NULL ELSE oauth._seal(oauth._open(r.a, ctx || '/access'), ctx || '/access') END,
            refresh_token_ciphertext = CASE WHEN r.rt IS NULL THEN NULL ELSE oauth._seal(oauth._open(r.rt, ctx || '/refresh'), ctx || '/refresh') END
         WHERE id = r.id;
    END LOOP; END \$\$"
{
    echo "## 7. rotate_key over $total connections while callers refresh"
    echo
    echo "$ROTATE_CLIENTS pgbench sessions call oauth.refresh() (a forced refresh through the worker,"
    echo "provider latency $PROVIDER_LATENCY_MS ms) on 2,000 of the connections being re-encrypted,"
    echo "from 3 s before the rotation until after it; a caller's wait is its pgbench latency,"
    echo "for every call that overlapped the rotation. \"former\" is the previous rotate_key"
    echo "body (one transaction locking every row), run inline for contrast."
    echo
    echo "| rotation | time (s) | callers during it | longest caller wait (ms) | p99 (ms) | longest before it (ms) | transient outcomes |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| rotate_key() (batches of 1,000, own worker) | $B_SECS | $B_N | $B_MAX | $B_P99 | $B_BASE | $B_TRANS |"
    echo "| former: one transaction | $R_SECS | $R_N | $R_MAX | $R_P99 | $R_BASE_MAX | $R_TRANS |"
    echo
    echo "Connections left under the old key after rotate_key(): $left."
    echo
} >> "$RES"
SUMMARY+=("| 7. rotate_key of $total connections: longest caller wait (ms) | $B_MAX (former: $R_MAX) | |")
}

for p in 1 2 3 4; do
    if part $p; then
        "part$p"
    fi
done

# ---- parts 5 and 6: the refresh engine under load (issue 8, engine) ---------------------
# Part 5: provider calls per needed refresh under a mixed load.  MIX_CONN
# connections of a provider whose tokens live MIX_LIFETIME s (shorter than
# the default min_validity of 1 minute), rotating and strictly single use;
# MIX_CLIENTS pgbench clients at MIX_RATE calls/s for MIX_SECONDS: 10% of the
# calls in transactions that roll back, 1% report the token they just got
# as rejected (token_rejected), the rest plain valid_token; the worker's
# sweep on (5 s); every 4 s, five connections' grants answer 503 for 2 s
# (faults).  A refresh is *needed* when the token it replaced was at least
# half its lifetime old (the refresh point), had been rejected, or was the
# first; a call answered with an injected fault needs a retry, so it counts
# as needed too.  Ratio = provider calls / needed (target <= 1.05).
MIX_CONN=${MIX_CONN:-100}
MIX_CLIENTS=${MIX_CLIENTS:-16}
MIX_SECONDS=${MIX_SECONDS:-40}
MIX_RATE=${MIX_RATE:-200}
MIX_LIFETIME=20
part5() {
log "part 5: provider calls per needed refresh under a mixed load"
ctl post "$PURL/_control/reset" '{}'
ctl post "$PURL/_control/default" "{\"latency_ms\": $PROVIDER_LATENCY_MS, \"expires_in\": $MIX_LIFETIME, \"rotate\": true, \"strict\": true}"
# part 4's due rows (no real ciphertext) stay out of the way of the sweep
q "UPDATE oauth.connections SET refresh_after = NULL WHERE provider = 'fake' AND refresh_after <= now()" >/dev/null
q "SELECT oauth.register_provider('mix', '$PURL/token', 'bench-client', 'bench-secret')" >/dev/null
q "CREATE TABLE bench.mix (n int PRIMARY KEY, workspace_id text NOT NULL, id uuid NOT NULL);
   INSERT INTO bench.mix
   SELECT g, 'mixws' || (g % 10),
          oauth.create_connection('mixws' || (g % 10), 'mix', 'mix' || g, 'at-mix-0', 'mix' || g || '.0',
                                  now() - interval '1 minute')
     FROM generate_series(1, $MIX_CONN) g;
   CREATE FUNCTION bench.mix_call(k int, kind text) RETURNS text LANGUAGE plpgsql AS \$\$
   DECLARE
       ws text;
       cid uuid;
       tok text;
   BEGIN
       SELECT m.workspace_id, m.id INTO ws, cid FROM bench.mix m WHERE m.n = k;
       tok := oauth.valid_token(ws, cid);
       IF kind = 'rejected' THEN
           PERFORM oauth.token_rejected(ws, cid, tok);
       END IF;
       RETURN 'ok';
   EXCEPTION WHEN OTHERS THEN
       RETURN SQLSTATE;   -- OA003 while a fault lasts: the client goes on
   END \$\$"
cat > "$TMP/mix.sql" <<EOF
\\set k random(1, $MIX_CONN)
\\set r random(1, 100)
\\if :r <= 10
BEGIN;
SELECT bench.mix_call(:k, 'valid');
ROLLBACK;
\\elif :r <= 11
SELECT bench.mix_call(:k, 'rejected');
\\else
SELECT bench.mix_call(:k, 'valid');
\\endif
EOF
[ "$(id -u)" -eq 0 ] && chown postgres: "$TMP/mix.sql"
q "ALTER SYSTEM SET oauth.max_concurrent_refreshes = 16" >/dev/null
q "ALTER SYSTEM SET oauth.sweep_interval = '5s'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
T0=$(q "SELECT clock_timestamp()")
# faults: every 4 s five grants answer 503 for 2 s
(
    set +e
    i=0
    while :; do
        sleep 2
        for j in 1 2 3 4 5; do
            g=$(( (i * 5 + j) % MIX_CONN + 1 ))
            ctl post "$PURL/_control/grant" "{\"grant\": \"mix$g\", \"mode\": \"503\"}"
        done
        sleep 2
        for j in 1 2 3 4 5; do
            g=$(( (i * 5 + j) % MIX_CONN + 1 ))
            ctl post "$PURL/_control/grant" "{\"grant\": \"mix$g\", \"mode\": \"ok\"}"
        done
        i=$((i + 1))
    done
) &
ORCH_BG=$!
as_pg $PG_BIN/pgbench -n -c "$MIX_CLIENTS" -j 2 -T "$MIX_SECONDS" -R "$MIX_RATE" \
    -h "$TMP" -p "$PORT" -f "$TMP/mix.sql" "$DB" >"$TMP/pgbench_mix.out" 2>&1 \
    || { cat "$TMP/pgbench_mix.out" >&2; die "pgbench mix"; }
kill "$ORCH_BG" 2>/dev/null; wait "$ORCH_BG" 2>/dev/null || true
ORCH_BG=""
q "ALTER SYSTEM SET oauth.sweep_interval = 0" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
sleep 1   # calls in flight land
read -r M_CALLS M_GRANTS M_MAXG < <(python3 bench/benchlib.py stats "$PURL/_control/stats")
IFS='|' read -r M_REFRESHED M_NEEDED M_FAULTS M_REAUTH M_REJECTED < <(q "
    WITH r AS (
        SELECT e.connection_id, e.at,
               lag(e.at) OVER (PARTITION BY e.connection_id ORDER BY e.id) AS prev
          FROM oauth.events e JOIN bench.mix m ON m.id = e.connection_id
         WHERE e.event = 'refreshed' AND e.at >= '$T0')
    SELECT count(*),
           count(*) FILTER (WHERE r.prev IS NULL
                               OR r.at - r.prev >= interval '$((MIX_LIFETIME / 2 - 1)) seconds'
                               OR EXISTS (SELECT 1 FROM oauth.events x
                                           WHERE x.connection_id = r.connection_id
                                             AND x.event = 'token_rejected'
                                             AND x.at > r.prev AND x.at <= r.at)),
           (SELECT count(*) FROM oauth.events e JOIN bench.mix m ON m.id = e.connection_id
             WHERE e.event = 'refresh_failed' AND e.at >= '$T0' AND e.detail->>'http_status' = '503'),
           (SELECT count(*) FROM oauth.events e JOIN bench.mix m ON m.id = e.connection_id
             WHERE e.event = 'reauth_required' AND e.at >= '$T0'),
           (SELECT count(*) FROM oauth.events e JOIN bench.mix m ON m.id = e.connection_id
             WHERE e.event = 'token_rejected' AND e.at >= '$T0')
      FROM r")
M_TX=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMP/pgbench_mix.out")
M_RATIO=$(calc %.3f "$M_CALLS / ($M_NEEDED + $M_FAULTS)")
log "part 5: $M_CALLS provider calls, $M_NEEDED needed refreshes + $M_FAULTS faults: ratio $M_RATIO"
{
    echo "## 5. Provider calls per needed refresh, mixed load"
    echo
    echo "$MIX_CONN connections (10 workspaces) whose tokens live $MIX_LIFETIME s (default min_validity 1 minute),"
    echo "rotating, strictly single use; provider latency $PROVIDER_LATENCY_MS ms; pgbench -c $MIX_CLIENTS -R $MIX_RATE -T $MIX_SECONDS:"
    echo "10% of the calls roll back, 1% report their token rejected (token_rejected), the rest call valid_token;"
    echo "sweep every 5 s; every 4 s five grants answer 503 for 2 s. A refresh is needed when the token it"
    echo "replaced was at least half its lifetime old, had been rejected, or was the first; a call answered"
    echo "with an injected 503 needs a retry and counts as needed."
    echo
    echo "| measure | value | target | |"
    echo "|---|---:|---|---|"
    echo "| provider calls / (needed refreshes + injected faults) | $M_RATIO | <= 1.05 | $(status "$M_RATIO" '<=' 1.05) |"
    echo "| provider calls | $M_CALLS ($M_GRANTS grants, max $M_MAXG per grant) | | |"
    echo "| refreshes stored / of them needed | $M_REFRESHED / $M_NEEDED | | |"
    echo "| calls answered 503 (injected) | $M_FAULTS | | |"
    echo "| token_rejected events (tokens marked refused) | $M_REJECTED | | |"
    echo "| connections lost to reauth_required (a storm with single-use tokens) | $M_REAUTH | 0 | $( [ "$M_REAUTH" = 0 ] && echo met || echo MISSED) |"
    echo "| client calls | ${M_TX:-?} | | |"
    echo
} >> "$RES"
target "5. provider calls per needed refresh <= 1.05" "$M_RATIO" '<=' 1.05
q "DELETE FROM oauth.connections WHERE provider = 'mix'" >/dev/null
}

# Part 6: caller wait while CRAWL_CONN due connections crawl through a slow
# provider (CRAWL_LATENCY_MS a call), oauth.max_concurrent_refreshes = 16,
# the sweep on (1 s).  Measured inside the session (clock_timestamp around
# valid_token), one caller at a time: QUICK_SAMPLES callers of another
# provider (latency PROVIDER_LATENCY_MS) with an expired token, target
# <= its latency + 50 ms; CRAWL_SAMPLES callers of the slow provider whose
# expired connections are in the backlog, target <= 2 x its latency.
CRAWL_CONN=${CRAWL_CONN:-2000}
CRAWL_LATENCY_MS=${CRAWL_LATENCY_MS:-1500}
QUICK_SAMPLES=${QUICK_SAMPLES:-20}
CRAWL_SAMPLES=${CRAWL_SAMPLES:-10}
part6() {
log "part 6: caller wait while $CRAWL_CONN due connections crawl through a slow provider"
ctl post "$PURL/_control/reset" '{}'
ctl post "$PURL/_control/default" "{\"latency_ms\": $CRAWL_LATENCY_MS}"
for i in $(seq "$QUICK_SAMPLES"); do
    ctl post "$PURL/_control/grant" "{\"grant\": \"qk$i\", \"latency_ms\": $PROVIDER_LATENCY_MS}"
done
q "UPDATE oauth.connections SET refresh_after = NULL WHERE provider = 'fake' AND refresh_after <= now()" >/dev/null
q "SELECT oauth.register_provider('crawl', '$PURL/token', 'bench-client', 'bench-secret')" >/dev/null
q "SELECT oauth.register_provider('quick', '$PURL/token', 'bench-client', 'bench-secret')" >/dev/null
q "CREATE TABLE bench.crawl (n int PRIMARY KEY, id uuid NOT NULL);
   INSERT INTO bench.crawl
   SELECT g, oauth.create_connection('crawlws', 'crawl', 'cr' || g, 'at-cr-0', 'cr' || g || '.0',
                                     now() - interval '1 hour' + g * interval '1 second')
     FROM generate_series(1, $CRAWL_CONN) g;
   CREATE TABLE bench.quick (n int PRIMARY KEY, id uuid NOT NULL);
   INSERT INTO bench.quick
   SELECT g, oauth.create_connection('quickws', 'quick', 'qk' || g, 'at-qk-0', 'qk' || g || '.0',
                                     now() + interval '1 day')
     FROM generate_series(1, $QUICK_SAMPLES) g;
   CREATE FUNCTION bench.timed_valid_token(ws text, cid uuid) RETURNS numeric LANGUAGE plpgsql AS \$\$
   DECLARE
       t0 timestamptz := clock_timestamp();
   BEGIN
       PERFORM oauth.valid_token(ws, cid);
       RETURN round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1);
   END \$\$"
q "ALTER SYSTEM SET oauth.max_concurrent_refreshes = 16" >/dev/null
q "ALTER SYSTEM SET oauth.sweep_interval = '1s'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 300); do
    read -r c _ _ < <(python3 bench/benchlib.py stats "$PURL/_control/stats")
    [ "$c" -ge 30 ] && break
    sleep 0.1
done
C_QUICK=()
for i in $(seq "$QUICK_SAMPLES"); do
    # (two statements: one psql -c would run them in one transaction,
    # holding the row lock the worker needs to store the new token)
    q "UPDATE oauth.connections SET expires_at = now() - interval '1 minute'
        WHERE id = (SELECT id FROM bench.quick WHERE n = $i)" >/dev/null
    C_QUICK+=("$(q "SELECT bench.timed_valid_token('quickws', id) FROM bench.quick WHERE n = $i")")
done
C_CRAWL=()
for i in $(seq "$CRAWL_SAMPLES"); do
    n=$((CRAWL_CONN - i + 1))
    C_CRAWL+=("$(q "SELECT bench.timed_valid_token('crawlws', id) FROM bench.crawl WHERE n = $n")")
done
read -r C_CALLS _ _ < <(python3 bench/benchlib.py stats "$PURL/_control/stats")
C_BACKLOG=$(q "SELECT count(*) FROM oauth.refresh_jobs() WHERE requested_by = 'sweep' AND state = 'queued'")
q "ALTER SYSTEM SET oauth.sweep_interval = 0" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
q "DELETE FROM oauth.connections WHERE provider = 'crawl'" >/dev/null
for _ in $(seq 300); do
    [ "$(q "SELECT count(*) FROM oauth.refresh_jobs() WHERE state <> 'done'")" = 0 ] && break
    sleep 0.1
done
stats_of() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "%s %s\n", v[int((NR + 1) / 2)], v[NR] }'; }
read -r Q_P50 Q_MAX < <(stats_of "${C_QUICK[@]}")
read -r S_P50 S_MAX < <(stats_of "${C_CRAWL[@]}")
Q_TARGET=$((PROVIDER_LATENCY_MS + 50))
S_TARGET=$((2 * CRAWL_LATENCY_MS))
log "part 6: other provider p50 $Q_P50 / max $Q_MAX ms; slow provider p50 $S_P50 / max $S_MAX ms; $C_CALLS calls"
{
    echo "## 6. Caller wait while $CRAWL_CONN due connections crawl through a slow provider"
    echo
    echo "$CRAWL_CONN connections due at once on a provider answering in $CRAWL_LATENCY_MS ms, oauth.max_concurrent_refreshes = 16,"
    echo "sweep every second; once the backlog is being worked through, callers one at a time, each with an expired"
    echo "token, timed inside the session around valid_token."
    echo
    echo "| caller | n | p50 (ms) | max (ms) | target (max) | |"
    echo "|---|---:|---:|---:|---|---|"
    echo "| of another provider ($PROVIDER_LATENCY_MS ms) | $QUICK_SAMPLES | $Q_P50 | $Q_MAX | <= $Q_TARGET | $(status "$Q_MAX" '<=' "$Q_TARGET") |"
    echo "| of the slow provider, connection in the backlog | $CRAWL_SAMPLES | $S_P50 | $S_MAX | <= $S_TARGET | $(status "$S_MAX" '<=' "$S_TARGET") |"
    echo
    echo "Provider calls when the last caller was answered: $C_CALLS (of $CRAWL_CONN due); sweep jobs still queued: $C_BACKLOG."
    echo "Each sample: ${C_QUICK[*]} / ${C_CRAWL[*]} ms."
    echo
} >> "$RES"
target "6. caller of another provider, max wait <= ${Q_TARGET} ms" "$Q_MAX" '<=' "$Q_TARGET"
target "6. caller of the slow provider, max wait <= ${S_TARGET} ms" "$S_MAX" '<=' "$S_TARGET"
}

# ---- part 8: refreshes per second against a fast TLS endpoint ------------------------
# nginx on loopback answers every POST /token with new tokens ($request_id),
# keep-alive, TLS with the test CA; wrk measures its limit at the same
# concurrency.  Then FAST_N connections are made due at once and the sweep
# refreshes them with fsync and synchronous_commit on.
fast_endpoint() {
    local dir=$TMP/nginx
    mkdir -p "$dir"
    bash test/gen_certs.sh "$dir/certs"
    FPORT=$(python3 bench/benchlib.py free-port)
    cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$FPORT ssl;
        ssl_certificate $dir/certs/server.crt;
        ssl_certificate_key $dir/certs/server.key;
        location /token {
            default_type application/json;
            return 200 '{"access_token": "at-\$request_id", "refresh_token": "rt-\$request_id", "token_type": "Bearer", "expires_in": 3600}';
        }
    }
}
EOF
    /usr/sbin/nginx -c "$dir/nginx.conf" -p "$dir" || die "nginx did not start"
    for _ in $(seq 50); do [ -s "$dir/nginx.pid" ] && break; sleep 0.1; done
    FURL=https://127.0.0.1:$FPORT/token
    curl -sf --cacert "$dir/certs/ca.crt" -d 'grant_type=refresh_token&refresh_token=x' "$FURL" \
        | grep -q '"refresh_token": "rt-' || die "the fast endpoint does not answer"
    chmod 755 "$dir" "$dir/certs"
    chmod 644 "$dir/certs/ca.crt"
}

part8() {
log "part 8: fast TLS endpoint"
fast_endpoint
cat > "$TMP/nginx/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "grant_type=refresh_token&refresh_token=bench.0"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
EOF
WRK_OUT=$(wrk -t2 -c"$FAST_CONCURRENCY" -d10s -s "$TMP/nginx/post.lua" "$FURL" 2>&1) \
    || { echo "$WRK_OUT" >&2; die "wrk failed"; }
HTTP_RPS=$(echo "$WRK_OUT" | awk '/^Requests\/sec/ { printf "%.0f", $2 }')
log "endpoint limit (wrk, $FAST_CONCURRENCY connections): $HTTP_RPS requests/s"

log "part 8: $FAST_N connections"
q "ALTER SYSTEM SET oauth.ca_file = '$TMP/nginx/certs/ca.crt'" >/dev/null
q "ALTER SYSTEM SET fsync = on" >/dev/null
q "ALTER SYSTEM SET synchronous_commit = on" >/dev/null
q "ALTER SYSTEM SET full_page_writes = on" >/dev/null
q "ALTER SYSTEM SET oauth.max_concurrent_refreshes = $FAST_CONCURRENCY" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
q "SELECT oauth.register_provider('fast', '$FURL', 'bench-client', 'bench-secret')" >/dev/null
q "CREATE SCHEMA IF NOT EXISTS bench;
   CREATE TABLE bench.fast (n int PRIMARY KEY, id uuid NOT NULL);
   INSERT INTO bench.fast
   SELECT g, oauth.create_connection('fws' || (g % 100), 'fast', 'facct' || g,
                                     'access-token-' || g, 'f' || g || '.0', now() + interval '1 day')
     FROM generate_series(1, $FAST_N) g;
   UPDATE oauth.connections c SET refresh_after = now() - interval '1 minute'
     FROM bench.fast f WHERE f.id = c.id;"
q "VACUUM ANALYZE oauth.connections" >/dev/null
q "CHECKPOINT" >/dev/null
WPID=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'")
IFS='|' read -r fa0 fs0 < <(q "SELECT refreshes_attempted, refreshes_succeeded FROM oauth.stats()")
T0=$(q "SELECT clock_timestamp()")
PERF_PID=""
if [ "$BENCH_PERF" = 1 ] && command -v perf >/dev/null 2>&1; then
    perf record -g -o "$TMP/perf.data" -p "$WPID" >/dev/null 2>&1 &
    PERF_PID=$!
fi
t0=$(date +%s.%N)
q "ALTER SYSTEM SET oauth.sweep_interval = '200ms'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
while :; do
    F_LEFT=$(q "SELECT count(*) FROM oauth.connections c JOIN bench.fast f ON f.id = c.id
                 WHERE c.refreshed_at IS NULL OR c.refreshed_at < '$T0'")
    F_TIME=$(calc %.2f "$(date +%s.%N) - $t0")
    [ "$F_LEFT" -eq 0 ] && break
    awk -v e="$F_TIME" -v t="$SWEEP_TIMEOUT" 'BEGIN { exit !(e > t) }' && break
    sleep 0.1
done
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null
    wait "$PERF_PID" 2>/dev/null || true
fi
q "ALTER SYSTEM SET oauth.sweep_interval = 0" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
F_DB=$(q "SELECT round(extract(epoch FROM max(c.refreshed_at) - '$T0'::timestamptz)::numeric, 2)
            FROM oauth.connections c JOIN bench.fast f ON f.id = c.id WHERE c.refreshed_at >= '$T0'")
IFS='|' read -r fa1 fs1 < <(q "SELECT refreshes_attempted, refreshes_succeeded FROM oauth.stats()")
F_DONE=$((FAST_N - F_LEFT))
F_RPS=$(calc %.0f "$F_DONE / $F_TIME")
F_RATIO=$(calc %.3f "$F_RPS / $HTTP_RPS")
log "part 8: $F_DONE refreshed in $F_TIME s: $F_RPS refreshes/s, $F_RATIO of the endpoint's limit"
PERF_TOP=""
if [ -n "$PERF_PID" ] && [ -s "$TMP/perf.data" ]; then
    PERF_TOP=$( (perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
                 | grep -E '^ +[0-9]' | head -30) || true)
fi
for s in fsync synchronous_commit full_page_writes oauth.max_concurrent_refreshes oauth.ca_file; do
    q "ALTER SYSTEM RESET $s" >/dev/null
done
q "SELECT pg_reload_conf()" >/dev/null
{
    echo "## 8. Refreshes per second against a fast TLS endpoint"
    echo
    echo "nginx (Debian's nginx-light, one worker process) on loopback, TLS with the test CA,"
    echo "keep-alive, answering every POST /token with a new access and refresh token. Its own"
    echo "limit: wrk -t2 -c$FAST_CONCURRENCY -d10s, POSTing the same form. Then $FAST_N connections due at"
    echo "once, refreshed by the sweep (oauth.sweep_interval = 200ms) with"
    echo "**fsync = on, synchronous_commit = on, full_page_writes = on** and"
    echo "oauth.max_concurrent_refreshes = $FAST_CONCURRENCY; time from the reload until none is left"
    echo "(polled every 100 ms)."
    echo
    echo "| measure | value | target | |"
    echo "|---|---:|---|---|"
    echo "| endpoint limit (wrk, requests/s) | $HTTP_RPS | | |"
    echo "| connections refreshed | $F_DONE of $FAST_N | $FAST_N | $( [ "$F_LEFT" -eq 0 ] && echo met || echo MISSED ) |"
    echo "| time (s); last refreshed_at - reload (s) | $F_TIME; ${F_DB:-n/a} | | |"
    echo "| refreshes/s | $F_RPS | >= 10000 | $(status "$F_RPS" '>=' 10000) |"
    echo "| refreshes/s / endpoint limit | $F_RATIO | >= 0.25 | $(status "$F_RATIO" '>=' 0.25) |"
    echo "| stats(): attempted / succeeded | +$((fa1 - fa0)) / +$((fs1 - fs0)) | | |"
    echo
    if [ -n "$PERF_TOP" ]; then
        echo "perf profile of the worker during the sweep (self time, top symbols):"
        echo
        echo '```'
        echo "$PERF_TOP"
        echo '```'
        echo
    fi
} >> "$RES"
target "8. refreshes/s against a fast TLS endpoint (fsync on)" "$F_RPS" '>=' 10000
target "8. refreshes/s / endpoint limit" "$F_RATIO" '>=' 0.25
kill "$(cat "$TMP/nginx/nginx.pid")" 2>/dev/null || true
}

for p in 5 6 7 8; do
    if part $p; then
        "part$p"
    fi
done

# ---- summary -------------------------------------------------------------------------------
{
    echo "## Targets"
    echo
    echo "| target | value | |"
    echo "|---|---:|---|"
    printf '%s\n' "${SUMMARY[@]}"
    echo
    echo "Total bench time: $SECONDS s."
} >> "$RES"

echo
cat "$RES"
echo
if [ "$BENCH_PARTS" = "1 2 3 4 5 6 7 8" ]; then
    cp "$RES" "$SRC/bench/results.md"
    log "results written to bench/results.md"
else
    log "BENCH_PARTS=\"$BENCH_PARTS\": bench/results.md left as it was"
fi
