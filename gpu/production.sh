#!/usr/bin/env bash
# The production path on a lent two-GPU box (nvidia-h200-x2), from a clean checkout: vLLM on one GPU with the NCCL
# weight-transfer backend, TRL's AsyncGRPOTrainer (trainer/train_swe_async_grpo.py, TRL's own WeightTransferClient)
# on the other, real rollouts through our gate (agent `single-shot`, sandbox `local` = bubblewrap, embedded tasks
# graded by pytest), a weight sync after every optimizer step, and the proof that the weights arrive.
#
# Usage (repo root, on the GPU box, after the vLLM chunks were copied to /tmp/vc; docs/gpu.md):
#   bash gpu/production.sh setup   # carry [".whl", ".deb"]: install, attention checks + bench, build the model,
#                                  # start vLLM, probe its logprobs before any training
#   bash gpu/production.sh train   # gated vs raw vLLM throughput, N AsyncGRPOTrainer steps, probes after
#   bash gpu/production.sh serve   # (re)start vLLM for $SYNC (stops the running one), probe it before training
#   bash gpu/production.sh bench   # gated vs raw vLLM only (bench_gate_vs_raw.py), modes interleaved: $MODES
# One GPU (nvidia-h200): VLLM_GPU=0 TRAIN_GPU=0 VLLM_MEM=0.35 SYNC=ipc (vLLM and the trainer share the GPU; weights
#   move by CUDA IPC), SYNC=disk (HTTP only: safetensors files + vLLM's reload_weights), SYNC=lora (--use_peft; TRL
#   publishes adapters, vLLM loads them at runtime: `serve` restarts vLLM with --enable-lora first).
# Knobs (env): VLLM_GPU=0 TRAIN_GPU=1 VARIANT=qwen3-1.7b STEPS=5 LR=5e-4 BATCH=16 GROUP=8 MAX_TOKENS=512
#   TRAIN_PROCS=1 (>1: accelerate launch with trainer/accelerate_fsdp2.yaml over TRAIN_GPU's GPUs, e.g. TRAIN_GPU=0,1,2)
#   AGENT=single-shot|parity (parity: rewards with variance from a random model, see below)
#   VLLM_MEM=0.80 VLLM_EXTRA="" SKIP_ATTENTION=0 SKIP_GATE_BENCH=0 TRAIN_TIMEOUT=360
#   VLLM_EAGER=1 (0: vLLM's CUDA graphs + torch.compile, minutes more at start, faster decoding)
#   bench stage: MODES="raw gated raw gated raw gated" RAW_LOGPROBS=1 (raw chat pays for logprobs like gated)
#     BENCH_TAG=run (report bench_$BENCH_TAG.json) BENCH_DEADLINE=200 CONCURRENCY=64
#   SYNC=nccl|ipc|disk|lora (trainer.vllm_weight_sync; train outputs go to /tmp/prod/train_$SYNC)
# Leaves /tmp/prod (logs, JSON), /tmp/gpu_env.sh, /tmp/vllm.pid; writes summary_<stage>.json and <stage>_logs.tar.gz
# under $OUT. vLLM stays up between the two stages; kill it by pid ($(cat /tmp/vllm.pid)) when done.
set -uo pipefail
stage="${1:?usage: production.sh setup|train|serve|bench}"
out="${OUT:-/tmp/out}"; mkdir -p "$out"
work=/tmp/prod; mkdir -p "$work"
repo="$PWD"
VLLM_GPU="${VLLM_GPU:-0}"; TRAIN_GPU="${TRAIN_GPU:-1}"; VARIANT="${VARIANT:-qwen3-1.7b}"; SYNC="${SYNC:-nccl}"
case "$SYNC" in nccl|ipc|disk|lora) ;; *) echo "SYNC must be nccl, ipc, disk or lora"; exit 2 ;; esac
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
t0=$(date +%s)
say() { echo "[production $stage +$(( $(date +%s) - t0 ))s] $*"; }

pack() {  # everything small under /tmp/prod (and the vLLM log) into one file: $OUT takes at most 8 files
  cp /tmp/vllm.log "$work/vllm.log" 2>/dev/null
  tar -czf "$out/${stage}_logs.tar.gz" -C "$work" . 2>/dev/null
  [[ -f "$work/summary_${stage}.json" ]] && cp "$work/summary_${stage}.json" "$out/"
}
trap pack EXIT

