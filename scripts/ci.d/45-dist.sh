#!/bin/bash
# CI stage: the release archive.  In a clone of this checkout tagged
# vVERSION (META.json), `make dist` makes the PGXN zip; a META.json that
# disagrees with the control file is refused.  Then, from the unpacked
# archive alone: make, make install (PostgreSQL 15), and `make installcheck`
# (pg_regress) against a running cluster that preloads the library, which
# is what a PGXN user or `pgxn install` does.  Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$(pwd)
t0=$(date +%s)
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
bash scripts/setup.sh
BIN=$($PG_CONFIG --bindir)
DIR=$(mktemp -d /tmp/oauth_tokens_dist.XXXXXX)
chmod 755 "$DIR"
AS=(runuser -u postgres --)
cleanup() {
    "${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

git clone -q "$SRC" "$DIR/repo"
# what is committed: the archive is made from a tag, never the work tree
version=$(python3 -c 'import json; print(json.load(open("'"$DIR"'/repo/META.json"))["version"])')
git -C "$DIR/repo" -c user.name=ci -c user.email=ci@localhost tag -a "v$version" -m "v$version"
make -s -C "$DIR/repo" dist DIST_OUT="$DIR/out"
zip=$DIR/out/oauth_tokens-$version.zip
[ -f "$zip" ] || { echo "FAIL: no $zip"; exit 1; }

# a META.json that disagrees with the control file is refused
(
    cd "$DIR/repo"
    sed -i 's/"version": "'"$version"'"/"version": "9.9.0"/' META.json
    git -c user.name=ci -c user.email=ci@localhost commit -qam "bump META.json only"
    git -c user.name=ci -c user.email=ci@localhost tag -a v9.9.0 -m v9.9.0
)
if make -s -C "$DIR/repo" dist DIST_OUT="$DIR/bad" 2> "$DIR/bad.err"; then
    echo "FAIL: make dist accepted META.json 9.9.0 with default_version 1.1"; exit 1
fi
grep -q "does not match default_version" "$DIR/bad.err" ||
    { echo "FAIL: make dist's refusal does not say why:"; cat "$DIR/bad.err"; exit 1; }
echo "ok: a META.json version that disagrees with the control file is refused"

# from the archive alone
mkdir "$DIR/unpacked"
python3 -m zipfile -e "$zip" "$DIR/unpacked"
T=$DIR/unpacked/oauth_tokens-$version
[ ! -e "$T/.git" ] && [ ! -e "$T/.ci" ] || { echo "FAIL: the archive holds .git or .ci"; exit 1; }
make -s -C "$T" PG_CONFIG=$PG_CONFIG >/dev/null
make -s -C "$T" PG_CONFIG=$PG_CONFIG install >/dev/null
chown -R postgres: "$DIR/unpacked"
chown postgres: "$DIR"
"${AS[@]}" "$BIN/initdb" -D "$DIR/data" -A trust >/dev/null
cat >> "$DIR/data/postgresql.conf" <<EOC
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'oauth_tokens'
oauth.database = 'contrib_regression'
oauth.allow_private_addresses = on     # the suite's providers are on 127.0.0.1
EOC
"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
echo "== make installcheck from the archive, against the running cluster =="
if ! "${AS[@]}" env PGHOST="$DIR" make -s -C "$T" PG_CONFIG=$PG_CONFIG installcheck TAP_TESTS=; then
    cat "$T/regression.diffs" 2>/dev/null | head -80
    exit 1
fi
v=$("${AS[@]}" "$BIN/psql" -X -At -h "$DIR" -d contrib_regression -c \
    "SELECT extversion FROM pg_extension WHERE extname = 'oauth_tokens'")
echo "installed from the archive: oauth_tokens $v"
echo "== 45-dist: passed in $(($(date +%s) - t0)) s =="
