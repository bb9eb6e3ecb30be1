#!/bin/bash
# CI stage: the Debian package, as a DBA gets it.  Builds
# postgresql-15-oauth-tokens with `make deb` (pg_buildext, lintian), installs
# it with dpkg into a clean Debian 12 root filesystem that has PostgreSQL 15
# and what the package depends on, but no compiler and no source tree (made
# with mmdebstrap by scripts/matrix.sh's functions, cached in
# /var/cache/oauth_tokens/rootfs-deb15), and there:
#   - runs the regression suite (pg_regress of the installed server, the
#     sql/ and expected/ files copied in as test data) against a cluster
#     that preloads the installed library;
#   - a worker smoke test: a key ring, the test provider (test/provider.py,
#     python3 is test tooling), one expired connection refreshed through the
#     worker by valid_token;
#   - the README's install section as written (scripts/install_walk.sh):
#     pg_createcluster beside another cluster, the key ring, the grants, a
#     first valid_token as app, a pg_cron sweep, the runbook as oauth_admin,
#     the key ring moved.
# It runs in a network namespace of its own (its clusters and providers
# listen on 127.0.0.1 without meeting the machine's).
# Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
# root filesystem functions (ensure_rootfs, cleanup_dir, cleanup_run and its
# exit trap, RUN_DIR, CACHE); sourcing runs nothing
source "$HERE/scripts/matrix.sh"
cd "$HERE"
MAJOR=15
t0=$(date +%s)

OUT=$(mktemp -d /tmp/oauth_tokens_deb_out.XXXXXX)
trap 'cleanup_run; rm -rf "$OUT"' EXIT
echo "== make deb =="
DEB_OUT=$OUT bash scripts/deb.sh
deb=$(ls "$OUT"/postgresql-$MAJOR-oauth-tokens_*.deb)
echo "== built in $(($(date +%s) - t0)) s: $(basename "$deb") =="

