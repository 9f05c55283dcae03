#!/usr/bin/env bash
# A longer seeded soak of the process-level chaos test (crates/cli/tests/chaos.rs),
# outside the suite: many seeds, on either grid, one summary line per run
# (converged or not, versions lost, work still queued) and a tally.
#
# Usage: scripts/chaos-soak.sh [--grid embedded|tahoe] [--runs N] [--start SEED] [--steps N]
# Failed runs keep their daemon logs (the path is in their output, kept in
# $SOAK_DIR, default target/chaos-soak/).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

grid=embedded runs=10 start=1 steps=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --grid) grid="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --start) start="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "chaos-soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$grid" in
    embedded) test_name=chaos_three_participants_with_kill_9 ;;
    tahoe) test_name=chaos_on_tahoe_with_kill_9; scripts/tahoe-venv.sh >/dev/null ;;
    *) echo "chaos-soak: --grid is embedded or tahoe" >&2; exit 2 ;;
esac

out="${SOAK_DIR:-$repo/target/chaos-soak}"
mkdir -p "$out"
cargo test --locked -p magic-folder --test chaos --no-run >&2
passed=0 failed=0
for ((seed = start; seed < start + runs; seed++)); do
    log="$out/$grid-seed-$seed.log"
    rc=0
    CHAOS_SEED="$seed" ${steps:+CHAOS_STEPS="$steps"} \
        cargo test --locked -q -p magic-folder --test chaos "$test_name" -- --exact --nocapture \
        >"$log" 2>&1 || rc=$?
    grep -m1 '^chaos summary:' "$log" || echo "chaos summary: seed=$seed grid=$grid (no summary: see $log)"
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        rm -f "$log"
    else
        failed=$((failed + 1))
        grep -m1 'violated an invariant' "$log" | cut -c1-300 || true
        echo "  log: $log"
    fi
done
echo "chaos soak on $grid: $passed passed, $failed failed (seeds $start..$((start + runs - 1)))"
[[ $failed -eq 0 ]]
