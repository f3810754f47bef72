#!/usr/bin/env bash
# Multi-GPU FSDP2 training next to vLLM on a 4-GPU box (nvidia-h200-x4; issue "Multi-GPU FSDP2"): vLLM on GPU 3 with
# the NCCL weight-transfer backend, the trainer sharded over GPUs 0-2 by `accelerate launch` with
# trainer/accelerate_fsdp2.yaml (FSDP2, bf16, full state dict), TRL's NCCL WeightTransferClient unchanged, a random-
# init Qwen3-8B, real rollouts through the gate, a weight sync every step, the probe-logprob proof (gpu/production.sh).
# Usage (repo root, on the GPU box, vLLM chunks copied to /tmp/vc as in docs/gpu.md):
#   bash gpu/fsdp2_x4.sh setup && bash gpu/fsdp2_x4.sh train
# Every production.sh knob still applies (STEPS, BATCH, GROUP, TRAIN_TIMEOUT, ...); these are the 4-GPU defaults.
set -uo pipefail
export VLLM_GPU="${VLLM_GPU:-3}" TRAIN_GPU="${TRAIN_GPU:-0,1,2}" TRAIN_PROCS="${TRAIN_PROCS:-3}"
export VARIANT="${VARIANT:-qwen3-8b}" STEPS="${STEPS:-5}" TRAIN_TIMEOUT="${TRAIN_TIMEOUT:-560}"
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1 NCCL_TIMEOUT="${NCCL_TIMEOUT:-600}"  # a hung rank fails, bounded
exec bash "$(dirname "$0")/production.sh" "$@"
