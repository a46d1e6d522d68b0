#!/usr/bin/env bash
# Make a headless Chromium available: the dashboard test (tests/test_serve.py) renders
# `lineage serve` in it to check the page's JavaScript really draws the lineage.
# Installs only as root on Debian/Ubuntu; elsewhere it says what to install and carries on.
set -euo pipefail

log() { printf '[lineage setup] %s\n' "$*" >&2; }

for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
        log "chromium: $("$name" --version 2>/dev/null | head -n1)"
        exit 0
    fi
done

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium with apt (headless browser for the dashboard test)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    log "chromium: $(chromium --version 2>/dev/null | head -n1)"
else
    log "chromium not found and cannot be installed here (needs root and apt-get): install" \
        "Debian's 'chromium' package (or Chrome) to run the dashboard's browser test"
fi
