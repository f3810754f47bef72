#!/usr/bin/env bash
# Writes the lock files every environment of the project installs from (scripts/bootstrap.sh reads them):
#   locks/project.txt         the project venv (.venv) with the `test` extra, hashed  (torch excluded: see below)
#   locks/agents.txt          the agents' venv (.venv-agents): mini-swe-agent and all it pulls, hashed
#   locks/npm/<agent>/        package.json + package-lock.json of each npm agent (integrity hashes by npm)
#
# torch is the one package left out of locks/project.txt on purpose: a CPU machine installs the CPU wheel and a
# GPU box keeps its CUDA build; one hashed pin cannot be both (bootstrap installs `torch==$TORCH_VERSION` first).
#
# Usage: scripts/lock.sh            re-resolve only what the inputs changed (existing pins are kept)
#        scripts/lock.sh --upgrade  take the newest versions the inputs allow (then run the suite: make lock-upgrade)
# Locks are resolved for the interpreter that runs this (CPython 3.11, Linux x86-64 on the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP_TOOLS_VERSION=7.6.2
TORCH_VERSION=${TORCH_VERSION:-2.13.0}  # the version bootstrap.sh installs; the lock is resolved against it
TOOLS=.cache/lock-tools
upgrade=()
[[ "${1:-}" == --upgrade ]] && upgrade=(--upgrade)

log() { printf '[lock] %s\n' "$*" >&2; }

if [[ ! -x "$TOOLS/bin/pip-compile" ]]; then
  log "creating $TOOLS (pip-tools ${PIP_TOOLS_VERSION})"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q "pip-tools==${PIP_TOOLS_VERSION}"
fi

compile() {  # compile OUTPUT INPUT [extra pip-compile args...]
  local out=$1 in=$2; shift 2
  log "resolving $out from $in"
  # --unsafe-package torch: torch stays out of the file (it replaces pip-tools' default list, so setuptools is
  # pinned like any other package; pip itself is pinned by bootstrap.sh).
  "$TOOLS/bin/pip-compile" --quiet --generate-hashes --strip-extras --no-allow-unsafe --unsafe-package torch \
    --resolver backtracking --no-emit-index-url --no-emit-find-links "${upgrade[@]}" --output-file "$out" "$@" "$in"
}

constraints=$(mktemp); trap 'rm -f "$constraints"' EXIT
echo "torch==${TORCH_VERSION}" > "$constraints"
compile locks/project.txt pyproject.toml --extra test --constraint "$constraints"
"$PYTHON" scripts/strip_torch_cuda.py locks/project.txt
compile locks/agents.txt locks/agents.in

for dir in locks/npm/*/; do
  log "resolving ${dir}package-lock.json"
  if ((${#upgrade[@]})); then rm -f "${dir}package-lock.json"; fi
  (cd "$dir" && npm install --package-lock-only --ignore-scripts --no-audit --no-fund --silent)
done
log "done: review 'git diff locks/', then run 'make test' before committing"