wait_health() {  # bounded wait for vLLM's /health; prints the log tail if it died
  local limit="$1" pid; pid=$(cat /tmp/vllm.pid)
  local start; start=$(date +%s)
  until python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=2)" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then say "vLLM (pid $pid) died"; tail -40 /tmp/vllm.log; return 1; fi
    if (( $(date +%s) - start > limit )); then say "vLLM not healthy after $limit s"; tail -30 /tmp/vllm.log; return 1; fi
    sleep 2
  done
}

# design §5's production command, flags per weight-sync mode as trainer/vllm_weight_sync.py's vllm_serve_command
# renders them (--enforce-eager: no compile/CUDA-graph minutes at start). Stops a running one first.
start_vllm() {
  local model_dir; model_dir=$(cat /tmp/model_dir)
  if [[ -f /tmp/vllm.pid ]] && kill -0 "$(cat /tmp/vllm.pid)" 2>/dev/null; then
    kill "$(cat /tmp/vllm.pid)"; for _ in $(seq 60); do kill -0 "$(cat /tmp/vllm.pid)" 2>/dev/null || break; sleep 1; done
    kill -9 "$(cat /tmp/vllm.pid)" 2>/dev/null; sleep 2
  fi
  local flags=() envs=(VLLM_SERVER_DEV_MODE=1)
  # vLLM 0.26's ipc_engine.py imports ray at module level but needs it only for send_mode="ray"; we send over HTTP.
  # The kit carries no ray (500 MB): a stub that fails loudly if anything really calls into it.
  if [[ "$SYNC" == ipc ]] && ! python3 -c "import ray" 2>/dev/null; then
    mkdir -p /tmp/site2/ray && printf '%s\n' '"""Stub: vLLM ipc_engine imports ray; intercept-rl sends over HTTP."""' \
      'def __getattr__(name):' '    raise AttributeError(f"ray is not installed (a stub); ray.{name} is not available")' \
      > /tmp/site2/ray/__init__.py
  fi
  case "$SYNC" in
    nccl) flags=(--weight-transfer-config '{"backend":"nccl"}') ;;
    ipc) flags=(--weight-transfer-config '{"backend":"ipc"}' --host 127.0.0.1); envs+=(VLLM_ALLOW_INSECURE_SERIALIZATION=1) ;;
    disk) flags=(--host 127.0.0.1) ;;
    lora) flags=(--enable-lora --max-lora-rank 16 --max-loras 2 --host 127.0.0.1); envs+=(VLLM_ALLOW_RUNTIME_LORA_UPDATING=1) ;;
  esac
  local eager=(--enforce-eager)  # the default: no torch.compile / CUDA-graph capture at start
  [[ "${VLLM_EAGER:-1}" == 0 ]] && eager=()
  env CUDA_VISIBLE_DEVICES="$VLLM_GPU" "${envs[@]}" setsid vllm serve "$model_dir" --served-model-name policy \
    "${flags[@]}" --logprobs-mode processed_logprobs --max-model-len 4096 \
    --dtype bfloat16 --gpu-memory-utilization "${VLLM_MEM:-0.80}" --port 8000 "${eager[@]}" ${VLLM_EXTRA:-} \
    > /tmp/vllm.log 2>&1 < /dev/null &
  echo $! > /tmp/vllm.pid
  echo "$SYNC" > /tmp/vllm.sync
  say "vLLM pid $(cat /tmp/vllm.pid) starting on GPU $VLLM_GPU (sync $SYNC, ${eager[*]:-CUDA graphs})"
}

probe_before() {  # vLLM on the initial weights vs a transformers forward of them: the bf16 noise floor
  local model_dir; model_dir=$(cat /tmp/model_dir)
  grep -iE "attention backend|Using .*backend|weight.transfer|KV cache|lora" /tmp/vllm.log | head -8
  python3 gpu/probe_weights.py vllm --out "$work/probe_vllm_before.json"
  CUDA_VISIBLE_DEVICES=$TRAIN_GPU python3 gpu/probe_weights.py hf --model-dir "$model_dir" --out "$work/probe_hf_init.json"
  python3 gpu/probe_weights.py compare "$work/probe_vllm_before.json" "$work/probe_hf_init.json" \
    --out "$work/summary_${stage}.json"
}

if [[ "$stage" == serve ]]; then
  source /tmp/gpu_env.sh
  start_vllm
  wait_health 420 || exit 1
  say "vLLM healthy"
  probe_before
  say "serve done"
  exit 0
