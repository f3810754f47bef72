#!/usr/bin/env bash
# Brings a Docker engine up for the Docker tests and CI (docs/containers.md, design §7), idempotently:
#   1. installs docker.io and mmdebstrap with apt when they are missing (as root, or through sudo);
#   2. starts `dockerd --storage-driver=overlay2 --iptables=false --bridge=none` when no daemon answers, and records
#      that it did (pid file + marker): scripts/docker_down.sh stops only a daemon this script started;
#   3. builds the project's base image from Debian packages (mmdebstrap + `docker import`, no registry needed) unless
#      it exists already.
# It never fails the caller: when a step cannot be done it says why on stderr and exits 0, and the Docker tests then
# report themselves as SKIPPED with the reason (tests/support/docker.py). `--strict` exits 1 instead.
#
# Environment: INTERCEPT_RL_DOCKER_STATE (default /tmp/intercept-rl-docker: pid file, log, marker),
# INTERCEPT_RL_BASE_IMAGE (default intercept-rl/base:1), INTERCEPT_RL_DEBIAN_MIRROR (default: the host's apt mirror).
set -uo pipefail
cd "$(dirname "$0")/.."

STRICT=0
[[ "${1:-}" == "--strict" ]] && STRICT=1
STATE=${INTERCEPT_RL_DOCKER_STATE:-/tmp/intercept-rl-docker}
BASE_IMAGE=${INTERCEPT_RL_BASE_IMAGE:-intercept-rl/base:1}
SUITE=bookworm
# What every task image built from the base needs: a Python with pytest and git for the tasks, and the shared
# libraries the bind-mounted agent runtimes (a pyenv/venv Python, Node) load from the image (docs/containers.md).
BASE_PACKAGES=python3,python-is-python3,python3-pytest,git,ca-certificates,procps,patch,libstdc++6,libssl3,libffi8,libsqlite3-0,zlib1g,libbz2-1.0,liblzma5,libncursesw6,libreadline8,libexpat1,libuuid1,libgdbm6,libtirpc3,libnsl2,libcrypt1

log() { printf '[docker_up] %s\n' "$*" >&2; }
give_up() { log "Docker unavailable: $*"; mkdir -p "$STATE"; printf '%s\n' "$*" > "$STATE/unavailable"; exit "$STRICT"; }

mkdir -p "$STATE"
rm -f "$STATE/unavailable"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
fi

# 1. Packages.
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 && -z "$SUDO" ]]; then give_up "missing ${need[*]} and no root to install them"; fi
  log "installing ${need[*]} (apt)"
  timeout 300 $SUDO apt-get update -qq >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive timeout 600 $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >"$STATE/apt.log" 2>&1 || give_up "apt-get install ${need[*]} failed (see $STATE/apt.log)"
fi

# 2. The daemon.
answers() { timeout 10 docker info >/dev/null 2>&1; }
if answers; then
  if [[ -f "$STATE/started-by-us" ]]; then
    log "the Docker daemon docker_up.sh started earlier answers (docker_down.sh will stop it)"
  else
    log "a Docker daemon already answers: using it (docker_down.sh will leave it running)"
  fi
else
  if [[ $(id -u) -ne 0 && -z "$SUDO" ]]; then give_up "no daemon answers and starting dockerd needs root"; fi
  log "starting dockerd (overlay2, no iptables, no bridge)"
  # setsid: its own session, so a CI step's process-group kill does not take it down before docker_down.sh runs.
  $SUDO setsid dockerd --storage-driver=overlay2 --iptables=false --bridge=none \
    --pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do answers && break; sleep 0.5; done
  if ! answers; then
    # overlay2 can be refused (e.g. nested overlayfs); vfs is slow but works everywhere.
    [[ -f "$STATE/dockerd.pid" ]] && $SUDO kill "$(cat "$STATE/dockerd.pid")" 2>/dev/null
    sleep 2
    log "dockerd with overlay2 did not answer; retrying with vfs ($(tail -n 2 "$STATE/dockerd.log" | tr '\n' ' '))"
    $SUDO setsid dockerd --storage-driver=vfs --iptables=false --bridge=none \
      --pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do answers && break; sleep 0.5; done
  fi
  answers || give_up "dockerd did not answer within 30 s (log: $STATE/dockerd.log)"
  touch "$STATE/started-by-us"
  log "dockerd is up (pid $(cat "$STATE/dockerd.pid" 2>/dev/null))"
fi

# 3. The base image: Debian minbase + BASE_PACKAGES, imported (no registry is needed or reachable).
if timeout 30 docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE exists"
else
  mirror=${INTERCEPT_RL_DEBIAN_MIRROR:-}
  if [[ -z "$mirror" ]]; then
    mirror=$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
      /etc/apt/sources.list.d/*.list 2>/dev/null | grep -v security | head -n1 | awk '{print $2}')
    mirror=${mirror:-http://deb.debian.org/debian}
  fi
  work=$(mktemp -d /tmp/intercept-rl-base.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  log "building $BASE_IMAGE: mmdebstrap $SUITE from $mirror"
  if ! timeout 900 $SUDO mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
      --aptopt='Acquire::Retries "3"' "$SUITE" "$work/base.tar" "$mirror" >"$STATE/mmdebstrap.log" 2>&1; then
    give_up "mmdebstrap failed (see $STATE/mmdebstrap.log)"
  fi
  timeout 300 docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
      --change 'LABEL intercept-rl.base=1' "$work/base.tar" "$BASE_IMAGE" >/dev/null \
    || give_up "docker import of the base image failed"
  rm -rf "$work"
  log "built $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes)"
fi
log "ready: $(docker version -f 'server {{.Server.Version}}' 2>/dev/null), base image $BASE_IMAGE"
