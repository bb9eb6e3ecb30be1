#!/bin/bash
# make fuzz: build the libFuzzer targets in fuzz/ (clang, AddressSanitizer
# and UndefinedBehaviorSanitizer) and run each for FUZZ_SECONDS (default
# 60) from its seed corpus in fuzz/corpus/<target>.  Exits non-zero when a
# target crashes; the crashing input is left in fuzz/build/ (crash-*), to be
# replayed with fuzz/build/fuzz_<target> <file>.  No PostgreSQL server is
# needed: the targets link src/answer.c and src/urls.c with PostgreSQL's
# frontend libpgcommon/libpgport and the stubs in fuzz/backend_stubs.c.
#   FUZZ_SECONDS=3600 make fuzz          a longer run
#   FUZZ_TARGETS=urls make fuzz          one target
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
CC=${FUZZ_CC:-clang-14}
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-answer urls}
bash scripts/setup.sh clang-14 libclang-rt-14-dev

B=fuzz/build
mkdir -p "$B"
CFLAGS=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
        -fno-sanitize-recover=undefined -Wall -Werror -Wno-ignored-attributes
        -Wno-unused-command-line-argument -D_GNU_SOURCE
        -Isrc -Ifuzz -I"$("$PG_CONFIG" --includedir-server)" -I"$("$PG_CONFIG" --includedir)/internal")
LIBS=("$("$PG_CONFIG" --pkglibdir)/libpgcommon_shlib.a" "$("$PG_CONFIG" --pkglibdir)/libpgport_shlib.a" -lcurl -lm)
for t in $TARGETS; do
    "$CC" "${CFLAGS[@]}" -o "$B/fuzz_$t" "fuzz/fuzz_$t.c" "src/$t.c" fuzz/backend_stubs.c "${LIBS[@]}"
done

status=0
for t in $TARGETS; do
    mkdir -p "$B/corpus_$t"
    echo "== fuzz_$t: ${SECONDS_EACH} s =="
    # new inputs go to build/corpus_<t>; the seeds in fuzz/corpus/<t> stay as committed
    if ! (cd "$B" && UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
          ./"fuzz_$t" -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=10 \
              -print_final_stats=1 "corpus_$t" "../corpus/$t" 2>&1 | tail -25); then
        status=1
    fi
    if ls "$B"/crash-* "$B"/leak-* "$B"/timeout-* >/dev/null 2>&1; then
        echo "fuzz_$t: FAILED, inputs in $B:"; ls "$B"/crash-* "$B"/leak-* "$B"/timeout-* 2>/dev/null
        status=1
    fi
done
[ $status -eq 0 ] && echo "make fuzz: no crash"
exit $status
