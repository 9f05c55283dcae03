#!/usr/bin/env bash
# Installs Tahoe-LAFS (with magic-folder 24.3 and a Magic Wormhole mailbox
# server beside it) into a project-local virtualenv, once, and prints the
# path of its `tahoe` executable on stdout (everything else goes to stderr).
#
# Why a venv at a fixed path: the real-grid tests (crates/grid/tests/tahoe.rs)
# need a `tahoe` binary of a known version, and installing it takes minutes,
# so it is cached at <repo>/.venv/tahoe (git-ignored) and reused while it works.
#
# Usage: scripts/tahoe-venv.sh            # install if needed, print tahoe path
#        TAHOE_VENV=/some/dir scripts/tahoe-venv.sh
#        TAHOE_VENV_FORCE=1 scripts/tahoe-venv.sh   # rebuild from scratch
#
# Needs a Python >= 3.9 with the venv module and network access to PyPI; on a
# Debian machine without one it apt-get installs python3-venv.
set -euo pipefail

TAHOE_VERSION="1.20.0"
# magic-folder 24.3 (the Python daemon whose formats and API we share) and a
# Magic Wormhole mailbox server, for the interoperability tests.
MAGIC_FOLDER_VERSION="24.3.0"
MAILBOX_VERSION="0.8.0"
# The reference Prometheus text parser, to check our /metrics with.
PROMETHEUS_CLIENT_VERSION="0.20.0"
STAMP="$TAHOE_VERSION+mf$MAGIC_FOLDER_VERSION+mailbox$MAILBOX_VERSION+prom$PROMETHEUS_CLIENT_VERSION"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TAHOE_VENV:-$repo/.venv/tahoe}"
tahoe="$venv/bin/tahoe"
stamp="$venv/.mf-tahoe-version"

log() { echo "tahoe-venv: $*" >&2; }

# "Working" = the stamp of a finished install, and the venv's Python can
# import the right allmydata (50 ms; `tahoe --version` would cost 0.7 s on
# every test run).
works() {
    [[ -x "$tahoe" ]] && [[ -x "$venv/bin/magic-folder-api" ]] && [[ -f "$stamp" ]] &&
        [[ "$(cat "$stamp")" == "$STAMP" ]] &&
        "$venv/bin/python" -c "import sys, allmydata; sys.exit(allmydata.__version__ != '$TAHOE_VERSION')" \
            >/dev/null 2>&1
}

if [[ -z "${TAHOE_VENV_FORCE:-}" ]] && works; then
    echo "$tahoe"
    exit 0
fi

# Several test binaries may start at once on a fresh machine: one installs,
# the others wait and then reuse its work.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if [[ -z "${TAHOE_VENV_FORCE:-}" ]] && works; then
    echo "$tahoe"
    exit 0
fi

# Pick a Python that can make venvs: prefer 3.11 (what tahoe 1.20 is tested
# with here), then any python3.
find_python() {
    local cand
    for cand in python3.11 python3.12 python3.10 python3.9 python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
            "$cand" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
                >/dev/null 2>&1; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

python="$(find_python || true)"
if [[ -z "$python" ]]; then
    if command -v apt-get >/dev/null 2>&1; then
        log "no Python with venv support; installing python3-venv from Debian"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq python3 python3-venv python3-pip >&2
        python="$(find_python || true)"
    fi
fi
if [[ -z "$python" ]]; then
    log "ERROR: no python3 (>= 3.9) with the venv module, and could not install one"
    exit 1
fi

start=$(date +%s)
log "creating $venv with $python ($("$python" --version 2>&1)); tahoe-lafs==$TAHOE_VERSION, magic-folder==$MAGIC_FOLDER_VERSION"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --upgrade pip wheel setuptools >&2
# Quiet, but errors still reach stderr.
"$venv/bin/python" -m pip install --quiet "tahoe-lafs==$TAHOE_VERSION" \
    "magic-folder==$MAGIC_FOLDER_VERSION" "magic-wormhole-mailbox-server==$MAILBOX_VERSION" \
    "prometheus-client==$PROMETHEUS_CLIENT_VERSION" >&2
if ! "$tahoe" --version >/dev/null 2>&1; then
    log "ERROR: tahoe installed but '$tahoe --version' fails:"
    "$tahoe" --version >&2 || true
    exit 1
fi
echo "$STAMP" >"$stamp"
log "installed in $(($(date +%s) - start)) s"
echo "$tahoe"
