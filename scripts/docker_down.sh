#!/usr/bin/env bash
# Stops the Docker daemon that scripts/docker_up.sh started, and only that one (its pid file + marker); a daemon
# that was already running is left alone. Containers of intercept-rl sandboxes are removed first. Idempotent.
set -uo pipefail
STATE=${INTERCEPT_RL_DOCKER_STATE:-/tmp/intercept-rl-docker}
log() { printf '[docker_down] %s\n' "$*" >&2; }
SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi

if [[ ! -f "$STATE/started-by-us" ]]; then
  log "no daemon started by docker_up.sh: nothing to stop"
  exit 0
fi
pid=$(cat "$STATE/dockerd.pid" 2>/dev/null || true)
if [[ -n "$pid" ]] && [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == dockerd ]]; then
  ids=$(timeout 20 docker ps -aq --filter label=intercept-rl.sandbox 2>/dev/null || true)
  [[ -n "$ids" ]] && timeout 60 docker rm -f $ids >/dev/null 2>&1
  log "stopping dockerd (pid $pid)"
  $SUDO kill -TERM "$pid"
  # Gone, or a zombie waiting for its parent to reap it (the state field after the command name is Z).
  running() { [[ -r /proc/$pid/stat ]] && [[ "$(sed 's/.*) //' /proc/"$pid"/stat | cut -d' ' -f1)" != Z ]]; }
  for _ in $(seq 1 40); do running || break; sleep 0.5; done
  if running; then log "dockerd ignored SIGTERM for 20 s: SIGKILL"; $SUDO kill -KILL "$pid"; fi
else
  log "the recorded dockerd (pid ${pid:-none}) is not running"
fi
rm -f "$STATE/started-by-us" "$STATE/dockerd.pid"
