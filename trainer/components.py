"""Builds the rollout side of a training run from its arguments: the engine, the tasks, sandboxes, agent, grader
and the rollout worker. Kept apart from the trainer builder so tests can inject their own worker instead."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from trainer.config import GATE_SECRET_ENV, SweTrainArguments, worker_config
from trainer.modes import VllmWeightSync

logger = logging.getLogger(__name__)


@dataclass
class EngineHandle:
    """Where rollouts are generated and how weights get there. `weight_transfer` is None when TRL syncs itself
    (vLLM over NCCL, or a LoRA adapter). `urls`: every replica (`--engine-replicas`); `url` is the first."""

    url: str
    weight_transfer: object | None
    urls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.urls = self.urls or [self.url]


@contextlib.contextmanager
def start_engine(script: SweTrainArguments, training, model_path: str) -> Iterator[EngineHandle]:
    """With `--vllm-url`, use that server; otherwise start the local engine on the model and stop it on every path."""
    if script.vllm_url:
        logger.info("using vLLM at %s (weight sync: %s); it must have been started as:\n  %s", script.vllm_url,
                    script.vllm_weight_sync, vllm_command(script, training, model_path))
        yield EngineHandle(url=script.vllm_url.rstrip("/"), weight_transfer=vllm_weight_transfer(script, training))
        return

    from intercept_common.engine_process import LocalEngineProcess
    from trainer.weight_transfer import LocalEngineWeightTransfer, ReplicatedWeightTransfer

    engines = [LocalEngineProcess(model_path, served_model_name=served_model_name(script),
                                  max_model_len=script.max_model_len,
                                  dtype=training.dtype if training.dtype in ("float32", "bfloat16") else "float32",
                                  seed=training.seed, startup_timeout_s=script.engine_startup_timeout_s)
               for _ in range(script.engine_replicas)]
    with contextlib.ExitStack() as stack:
        for engine in engines:
            stack.callback(engine.stop)  # every path, a replica that failed to start included
        with ThreadPoolExecutor(len(engines)) as pool:  # each start is mostly its own imports: side by side
            list(pool.map(LocalEngineProcess.start, engines))
        urls = [engine.url for engine in engines]
        logger.info("local engine%s up at %s", "s" if len(urls) > 1 else "", ", ".join(urls))
        transfers = [LocalEngineWeightTransfer(url) for url in urls]
        yield EngineHandle(url=urls[0], urls=urls,
                           weight_transfer=transfers[0] if len(transfers) == 1 else ReplicatedWeightTransfer(transfers))


def vllm_command(script: SweTrainArguments, training, model_path: str) -> str:
    """The `vllm serve` line this run's `--vllm-weight-sync` mode needs."""
    from trainer.vllm_weight_sync import vllm_serve_command

    return vllm_serve_command(model_path, served_model_name(script), script.max_model_len, training.dtype,
                              weight_sync=script.vllm_weight_sync, lora_rank=script.lora_r,
                              max_staleness=training.max_staleness)


def vllm_weight_transfer(script: SweTrainArguments, training):
    """Our `WeightTransferProtocol` for `ipc` / `disk`; None for `nccl` / `lora`, which TRL implements itself."""
    from trainer.vllm_weight_sync import VllmDiskWeightTransfer, VllmIpcWeightTransfer

    mode = VllmWeightSync(script.vllm_weight_sync)
    url = script.vllm_url.rstrip("/")
    timeout_s = float(training.weight_sync_timeout)
    if mode is VllmWeightSync.IPC:
        return VllmIpcWeightTransfer(url, timeout_s=timeout_s)
    if mode is VllmWeightSync.DISK:
        weight_dir = script.weight_sync_dir or os.path.join(training.output_dir, "weight_sync")
        return VllmDiskWeightTransfer(url, os.path.abspath(weight_dir), script.engine_weight_sync_dir,
                                      timeout_s=timeout_s)
    return None


