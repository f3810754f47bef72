#!/usr/bin/env bash
# Device call B: wait for the vLLM that setup_and_start.sh started, then run our client and rollout checks against it.
# Usage (repo root, on the GPU box): bash gpu/run_checks.sh [float32|bfloat16] [health timeout s]
set -uo pipefail
dtype="${1:-float32}"; wait_s="${2:-400}"
out="${OUT:-/tmp/out}"; mkdir -p "$out"
source /tmp/gpu_env.sh
pid=$(cat /tmp/vllm.pid); model_dir=$(cat /tmp/model_dir)
t0=$(date +%s)
until python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=2)" 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then echo "vLLM (pid $pid) died"; tail -60 /tmp/vllm.log; cp /tmp/vllm.log "$out/"; exit 1; fi
  if (( $(date +%s) - t0 > wait_s )); then echo "vLLM not healthy after $wait_s s"; tail -40 /tmp/vllm.log; cp /tmp/vllm.log "$out/"; exit 1; fi
  sleep 2
done
echo "vLLM healthy after $(( $(date +%s) - t0 )) s of waiting in this call"
python3 gpu/check_vllm_engine.py --model-dir "$model_dir" --dtype "$dtype" --out "$out/check_vllm_engine.json"
python3 gpu/check_vllm_rollout.py --model-dir "$model_dir" --dtype "$dtype" --out "$out/check_vllm_rollout.json"
grep -iE "attention backend|Using .*backend|processed_logprobs|max_model_len|dtype" /tmp/vllm.log | head -20
cp /tmp/vllm.log "$out/"