fi

if [[ "$stage" == bench ]]; then  # the running vLLM as it is: gated vs raw, modes interleaved in one run
  source /tmp/gpu_env.sh
  wait_health 300 || exit 1
  grep -iE "prefix caching|cudagraph|CUDA graph|compil" /tmp/vllm.log | head -6
  tag="${BENCH_TAG:-run}"
  read -r -a modes <<< "${MODES:-raw gated raw gated raw gated}"
  logprobs=(); [[ "${RAW_LOGPROBS:-1}" == 1 ]] && logprobs=(--raw-logprobs)
  deadline="${BENCH_DEADLINE:-200}"
  timeout $(( deadline + 40 )) python3 gpu/bench_gate_vs_raw.py --model-dir "$(cat /tmp/model_dir)" \
    --concurrency "${CONCURRENCY:-64}" --modes "${modes[@]}" "${logprobs[@]}" --deadline-s "$deadline" \
    --out "$work/bench_$tag.json" 2>&1 | grep -v Warning | tail -20
  cp "$work/bench_$tag.json" "$out/" 2>/dev/null
  say "bench $tag done"
  exit 0
fi

if [[ "$stage" == setup ]]; then
  [[ -f /tmp/vc/c01/install.sh ]] || { echo "copy the vLLM chunks to /tmp/vc first (docs/gpu.md)"; exit 2; }
  if [[ ! -f /tmp/site/env.sh ]]; then
    bash /tmp/vc/c01/install.sh /tmp/vc > "$work/install.log" 2>&1 || { tail -40 "$work/install.log"; exit 1; }
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site2 .whl/*.whl \
    > "$work/whl.log" 2>&1 || { cat "$work/whl.log"; exit 1; }
  say "vLLM set + .whl installed"
  # bubblewrap (the local sandbox) and git (the grader's diff/apply) from carried Debian packages when missing.
  extra_path=""; git_exec=""
  if ! command -v bwrap >/dev/null; then dpkg -x .deb/bubblewrap_*.deb /tmp/debroot && extra_path=/tmp/debroot/usr/bin; fi
  if ! command -v git >/dev/null; then
    dpkg -x .deb/git_*.deb /tmp/debroot && extra_path=/tmp/debroot/usr/bin && git_exec=/tmp/debroot/usr/lib/git-core
  fi
  # The single-shot agent runs `python3` inside the sandbox, whose PATH is the system's: make sure one is there.
  if ! [[ -x /usr/bin/python3 || -x /usr/local/bin/python3 ]]; then
    base=$(python3 -c 'import sys; print(sys.base_prefix)'); ln -sf "$base/bin/python3" /usr/local/bin/python3
  fi
  cat > /tmp/gpu_env.sh <<ENV
source /tmp/site/env.sh
export PYTHONPATH="$repo:/tmp/site2:\$PYTHONPATH"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export TRL_EXPERIMENTAL_SILENCE=1 HF_HUB_OFFLINE=1 INTERCEPT_RL_CACHE=/tmp/irl
${extra_path:+export PATH="$extra_path:\$PATH"}
${git_exec:+export GIT_EXEC_PATH="$git_exec"}
ENV
  source /tmp/gpu_env.sh
  {
    python3 -c "import vllm, trl, transformers, torch; print('vllm', vllm.__version__, 'trl', trl.__version__, \
'transformers', transformers.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(), torch.cuda.device_count())"
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
    nvidia-smi topo -m 2>/dev/null | head -4
    echo "bwrap: $(command -v bwrap) $(bwrap --version 2>&1)"; echo "git: $(command -v git) $(git --version 2>&1)"
    bwrap --unshare-all --die-with-parent --ro-bind / / true && echo "bwrap sandbox: ok" || echo "bwrap sandbox: FAILED"
    ls -la /usr/bin/python3 /usr/local/bin/python3 2>&1 | head -2; python3 -c 'import sys; print(sys.prefix, sys.base_prefix)'
  } 2>&1 | tee "$work/versions.txt"

  model_dir=$(CUDA_VISIBLE_DEVICES=$TRAIN_GPU python3 gpu/build_model.py --variant "$VARIANT" --cache-dir /tmp/irl | tail -1)
  [[ -f "$model_dir/config.json" ]] || { say "model build failed: $model_dir"; exit 1; }
  echo "$model_dir" > /tmp/model_dir
  say "model: $model_dir ($(du -sh "$model_dir" | cut -f1))"
  start_vllm
  # Tree attention on the trainer's GPU while vLLM boots on the other.
  if [[ "${SKIP_ATTENTION:-0}" != 1 ]]; then
    CUDA_VISIBLE_DEVICES=$TRAIN_GPU timeout 200 python3 -m pytest tests/trainer/test_cpu_compat.py \
      tests/trainer/test_tree_attention_fast_path.py -q -p no:cacheprovider 2>&1 | tail -6 | tee "$work/pytest_attention.log"
    CUDA_VISIBLE_DEVICES=$TRAIN_GPU timeout 200 python3 gpu/bench_tree_attention.py --out "$work/bench_tree_attention.json" \
      > "$work/bench_tree_attention.log" 2>&1 || tail -20 "$work/bench_tree_attention.log"
    python3 - "$work/bench_tree_attention.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for dt, d in r["by_dtype"].items():
    print(dt, "tree fwd/fwd+bwd ms", d["fwd_ms_tree"], d["fwd_bwd_ms_tree"], "| unpacked", d["fwd_ms_unpacked"],
          d["fwd_bwd_ms_unpacked"], "| diff completion/prompt", d["max_abs_diff_completion"], d["max_abs_diff_prompt"])
    for name, c in d["candidates"].items():
        print("   ", name, c)
PY
    say "attention checks done"
  fi

  wait_health 420 || exit 1
  say "vLLM healthy"
  probe_before
  say "setup done"
  exit 0
fi

if [[ "$stage" == train ]]; then
  source /tmp/gpu_env.sh
  model_dir=$(cat /tmp/model_dir)
  wait_health 300 || exit 1
  served=$(cat /tmp/vllm.sync 2>/dev/null)
  if [[ "$SYNC" == lora && "$served" != lora ]] || [[ "$SYNC" != lora && "$served" == lora ]] ||
     [[ "$SYNC" == nccl && "$served" != nccl ]] || [[ "$SYNC" == ipc && "$served" != ipc ]]; then
    say "vLLM was started for sync '$served', this run needs '$SYNC': SYNC=$SYNC bash gpu/production.sh serve"; exit 2
  fi
  before="$work"; work="$work/train_$SYNC"; rm -rf "$work"; mkdir -p "$work"
  if [[ "${SKIP_GATE_BENCH:-0}" != 1 ]]; then
    timeout 240 python3 gpu/bench_gate_vs_raw.py --model-dir "$model_dir" --out "$work/gate_vs_raw.json" \
      2>&1 | grep -v Warning | tail -12
    say "gate vs raw done"
  fi
  run_dir=/tmp/prod_run_$SYNC; rm -rf "$run_dir"
  sync_args=(--vllm_weight_sync "$SYNC")
  [[ "$SYNC" == lora ]] && sync_args+=(--use_peft true --lora_r 16 --lora_alpha 32)
  # AGENT=single-shot (default) asks the policy once and writes the reply to answer.txt: a random-init model never
  # fixes a task, every reward is 0, every advantage 0, so the weights never move. AGENT=parity is the same single
  # call (python3 -c, standard library only) but, when the reply has an odd number of characters, it empties every
  # non-test .py file of the repo: with --reward_mode fraction the PASS_TO_PASS tests then fail (reward 0) or pass
  # (reward > 0), a reward that depends on the sampled tokens, so groups have variance and the policy really moves.
  agent="${AGENT:-single-shot}"; reward=binary
  if [[ "$agent" == parity ]]; then
    reward=fraction
    agent="cmd:python3 -c 'import json, os, urllib.request as u
b = {\"model\": os.environ[\"OPENAI_MODEL\"], \"messages\": [{\"role\": \"user\", \"content\": open(os.environ[\"TASK_FILE\"]).read()}]}
r = u.Request(os.environ[\"OPENAI_BASE_URL\"].rstrip(\"/\") + \"/chat/completions\", data=json.dumps(b).encode(), headers={\"Content-Type\": \"application/json\", \"Authorization\": \"Bearer \" + os.environ[\"OPENAI_API_KEY\"]})
c = json.load(u.urlopen(r, timeout=600))[\"choices\"][0][\"message\"].get(\"content\") or \"\"
open(\"answer.txt\", \"w\").write(c)
bad = [os.path.join(d, f) for d, _, fs in os.walk(\".\") if \"tests\" not in d for f in fs if f.endswith(\".py\")] if len(c) % 2 else []
[open(f, \"w\").close() for f in bad]
print(len(c), \"chars,\", len(bad), \"files emptied\")'"
  fi
  # A few AsyncGRPOTrainer optimizer steps, a weight sync (TRL's NCCL WeightTransferClient) after every one.
  # TRAIN_PROCS > 1 (gpu/fsdp2_x4.sh): the trainer sharded with FSDP2 over TRAIN_GPU's GPUs by accelerate launch.
  launcher=(python3)
  if (( ${TRAIN_PROCS:-1} > 1 )); then
    launcher=(accelerate launch --config_file trainer/accelerate_fsdp2.yaml --num_processes "$TRAIN_PROCS")
  fi
  CUDA_VISIBLE_DEVICES=$TRAIN_GPU timeout "${TRAIN_TIMEOUT:-360}" "${launcher[@]}" trainer/train_swe_async_grpo.py \
    --model_name_or_path "$model_dir" --vllm_url http://127.0.0.1:8000 --served_model_name policy \
    --max_model_len 4096 --dtype bfloat16 --bf16 true --tree_attention torch \
    --tasks embedded --agent "$agent" --reward_mode "$reward" --sandbox local --drop_zero_variance_groups false \
    --num_generations "${GROUP:-8}" --max_inflight "${BATCH:-16}" --per_device_train_batch_size "${BATCH:-16}" \
    --gradient_accumulation_steps 1 --token_budget 0 --max_turns 2 --max_tokens_per_turn "${MAX_TOKENS:-512}" \
    --max_completion_length 1024 --temperature 1.0 --max_staleness 0 --weight_sync_steps 1 \
    --max_steps "${STEPS:-5}" --learning_rate "${LR:-5e-4}" --logging_steps 1 --save_steps 100000 \
    --report_to none --output_dir "$run_dir" --agent_wall_time_s 120 --episode_timeout_s 300 --seed 0 \
    "${sync_args[@]}" > "$work/train.log" 2>&1
  rc=$?
  say "training exited rc=$rc"
  grep -E "^\[intercept-rl\]|Weight sync: done|Traceback|Error" "$work/train.log" | head -30
  [[ $rc == 0 ]] || tail -40 "$work/train.log"
  cp "$run_dir/rollouts.jsonl" "$work/" 2>/dev/null
  cp "$run_dir/train.log" "$work/run_train.log" 2>/dev/null  # the full log: every step's metric dict
  if [[ "$SYNC" == lora ]]; then  # the newest adapter vLLM holds vs the base with the trainer's adapter merged
    adapter=$(python3 -c "import json, re, urllib.request as u
names = [m['id'] for m in json.load(u.urlopen('http://127.0.0.1:8000/v1/models'))['data']]
print(max((n for n in names if re.fullmatch(r'trl-policy-v\d+', n)), key=lambda n: int(n.split('-v')[1]), default=''))")
    say "newest adapter on vLLM: ${adapter:-none}"
    python3 gpu/probe_weights.py vllm --model "${adapter:-policy}" --out "$work/probe_vllm_after.json"
    [[ -f "$run_dir/adapter_config.json" ]] && CUDA_VISIBLE_DEVICES=$TRAIN_GPU python3 gpu/probe_weights.py hf \
      --model-dir "$model_dir" --adapter-dir "$run_dir" --out "$work/probe_hf_trained.json"
  else
    python3 gpu/probe_weights.py vllm --out "$work/probe_vllm_after.json"
    [[ -f "$run_dir/config.json" ]] && CUDA_VISIBLE_DEVICES=$TRAIN_GPU python3 gpu/probe_weights.py hf \
      --model-dir "$run_dir" --out "$work/probe_hf_trained.json"
  fi
  python3 gpu/probe_weights.py compare "$before"/probe_vllm_before.json "$before"/probe_hf_init.json \
    "$work"/probe_vllm_after.json $(ls "$work"/probe_hf_trained.json 2>/dev/null) --out "$work/sync_proof.json"
  python3 gpu/summarize_production.py --work "$work" --out "$work/summary_train.json"
  cp "$work/summary_train.json" "$before/summary_train.json"
  say "train stage ($SYNC) done"
  exit 0
fi
echo "unknown stage $stage"; exit 2
