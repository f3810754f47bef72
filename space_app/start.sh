#!/usr/bin/env bash
# The Space's entry point (space_app/Dockerfile CMD): status page, sandbox preflight, vLLM on GPU 0, the trainer on
# the other GPUs. Configuration comes from the Space's variables (set by `intercept-rl space deploy`, listed in
# space_app/README.md); secrets (HF_TOKEN, INTERCEPT_RL_GATE_SECRET) stay in the environment: nothing here puts a
# secret on a command line or in a log.
#
#   1. the status page on $PORT (space_app/status.py): run state, step, reward, Trackio link; /rollout/... -> gate;
#   2. preflight (space_app/preflight.py): refuses to run model-written code unsandboxed unless opted in;
#   3. GPUs from nvidia-smi: vLLM gets the first, the trainer the rest (NCCL weight sync needs them apart);
#      one GPU: refused with the reason (there is no one-GPU mode yet, see docs/space.md);
#   4. vLLM with the training flags (design §5); waits for /health at most INTERCEPT_RL_VLLM_HEALTH_TIMEOUT_S and
#      exits non-zero if vLLM dies or does not become healthy;
#   5. `accelerate launch` (FSDP2, trainer/accelerate_fsdp2.yaml) of trainer/train_swe_async_grpo.py; if vLLM dies
#      meanwhile the trainer is stopped and this exits non-zero;
#   6. at the end: pauses the Space when INTERCEPT_RL_PAUSE_WHEN_DONE=1, else keeps serving the status page.
set -euo pipefail

APP_DIR="${APP_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$APP_DIR"

PY="${INTERCEPT_RL_PYTHON:-$APP_DIR/.venv/bin/python}"
PORT="${PORT:-7860}"
MODEL="${INTERCEPT_RL_MODEL:-}"
SERVED_NAME="${INTERCEPT_RL_SERVED_MODEL_NAME:-policy}"
MAX_MODEL_LEN="${INTERCEPT_RL_MAX_MODEL_LEN:-32768}"  # = space_app.deploy.SPACE_MAX_MODEL_LEN (why: there)
DTYPE="${INTERCEPT_RL_DTYPE:-bfloat16}"
VLLM_PORT="${INTERCEPT_RL_VLLM_PORT:-8000}"
VLLM_EXTRA="${INTERCEPT_RL_VLLM_EXTRA_ARGS:-}"
HEALTH_TIMEOUT_S="${INTERCEPT_RL_VLLM_HEALTH_TIMEOUT_S:-1200}"
POLL_S="${INTERCEPT_RL_POLL_S:-2}"
OUTPUT_DIR="${INTERCEPT_RL_OUTPUT_DIR:-/data/run}"
STATE_DIR="${INTERCEPT_RL_STATE_DIR:-/tmp/intercept-rl-space}"
TRACKIO_PROJECT="${INTERCEPT_RL_TRACKIO_PROJECT:-intercept-rl}"
TRACKIO_SPACE_ID="${INTERCEPT_RL_TRACKIO_SPACE_ID:-}"
TRAIN_ARGS="${INTERCEPT_RL_TRAIN_ARGS:-}"
ACCELERATE_CONFIG="${INTERCEPT_RL_ACCELERATE_CONFIG:-$APP_DIR/trainer/accelerate_fsdp2.yaml}"
PAUSE_WHEN_DONE="${INTERCEPT_RL_PAUSE_WHEN_DONE:-0}"
KEEP_SERVING="${INTERCEPT_RL_KEEP_SERVING:-1}"
# The gate's loopback port, proxied by the status page at /rollout/..., and the public origin sandboxes outside the
# Space would reach it at (remote sandboxes, docs/space.md; SPACE_HOST is set by the Spaces runtime).
export INTERCEPT_RL_GATE_PORT="${INTERCEPT_RL_GATE_PORT:-8001}"
if [[ -n "${SPACE_HOST:-}" ]]; then
  export INTERCEPT_RL_PUBLIC_URL="https://${SPACE_HOST}"
fi
export INTERCEPT_RL_TRACKIO_PROJECT="$TRACKIO_PROJECT" INTERCEPT_RL_STATE_DIR="$STATE_DIR"

VLLM_PID="" TRAIN_PID="" STATUS_PID=""

