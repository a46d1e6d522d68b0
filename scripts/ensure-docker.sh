#!/usr/bin/env bash
# Make a Docker engine answer, and make debootstrap available for building the sandbox image
# without a registry. Touches an engine that already runs only by asking it `docker info`.
set -euo pipefail

log() { printf '[lineage setup] %s\n' "$*" >&2; }
die() { printf '[lineage setup] ERROR: %s\n' "$*" >&2; exit 1; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for_engine() {
    for _ in $(seq 1 "$1"); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    if command -v dockerd >/dev/null 2>&1 && pgrep -x dockerd >/dev/null 2>&1; then
        log "dockerd is starting; waiting for it"
        wait_for_engine 60 || die "dockerd runs but does not answer 'docker info'; see its log"
    elif can_apt; then
        if ! command -v dockerd >/dev/null 2>&1; then
            log "installing docker.io with apt"
            apt_install docker.io
        fi
        log "starting dockerd in the background (log: /var/log/lineage-dockerd.log)"
        nohup dockerd >/var/log/lineage-dockerd.log 2>&1 </dev/null &
        wait_for_engine 90 || die "dockerd did not answer within 90 s; see /var/log/lineage-dockerd.log"
    else
        die "no Docker engine answers 'docker info'. Install Docker (https://docs.docker.com/engine/install/) and start it, or run this as root on Debian/Ubuntu so setup can install docker.io itself."
    fi
fi
log "docker engine: $(docker info --format '{{.ServerVersion}} ({{.Driver}})' 2>/dev/null)"

if ! command -v debootstrap >/dev/null 2>&1; then
    if can_apt; then
        log "installing debootstrap with apt (builds the sandbox image without a registry)"
        apt_install debootstrap
    else
        log "debootstrap not found: the sandbox image can then only be built from a registry image"
    fi
fi
