"""`intercept-rl rollouts`: run agents on tasks through the gate, grade them, write trajectories (no training).

Options come from the same config dataclasses `train` composes (`WorkerConfig`, `EpisodeOptions`, `EpisodeConfig`,
`GradingConfig`, `TaskOptions`; rollout_worker.config_views), as flags or from `--config file.yaml`
(intercept_common.config_tree).
"""

from __future__ import annotations

import errno
import json
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from intercept_common.cli_errors import squash
from intercept_common.config_tree import build, cli_view, parse_config_tree
from intercept_common.context_length import MAX_MODEL_LEN_HELP, check_max_model_len
from intercept_common.errors import ConfigError, UserError
from intercept_common.run_logging import RunLogging

from .config import WorkerConfig
from .config_views import EXTRA_KEYS, build_rollout_side, rollout_side_views
from .factory import (build_episode_runner, build_worker, load_task_options, load_tokenizer, served_model_name_for,
                      served_model_name_for_replicas)
from .environment.agents import get_agent
from .nodes.cluster import connect_cluster
from .preflight import check_agent, check_images, check_sandbox, check_writable
from .serving.replicas import NoReplicaLeftError

# Set by this command, not by the user: one group per task, every group kept (evaluation), records published.
_WORKER_FIELDS_SET_HERE = ("max_groups", "keep_trajectories", "drop_zero_variance_groups", "max_queued_samples")


@dataclass
class RolloutsArguments:
    """What only `rollouts` has: where the engine is, which model, where the records go."""

    _argument_group_name = "Run: engine, model, output"

    engine_url: list[str] | None = field(
        default=None,
        metadata={"help": "Base URL of a running vLLM server or local engine (unset: --engine). Several replicas of "
                  "the same model: list them after one --engine-url, space- or comma-separated (a config file's "
                  "engine_url may be a YAML list); each must answer and serve the same model name and max_model_len "
                  "before anything starts. Each rollout stays on one replica (its prefix cache), new ones go to the "
                  "replica with the fewest in flight; one that stops answering is dropped with a warning and its "
                  "rollouts end unscorable (infra_error). Every record names its replica (docs/scale.md)."})
    engine: Literal["local"] = field(
        default="local", metadata={"help": "Without --engine-url: start the embedded local engine for this run."})
    model: str = field(
        default="embedded",
        metadata={"help": "Model path or hub name (its tokenizer renders prompts; the local engine serves it). "
                  "`embedded` is the tiny demo model."})
    max_model_len: int | None = field(default=None, metadata={"help": MAX_MODEL_LEN_HELP})
    out: str = field(default="rollouts.jsonl", metadata={"help": "Where to write the trajectory lines."})
    quiet: bool = field(default=False, metadata={"help": "No per-rollout progress lines."})

    def __post_init__(self) -> None:
        check_max_model_len(self.max_model_len)
        self.engine_url = parse_engine_urls(self.engine_url)

    @property
    def engine_urls(self) -> list[str]:
        return list(self.engine_url or [])


def parse_engine_urls(value: str | list[str] | None) -> list[str] | None:
    """`--engine-url` as a list: items may hold comma-separated URLs; a URL given twice would count its server as two
    replicas (twice its share of rollouts), so it is refused."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    urls = [part.strip().rstrip("/") for item in items for part in str(item).split(",") if part.strip()]
    if not urls:
        raise ConfigError("--engine-url names no URL")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--engine-url {url!r} is not an http:// or https:// URL")
    if len(set(urls)) != len(urls):
        twice = next(url for url in urls if urls.count(url) > 1)
        raise ConfigError(f"--engine-url lists {twice} twice")
    return urls


WorkerOptions = cli_view(WorkerConfig, exclude=_WORKER_FIELDS_SET_HERE)


def build_parser():
    from transformers import HfArgumentParser

    parser = HfArgumentParser((RolloutsArguments, *rollout_side_views(WorkerOptions)))
    parser.prog = "intercept-rl rollouts"
    parser.description = ("Run agents on tasks through the interception gate against an engine, grade them host-side "
                          "and write one JSON line per rollout (token ids, masks, logprobs, reward, advantage, drift, "
                          "timings) plus a summary line on stderr. Options also come from --config FILE.yaml (flat or "
                          "nested by section: worker, episode, grading, container_grading, gate, sandbox: {backend, "
                          "...}, agent: {name}).")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv  # the log on the terminal too (it always goes to <out>.log)
    argv = [arg for arg in argv if arg != "--verbose"]
    run_logging = RunLogging(verbose=verbose).start()
    try:
        _refuse_repeated_engine_url(argv)
        # The whole configuration first (each view validates as its config does): nothing has started yet.
        (run, *parsed), extras = parse_config_tree(build_parser(), argv, extra_keys=EXTRA_KEYS)
        side = build_rollout_side(parsed, extras)
        options, worker_view = side.episode_options, side.worker
        runner = build_episode_runner(options, side.episode, side.grading, side.container_grading)
        # What would otherwise end every rollout as infra_error, or fail after the engine started:
        check_agent(options.agent)
        check_sandbox(options.sandbox)
        check_writable(Path(run.out).resolve().parent, what="--out")
        tasks = load_task_options(side.task_options, worker_view.seed)  # may download: after the checks
        check_images(options.sandbox, tasks)
        log_path = _attach_log(run_logging, Path(run.out))
        cluster = connect_cluster(worker_view.cluster, worker_view.max_inflight)
    except UserError as exc:  # what the user can fix, as one line; anything else is a bug and keeps its traceback
        print(f"intercept-rl rollouts: {squash(str(exc))}", file=sys.stderr)
        return 2
    engine_proc = None
    try:
        try:
            if run.engine_url is None and not getattr(get_agent(options.agent), "calls_model", True):
                engine_url, served = [], worker_view.served_model_name  # the oracle, noop: no engine to start
            elif run.engine_url is None:
                from intercept_common.engine_process import LocalEngineProcess

                served = served_model_name_for(worker_view.served_model_name, None)
                print(f"starting the local engine on {run.model} …", file=sys.stderr)
                engine_proc = LocalEngineProcess(run.model, served_model_name=served,
                                                 max_model_len=run.max_model_len, seed=worker_view.seed).start()
                engine_url = engine_proc.url
            else:
                engine_url = run.engine_urls
                served = served_model_name_for_replicas(worker_view.served_model_name, engine_url)
        except UserError as exc:  # unreachable, serving another model, or the local engine failed to start
            print(f"intercept-rl rollouts: {squash(str(exc))[:600]}", file=sys.stderr)
            return 1
        config = build(WorkerConfig, worker_view, served_model_name=served, max_groups=len(tasks),
                       keep_trajectories=True, drop_zero_variance_groups=False)
        worker = build_worker(config, tasks=tasks, episode_runner=runner, tokenizer=load_tokenizer(run.model),
                              engine_url=engine_url, gate_config=side.gate, cluster=cluster, model=run.model,
                              episode_parts=(options, side.episode, side.grading, side.container_grading))
        return _run(worker, len(tasks) * config.num_generations, Path(run.out), quiet=run.quiet,
                    engine_proc=engine_proc, warnings=None if verbose else run_logging.summary, log_path=log_path)
    finally:
        if engine_proc is not None:
            engine_proc.stop()
        if cluster is not None:
            cluster.close()


def _refuse_repeated_engine_url(argv: list[str]) -> None:
    """argparse keeps only the last of a repeated flag: a second `--engine-url` would silently drop the first's."""
    given = [arg for arg in argv if arg.split("=", 1)[0] in ("--engine-url", "--engine_url")]
    if len(given) > 1:
        raise ConfigError("--engine-url is given more than once: list every replica after one --engine-url "
                          "(space- or comma-separated)")


