#!/usr/bin/env bash
# Bootstraps everything intercept-rl needs on a fresh machine: system packages, the project venv,
# the agents' own environments (mini-swe-agent in its venv, pi from npm) and the task runtime.
# Idempotent: each step is skipped when its stamp is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
MINI_SWE_AGENT_VERSION=2.4.6
PI_VERSION=0.73.1
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

log() { printf '[bootstrap] %s\n' "$*" >&2; }

need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v git >/dev/null || need_apt+=(git)
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

# 1. The project venv. torch first and pinned: on CPU machines this takes the local CPU wheel
#    instead of letting a loose requirement pull a multi-GB CUDA build.
if [[ ! -f .venv/.installed || pyproject.toml -nt .venv/.installed ]]; then
  log "creating .venv"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==${TORCH_VERSION}"
  .venv/bin/python -m pip install -q -e ".[test]"
  touch .venv/.installed
fi

# 2. mini-swe-agent lives in its own venv: its litellm stack must not share pins with TRL.
#    It needs `mcp` (litellm crashes without it, DESIGN §7). pytest is the embedded tasks' runtime.
if [[ ! -f .venv-agents/.installed || scripts/bootstrap.sh -nt .venv-agents/.installed ]]; then
  log "creating .venv-agents (mini-swe-agent ${MINI_SWE_AGENT_VERSION})"
  [[ -x .venv-agents/bin/python ]] || "$PYTHON" -m venv .venv-agents
  .venv-agents/bin/python -m pip install -q --upgrade pip
  .venv-agents/bin/python -m pip install -q "mini-swe-agent==${MINI_SWE_AGENT_VERSION}" mcp pytest
  touch .venv-agents/.installed
fi

# 3. pi, pinned, from npm, into a project-local prefix (no global install).
if [[ ! -f .agents/pi/.installed || scripts/bootstrap.sh -nt .agents/pi/.installed ]]; then
  if command -v npm >/dev/null; then
    log "installing pi ${PI_VERSION}"
    mkdir -p .agents/pi
    npm install --silent --no-audit --no-fund --prefix .agents/pi "@mariozechner/pi-coding-agent@${PI_VERSION}" >/dev/null 2>&1 \
      && touch .agents/pi/.installed || log "WARNING: npm install of pi failed; the pi agent will be unavailable"
  else
    log "WARNING: npm not found; the pi agent will be unavailable (needs Node >= 20.6)"
  fi
fi
log "ready"
