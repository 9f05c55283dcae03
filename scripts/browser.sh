#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver, once, for the web page's
# browser test, and prints the path of `chromedriver` on stdout (everything
# else goes to stderr).
#
# Why Debian's: the machine reaches Debian's packages, not a browser
# vendor's downloads, so a test tool that fetches its own browser cannot
# work here; ChromeDriver (the W3C WebDriver server for Chromium) comes from
# the same package source, in the same version as the browser.
set -euo pipefail

log() { echo "browser: $*" >&2; }
driver=/usr/bin/chromedriver

if [[ -x "$driver" && -x /usr/bin/chromium ]]; then
    echo "$driver"
    exit 0
fi

# Several test binaries may start at once: one installs, the others wait.
exec 9>"${TMPDIR:-/tmp}/mf-browser-install.lock"
command -v flock >/dev/null 2>&1 && flock 9
if [[ -x "$driver" && -x /usr/bin/chromium ]]; then
    echo "$driver"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "ERROR: no apt-get: install Chromium and ChromeDriver (chromium, chromium-driver) by hand"
    exit 1
fi
sudo=""
[[ "$(id -u)" == 0 ]] || sudo="sudo"
start=$(date +%s)
log "installing chromium and chromium-driver from Debian"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq chromium chromium-driver >&2
log "installed in $(($(date +%s) - start)) s"
echo "$driver"
