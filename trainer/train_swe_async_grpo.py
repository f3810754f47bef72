"""`intercept-rl train`: TRL 1.16's AsyncGRPOTrainer (unforked) fed by our rollout worker.

The same file runs on a laptop (`intercept-rl train --preset cpu-demo`) and on a multi-GPU box next to vLLM
(`accelerate launch trainer/train_swe_async_grpo.py --model-name-or-path ... --vllm-url http://...`). See
`trainer/config.py` for the options and `trainer/weight_transfer.py` for the vLLM launch line and GPU split.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `accelerate launch trainer/train_swe_async_grpo.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from intercept_common.cli_errors import squash  # noqa: E402
from intercept_common.errors import UserError  # noqa: E402
from trainer.checkpoints import WorkerStateCallback, load_worker_state, resolve_checkpoint  # noqa: E402
from trainer.checkpoints import restore_model_version  # noqa: E402
from trainer.config import SweTrainArguments, early_trackio_dir, parse_train_args  # noqa: E402
from trainer.config import peft_config_from, resolve_token_budget  # noqa: E402
from trainer.progress import RunLogging, make_progress_callback, quiet_trackio_banners, quiet_trainer  # noqa: E402
from trainer.rollout_records import ROLLOUTS_FILE, RolloutRecordWriter  # noqa: E402

logger = logging.getLogger("intercept_rl.train")

@dataclass
class TrainArgs:
    """Both halves of the parsed command line."""

    script: SweTrainArguments
    training: Any  # TRL's AsyncGRPOConfig (intercept_common.trl_api, imported lazily: TRL is heavy)


def resolve_model_path(model_name_or_path: str) -> str:
    """An embedded model's name (`embedded`, `embedded-64k`, `embedded-peaked`: local_engine.embedded; and
    `embedded-mini-warm`: trainer.warm_start) → its cached directory (built on first use); anything else is passed to
    TRL unchanged."""
    from local_engine.embedded import EMBEDDED_MODELS, embedded_model_dir
    from trainer.warm_start.build import WARM_MODEL_ALIAS, ensure_warm_model

    if model_name_or_path in EMBEDDED_MODELS:
        return str(embedded_model_dir(model_name_or_path))
    if model_name_or_path == WARM_MODEL_ALIAS:
        return str(ensure_warm_model(log=logger.warning))
    return model_name_or_path


def placeholder_dataset(rows: int = 8):
    """TRL requires a `train_dataset`; our worker owns the tasks, so a few empty prompts stand in (design §4)."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}]] * rows})


def build_trainer(args: TrainArgs, worker, weight_transfer, *, callbacks: list | None = None, reporter=None):
    """Construct TRL's `AsyncGRPOTrainer` with an injected rollout worker and weight transfer.

    Args:
        args: parsed arguments (`parse_train_args`).
        worker: a TRL `RolloutWorkerProtocol` (ours: `rollout_worker.worker.RolloutWorker`; tests pass their own);
            None on ranks other than 0, where TRL uses neither the worker nor the transfer.
        weight_transfer: a TRL `WeightTransferProtocol`, or None with `--vllm-url` (TRL's NCCL `WeightTransferClient`).
        callbacks: extra `TrainerCallback`s.
        reporter: the terminal progress (`trainer.progress.make_progress_callback`); it replaces transformers'
            metric-dict printers. Default: a bar and one line per step.
    """
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from intercept_common.trl_api import AsyncGRPOTrainer
    from trainer.cpu_compat import apply_cpu_compat
    from trainer.on_demand_batches import fetch_batches_on_demand
    from trainer.off_policy import install_off_policy_correction

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
        callbacks=[*([state_callback] if state_callback is not None else []), *(callbacks or [])],
    )
    if state_callback is not None:
        state_callback.model_version_fn = lambda: trainer.model_version
    quiet_trainer(trainer, reporter if reporter is not None else make_progress_callback())
    # accelerate's loader fetches one batch ahead, i.e. before the previous step's weight sync: without this every
    # batch after the first would be trained one policy version staler than `max_staleness` allows and TRL logs.
    fetch_batches_on_demand(trainer)
    if install_off_policy_correction(trainer, script.off_policy_correction, script.off_policy_is_cap,
                                     script.off_policy_is_floor):
        logger.info("off-policy correction: %s (cap %s, floor %s)", script.off_policy_correction,
                    script.off_policy_is_cap, script.off_policy_is_floor)
    return trainer


def _trackio_dir_flag_given(argv: list[str]) -> bool:
    return any(a in ("--trackio-dir", "--trackio_dir") or a.startswith(("--trackio-dir=", "--trackio_dir="))
               for a in argv)


