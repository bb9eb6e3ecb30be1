#!/bin/bash
# make test-all: what CI runs (.ci/run).  First the whole suite on every
# supported major (scripts/matrix.sh all), then each stage in scripts/ci.d/
# in name order (sanitizers, fuzzing, packages, examples, ...).  Every stage
# runs even after a failure; the last line says how many passed and failed.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0 failed=0 results=()
run_stage() {
    local name=$1; shift
    local t0=$(date +%s)
    echo "==== stage $name: started ===="
    if "$@"; then
        passed=$((passed + 1)); results+=("$name: passed in $(($(date +%s) - t0)) s")
    else
        failed=$((failed + 1)); results+=("$name: FAILED in $(($(date +%s) - t0)) s")
    fi
}
run_stage matrix bash scripts/matrix.sh all
for s in scripts/ci.d/*.sh; do
    [ -f "$s" ] || continue
    run_stage "$(basename "$s" .sh)" bash "$s"
done
echo "==== test-all ===="
printf '%s\n' "${results[@]}"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