def _attach_log(run_logging: RunLogging, out: Path) -> Path | None:
    """The run's full log next to the records (`rollouts.jsonl` -> `rollouts.log`); none for a device like /dev/full."""
    if not out.parent.is_dir() or out.exists() and not out.is_file():
        return None
    try:
        return run_logging.attach_file(out.parent, f"{out.stem}.log")
    except OSError:
        return None


class EngineDiedError(RuntimeError, UserError):
    """The local engine exited while rollouts were running."""


def _check_engine(engine_proc) -> None:
    proc = getattr(engine_proc, "proc", None)
    if proc is not None and (code := proc.poll()) is not None:
        tail = [line for line in engine_proc.log_tail(2000).splitlines() if line.strip()]
        last = f"; its last log line: {tail[-1].strip()[:200]}" if tail else ""
        raise EngineDiedError(f"the local engine exited with code {code} during the run{last}. Rerun; if it keeps "
                              "dying, check memory (`dmesg | tail`) or run it alone: intercept-rl engine --model ...")


def _run(worker, expected: int, out: Path, quiet: bool, engine_proc=None, warnings=None, log_path=None) -> int:
    """One line per finished rollout (with the warnings logged since the previous one, counted) under a progress bar;
    the summary JSON is the last line."""
    from tqdm.auto import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=expected, desc="rollouts", unit="rollout", file=sys.stderr, dynamic_ncols=True,
               disable=quiet or not sys.stderr.isatty())
    warned = 0
    started = time.monotonic()
    rewards, resolved, unscorable, written = [], 0, 0, 0
    try:
        worker.start()
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
                bar.update(1)
                counts = warnings.take() if warnings is not None else {}
                warned += sum(counts.values())
                if not quiet:
                    reward = "unscorable" if not rec["scorable"] else f"reward={rec['reward']:.2f}"
                    line = (f"[{written}/{expected}] {rec['task_id']} #{rec['group_index']} {rec['status']} {reward} "
                            f"turns={rec['turns']} {rec['timings'].get('total', 0):.1f}s")
                    if rec.get("node", "local") != "local":
                        line += f" node={rec['node']}"
                    if counts:
                        top = "; ".join(f"{n}x {m}" if n > 1 else m for m, n in counts.most_common(2))
                        line += f" | {sum(counts.values())} warnings ({top})"
                    bar.write(line, file=sys.stderr)
    except (EngineDiedError, NoReplicaLeftError) as exc:
        print(f"intercept-rl rollouts: {squash(str(exc))[:600]}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"intercept-rl rollouts: no space left on the device writing {out}: free some space or choose another "
              "--out", file=sys.stderr)
        return 1
    finally:
        bar.close()
        worker.stop()
        while not worker.rollout_buffer.empty():  # samples are a training concern; drain so nothing is held
            worker.rollout_buffer.get_nowait()
    summary = {
        "rollouts": written, "expected": expected, "scorable": len(rewards), "unscorable": unscorable,
        "reward_mean": (sum(rewards) / len(rewards)) if rewards else None,
        "resolved": resolved, "seconds": round(time.monotonic() - started, 1), "out": str(out),
        "warnings": warned, "log": str(log_path) if log_path else None,
    }
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0 if written == expected else 1


if __name__ == "__main__":
    sys.exit(main())