def configure_trackio(argv: list[str]) -> str:
    """Point Trackio at its local directory (SQLite, no network; a Space only with `--trackio-space-id`).

    `--trackio-dir` wins; else a `TRACKIO_DIR` the user set (Trackio's own convention); else the config file's or
    preset's `trackio_dir`; else `<output_dir>/trackio`. Trackio reads `TRACKIO_DIR` once, at import, and TRL imports
    it, so this runs on the raw argv before parsing. Returns the directory trackio actually uses.
    """
    user_dir = os.environ.get("TRACKIO_DIR")
    if user_dir and not _trackio_dir_flag_given(argv):
        directory = os.path.abspath(os.path.expanduser(user_dir))
    else:
        directory = early_trackio_dir(argv)
    if "trackio" in sys.modules:  # imported by the embedding program: its directory is fixed already
        from trackio import utils as trackio_utils

        if Path(trackio_utils.TRACKIO_DIR).resolve() != Path(directory).resolve():
            logger.warning("trackio was imported before the run configured it: logging to %s, not %s",
                           trackio_utils.TRACKIO_DIR, directory)
        return str(trackio_utils.TRACKIO_DIR)
    os.environ["TRACKIO_DIR"] = directory  # trackio creates it on first use
    return directory


class EngineUnavailableError(RuntimeError, UserError):
    """The engine cannot be reached (before the run) or stopped answering (during it); the message has the remedy."""


