#!/bin/bash
# CI stage: the extension built with AddressSanitizer and
# UndefinedBehaviorSanitizer (clang 14) on PostgreSQL 15, every pg_regress
# case and the TAP tests of scripts/sanitize.sh's default list (they reach
# each C file of src/); fails on any test failure or sanitizer report, and
# installs the normal build again at the end.  Measured: see README, Testing.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec make -s sanitize-test
