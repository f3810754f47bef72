"""`intercept-rl train`: TRL 1.16's AsyncGRPOTrainer (unforked) fed by our rollout worker.

The same file runs on a laptop (`intercept-rl train --preset cpu-demo`) and on a multi-GPU box next to vLLM
(`accelerate launch trainer/train_swe_async_grpo.py --model-name-or-path ... --vllm-url http://...`). See
`trainer/config.py` for the options and `trainer/weight_transfer.py` for the vLLM launch line and GPU split.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `accelerate launch trainer/train_swe_async_grpo.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import TrainerCallback  # noqa: E402

from trainer.config import SweTrainArguments, early_trackio_dir, parse_train_args, peft_config_from  # noqa: E402
from trainer.rollout_records import ROLLOUTS_FILE, RolloutRecordWriter  # noqa: E402

logger = logging.getLogger("intercept_rl.train")

WORKER_STATE_FILE = "rollout_worker_state.json"


@dataclass
class TrainArgs:
    """Both halves of the parsed command line."""

    script: SweTrainArguments
    training: Any  # trl.experimental.async_grpo.AsyncGRPOConfig (imported lazily: TRL is heavy)


def resolve_model_path(model_name_or_path: str) -> str:
    """`embedded` → the cached tiny Qwen3 (built on first use); anything else is passed to TRL unchanged."""
    if model_name_or_path == "embedded":
        from local_engine.embedded import ensure_tiny_model

        return str(ensure_tiny_model())
    return model_name_or_path


class WorkerStateCallback(TrainerCallback):
    """Saves the rollout worker's resumable state (task order position, group ids, RNG) into every checkpoint.

    TRL checkpoints its own worker's position only (`rollout_state.json` for `AsyncRolloutWorker`); ours exposes
    `state_dict()` / `load_state_dict()`, written next to the model checkpoint and read back by `load_worker_state`.
    The trainer's policy version rides along (key `model_version`, from `model_version_fn`), as TRL does for its own
    worker, so a resumed run keeps counting versions instead of restarting at 1 (`restore_model_version`).
    """

    def __init__(self, worker, model_version_fn=None):
        self.worker = worker
        self.model_version_fn = model_version_fn

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not hasattr(self.worker, "state_dict"):
            return
        checkpoint_dir = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint_dir / f".{WORKER_STATE_FILE}.tmp"
        state = self.worker.state_dict()
        if self.model_version_fn is not None:
            state = {**state, "model_version": int(self.model_version_fn())}
        tmp.write_text(json.dumps(state))
        tmp.replace(checkpoint_dir / WORKER_STATE_FILE)


class ProgressLineCallback(TrainerCallback):
    """One short line per logged step (step, reward, ratio, kl, rollouts), readable among the library logs."""

    KEYS = (("reward", "reward"), ("rollout/reward_mean", "rollout_reward"), ("ratio", "ratio"), ("kl", "kl"),
            ("loss", "loss"), ("rollout/rollouts_total", "rollouts"), ("rollout/groups_total", "groups"),
            ("perf/step_s", "step_s"))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        parts = [f"step {state.global_step}/{state.max_steps}"]
        parts += [f"{label}={logs[key]:.4g}" for key, label in self.KEYS if isinstance(logs.get(key), (int, float))]
        print("[intercept-rl] " + " ".join(parts), flush=True)


def load_worker_state(worker, checkpoint_dir: str | None) -> bool:
    """Restore the worker's state from a checkpoint written by `WorkerStateCallback`; False when there is none."""
    if checkpoint_dir is None or not hasattr(worker, "load_state_dict"):
        return False
    path = Path(checkpoint_dir) / WORKER_STATE_FILE
    if not path.is_file():
        logger.warning("no %s in %s: the rollout worker restarts its task order", WORKER_STATE_FILE, checkpoint_dir)
        return False
    worker.load_state_dict(json.loads(path.read_text()))
    return True