def engine_answers(url: str, timeout_s: float = 5.0) -> bool:
    import requests

    try:
        return requests.get(f"{url.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def engine_refuses(url: str, timeout_s: float = 10.0) -> bool:
    """True only when nothing listens at `url` any more (a busy engine that is merely slow to answer is alive)."""
    import requests

    try:
        requests.get(f"{url.rstrip('/')}/health", timeout=timeout_s)
        return False
    except requests.Timeout:
        return False
    except requests.ConnectionError:
        return True


def watch_engine(worker, url: str) -> None:
    """Make the worker's health check (TRL calls it every 5 s while it waits for samples) fail once the engine is
    gone: otherwise every rollout ends as an infra error, no group is ever trained and TRL waits forever."""
    check = worker.check_health

    def check_health(stale_after_s: float) -> None:
        check(stale_after_s)
        if engine_refuses(url):
            raise EngineUnavailableError(f"the engine at {url} stopped answering during training")

    worker.check_health = check_health


def preflight(script: SweTrainArguments, training) -> None:
    """Fail in one line, before anything starts, on what would otherwise fail late or turn every rollout into an
    infra error: no space / no write access for the output dir, the gate's port taken, Docker down, the agent not
    installed, vLLM away."""
    from rollout_worker.preflight import check_agent, check_port_free, check_sandbox, check_writable

    check_writable(training.output_dir, what="--output-dir")
    check_port_free(script.gate_host, script.gate_port, "--gate-port")
    check_agent(script.episode_options.agent)
    check_sandbox(script.episode_options.sandbox)
    if script.vllm_url and not engine_answers(script.vllm_url):
        from trainer.components import vllm_command

        command = vllm_command(script, training, script.model_name_or_path)
        raise EngineUnavailableError(f"cannot reach vLLM at {script.vllm_url} (GET /health failed): start it first, "
                                     f"e.g. {command}")


def dashboard_command(trackio_dir: str, project: str) -> str:
    """The one command that opens the run's Trackio dashboard locally."""
    return f"GRADIO_SERVER_PORT=7861 TRACKIO_DIR={trackio_dir} trackio show --project {project}"


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the engine, the worker and its sandboxes."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


SWE_DEMO_HINT = ("The SWE demo (mini-swe-agent on the embedded SWE tasks; the tiny model proves the machinery, it "
                 "cannot solve them):\n  make demo PRESET=cpu-demo   (or: intercept-rl train --preset cpu-demo)")


def end_of_run_summary(reporter, trackio_dir: str | None, training, preset: str | None, log_path) -> str:
    """The chart of reward per step, where things are, the dashboard command, and the other demo."""
    from trainer.progress import reward_chart, reward_summary

    lines = []
    if reporter.rewards:
        lines += ["", "Reward per step (mean of the rollouts trained at that step):", reward_chart(reporter.rewards),
                  reward_summary(reporter.rewards)]
    lines += ["", f"Rollouts: {Path(training.output_dir) / ROLLOUTS_FILE}   "
              f"(token view: intercept-rl inspect {training.output_dir})"]
    if log_path is not None:
        lines.append(f"Full log: {log_path}")
    if trackio_dir is not None and "trackio" in (training.report_to or []):
        lines += ["Trackio dashboard (metrics and rollout traces):",
                  f"  {dashboard_command(trackio_dir, training.project)}"]
    if preset == "learning-demo":
        lines += ["", SWE_DEMO_HINT]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help-all" in argv or "-h" in argv or "--help" in argv:
        from trainer.config import print_help

        print_help(full="--help-all" in argv)
        return 0
    verbose = "--verbose" in argv or "-v" in argv
    argv = [a for a in argv if a not in ("--verbose", "-v")]
    run_logging = RunLogging(verbose=verbose).start()
    try:
        trackio_dir = configure_trackio(argv)
        script, training = parse_train_args(argv)
        checkpoint = resolve_checkpoint(training.resume_from_checkpoint, training.output_dir)
        preflight(script, training)
        log_path = run_logging.attach_file(training.output_dir)
        if not verbose:
            quiet_trackio_banners()  # after configure_trackio: importing trackio fixes its directory
    except UserError as error:  # what the user can fix, as one line; anything else is a bug and keeps its traceback
        print(f"intercept-rl train: {squash(str(error))}", file=sys.stderr)
        return 2
    args = TrainArgs(script, training)
    _exit_on_sigterm()
    if training.trackio_space_id:
        logger.info("Trackio logs to the Space %s (private unless --hub-private-repo false is given)",
                    training.trackio_space_id)

    from accelerate import PartialState

    from rollout_worker.factory import load_task_options
    from rollout_worker.nodes.cluster import closing_cluster, connect_cluster
    from trainer import traces
    from trainer.components import build_rollout_worker, follow_adapter_sync, start_engine

    main_process = PartialState().is_main_process
    # The task source (it may download) before the model and the engine: a source that fails, fails first.
    try:
        tasks = load_task_options(script.task_options, training.seed) if main_process else None
        if tasks is not None:
            from rollout_worker.preflight import check_images

            check_images(script.episode_options.sandbox, tasks)
        model_path = resolve_model_path(script.model_name_or_path)
        resolve_token_budget(script, training, model_path)
        cluster = connect_cluster(script.worker.cluster, script.worker.max_inflight) if main_process else None
    except UserError as error:
        print(f"intercept-rl train: {squash(str(error))}", file=sys.stderr)
        return 2
    reporter = make_progress_callback(run_logging.summary if not verbose else None, log_path)
    if not main_process:
        # Under `accelerate launch`, only rank 0 owns the engine and the worker; TRL ignores both on other ranks.
        trainer = build_trainer(args, None, None, reporter=reporter)
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(training.output_dir)
        return 0
    print(f"[intercept-rl] {script.episode_options.agent} on {script.task_options.tasks} tasks, "
          f"{training.max_steps} steps; "
          f"log: {log_path}", flush=True)
    with start_engine(script, training, model_path) as engine, closing_cluster(cluster):
        worker = build_rollout_worker(script, training, model_path=model_path, engine_url=engine.urls,
                                      keep_trajectories=True, tasks=tasks, cluster=cluster)
        load_worker_state(worker, checkpoint)
        collector = traces.install(worker, training.report_to or [], tokenizer=getattr(worker, "tokenizer", None))
        for url in engine.urls:  # every replica gets every weight update: one gone ends the run
            watch_engine(worker, url)
        trainer = build_trainer(args, worker, engine.weight_transfer, reporter=reporter,
                                callbacks=[traces.make_trace_callback(collector)])
        restore_model_version(trainer, worker, engine.weight_transfer, checkpoint)
        follow_adapter_sync(trainer, worker, script)
        # TRL stops the worker when train() ends (on every path), so closing afterwards writes every record.
        with RolloutRecordWriter(worker.trajectories, Path(training.output_dir) / ROLLOUTS_FILE,
                                 append=checkpoint is not None):
            try:
                trainer.train(resume_from_checkpoint=checkpoint)
            except Exception as error:
                if engine_refuses(engine.url):  # the engine died (or vLLM went away): say so, in one line
                    raise EngineUnavailableError(
                        f"the engine at {engine.url} stopped answering during training ({type(error).__name__}); "
                        f"see {log_path}. Rerun (--resume-from-checkpoint latest continues from the last "
                        "checkpoint); if it keeps dying, check memory (`dmesg | tail`)") from error
                raise
        trainer.save_model(training.output_dir)
    logger.info("%d rollout traces logged to Trackio", collector.logged)
    print(end_of_run_summary(reporter, trackio_dir, training, script.preset, log_path), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
