#!/bin/bash
# make test: install what is missing, build, install, then run pg_regress and
# the TAP tests as the unprivileged postgres user in a copy of the tree that
# user owns.  Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

# PG_CONFIG chooses the PostgreSQL to build and test against (default: 15).
if [ -z "${PG_CONFIG:-}" ]; then
    bash scripts/setup.sh
    PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
fi
export PATH=$("$PG_CONFIG" --bindir):$PATH

make -s PG_CONFIG=$PG_CONFIG
if [ "$(id -u)" -eq 0 ]; then
    make -s PG_CONFIG=$PG_CONFIG install
    RUN=(runuser -u postgres --)
    WORK=$(mktemp -d /tmp/oauth_tokens_test.XXXXXX)
    rsync -a --exclude .git "$SRC"/ "$WORK"/
    chown -R postgres: "$WORK"
else
    make -s PG_CONFIG=$PG_CONFIG install
    RUN=()
    WORK=$SRC
fi

status=0
cd "$WORK"
echo "== pg_regress and TAP =="
# PROVE_TESTS=test/t/NNN_x.pl or REGRESS="a b" narrow a run while developing;
# REGRESS=none skips pg_regress, PROVE_TESTS=none skips the TAP tests
extra=()
if [ "${PROVE_TESTS:-}" = none ]; then extra+=("TAP_TESTS=")
elif [ -n "${PROVE_TESTS:-}" ]; then extra+=("PROVE_TESTS=$PROVE_TESTS"); fi
if [ "${REGRESS:-}" = none ]; then extra+=("REGRESS=")
elif [ -n "${REGRESS:-}" ]; then extra+=("REGRESS=$REGRESS"); fi
if ! "${RUN[@]}" make -s PG_CONFIG=$PG_CONFIG check-temp "${extra[@]}"; then
    status=1
    cat "$WORK"/regression.diffs 2>/dev/null | head -200 || true
    for f in "$WORK"/tmp_check/log/regress_log_*; do
        [ -f "$f" ] && { echo "--- $f (tail)"; tail -60 "$f"; }
    done
fi
if [ $status -eq 0 ]; then
    echo "make test: all passed"
    rm -rf "$WORK"
else
    echo "make test: FAILED (work tree kept in $WORK)"
fi
exit $status
