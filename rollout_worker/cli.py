"""`intercept-rl rollouts`: run agents on tasks through the gate, grade them, write trajectories (no training).

Options come from the same config dataclasses `train` composes (`WorkerConfig`, `EpisodeOptions`, `EpisodeConfig`,
`GradingConfig`), as flags or from `--config file.yaml` (intercept_common.config_tree).
"""

from __future__ import annotations

import errno
import json
import logging
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from intercept_common.cli_errors import squash
from intercept_common.config_tree import ConfigFileError, build, cli_view, parse_config_tree

from .config import WorkerConfig
from .environment.episode import EpisodeConfig
from .environment.grading import GradingConfig
from .factory import EpisodeOptions, build_episode_runner, build_worker, load_tokenizer, served_model_name_for
from .preflight import check_agent, check_sandbox, check_writable

# Set by this command, not by the user: one group per task, every group kept (evaluation), records published.
_WORKER_FIELDS_SET_HERE = ("max_groups", "keep_trajectories", "drop_zero_variance_groups", "max_queued_samples")


@dataclass
class RolloutsArguments:
    """What only `rollouts` has: where the engine is, which model and tasks, where the records go."""

    _argument_group_name = "Run: engine, model, tasks, output"

    engine_url: str | None = field(
        default=None, metadata={"help": "Base URL of a running vLLM server or local engine (unset: --engine)."})
    engine: Literal["local"] = field(
        default="local", metadata={"help": "Without --engine-url: start the embedded local engine for this run."})
    model: str = field(
        default="embedded",
        metadata={"help": "Model path or hub name (its tokenizer renders prompts; the local engine serves it). "
                  "`embedded` is the tiny demo model."})
    max_model_len: int | None = field(
        default=None, metadata={"help": "Context length of the local engine (default: the model's max positions)."})
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Path to a prefix-preserving training chat template (default: the tokenizer's, else TRL's)."})
    tasks: str = field(default="embedded",
                       metadata={"help": "embedded | PATH (.json/.jsonl/.parquet) | HUB_DATASET_NAME."})
    task_split: str = field(default="train", metadata={"help": "Dataset split for hub/parquet tasks."})
    max_tasks: int | None = field(default=None, metadata={"help": "Run at most this many tasks (one group each)."})
    out: str = field(default="rollouts.jsonl", metadata={"help": "Where to write the trajectory lines."})
    quiet: bool = field(default=False, metadata={"help": "No per-rollout progress lines."})


WorkerOptions = cli_view(WorkerConfig, exclude=_WORKER_FIELDS_SET_HERE)
EpisodeSelection = cli_view(EpisodeOptions)
EpisodeBudget = cli_view(EpisodeConfig)
GradingOptions = cli_view(GradingConfig)


