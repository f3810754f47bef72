"""Checkpoints of `intercept-rl train` beyond TRL's own: the rollout worker's resumable state and the policy version
(written into every `checkpoint-N`, read back on `--resume-from-checkpoint`), and which checkpoint to resume from."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers import TrainerCallback

from intercept_common.errors import UserError

logger = logging.getLogger("intercept_rl.train")

WORKER_STATE_FILE = "rollout_worker_state.json"


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


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` whose save finished (transformers writes `trainer_state.json` at its end).

    A run killed while saving (pre-emption, OOM, SIGKILL) leaves a newer, partial directory behind; resuming from it
    would fail, so it is skipped with a warning and the previous complete checkpoint is used.
    """
    if not os.path.isdir(output_dir):
        return None
    numbered = []
    for name in os.listdir(output_dir):
        prefix, _, number = name.partition("-")
        if prefix == "checkpoint" and number.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            numbered.append((int(number), os.path.join(output_dir, name)))
    for _, path in sorted(numbered, reverse=True):
        if os.path.isfile(os.path.join(path, "trainer_state.json")):
            return path
        logger.warning("skipping %s: its save did not finish (no trainer_state.json)", path)
    return None


class CheckpointNotFoundError(FileNotFoundError, UserError):
    """`--resume-from-checkpoint` names no checkpoint (none in the output dir, or not a directory)."""


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """`--resume-from-checkpoint PATH`, or `true`/`latest` for the newest checkpoint in the output dir."""
    if not resume_from_checkpoint or resume_from_checkpoint.lower() in ("false", "no", "none"):
        return None
    if resume_from_checkpoint.lower() in ("true", "yes", "latest"):
        last = latest_complete_checkpoint(output_dir)
        if last is None:
            raise CheckpointNotFoundError(
                f"--resume-from-checkpoint {resume_from_checkpoint}: no checkpoint in {output_dir}")
        return last
    if not os.path.isdir(resume_from_checkpoint):
        raise CheckpointNotFoundError(f"--resume-from-checkpoint: {resume_from_checkpoint} is not a directory")
    return resume_from_checkpoint
