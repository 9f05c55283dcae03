#!/usr/bin/env bash
# Installs what the benchmarks need that this machine lacks, once; quiet
# when everything is already there.
#
# Why: `mf-bench sync` measures Syncthing in the same run as our daemons
# (figures from another day would mislead: load on this machine changes from
# minute to minute). It runs without Syncthing too, and then says in every
# Syncthing cell to run this script.
#
# Needs: Debian's package registry (Syncthing 1.19.2 on bookworm); root, or
# sudo.
#
# Usage: scripts/bench-setup.sh
set -euo pipefail

log() { echo "bench-setup: $*" >&2; }

# Debian package that brings each command the benchmarks run.
declare -A package_of=(
    [syncthing]=syncthing
)

missing=()
for cmd in "${!package_of[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${package_of[$cmd]}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    log "need root or sudo to install: ${missing[*]}"
    exit 1
fi

log "installing ${missing[*]}…"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
for cmd in "${!package_of[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || {
        log "$cmd still missing after installing ${package_of[$cmd]}"
        exit 1
    }
done
log "installed ${missing[*]}"
