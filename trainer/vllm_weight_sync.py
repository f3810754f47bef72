"""Weight sync from the trainer to a vLLM server, one backend per deployment (`--vllm-weight-sync`, design §5).

| mode   | where vLLM runs                       | what moves                           | who implements it            |
| ------ | ------------------------------------- | ------------------------------------ | ---------------------------- |
| `nccl` | other GPUs of this host, or reachable | every tensor, NCCL broadcast         | TRL's `WeightTransferClient` |
| `ipc`  | the SAME GPU as the trainer (one GPU) | CUDA IPC handles over HTTP           | `VllmIpcWeightTransfer`      |
| `disk` | anywhere reading a shared directory   | safetensors files, reload by HTTP    | `VllmDiskWeightTransfer`     |
| `lora` | anywhere reading a shared directory   | the adapter, `/v1/load_lora_adapter` | TRL's adapter sync           |

`nccl` needs vLLM on GPUs the trainer does not use (NCCL refuses two ranks on one GPU): on an 8-GPU host e.g. vLLM on
GPUs 6-7 (`--tensor-parallel-size 2`) and `accelerate launch --num_processes 6` on 0-5. `ipc` and `disk` implement
TRL's `WeightTransferProtocol` (init / pause / send_weights / resume / destroy); TRL calls
`send_weights` from `_sync_weight_merged` with the merged, base-checkpoint-named stream, so a LoRA run works with them
too (merged weights move). `nccl` and `lora` are TRL's own (`build_trainer` passes `weight_transfer=None`).

Every mode needs `VLLM_SERVER_DEV_MODE=1` (the pause / weight routes). `ipc` also needs
`VLLM_ALLOW_INSECURE_SERIALIZATION=1`, because vLLM unpickles the IPC handles it receives: bind such a server to
127.0.0.1 (`--host 127.0.0.1`); our sandboxes cannot reach it anyway (their only network is the gate).
[`vllm_serve_command`] renders the launch line for each mode.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import torch

from intercept_common.errors import UserError

from trainer.modes import VllmWeightSync
from trainer.weight_transfer import counting, wait_until_healthy

logger = logging.getLogger(__name__)


class VllmWeightSyncError(RuntimeError, UserError):
    """vLLM refused or failed a step of a weight sync; training must stop rather than drift silently."""


def vllm_serve_command(model: str, served_model_name: str, max_model_len: int | None, dtype: str, port: int = 8000,
                       tensor_parallel_size: int = 1, weight_sync: str = VllmWeightSync.NCCL,
                       lora_rank: int = 16, max_staleness: int = 0) -> str:
    """The `vllm serve` line a training run with these arguments needs (no `--max-model-len` when it is None: vLLM
    then serves the model's own max positions, as the local engine does)."""
    mode = VllmWeightSync(weight_sync)
    env = ["VLLM_SERVER_DEV_MODE=1"]
    flags = [f"--served-model-name {served_model_name}", f"--tensor-parallel-size {tensor_parallel_size}",
             "--logprobs-mode processed_logprobs", *([f"--max-model-len {max_model_len}"] if max_model_len else []),
             f"--dtype {dtype}", f"--port {port}"]
    if mode in (VllmWeightSync.NCCL, VllmWeightSync.IPC):
        flags.insert(2, f"--weight-transfer-config '{{\"backend\":\"{mode.value}\"}}'")
    if mode is VllmWeightSync.IPC:
        env.append("VLLM_ALLOW_INSECURE_SERIALIZATION=1")
        flags += ["--host 127.0.0.1", "--gpu-memory-utilization 0.35"]  # the trainer needs the rest of the GPU
    if mode is VllmWeightSync.LORA:
        from intercept_common.trl_api import round_lora_rank

        env.append("VLLM_ALLOW_RUNTIME_LORA_UPDATING=1")
        # TRL keeps up to max_staleness + 2 policy versions loaded as adapters and refuses a server with fewer slots.
        flags += ["--enable-lora", f"--max-lora-rank {round_lora_rank(lora_rank)}",
                  f"--max-loras {max_staleness + 2}"]
    return " ".join(env) + f" vllm serve {model} " + " ".join(flags)


class _VllmControl:
    """The HTTP routes every mode shares: readiness, pause (keep: in-flight requests resume after the sync), resume."""

    def __init__(self, engine_url: str, *, timeout_s: float = 1800.0, control_timeout_s: float = 300.0):
        self.engine_url = engine_url.rstrip("/")
        self.timeout_s = timeout_s
        self.control_timeout_s = control_timeout_s
        self.version = 0  # syncs done; TRL's model_version after each
        self.last_sync: dict[str, float] = {}
        self._session = requests.Session()

    def _post(self, path: str, *, what: str, timeout: float | None = None, **kwargs) -> requests.Response:
        try:
            response = self._session.post(f"{self.engine_url}/{path}", timeout=timeout or self.control_timeout_s,
                                          **kwargs)
        except requests.RequestException as error:
            raise VllmWeightSyncError(f"{what} at {self.engine_url} failed: {error}") from error
        if response.status_code == 404:
            raise VllmWeightSyncError(f"{what}: {self.engine_url}/{path} does not exist; start vLLM with "
                                      "VLLM_SERVER_DEV_MODE=1 (trainer.vllm_weight_sync.vllm_serve_command)")
        if response.status_code != 200:
            raise VllmWeightSyncError(f"{what} at {self.engine_url} answered HTTP {response.status_code}: "
                                      f"{response.text[:500]}")
        return response

    def wait_ready(self) -> None:
        problem = wait_until_healthy(self._session, self.engine_url, self.timeout_s, poll_s=1.0)
        if problem is not None:
            raise VllmWeightSyncError(f"vLLM at {self.engine_url} not healthy after {self.timeout_s:.0f} s ({problem})")

    def pause(self) -> None:
        self._post("pause", what="pausing vLLM", params={"mode": "keep"})

    def resume(self) -> None:
        self._post("resume", what="resuming vLLM")

    def destroy(self) -> None:
        self._session.close()


class VllmIpcWeightTransfer(_VllmControl):
    """One GPU: vLLM and the trainer share it; each sync hands vLLM CUDA IPC handles of the trainer's tensors.

    vLLM's own producer (`IPCWeightTransferEngine.trainer_send_weights`, packed: the stream goes through one 1 GiB
    shared buffer, so the sync needs ~1 GiB beyond the model, not a second copy) posts each chunk's handles to
    `/update_weights`; vLLM's workers open them and copy into their parameters. Between `/start_weight_update` and
    `/finish_weight_update` vLLM reloads layer by layer. Needs vLLM on the trainer's machine (it is on the same GPU).
    """

    def init_weight_transfer(self) -> None:
        self.wait_ready()
        # IPC has no group to build; the call proves the server was started with the ipc backend.
        self._post("init_weight_transfer_engine", what="checking vLLM's ipc weight-transfer backend",
                   json={"init_info": {}})

    def send_weights(self, iterator: Iterator[tuple[str, torch.Tensor]]) -> None:
        try:
            from vllm.distributed.weight_transfer.ipc_engine import IPCWeightTransferEngine
        except ImportError as error:  # vLLM 0.26's ipc_engine also imports ray at module level (used for Ray only)
            raise VllmWeightSyncError("--vllm-weight-sync ipc needs vLLM importable in the trainer's environment "
                                      f"(it runs on the same GPU), and ray with vLLM 0.26: {error}") from error
        stats = {"tensors": 0, "bytes": 0}
        start = time.perf_counter()
        self._post("start_weight_update", what="starting a weight update", json={"is_checkpoint_format": True})
        failure: VllmWeightSyncError | None = None
        try:
            IPCWeightTransferEngine.trainer_send_weights(
                counting(iterator, stats), {"send_mode": "http", "url": self.engine_url, "packed": True})
        except Exception as error:
            failure = VllmWeightSyncError(f"sending weights over CUDA IPC to {self.engine_url} failed: {error}. vLLM "
                                          "must run on this GPU with VLLM_ALLOW_INSECURE_SERIALIZATION=1")
            failure.__cause__ = error
        try:  # every started update is finished, also after a failed send (vLLM refuses a second start otherwise)
            self._post("finish_weight_update", what="finishing the weight update", timeout=self.timeout_s)
        except VllmWeightSyncError:
            if failure is None:
                raise
            logger.warning("finishing the failed weight update failed too", exc_info=True)
        if failure is not None:
            raise failure
        self.version += 1
        self.last_sync = {**stats, "seconds": time.perf_counter() - start, "version": self.version}
        logger.info("weight sync v%d over CUDA IPC: %d tensors, %.1f MB in %.2f s", self.version, stats["tensors"],
                    stats["bytes"] / 1e6, self.last_sync["seconds"])


class VllmDiskWeightTransfer(_VllmControl):
    """HTTP only: write the weights as safetensors into a directory the engine can read, then ask it to reload.

    For an engine NCCL cannot reach (another host, Modal): a filesystem both sides see live (NFS, a shared disk;
    not a Modal Volume, whose reader must `reload()` first) carries the bytes, vLLM's `reload_weights` (through
    `/collective_rpc`) reads them. Each version goes to
    `v<N>/` (written under a temporary name, then renamed, so the engine never reads half a version); the previous
    version is kept until the next one is loaded, older ones are deleted.

    Args:
        engine_url: vLLM's base URL.
        weight_dir: where this process writes.
        engine_weight_dir: the same directory as the engine sees it (default: `weight_dir`).
        shard_bytes: upper bound of one safetensors file.
    """

    def __init__(self, engine_url: str, weight_dir: str, engine_weight_dir: str | None = None, *,
                 shard_bytes: int = 2 * 1024**3, **kwargs):
        super().__init__(engine_url, **kwargs)
        self.weight_dir = Path(weight_dir)
        self.engine_weight_dir = engine_weight_dir or str(self.weight_dir)
        self.shard_bytes = shard_bytes

    def init_weight_transfer(self) -> None:
        self.weight_dir.mkdir(parents=True, exist_ok=True)
        self.wait_ready()
        try:
            response = self._session.get(f"{self.engine_url}/is_paused", timeout=self.control_timeout_s)
        except requests.RequestException as error:
            raise VllmWeightSyncError(f"vLLM at {self.engine_url} did not answer /is_paused: {error}") from error
        if response.status_code == 404:
            raise VllmWeightSyncError(f"vLLM at {self.engine_url} has no /is_paused: start it with "
                                      "VLLM_SERVER_DEV_MODE=1 (its /pause, /resume and /collective_rpc routes)")

    def send_weights(self, iterator: Iterator[tuple[str, torch.Tensor]]) -> None:
        version = self.version + 1
        start = time.perf_counter()
        stats = write_safetensors_dir(iterator, self.weight_dir / f"v{version}", self.shard_bytes)
        written = time.perf_counter()
        engine_path = f"{self.engine_weight_dir.rstrip('/')}/v{version}"
        response = self._post("collective_rpc", what=f"reloading weights v{version} from {engine_path}",
                              timeout=self.timeout_s,
                              json={"method": "reload_weights", "kwargs": {"weights_path": engine_path},
                                    "timeout": self.timeout_s})
        logger.debug("reload answer: %s", response.text[:200])
        self.version = version
        for old in self.weight_dir.glob("v*"):
            if old.name != f"v{version}" and old.name != f"v{version - 1}":
                shutil.rmtree(old, ignore_errors=True)
        self.last_sync = {**stats, "seconds": time.perf_counter() - start,
                          "write_seconds": written - start, "version": version}
        logger.info("weight sync v%d from disk: %d tensors, %.1f MB (write %.2f s, total %.2f s)", version,
                    stats["tensors"], stats["bytes"] / 1e6, self.last_sync["write_seconds"], self.last_sync["seconds"])


def write_safetensors_dir(iterator: Iterator[tuple[str, torch.Tensor]], target: Path,
                          shard_bytes: int) -> dict[str, int]:
    """Stream (name, tensor) pairs into `target/model-0000N.safetensors` shards plus the HF index; atomic rename.

    Tensors are copied to CPU one shard at a time (a model never has to fit in host memory twice), each into storage
    of its own: tensors that share storage (tied embeddings) would otherwise reach safetensors, which refuses aliases.
    """
    from safetensors.torch import save_file

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shard: dict[str, torch.Tensor] = {}
    shard_size, shards, weight_map = 0, 0, {}
    stats = {"tensors": 0, "bytes": 0}

    def flush():
        nonlocal shard, shard_size, shards
        if shard:
            shards += 1
            name = f"model-{shards:05d}.safetensors"
            save_file(shard, str(partial / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
            shard, shard_size = {}, 0

    for name, tensor in iterator:
        if name in weight_map or name in shard:
            raise ValueError(f"tensor {name!r} appears twice in the weight stream")
        size = tensor.numel() * tensor.element_size()
        if shard and shard_size + size > shard_bytes:
            flush()
        shard[name] = tensor.detach().to("cpu", copy=True).contiguous()  # its own storage: no alias reaches the file
        shard_size += size
        stats["tensors"] += 1
        stats["bytes"] += size
    flush()
    if not weight_map:
        raise ValueError("a weight sync needs at least one tensor")
    index = {"metadata": {"total_size": stats["bytes"]}, "weight_map": weight_map}
    (partial / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    return stats
