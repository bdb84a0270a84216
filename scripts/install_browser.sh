#!/usr/bin/env bash
# Installs Debian's Chromium for the web UI browser tests (tests/ui), once.
# Idempotent: does nothing when /usr/bin/chromium already runs. Playwright drives this
# system browser; `playwright install` (which downloads its own build) is never used.
# Needs root (or sudo) and a reachable Debian mirror the first time; if neither is
# available it says so and exits 0, and the browser tests skip with that reason.
set -uo pipefail
browser="${SDSTUDIO_CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$browser" ]] && "$browser" --version >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install_browser.sh: chromium is missing and this user cannot install packages; browser tests will be skipped" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no apt-get here; install Chromium yourself (or set SDSTUDIO_CHROMIUM); browser tests will be skipped" >&2
    exit 0
fi
echo "install_browser.sh: installing Debian's chromium for the web UI browser tests..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium; } >&2; then
    echo "install_browser.sh: apt-get could not install chromium; browser tests will be skipped" >&2
fi
exit 0