def build_rollout_worker(script: SweTrainArguments, training, *, model_path: str, engine_url: str | list[str],
                         keep_trajectories: bool = False, tasks: list | None = None, cluster=None):
    """The real `RolloutWorker`: tasks → sandboxed agent episodes graded on the host → GRPO samples.

    Agent, sandbox and reward names become parts in `rollout_worker.factory`, the one place `rollouts` and `train`
    share. `keep_trajectories` makes the worker publish one record per finished rollout on `worker.trajectories`.
    `tasks`: loaded already (`train` loads them before it starts the engine), else loaded here. `cluster`: the
    `--cluster` connection (rollouts then run on rollout-node actors, docs/scale.md).
    """
    from transformers import AutoTokenizer

    from rollout_worker.factory import build_episode_runner, build_worker, load_task_options

    tasks = tasks if tasks is not None else load_task_options(script.task_options, training.seed)
    runner = build_episode_runner(script.episode_options, script.episode, script.grading, script.container_grading)
    # The worker's own knobs come from its config as parsed; the ones TRL also defines come from TRL's config, so
    # the engine samples exactly as the trainer scores.
    config = worker_config(script, training, served_model_name=served_model_name(script),
                           keep_trajectories=keep_trajectories, max_queued_samples=_max_queued_samples(training),
                           samples_per_version=samples_per_version(training))
    logger.info("%d tasks from %s; agent %s in %s sandboxes", len(tasks), script.task_options.tasks,
                script.episode_options.agent,
                script.episode_options.sandbox)
    secret = os.environ.get(GATE_SECRET_ENV)
    return build_worker(config, tasks=tasks, episode_runner=runner, tokenizer=AutoTokenizer.from_pretrained(model_path),
                        engine_url=engine_url, gate_host=script.gate_host,
                        gate_port=script.gate_port, gate_secret=secret.encode() if secret else None,
                        gate_config=script.gate, cluster=cluster, model=model_path,
                        episode_parts=(script.episode_options, script.episode, script.grading,
                                       script.container_grading))


def engine_url_if_remote(script: SweTrainArguments) -> str | None:
    """The vLLM URL the user gave, else None: the engine is the local one this run starts."""
    return script.vllm_url.rstrip("/") if script.vllm_url else None


def served_model_name(script: SweTrainArguments) -> str:
    """The name the engine serves the model under (WorkerConfig.served_model_name; `policy` for our engine)."""
    from rollout_worker.factory import served_model_name_for

    return served_model_name_for(script.worker.served_model_name, engine_url_if_remote(script))


def _max_queued_samples(training) -> int | None:
    """How many samples may wait for the trainer before the worker stops launching rollouts.

    Samples older than `max_staleness` policy versions are dropped at dequeue, so queueing more than
    `max(1, max_staleness)` steps' worth only burns rollouts (and, with a fast-moving policy, trains far off-policy).
    With a token budget the samples per step are not known up front: fall back to the worker's default.
    """
    if training.token_budget:
        return None
    per_step = training.per_device_train_batch_size * training.gradient_accumulation_steps
    return max(training.num_generations, per_step * max(1, training.max_staleness))


def samples_per_version(training) -> int | None:
    """How many samples the trainer trains per policy version: the fixed-count micro-batch (all ranks) times the
    micro-batches per step times the steps between weight syncs. None with a token budget (a step's count varies)."""
    if training.token_budget:
        return None
    from accelerate import PartialState

    per_step = (training.per_device_train_batch_size * PartialState().num_processes
                * training.gradient_accumulation_steps)
    return per_step * max(1, int(training.weight_sync_steps or 1))


def follow_adapter_sync(trainer, worker, script: SweTrainArguments) -> None:
    """When TRL publishes each policy version as a LoRA adapter, make the worker sample from those adapters.

    TRL picks adapter sync on its own (a PEFT model and a vLLM started with `--enable-lora`), also under
    `--vllm-weight-sync nccl`; `lora` insists on it.
    """
    from trainer.cpu_compat import trl_adapter_sync_prefix
    from trainer.vllm_weight_sync import VllmWeightSyncError

    prefix = trl_adapter_sync_prefix(trainer)
    if prefix is not None:
        logger.info("TRL syncs LoRA adapters to vLLM; rollouts sample from %s-v<N>", prefix)
        worker.sample_from_adapters(prefix)
    elif script.vllm_weight_sync == VllmWeightSync.LORA:
        raise VllmWeightSyncError(f"--vllm-weight-sync lora: TRL did not pick adapter sync, so vLLM at "
                                  f"{script.vllm_url} was not started with --enable-lora (and "
                                  "VLLM_ALLOW_RUNTIME_LORA_UPDATING=1)")
