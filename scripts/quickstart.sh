#!/usr/bin/env bash
# Quick start: builds Magic Folder (release), sets up a folder shared by two
# participants, alice and bob, on an embedded grid, and runs both daemons in
# the foreground. Put files in one folder and watch them appear in the other.
# Ctrl-C stops both; running it again reuses everything it set up.
#
# Usage: scripts/quickstart.sh [DEMO_DIR]      (default: ~/magic-folder-demo)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
demo="${1:-$HOME/magic-folder-demo}"

cargo build --release --locked -p magic-folder --manifest-path "$repo/Cargo.toml"
mf="$repo/target/release/magic-folder"

mkdir -p "$demo"
alice=(--config "$demo/config-alice")
bob=(--config "$demo/config-bob")

if ! "$mf" "${alice[@]}" list --json 2>/dev/null | grep -q '"demo"'; then
    echo "== alice creates the folder $demo/alice on the embedded grid $demo/grid"
    "$mf" "${alice[@]}" create demo "$demo/alice" --author alice --grid "$demo/grid" \
        --poll-interval 1s --pending-delay 200ms
fi
if ! "$mf" "${bob[@]}" list --json 2>/dev/null | grep -q '"demo"'; then
    echo "== alice invites bob; bob joins with the code at $demo/bob"
    code="$("$mf" "${alice[@]}" invite demo bob 2>/dev/null)"
    "$mf" "${bob[@]}" join "$code" "$demo/bob" --name demo --author bob \
        --poll-interval 1s --pending-delay 200ms
    "$mf" "${alice[@]}" admit demo
fi

cat <<MSG

== Both daemons are running. Try, in another terminal:
     echo hello > $demo/alice/hello.txt
     cat $demo/bob/hello.txt                  # within a second or two
     $mf ${alice[*]} status demo
   Ctrl-C stops both daemons.

MSG
"$mf" "${alice[@]}" run &
a=$!
"$mf" "${bob[@]}" run &
b=$!
trap 'kill -INT $a $b 2>/dev/null; wait $a $b 2>/dev/null; exit 0' INT TERM
wait $a $b
