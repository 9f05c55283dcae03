#!/usr/bin/env bash
# A local Tahoe-LAFS grid for trying the daemon by hand: one introducer,
# three storage nodes and N client nodes on free 127.0.0.1 ports, with
# k=2, happy=3, N=3 (so any one storage node may be down for reads).
#
#   scripts/tahoe-grid.sh start [DIR] [CLIENTS]   # default DIR=<repo>/target/tahoe-grid, CLIENTS=1
#   scripts/tahoe-grid.sh status [DIR]
#   scripts/tahoe-grid.sh stop [DIR]
#
# `start` creates the node directories on first use and reuses them after
# (shares survive a stop/start), starts every node with
# `tahoe run --allow-stdin-close` in the background (pid in NODE/run.pid, log
# in NODE/run.log), and returns once every node sees all three storage
# servers. Client web API URLs are printed (also in NODE/node.url; point
# `TahoeGrid::from_node_dir(DIR/clientN)` at a node directory).
#
# Tests do not use this script: they use the Rust fixture
# `mf_grid::tahoe::testgrid`, which ties node lifetimes to the test process.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
dir="${2:-$repo/target/tahoe-grid}"
clients="${3:-1}"
storage_nodes=3
timeout_s=90

die() { echo "tahoe-grid: $*" >&2; exit 1; }

tahoe="$("$repo/scripts/tahoe-venv.sh")" || die "could not install Tahoe-LAFS (see above)"
py="$(dirname "$tahoe")/python"

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Number of storage servers NODE reports as connected (or "-" if it does not answer).
connected() {
    "$py" - "$1" <<'EOF' 2>/dev/null || echo -
import json, sys, urllib.request
url = open(sys.argv[1] + "/node.url").read().strip()
with urllib.request.urlopen(url + "?t=json", timeout=5) as r:
    d = json.load(r)
print(sum(1 for s in d["servers"] if s["connection_status"] == "connected"))
EOF
}

running() { [[ -f "$1/run.pid" ]] && kill -0 "$(cat "$1/run.pid")" 2>/dev/null; }

nodes() {
    local n
    for n in "$dir"/introducer "$dir"/storage* "$dir"/client*; do
        [[ -d "$n" ]] && echo "$n"
    done
}

start_node() {
    local node="$1"
    if running "$node"; then return; fi
    rm -f "$node/node.url"
    # setsid + nohup: the node outlives this shell; --allow-stdin-close: and
    # does not exit when its (null) stdin closes.
    setsid nohup "$tahoe" run --allow-stdin-close "$node" </dev/null >>"$node/run.log" 2>&1 &
    echo $! >"$node/run.pid"
}

create() {
    mkdir -p "$dir"
    local p
    p=$(free_port)
    "$tahoe" create-introducer --listen=tcp --port="tcp:$p:interface=127.0.0.1" \
        --location="tcp:127.0.0.1:$p" "$dir/introducer" >/dev/null
    start_node "$dir/introducer"
    local deadline=$((SECONDS + timeout_s))
    until [[ -s "$dir/introducer/private/introducer.furl" ]]; do
        ((SECONDS < deadline)) || die "introducer did not start; see $dir/introducer/run.log"
        sleep 0.2
    done
    local furl i w
    furl="$(cat "$dir/introducer/private/introducer.furl")"
    for i in $(seq 0 $((storage_nodes - 1))); do
        p=$(free_port) w=$(free_port)
        "$tahoe" create-node --nickname="storage$i" --introducer="$furl" --listen=tcp \
            --port="tcp:$p:interface=127.0.0.1" --location="tcp:127.0.0.1:$p" \
            --webport="tcp:$w:interface=127.0.0.1" \
            --shares-needed=2 --shares-happy=3 --shares-total=3 "$dir/storage$i" >/dev/null
    done
}

add_clients() {
    local furl i w
    furl="$(cat "$dir/introducer/private/introducer.furl")"
    for i in $(seq 0 $((clients - 1))); do
        [[ -d "$dir/client$i" ]] && continue
        w=$(free_port)
        "$tahoe" create-node --nickname="client$i" --introducer="$furl" --listen=none --no-storage \
            --webport="tcp:$w:interface=127.0.0.1" \
            --shares-needed=2 --shares-happy=3 --shares-total=3 "$dir/client$i" >/dev/null
    done
}

case "$cmd" in
start)
    t0=$SECONDS
    [[ -d "$dir/introducer" ]] || create
    add_clients
    while read -r node; do start_node "$node"; done < <(nodes)
    deadline=$((SECONDS + timeout_s))
    while read -r node; do
        [[ "$(basename "$node")" == introducer ]] && continue
        until [[ "$(connected "$node")" == "$storage_nodes" ]]; do
            running "$node" || die "$(basename "$node") exited; see $node/run.log"
            ((SECONDS < deadline)) || die "$(basename "$node") does not see $storage_nodes servers; see $node/run.log"
            sleep 0.2
        done
    done < <(nodes)
    echo "tahoe-grid: up in $((SECONDS - t0)) s under $dir" >&2
    for node in "$dir"/client*; do echo "$(basename "$node") $(cat "$node/node.url")"; done
    ;;
status)
    [[ -d "$dir" ]] || die "no grid under $dir"
    while read -r node; do
        if running "$node"; then state="running pid $(cat "$node/run.pid")"; else state="stopped"; fi
        url=""; [[ -f "$node/node.url" ]] && url="$(cat "$node/node.url")"
        servers=""; [[ "$(basename "$node")" != introducer ]] && running "$node" && servers="sees $(connected "$node") servers"
        printf '%-12s %-20s %-28s %s\n' "$(basename "$node")" "$state" "$url" "$servers"
    done < <(nodes)
    ;;
stop)
    [[ -d "$dir" ]] || exit 0
    pids=()
    while read -r node; do
        if running "$node"; then
            pid="$(cat "$node/run.pid")"
            kill "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$node/run.pid"
    done < <(nodes)
    # Give them 10 s to shut down cleanly, then kill what is left.
    for _ in $(seq 1 50); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    echo "tahoe-grid: stopped ${#pids[@]} node(s)" >&2
    ;;
*)
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
