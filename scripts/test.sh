#!/usr/bin/env bash
# Runs every test of the project: unit, property, simulation, end-to-end on
# the embedded grid, and the real Tahoe-LAFS grid tests. On a fresh machine it
# first installs what the tests need (the Tahoe venv, from PyPI).
#
# Every test binary runs even when an earlier one fails (--no-fail-fast), and
# the end of the output lists every failed test and binary in a few lines.
#
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# The Tahoe-LAFS test grid's software (cached in .venv/tahoe after the first run).
scripts/tahoe-venv.sh >/dev/null

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Debug build (incremental, dependencies optimised: see [profile.dev] in
# Cargo.toml); --locked so a CI run builds exactly what was tested here.
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

if [[ $status -ne 0 ]]; then
    echo
    echo "==== test.sh: failures ===="
    grep -E '^test .* \.\.\. FAILED$' "$log" | sed 's/^test /  /; s/ \.\.\. FAILED$//' | sort -u || true
    # cargo names each failed binary as `-p CRATE --test NAME` (or --lib).
    sed -n '/^error: [0-9]* targets\? failed:/,/^$/p; /^error: test failed/p' "$log" || true
    grep -E '^error(\[|:)' "$log" | grep -v 'targets\? failed\|test failed' | sort -u | head -20 || true
fi
exit "$status"