def build_parser():
    from transformers import HfArgumentParser

    parser = HfArgumentParser((RolloutsArguments, EpisodeSelection, WorkerOptions, EpisodeBudget, GradingOptions))
    parser.prog = "intercept-rl rollouts"
    parser.description = ("Run agents on tasks through the interception gate against an engine, grade them host-side "
                          "and write one JSON line per rollout (token ids, masks, logprobs, reward, advantage, drift, "
                          "timings) plus a summary line on stderr. Options also come from --config FILE.yaml (flat or "
                          "nested by section: worker, episode, grading, sandbox: {backend, ...}, agent: {name}).")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .environment.tasks import load_tasks

    try:
        (run, selection, worker_view, budget, grading_view), extras = parse_config_tree(
            build_parser(), argv, extra_keys=("sandbox_options", "agent_options"))
        if extras.get("agent_options"):
            raise ValueError(f"agent options {sorted(extras['agent_options'])} are not supported: agents take none")
        options = build(EpisodeOptions, selection, sandbox_options=extras.get("sandbox_options", {}))
        tasks = load_tasks(run.tasks, split=run.task_split, max_tasks=run.max_tasks, seed=worker_view.seed)
        runner = build_episode_runner(options, build(EpisodeConfig, budget), build(GradingConfig, grading_view))
        # What would otherwise end every rollout as infra_error, or fail after the engine started:
        check_agent(options.agent)
        check_sandbox(options.sandbox)
        check_writable(Path(run.out).resolve().parent, what="--out")
    except (ValueError, FileNotFoundError, RuntimeError, ConfigFileError) as exc:
        print(f"intercept-rl rollouts: {squash(str(exc))}", file=sys.stderr)
        return 2
    engine_proc = None
    try:
        try:
            if run.engine_url is None:
                from intercept_common.engine_process import LocalEngineProcess

                served = served_model_name_for(worker_view.served_model_name, None)
                print(f"starting the local engine on {run.model} …", file=sys.stderr)
                engine_proc = LocalEngineProcess(run.model, served_model_name=served,
                                                 max_model_len=run.max_model_len, seed=worker_view.seed).start()
                engine_url = engine_proc.url
            else:
                engine_url = run.engine_url
                served = served_model_name_for(worker_view.served_model_name, engine_url)
        except (RuntimeError, TimeoutError) as exc:  # unreachable, or the local engine failed to start
            print(f"intercept-rl rollouts: {squash(str(exc))[:600]}", file=sys.stderr)
            return 1
        config = build(WorkerConfig, worker_view, served_model_name=served, max_groups=len(tasks),
                       keep_trajectories=True, drop_zero_variance_groups=False)
        worker = build_worker(config, tasks=tasks, episode_runner=runner, tokenizer=load_tokenizer(run.model),
                              chat_template=run.chat_template, engine_url=engine_url)
        return _run(worker, len(tasks) * config.num_generations, Path(run.out), quiet=run.quiet,
                    engine_proc=engine_proc)
    finally:
        if engine_proc is not None:
            engine_proc.stop()


class EngineDiedError(RuntimeError):
    """The local engine exited while rollouts were running."""


def _check_engine(engine_proc) -> None:
    proc = getattr(engine_proc, "proc", None)
    if proc is not None and (code := proc.poll()) is not None:
        tail = [line for line in engine_proc.log_tail(2000).splitlines() if line.strip()]
        last = f"; its last log line: {tail[-1].strip()[:200]}" if tail else ""
        raise EngineDiedError(f"the local engine exited with code {code} during the run{last}. Rerun; if it keeps "
                              "dying, check memory (`dmesg | tail`) or run it alone: intercept-rl engine --model ...")


def _run(worker, expected: int, out: Path, quiet: bool, engine_proc=None) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rewards, resolved, unscorable, written = [], 0, 0, 0
    worker.start()
    try:
        with out.open("w") as fh:
            while written < expected:
                _check_engine(engine_proc)
                try:
                    rec = worker.trajectories.get(timeout=1.0)
                except queue.Empty:
                    worker.check_health(stale_after_s=3600)
                    if worker.finished.is_set() and worker.trajectories.empty():
                        break
                    continue
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                written += 1
                if rec["scorable"]:
                    rewards.append(rec["reward"])
                    resolved += bool(rec["resolved"])
                else:
                    unscorable += 1
                if not quiet:
                    reward = "unscorable" if not rec["scorable"] else f"reward={rec['reward']:.2f}"
                    print(f"[{written}/{expected}] {rec['task_id']} #{rec['group_index']} {rec['status']} {reward} "
                          f"turns={rec['turns']} {rec['timings'].get('total', 0):.1f}s", file=sys.stderr, flush=True)
    except EngineDiedError as exc:
        print(f"intercept-rl rollouts: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"intercept-rl rollouts: no space left on the device writing {out}: free some space or choose another "
              "--out", file=sys.stderr)
        return 1
    finally:
        worker.stop()
        while not worker.rollout_buffer.empty():  # samples are a training concern; drain so nothing is held
            worker.rollout_buffer.get_nowait()
    summary = {
        "rollouts": written, "expected": expected, "scorable": len(rewards), "unscorable": unscorable,
        "reward_mean": (sum(rewards) / len(rewards)) if rewards else None,
        "resolved": resolved, "seconds": round(time.monotonic() - started, 1), "out": str(out),
    }
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0 if written == expected else 1


if __name__ == "__main__":
    sys.exit(main())
