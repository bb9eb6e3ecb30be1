#!/bin/bash
# make sanitize-test: build the extension with clang's AddressSanitizer and
# UndefinedBehaviorSanitizer, install it into PostgreSQL 15, run pg_regress
# and TAP tests against it, and fail if the suite fails or any sanitizer
# report appears.  The normal build is installed again at the end, whatever
# happened.  Run it under the shared install's lock, as every test:
#
#   flock /tmp/oauth_pg15.lock make sanitize-test                 # CI's part
#   flock /tmp/oauth_pg15.lock make sanitize-test SANITIZE_TESTS=all
#
# SANITIZE_TESTS (default below) picks the TAP tests; together with every
# pg_regress case they reach each C file in src/.
#
# How it is loaded: Debian's server is not built with ASan.  Preloading the
# ASan runtime (LD_PRELOAD) into it does not work here: every program that
# links libp11-kit (postgres, psql, pg_ctl through libldap/gnutls) hangs in
# glibc's locale lock at exit.  So the library links the runtime itself
# (-shared-libasan, with its directory as rpath), which arrives with
# shared_preload_libraries; verify_asan_link_order=0 lets it start late.
# ASan reads its options from /proc/self/environ, which a backend has
# overwritten with its process title by the time it loads a library
# itself (a cluster without shared_preload_libraries): so they are compiled
# into the library as well (__asan_default_options, src/oauth_tokens.c).
# Checked by hand with a library that overruns a stack array: the report
# lands in the log_path file and the backend dies.
# Then the instrumented code of the extension is checked (its stack,
# globals and every access it makes, against the shadow memory), UBSan
# fully, but malloc and libc's string functions are not replaced, so heap
# redzones exist only for what ASan's allocator hands out (nothing here)
# and palloc chunks are never bounded: the fuzz targets (make fuzz) give
# each chunk its own bounds.  detect_leaks=0: PostgreSQL leaves memory to
# process exit by design.  Reports go to files (log_path) that fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
CC=clang-14
DEFAULT_TESTS="test/t/020_stampede.pl test/t/100_sweep.pl test/t/200_exchange.pl
  test/t/210_revoke_reauth.pl test/t/220_client_credentials.pl test/t/240_lost_answers.pl
  test/t/280_rotate_batches.pl test/t/300_tenant_hosts.pl test/t/330_hostile_provider.pl
  test/t/410_dump_restore.pl test/t/440_provider_stats.pl test/t/510_workspace_binding.pl
  test/t/550_outbound_addresses.pl test/t/560_redaction.pl test/t/570_tenant_no_pause.pl"
TESTS=${SANITIZE_TESTS:-$DEFAULT_TESTS}
[ "$TESTS" = all ] && TESTS=$(ls test/t/*.pl | tr '\n' ' ')
TESTS=$(echo $TESTS)   # one line: make takes it as a command-line variable

bash scripts/setup.sh clang-14 libclang-rt-14-dev
export PATH=$("$PG_CONFIG" --bindir):$PATH
ASAN_RT=$("$CC" -print-file-name=libclang_rt.asan-x86_64.so)
[ -f "$ASAN_RT" ] || { echo "sanitize-test: no ASan runtime at $ASAN_RT"; exit 1; }

WORK=$(mktemp -d /tmp/oauth_tokens_asan.XXXXXX)
rsync -a --exclude .git --exclude fuzz/build "$SRC"/ "$WORK"/
REPORTS=$WORK/sanitizer-reports
mkdir -p "$REPORTS"
chmod 1777 "$REPORTS"

reinstall() {
    # never leave the ASan build installed for whoever tests next
    make -s -C "$SRC" PG_CONFIG="$PG_CONFIG" install >/dev/null
}
trap reinstall EXIT

cd "$WORK"
make -s clean
# the options are also compiled in (src/oauth_tokens.c): a cluster that does
# not preload the library loads it in a backend, which no longer has them
OPTS="verify_asan_link_order=0:detect_leaks=0:log_path=$REPORTS/report:abort_on_error=1"
make -s PG_CONFIG="$PG_CONFIG" CC="$CC" \
    COPT="-DOAUTH_SANITIZER_OPTIONS=\\\"$OPTS\\\" -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -shared-libasan -Wl,-rpath,$(dirname "$ASAN_RT") -Wno-unknown-warning-option -Wno-ignored-optimization-argument -Wno-ignored-attributes -Wno-compound-token-split-by-macro"
make -s PG_CONFIG="$PG_CONFIG" install
ldd "$("$PG_CONFIG" --pkglibdir)/oauth_tokens.so" | grep -q "libclang_rt.asan.*$(dirname "$ASAN_RT")" ||
    { echo "sanitize-test: the installed library is not the ASan build"; exit 1; }

RUN=()
if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres: "$WORK"
    RUN=(runuser -u postgres --)
fi
status=0
echo "== pg_regress and TAP with ASan and UBSan: $TESTS =="
"${RUN[@]}" env \
    ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=0:log_path=$REPORTS/asan:abort_on_error=1" \
    UBSAN_OPTIONS="log_path=$REPORTS/ubsan:print_stacktrace=1:halt_on_error=1" \
    make -s PG_CONFIG="$PG_CONFIG" check-temp PROVE_TESTS="$TESTS" || status=1
if [ $status -ne 0 ]; then
    cat regression.diffs 2>/dev/null | head -100 || true
    for f in tmp_check/log/regress_log_*; do
        [ -f "$f" ] && grep -q "not ok" "$f" && { echo "--- $f (tail)"; tail -40 "$f"; }
    done
fi
if [ -n "$(ls -A "$REPORTS")" ]; then
    echo "sanitize-test: sanitizer reports:"
    for f in "$REPORTS"/*; do echo "--- $f"; head -60 "$f"; done
    status=1
fi
# the server logs say so too when a backend died of a report
if grep -l "ERROR: AddressSanitizer\|runtime error:" tmp_check/log/*.log tmp_check_regress/log/*.log 2>/dev/null; then
    status=1
fi
if [ $status -eq 0 ]; then
    echo "make sanitize-test: all passed, no sanitizer report"
    cd / && rm -rf "$WORK"
else
    echo "make sanitize-test: FAILED (work tree kept in $WORK)"
fi
exit $status
