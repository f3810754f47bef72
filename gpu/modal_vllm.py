"""vLLM on Modal with the flags training needs: the remote engine of the seeds' setup (NOT RUN: Modal cannot be
reached from this project's machines; the same flags ran on a lent H200, docs/gpu.md "HTTP-only remote engine").

    pip install modal && modal setup
    INTERCEPT_RL_MODEL=Qwen/Qwen3-1.7B INTERCEPT_RL_WEIGHT_SYNC=lora modal deploy gpu/modal_vllm.py

What it serves: `vllm serve` with `--served-model-name policy`, `--logprobs-mode processed_logprobs` (the logprobs the
trainer's ratio needs), the dev routes (`VLLM_SERVER_DEV_MODE=1`: /pause, /resume, /collective_rpc, /server_info) and,
for `INTERCEPT_RL_WEIGHT_SYNC=lora`, runtime LoRA loading (`--enable-lora`, `VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`) —
the flags `trainer.vllm_weight_sync.vllm_serve_command` renders for `disk` / `lora` (tests/test_gpu_scripts.py keeps
them equal). NCCL and CUDA IPC cannot reach a Modal container, so only the HTTP-only modes apply.

Read before deploying:
* The dev routes are remote control of the engine and vLLM's `--api-key` guards only /v1: the endpoint is therefore
  deployed with Modal's proxy auth (`requires_proxy_auth=True`): every request needs the `Modal-Key` /
  `Modal-Secret` headers of a proxy-auth token. intercept-rl's clients do not send extra headers yet, so today the
  trainer reaches this server only through something that adds them (an authenticating reverse proxy next to the
  trainer). Do not turn the auth off.
* Weights travel as files the engine reads (`disk`: `<dir>/v<N>/*.safetensors` then `reload_weights`; `lora`: TRL's
  adapter directory then `/v1/load_lora_adapter`). The `/weights` Volume below is where the engine reads them; a
  Modal Volume shows another writer's files only after `commit()` there and `reload()` here, which vLLM does not call.
  Wiring the trainer's writes into the Volume (or a bucket mount) is the part not built yet; docs/gpu.md says so.
"""

from __future__ import annotations

import os
import subprocess

import modal

MODEL = os.environ.get("INTERCEPT_RL_MODEL", "Qwen/Qwen3-1.7B")
WEIGHT_SYNC = os.environ.get("INTERCEPT_RL_WEIGHT_SYNC", "lora")  # disk | lora (HTTP only)
MAX_MODEL_LEN = int(os.environ.get("INTERCEPT_RL_MAX_MODEL_LEN", "32768"))
DTYPE = os.environ.get("INTERCEPT_RL_DTYPE", "bfloat16")  # the trainer's dtype: a mismatch biases the PPO ratio
LORA_RANK = int(os.environ.get("INTERCEPT_RL_LORA_RANK", "16"))  # >= the adapter's r, a vLLM step (8, 16, 32, ...)
MAX_STALENESS = int(os.environ.get("INTERCEPT_RL_MAX_STALENESS", "0"))  # TRL keeps max_staleness + 2 adapters loaded
GPU = os.environ.get("INTERCEPT_RL_GPU", "H100")
PORT = 8000

if WEIGHT_SYNC not in ("disk", "lora"):
    raise SystemExit(f"INTERCEPT_RL_WEIGHT_SYNC must be disk or lora on Modal (no NCCL/IPC path there), got {WEIGHT_SYNC}")

ENV = {"VLLM_SERVER_DEV_MODE": "1"}
if WEIGHT_SYNC == "lora":
    ENV["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"

image = (
    modal.Image.from_registry("nvidia/cuda:12.9.1-devel-ubuntu24.04", add_python="3.12")
    .uv_pip_install("vllm==0.26.0", "huggingface_hub==1.33.0")
    .env(ENV)
)
hf_cache = modal.Volume.from_name("intercept-rl-hf-cache", create_if_missing=True)
weights = modal.Volume.from_name("intercept-rl-weights", create_if_missing=True)
app = modal.App("intercept-rl-vllm")


def serve_argv() -> list[str]:
    """The `vllm serve` argv (a list: nothing passes through a shell)."""
    argv = ["vllm", "serve", MODEL, "--served-model-name", "policy", "--logprobs-mode", "processed_logprobs",
            "--max-model-len", str(MAX_MODEL_LEN), "--dtype", DTYPE, "--host", "0.0.0.0", "--port", str(PORT)]
    if WEIGHT_SYNC == "lora":
        argv += ["--enable-lora", "--max-lora-rank", str(LORA_RANK), "--max-loras", str(MAX_STALENESS + 2)]
    return argv


@app.function(image=image, gpu=GPU, timeout=24 * 3600, scaledown_window=15 * 60,
              volumes={"/root/.cache/huggingface": hf_cache, "/weights": weights})
@modal.concurrent(max_inputs=512)  # many agents' turns at once: vLLM batches them
@modal.web_server(port=PORT, startup_timeout=20 * 60, requires_proxy_auth=True)
def serve() -> None:
    subprocess.Popen(serve_argv())
