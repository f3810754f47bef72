#!/usr/bin/env bash
# Bootstraps everything intercept-rl needs on a fresh machine, from the committed locks (locks/, written by
# `make lock`): system packages, the project venv, the agents' own environments (mini-swe-agent in its venv, pi
# from npm) and the task runtime.
# Idempotent: each environment is reinstalled only when its lock changed (the stamp holds the lock's hash).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP_VERSION=25.3
# torch is not in locks/project.txt (scripts/lock.sh says why). A CPU machine gets the CPU wheel of this version;
# on a GPU box install your CUDA build of torch into .venv first: an importable torch is kept as it is.
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

log() { printf '[bootstrap] %s\n' "$*" >&2; }
lock_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
fresh() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }  # fresh STAMP HASH: installed from exactly these locks

need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v git >/dev/null || need_apt+=(git)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)  # the tests lint the shell scripts (space_app/*.sh)
command -v strace >/dev/null || need_apt+=(strace)  # the offline check of gemini-cli traces its network calls
if [[ "${INTERCEPT_RL_NO_BROWSER:-0}" != 1 ]] && ! command -v chromium >/dev/null; then need_apt+=(chromium); fi
if ((${#need_apt[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  if [[ -n "$SUDO" ]] && ! command -v sudo >/dev/null; then
    log "missing system packages: ${need_apt[*]} (run as root or install them: apt-get install ${need_apt[*]})"; exit 1
  fi
  log "installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# install_locked VENV LOCK: pip pinned, then exactly the lock's pins, hash-checked, without resolving anything.
install_locked() {
  local venv=$1 lock=$2
  [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "pip==${PIP_VERSION}"
  "$venv/bin/python" -m pip install -q --require-hashes --no-deps -r "$lock"
  # ...and nothing else: what venv seeded or an older lock left behind goes (torch and pip stay, see doctor/locks.py).
  local extra=()
  mapfile -t extra < <("$PYTHON" -m doctor.locks unlocked "$venv/bin/python" "$lock")
  if ((${#extra[@]})); then "$venv/bin/python" -m pip uninstall -q -y "${extra[@]}"; fi
}

# 1. The project venv: the lock, then torch without its dependencies (they are in the lock; see above), then the
#    project itself (editable, no resolution). TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) picks
#    where torch comes from on a machine whose default index would serve a CUDA build.
project_hash=$(lock_hash locks/project.txt pyproject.toml)
if ! fresh .venv/.installed "$project_hash"; then
  log "installing .venv from locks/project.txt"
  install_locked .venv locks/project.txt
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q --no-deps ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"
  fi
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  .venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }
  echo "$project_hash" > .venv/.installed
fi

# 2. mini-swe-agent lives in its own venv: its litellm stack must not share pins with TRL (locks/agents.in says
#    what is in it and why).
agents_hash=$(lock_hash locks/agents.txt)
if ! fresh .venv-agents/.installed "$agents_hash"; then
  log "installing .venv-agents from locks/agents.txt"
  install_locked .venv-agents locks/agents.txt
  .venv-agents/bin/python -m pip check >/dev/null || { .venv-agents/bin/python -m pip check; exit 1; }
  echo "$agents_hash" > .venv-agents/.installed
fi

# 3. The npm agents, each from its package-lock.json (`npm ci`: exactly the lock, integrity-checked) into a
#    project-local prefix (no global install). The big agent CLIs (~1.4 GB together) are skipped with
#    INTERCEPT_RL_BIG_AGENTS=0: `make demo` needs none of them; `make setup` and `make test` install them all.
BIG_NPM_AGENTS=" qwen-code opencode claude-code codex gemini-cli "
for lock_dir in locks/npm/*/; do
  name=$(basename "$lock_dir"); prefix=".agents/$name"
  if [[ "${INTERCEPT_RL_BIG_AGENTS:-1}" == 0 && "$BIG_NPM_AGENTS" == *" $name "* ]]; then continue; fi
  npm_hash=$(lock_hash "$lock_dir/package.json" "$lock_dir/package-lock.json")
  fresh "$prefix/.installed" "$npm_hash" && continue
  if ! command -v npm >/dev/null; then
    log "WARNING: npm not found; the $name agent will be unavailable (needs Node >= 20.6)"; continue
  fi
  log "installing $name from $lock_dir"
  rm -rf "$prefix"; mkdir -p "$prefix"
  cp "$lock_dir/package.json" "$lock_dir/package-lock.json" "$prefix/"
  # `npm ci` refuses a lock that lacks other platforms' optional packages (a registry mirror without them cannot
  # record them); `npm install --no-save` installs the same lock, integrity-checked, skipping what this platform
  # does not need (tests/test_locks.py then checks installed == lock).
  if (cd "$prefix" && { npm ci --silent --no-audit --no-fund >/dev/null 2>&1 ||
                        npm install --no-save --silent --no-audit --no-fund >/dev/null 2>&1; }); then
    # The sandbox user is not the owner: everything readable, and the bundled executables some packages publish
    # without the exec bit (qwen-code's vendor/ripgrep/*/rg: `spawn … rg EACCES`) executable.
    chmod -R a+rX "$prefix"
    find "$prefix/node_modules" -type f -path '*/vendor/ripgrep/*' -name rg -exec chmod a+rx {} +
    echo "$npm_hash" > "$prefix/.installed"
  else
    log "WARNING: npm ci of $name failed; the $name agent will be unavailable"
  fi
done
log "ready"