# The root filesystem: bookworm from this machine's apt sources (all of
# them: the package wants the server it was built against, which may be in
# bookworm-security), with only the package's dependencies and python3 for
# the test provider.
mirrors=
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && mirrors+=" $f"
done
export ROOTFS_NAME=rootfs-deb$MAJOR ROOTFS_SUITE=bookworm ROOTFS_MIRRORS=${mirrors# }
# (postgresql-NN-cron, sudo and openssl: what the README's install section uses)
export ROOTFS_PACKAGES="postgresql-$MAJOR postgresql-$MAJOR-jit-llvm libcurl4 python3 postgresql-$MAJOR-cron sudo openssl"
mkdir -p "$CACHE"
exec {lock}>"$CACHE/$ROOTFS_NAME.lock"
flock -x "$lock"
for old in "$CACHE"/run-deb$MAJOR.*; do
    [ -d "$old" ] || continue
    flock -n "$old/owner" true && cleanup_dir "$old"
done
root=$(ensure_rootfs $MAJOR)
flock -s "$lock"
RUN_DIR=$(mktemp -d "$CACHE/run-deb$MAJOR.XXXXXX")
exec {own}>"$RUN_DIR/owner"
flock -x "$own"
r=$RUN_DIR/root
mkdir -p "$RUN_DIR/upper" "$RUN_DIR/work" "$r"
if ! mount -t overlay overlay \
    -o "lowerdir=$root,upperdir=$RUN_DIR/upper,workdir=$RUN_DIR/work" "$r" 2>/dev/null; then
    cp -a "$root/." "$r/"
fi
for d in /proc /dev /dev/shm; do
    mkdir -p "$r$d"
    mount --bind "$d" "$r$d"
done

# the package and the test data; nothing else of the tree
mkdir -p "$r/pkgtest/sql" "$r/pkgtest/expected"
cp "$deb" "$r/pkgtest/"
cp sql/*.sql "$r/pkgtest/sql/"
cp expected/*.out "$r/pkgtest/expected/"
cp test/provider.py "$r/pkgtest/"
mkdir -p "$r/pkgtest/walk/test"
cp README.md scripts/install_walk.sh "$deb" "$r/pkgtest/walk/"
[ -d docs ] && cp -r docs "$r/pkgtest/walk/"
cp test/provider.py "$r/pkgtest/walk/test/"
tests=$(cd sql && ls *.sql | sed 's/\.sql$//' | tr '\n' ' ')

cat > "$r/pkgtest/run.sh" <<EOF
#!/bin/bash
set -euo pipefail
MAJOR=$MAJOR
TESTS="$tests"
EOF
cat >> "$r/pkgtest/run.sh" <<'EOF'
cd /pkgtest
for tool in cc gcc clang make; do
    if command -v $tool >/dev/null; then echo "FAIL: the root filesystem has $tool"; exit 1; fi
done
[ ! -e /usr/include/postgresql/$MAJOR/server ] || { echo "FAIL: server headers present"; exit 1; }
echo "== dpkg -i $(ls *.deb) =="
dpkg -i ./*.deb >/dev/null
dpkg -L postgresql-$MAJOR-oauth-tokens | grep -E '\.so$|\.control$'
BIN=/usr/lib/postgresql/$MAJOR/bin
PGREGRESS=/usr/lib/postgresql/$MAJOR/lib/pgxs/src/test/regress/pg_regress
D=/pkgtest/run
mkdir -p $D && chown -R postgres: /pkgtest
AS=(runuser -u postgres --)
"${AS[@]}" $BIN/initdb -D $D/data -A trust >/dev/null
cat >> $D/data/postgresql.conf <<EOC
listen_addresses = ''
unix_socket_directories = '$D'
shared_preload_libraries = 'oauth_tokens'
oauth.database = 'contrib_regression'
oauth.sweep_interval = 0
oauth.allow_private_addresses = on
EOC
stop() { "${AS[@]}" $BIN/pg_ctl -D $D/data stop -m fast >/dev/null 2>&1 || true; }
trap 'stop; [ -n "${PROV:-}" ] && kill $PROV 2>/dev/null || true' EXIT
"${AS[@]}" $BIN/pg_ctl -D $D/data -l $D/server.log -w start >/dev/null

echo "== pg_regress against the installed package =="
if ! "${AS[@]}" $PGREGRESS --inputdir=/pkgtest --outputdir=$D/regress --bindir=$BIN \
        --host=$D --dbname=contrib_regression --load-extension=pgcrypto $TESTS; then
    cat $D/regress/regression.diffs 2>/dev/null | head -100
    tail -30 $D/server.log
    exit 1
fi

echo "== worker smoke test =="
# what a DBA does (README, Installing): the worker's database (made first:
# the worker connects to it at start), plain-HTTP loopback provider allowed
# (http and a loopback address), a key ring written as postgres
sql() { "${AS[@]}" $BIN/psql -X -q -At -h $D -v ON_ERROR_STOP=1 "$@"; }
sql -d postgres -c "CREATE DATABASE app"
cat >> $D/data/postgresql.conf <<EOC
oauth.database = 'app'
oauth.allow_http = on
oauth.allow_private_addresses = on
EOC
"${AS[@]}" bash -c "umask 077; python3 -c 'import base64, os; print(\"k1:\" + base64.b64encode(os.urandom(32)).decode())' > $D/data/oauth_tokens.keys"
"${AS[@]}" $BIN/pg_ctl -D $D/data -l $D/server.log -w restart >/dev/null
"${AS[@]}" python3 /pkgtest/provider.py --port 0 --port-file $D/provider.port >/dev/null 2>&1 &
PROV=$!
for _ in $(seq 100); do [ -s $D/provider.port ] && break; sleep 0.1; done
PPORT=$(cat $D/provider.port)
id=$(sql -d app <<EOS
SET client_min_messages = warning;
CREATE EXTENSION oauth_tokens CASCADE;
SELECT oauth.register_provider('smoke', 'http://127.0.0.1:$PPORT/token', 'client-1', 'secret-1') IS NULL;
SELECT oauth.create_connection('ws1', 'smoke', 'acct-1', 'at-expired', 'g1.0',
                               now() - interval '1 minute');
EOS
)
id=$(echo "$id" | tail -1)
# the worker notices the extension within a few seconds
worker=0
for _ in $(seq 150); do
    worker=$(sql -d app -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker' AND datname = 'app'")
    [ "$worker" = 1 ] && break
    sleep 0.2
done
token=$(sql -d app -c "SELECT oauth.valid_token('ws1', '$id')")
echo "valid_token: $token"
[ "$token" = at-g1-1 ] || { echo "FAIL: expected at-g1-1 from the provider"; tail -30 $D/server.log; exit 1; }
refreshed=$(sql -d app -c "SELECT count(*) FROM oauth.events WHERE event = 'refreshed' AND connection_id = '$id'")
echo "refreshed events: $refreshed; workers on app: $worker"
[ "$refreshed" = 1 ] && [ "$worker" = 1 ] || { echo "FAIL"; exit 1; }
echo "package test: passed"
stop
echo "== the README's install section, as written =="
# sudo looks the host name up; this network namespace has no DNS
echo "127.0.1.1 $(hostname)" >> /etc/hosts
bash /pkgtest/walk/install_walk.sh
EOF
chmod +x "$r/pkgtest/run.sh"
status=0
command -v ip >/dev/null || bash scripts/setup.sh iproute2
unshare --net sh -c 'ip link set lo up && exec "$@"' sh chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive /pkgtest/run.sh {lock}>&- {own}>&- || status=$?
cleanup_run
echo "== 40-deb: $([ $status = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - t0)) s =="
exit $status