def restore_model_version(trainer, worker, weight_transfer, checkpoint_dir: str | None) -> int | None:
    """Continue the policy version count of the checkpoint (TRL restores it only for its own worker).

    Without this a resumed run would stamp versions from 1 again: staleness and trackio curves would jump back, and
    a vLLM server that outlived the first run already holds adapters under those version names.
    """
    path = Path(checkpoint_dir) / WORKER_STATE_FILE if checkpoint_dir else None
    if path is None or not path.is_file():
        return None
    version = json.loads(path.read_text()).get("model_version")
    if version is None:
        return None
    trainer.model_version = int(version)
    if worker is not None:
        worker.update_model_version(int(version))
    if weight_transfer is not None and hasattr(weight_transfer, "version"):
        weight_transfer.version = int(version)  # the local engine's next push carries trainer.model_version + 1
    return int(version)


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """`--resume-from-checkpoint PATH`, or `true`/`latest` for the newest checkpoint in the output dir."""
    if not resume_from_checkpoint or resume_from_checkpoint.lower() in ("false", "no", "none"):
        return None
    if resume_from_checkpoint.lower() in ("true", "yes", "latest"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise FileNotFoundError(f"--resume-from-checkpoint {resume_from_checkpoint}: no checkpoint in {output_dir}")
        return last
    if not os.path.isdir(resume_from_checkpoint):
        raise FileNotFoundError(f"--resume-from-checkpoint: {resume_from_checkpoint} is not a directory")
    return resume_from_checkpoint


def placeholder_dataset(rows: int = 8):
    """TRL requires a `train_dataset`; our worker owns the tasks, so a few empty prompts stand in (DESIGN §4)."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}]] * rows})


def build_trainer(args: TrainArgs, worker, weight_transfer, *, callbacks: list | None = None):
    """Construct TRL's `AsyncGRPOTrainer` with an injected rollout worker and weight transfer.

    Args:
        args: parsed arguments (`parse_train_args`).
        worker: a TRL `RolloutWorkerProtocol` (ours: `rollout_worker.worker.RolloutWorker`; tests pass their own);
            None on ranks other than 0, where TRL uses neither the worker nor the transfer.
        weight_transfer: a TRL `WeightTransferProtocol`, or None with `--vllm-url` (TRL's NCCL `WeightTransferClient`).
        callbacks: extra `TrainerCallback`s.
    """
    from accelerate import PartialState
    from transformers import AutoTokenizer
    from trl.experimental.async_grpo import AsyncGRPOTrainer

    from trainer.cpu_compat import apply_cpu_compat
    from trainer.on_demand_batches import fetch_batches_on_demand

    script, training = args.script, args.training
    if weight_transfer is None and not script.vllm_url and PartialState().is_main_process:
        raise ValueError("weight_transfer is required without --vllm-url (the local engine syncs over HTTP)")
    if training.token_budget is None and not script.vllm_url:
        raise ValueError("token_budget must be set without vLLM (TRL would otherwise query a vLLM /v1/models)")
    if script.vllm_url:
        training.vllm_server_base_url = script.vllm_url.rstrip("/")
    patched = apply_cpu_compat(script.tree_attention)
    if patched:
        logger.info("cpu_compat patched: %s", ", ".join(patched))

    model_path = resolve_model_path(script.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    placeholder_rows = training.per_device_train_batch_size * training.gradient_accumulation_steps
    state_callback = WorkerStateCallback(worker) if worker is not None else None
    trainer = AsyncGRPOTrainer(
        model=model_path,
        args=training,
        train_dataset=placeholder_dataset(max(placeholder_rows, 1)),
        processing_class=tokenizer,
        peft_config=peft_config_from(script),
        rollout_worker=worker,
        weight_transfer=weight_transfer,
        callbacks=[*([state_callback] if state_callback is not None else []), ProgressLineCallback(),
                   *(callbacks or [])],
    )
    if state_callback is not None:
        state_callback.model_version_fn = lambda: trainer.model_version
    # accelerate's loader fetches one batch ahead, i.e. before the previous step's weight sync: without this every
    # batch after the first would be trained one policy version staler than `max_staleness` allows and TRL logs.
    fetch_batches_on_demand(trainer)
    return trainer


def configure_trackio(argv: list[str]) -> str:
    """Point Trackio at `<output_dir>/trackio` (local SQLite, no network; a Space only with `--trackio-space-id`).

    Trackio reads `TRACKIO_DIR` once, at import, and TRL imports it, so this runs on the raw argv before parsing.
    Returns the directory trackio actually uses.
    """
    directory = early_trackio_dir(argv)
    if "trackio" in sys.modules:  # imported by the embedding program: its directory is fixed already
        from trackio import utils as trackio_utils

        if Path(trackio_utils.TRACKIO_DIR).resolve() != Path(directory).resolve():
            logger.warning("trackio was imported before the run configured it: logging to %s, not %s",
                           trackio_utils.TRACKIO_DIR, directory)
        return str(trackio_utils.TRACKIO_DIR)
    os.environ["TRACKIO_DIR"] = directory  # trackio creates it on first use
    return directory


def dashboard_command(trackio_dir: str, project: str) -> str:
    """The one command that opens the run's Trackio dashboard locally."""
    return f"GRADIO_SERVER_PORT=7861 TRACKIO_DIR={trackio_dir} trackio show --project {project}"


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the engine, the worker and its sandboxes."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help-all" in argv or "-h" in argv or "--help" in argv:
        from trainer.config import print_help

        print_help(full="--help-all" in argv)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trackio_dir = configure_trackio(argv)
        script, training = parse_train_args(argv)
        checkpoint = resolve_checkpoint(training.resume_from_checkpoint, training.output_dir)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"intercept-rl train: {error}", file=sys.stderr)
        return 2
    args = TrainArgs(script, training)
    _exit_on_sigterm()
    if training.trackio_space_id:
        logger.info("Trackio logs to the Space %s (private unless --hub-private-repo false is given)",
                    training.trackio_space_id)

    from accelerate import PartialState

    from trainer.components import build_rollout_worker, start_engine

    model_path = resolve_model_path(script.model_name_or_path)
    if not PartialState().is_main_process:
        # Under `accelerate launch`, only rank 0 owns the engine and the worker; TRL ignores both on other ranks.
        trainer = build_trainer(args, None, None)
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(training.output_dir)
        return 0
    with start_engine(script, training, model_path) as engine:
        worker = build_rollout_worker(script, training, model_path=model_path, engine_url=engine.url,
                                      keep_trajectories=True)
        load_worker_state(worker, checkpoint)
        trainer = build_trainer(args, worker, engine.weight_transfer)
        restore_model_version(trainer, worker, engine.weight_transfer, checkpoint)
        # TRL stops the worker when train() ends (on every path), so closing afterwards writes every record.
        with RolloutRecordWriter(worker.trajectories, Path(training.output_dir) / ROLLOUTS_FILE,
                                 append=checkpoint is not None):
            trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(training.output_dir)
    if "trackio" in (training.report_to or []):
        print(f"\nTrackio dashboard:\n  {dashboard_command(trackio_dir, training.project)}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
