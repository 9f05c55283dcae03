#!/usr/bin/env bash
# Runs every test of the project: unit, property, simulation, end-to-end on
# the embedded grid, and the real Tahoe-LAFS grid tests. On a fresh machine it
# first installs what the tests need (the Tahoe venv, from PyPI).
#
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# The Tahoe-LAFS test grid's software (cached in .venv/tahoe after the first run).
scripts/tahoe-venv.sh >/dev/null

# Debug build (incremental, dependencies optimised: see [profile.dev] in
# Cargo.toml); --locked so a CI run builds exactly what was tested here.
cargo test --workspace --locked "$@"
