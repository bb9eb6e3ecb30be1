#!/bin/bash
# CI stage: the libFuzzer targets (fuzz/: the answer reader and the URL
# filler) for 60 seconds each from their seed corpora; fails on a crash,
# leaving the input in fuzz/build/.  No server needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec make -s fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
