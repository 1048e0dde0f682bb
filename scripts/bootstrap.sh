#!/usr/bin/env bash
# Prepare this machine for cloner, idempotently: Debian packages, a running Docker
# engine, the virtualenv with cloner installed, and the engine images
# (pulled, or built offline from Debian packages when no registry answers).
# Safe to run again: every step checks before it acts.
#
# CLONER_ALLOW_NO_DOCKER=1 (the demo sets it): when Docker cannot be installed or
# started, say why, write the reason to var/docker-unavailable, and finish the rest
# (virtualenv, cloner) so the embedded sqlite engine still works. Without it (the
# tests), a missing Docker engine is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*" >&2; }
allow_no_docker="${CLONER_ALLOW_NO_DOCKER:-0}"
mkdir -p var
rm -f var/docker-unavailable
no_docker() {
  if [ "$allow_no_docker" = 1 ]; then
    log "Docker unavailable: $*; continuing without it (sqlite tenants only)"
    printf '%s\n' "$*" > var/docker-unavailable
    return 0
  fi
  log "$*"; exit 1
}

# 1. System packages (Debian). Docker engine + mmdebstrap for offline image builds.
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# compose validates docker-compose.yml in the tests (the plugin, or Debian's docker-compose)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 \
  || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "need root to install: ${missing[*]}"
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || exit 1
    no_docker "cannot install ${missing[*]} without root"
  else
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
      python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || { log "python3-venv is required"; exit 1; }
      no_docker "apt-get could not install ${missing[*]}"
    fi
  fi
fi

# 1b. promtool (checks deploy/prometheus rules in the tests): taken out of Debian's prometheus
# package into var/tools, so no Prometheus service is installed or started on this machine.
if [ ! -x var/tools/bin/promtool ] && ! command -v promtool >/dev/null 2>&1; then
  log "extracting promtool from Debian's prometheus package into var/tools"
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) \
      || { apt-get update -qq && (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); }; then
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    mkdir -p var/tools/bin
    cp "$tmp/root/usr/bin/promtool" var/tools/bin/promtool
  else
    log "could not download Debian's prometheus package; the promtool checks will not run"
  fi
  rm -rf "$tmp"
fi

# 2. Docker engine: start one in the background unless one already answers. Only the
# local default socket is started here; a DOCKER_HOST elsewhere must already answer.
if [ -e var/docker-unavailable ]; then
  :
elif ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    no_docker "dockerd is not installed"
  elif [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != unix:///var/run/docker.sock ]; then
    no_docker "DOCKER_HOST=${DOCKER_HOST} does not answer"
  elif [ "$(id -u)" -ne 0 ]; then
    no_docker "Docker does not answer and only root can start dockerd"
  else
    log "starting dockerd"
    mkdir -p /var/log
    nohup dockerd >/var/log/cloner-dockerd.log 2>&1 &
    for _ in $(seq 1 120); do
      if [ -S /var/run/docker.sock ] && docker info >/dev/null 2>&1; then break; fi
      sleep 0.5
    done
    docker info >/dev/null 2>&1 \
      || no_docker "dockerd did not start; see /var/log/cloner-dockerd.log"
  fi
fi

# 3. Virtualenv with cloner and its dev tools; reinstalled only when pyproject changes.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=".venv/.cloner-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing cloner into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.cloner-installed-*
  touch "$stamp"
fi

# 4. Engine images: present → nothing; else pull; else build offline (~1-2 min once).
if [ -e var/docker-unavailable ]; then
  log "skipping engine images: no Docker"
else
  .venv/bin/cloner images ensure
fi