log() { printf '[space] %s\n' "$*" >&2; }
set_state() {  # set_state WORD DETAIL: what the status page shows
  printf '%s\n' "$2" > "$STATE_DIR/detail"
  printf '%s\n' "$1" > "$STATE_DIR/state"
  log "state: $1: $2"
}
stop_pid() {  # stop_pid PID: TERM, then KILL after 30 s
  local pid="$1" i
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  stop_pid "$TRAIN_PID"
  stop_pid "$VLLM_PID"
  stop_pid "$STATUS_PID"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
finish() {  # finish RC: pause the Space if asked, keep the status page up if asked, exit RC
  local rc="$1"
  if [[ "$PAUSE_WHEN_DONE" == 1 ]]; then "$PY" -m space_app.status --pause-space || true; fi
  stop_pid "$TRAIN_PID"; TRAIN_PID=""
  stop_pid "$VLLM_PID"; VLLM_PID=""
  if [[ "$rc" == 0 && "$KEEP_SERVING" == 1 && -n "$STATUS_PID" ]]; then wait "$STATUS_PID" || true; fi
  exit "$rc"
}
fail() { set_state failed "$1"; finish "${2:-1}"; }
vllm_healthy() {
  "$PY" - "http://127.0.0.1:${VLLM_PORT}/health" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
    sys.exit(0 if response.status == 200 else 1)
EOF
}

mkdir -p "$STATE_DIR" "$OUTPUT_DIR"
: > "$STATE_DIR/train.log"
set_state starting "preflight"

# 1. The status page first, so the Space answers on its port while vLLM loads.
"$PY" -m space_app.status --port "$PORT" --state-dir "$STATE_DIR" &
STATUS_PID=$!

# 2. Sandboxes: bubblewrap, or a loud opt-in.
if ! "$PY" -m space_app.preflight; then
  set_state refused "bubblewrap cannot start here and unsandboxed runs were not allowed (see the logs)"
  finish 1
fi
[[ -n "$MODEL" ]] || fail "INTERCEPT_RL_MODEL is not set (intercept-rl space deploy --model ...)"

# 3. GPUs: the first for vLLM, the rest for the trainer.
gpus=()
if command -v nvidia-smi >/dev/null; then
  mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ')
fi
if ((${#gpus[@]} == 0)); then
  fail "no GPU found (nvidia-smi): request GPU hardware (intercept-rl space deploy --hardware ...)"
fi
if ((${#gpus[@]} == 1)); then
  fail "one GPU: vLLM and the trainer cannot share it (NCCL weight sync needs two GPUs); choose hardware with >= 2 GPUs"
fi
VLLM_GPU="${gpus[0]}"
TRAIN_GPUS="$(IFS=,; echo "${gpus[*]:1}")"
NUM_TRAIN=$((${#gpus[@]} - 1))
log "GPUs: vLLM on ${VLLM_GPU}, trainer on ${TRAIN_GPUS} (${NUM_TRAIN} processes)"

# 4. vLLM with what training needs: dev mode (weight-transfer endpoints), NCCL weight transfer, post-temperature
#    logprobs, the served name the worker sends, the context length, the trainer's dtype.
vllm_extra=()
read -r -a vllm_extra <<< "$VLLM_EXTRA"
set_state vllm_starting "loading ${MODEL} on GPU ${VLLM_GPU}"
CUDA_VISIBLE_DEVICES="$VLLM_GPU" VLLM_SERVER_DEV_MODE=1 vllm serve "$MODEL" \
  --served-model-name "$SERVED_NAME" \
  --weight-transfer-config '{"backend":"nccl"}' \
  --logprobs-mode processed_logprobs \
  --max-model-len "$MAX_MODEL_LEN" \
  --dtype "$DTYPE" \
  --host 127.0.0.1 --port "$VLLM_PORT" \
  "${vllm_extra[@]}" &
VLLM_PID=$!

deadline=$((SECONDS + HEALTH_TIMEOUT_S + 1))  # SECONDS counts whole seconds: +1 waits at least the timeout
until vllm_healthy; do
  if ! kill -0 "$VLLM_PID" 2>/dev/null; then
    rc=0; wait "$VLLM_PID" || rc=$?; VLLM_PID=""
    fail "vLLM exited (status ${rc}) before it was healthy"
  fi
  if ((SECONDS >= deadline)); then
    fail "vLLM was not healthy after ${HEALTH_TIMEOUT_S} s"
  fi
  sleep "$POLL_S"
done
log "vLLM is healthy on 127.0.0.1:${VLLM_PORT}"

# 5. The trainer (FSDP2 over the remaining GPUs). Extra flags come from INTERCEPT_RL_TRAIN_ARGS, split on spaces.
train_extra=()
read -r -a train_extra <<< "$TRAIN_ARGS"
trackio_flags=()
[[ -n "$TRACKIO_SPACE_ID" ]] && trackio_flags=(--trackio-space-id "$TRACKIO_SPACE_ID")
set_state training "trainer on GPUs ${TRAIN_GPUS}"
CUDA_VISIBLE_DEVICES="$TRAIN_GPUS" accelerate launch \
  --config_file "$ACCELERATE_CONFIG" \
  --num_processes "$NUM_TRAIN" \
  trainer/train_swe_async_grpo.py \
  --model-name-or-path "$MODEL" \
  --vllm-url "http://127.0.0.1:${VLLM_PORT}" \
  --served-model-name "$SERVED_NAME" \
  --gate-port "$INTERCEPT_RL_GATE_PORT" \
  --dtype "$DTYPE" \
  --output-dir "$OUTPUT_DIR" \
  --project "$TRACKIO_PROJECT" \
  "${trackio_flags[@]}" \
  "${train_extra[@]}" \
  > >(tee -a "$STATE_DIR/train.log") 2>&1 &
TRAIN_PID=$!

while kill -0 "$TRAIN_PID" 2>/dev/null; do
  if ! kill -0 "$VLLM_PID" 2>/dev/null; then
    rc=0; wait "$VLLM_PID" || rc=$?; VLLM_PID=""
    fail "vLLM died during training (status ${rc}); the trainer was stopped"
  fi
  sleep "$POLL_S"
done
rc=0; wait "$TRAIN_PID" || rc=$?; TRAIN_PID=""
if ((rc != 0)); then
  fail "the trainer exited with status ${rc}" "$rc"
fi
set_state finished "training done; outputs in ${OUTPUT_DIR}"
finish 0
