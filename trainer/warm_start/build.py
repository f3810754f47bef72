"""`intercept-rl warm-start`: build (once) the warm-started embedded policy that acts as mini-swe-agent's model.

One command, no download, cached like the embedded models (`<cache root>/models/<name>`, keyed by the recipe name,
the seed, the rows and the task subset (`--tasks embedded:NAME,...`; all by default); bump WARM_MODEL_NAME's suffix
whenever the recipe changes):
  1. the embedded architecture at its fixed random init (`local_engine.embedded.build_tiny_model`);
  2. teacher data: the real mini-swe-agent in bubblewrap, through the real gate and worker (`intercept-rl rollouts`),
     answered by the scripted teacher engine (`teacher.py`) on every embedded task, `TEACHER_GENERATIONS` times; every
     rollout must resolve its task in at least 2 turns, or the build stops;
  3. a short supervised fine-tune on those rows, loss on sampled tokens only (`sft.py`).
The model directory holds `warm_start.json` (recipe, teacher summary, losses) and the teacher's records
(`teacher_rollouts.jsonl`). A crash never leaves a half-built model: the build happens in a sibling directory that is
renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from intercept_common.errors import UserError

WARM_MODEL_NAME = "tiny-qwen3-mini-warm-v2"
WARM_MODEL_ALIAS = "embedded-mini-warm"  # what `train --model-name-or-path` (and the mini-swe-warm preset) call it
DEFAULT_STEPS = 720  # enough rows for well-formed tool calls from the 2-layer model (docs/benchmarks.md, warm start)
TEACHER_GENERATIONS = 3  # one per look variant of the teacher
TEACHER_ROLLOUTS_TIMEOUT_S = 3600  # measured ~5 min for all 39 on 2 cores
TEACHER_ROLLOUT_ARGS = ["--agent", "mini-swe-agent", "--max-tokens-per-turn", "1024", "--max-turns", "6",
                        "--max-inflight", "2", "--sandbox", "local"]


def warm_model_dir(seed: int, steps: int, cache_dir: str | os.PathLike | None = None, tasks: str = "embedded") -> Path:
    """`<cache root>/models/<recipe>-s<seed>-n<steps>[-t<hash of the task subset>]`."""
    from local_engine.embedded import default_cache_root

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    subset = "" if tasks == "embedded" else "-t" + hashlib.sha256(tasks.encode()).hexdigest()[:8]
    return root / "models" / f"{WARM_MODEL_NAME}-s{seed}-n{steps}{subset}"


def check_teacher_tasks(tasks: str) -> None:
    """The teacher scripts the embedded tasks only: `embedded` or `embedded:name,...` of known names (UserError)."""
    from rollout_worker.environment.tasks.embedded_tasks import embedded_task_names

    names = tasks.partition(":")[2].split(",") if tasks.startswith("embedded:") else []
    unknown = sorted(set(names) - set(embedded_task_names()))
    if not (tasks == "embedded" or (names and all(names) and not unknown)):
        raise UserError(f"--tasks {tasks}: the teacher knows the embedded tasks only: 'embedded' or "
                        f"'embedded:NAME,...'" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))


def record_teacher_rollouts(out: Path, generations: int = TEACHER_GENERATIONS, log=print,
                            tasks: str = "embedded") -> dict:
    """Run real mini-swe-agent against the teacher engine on the embedded `tasks` (all by default, or
    `embedded:name,...`); write the records to `out`.

    Returns the teacher's summary. Raises UserError when a rollout did not resolve its task in >= 2 turns (the
    data would teach something else than a solution)."""
    from intercept_common.http_site import start_site
    from intercept_common.loop_thread import LoopThread
    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
    from trainer.warm_start.measure import read_records, summarize
    from trainer.warm_start.teacher import Teacher, TeacherServer, load_task_scripts

    tokenizer = load_qwen3_tokenizer()
    server = TeacherServer(Teacher(load_task_scripts()), tokenizer)
    loop = LoopThread("warm-start-teacher", call_timeout_s=30)
    loop.start()
    try:
        runner, url = loop.run(start_site(server.app(), host="127.0.0.1", port=0), 30)
        try:
            argv = [sys.executable, "-m", "intercept_rl_cli", "rollouts", "--engine-url", url, "--model", "embedded",
                    "--num-generations", str(generations), "--quiet", "--out", str(out), "--tasks", tasks,
                    *TEACHER_ROLLOUT_ARGS]
            log(f"recording teacher rollouts: {' '.join(argv[3:])}")
            code, stderr = _run_bounded(argv, TEACHER_ROLLOUTS_TIMEOUT_S)
            if code is None:
                raise UserError(f"the teacher rollouts did not finish within {TEACHER_ROLLOUTS_TIMEOUT_S} s "
                                "(stopped; is the machine overloaded?)")
            if code != 0:
                tail = stderr.strip().splitlines()[-1:] or ["(no output)"]
                raise UserError(f"the teacher rollouts failed: {tail[0]}")
        finally:
            loop.run(runner.cleanup(), 30)
    finally:
        loop.stop(30)
    records = read_records(out)
    bad = [r["task_id"] for r in records if not (r["resolved"] and r["turns"] >= 2)]
    if bad or not records:
        raise UserError(f"teacher rollouts that did not resolve in >= 2 turns: {', '.join(bad) or 'none recorded'}"
                          f" (log: {out.with_suffix('.log')})")
    return summarize(records, tokenizer)


def _run_bounded(argv: list[str], timeout_s: float) -> tuple[int | None, str]:
    """(exit code, stderr) of `argv`; (None, stderr) when it ran past `timeout_s`. Stopped as Ctrl-C would (the
    rollouts command then ends its sandboxes and agents), killed if that takes over a minute."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
        return proc.returncode, stderr
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        return None, stderr
    finally:
        if proc.poll() is None:  # interrupted here (Ctrl-C): never leave it running
            proc.kill()
            proc.wait()


def build_warm_model(target: Path, *, seed: int, steps: int, teacher_data: Path | None = None, log=print,
                     tasks: str = "embedded") -> Path:
    """Build into `target` (via a staging sibling) unless it already holds a model; returns `target`."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM

    from local_engine.embedded import build_tiny_model
    from trainer.warm_start.sft import SftConfig, fine_tune, load_rows

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        data = staging / "teacher_rollouts.jsonl"
        if teacher_data is not None:
            shutil.copyfile(teacher_data, data)
            from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
            from trainer.warm_start.measure import read_records, summarize

            teacher = summarize(read_records(data), load_qwen3_tokenizer())
        else:
            teacher = record_teacher_rollouts(data, log=log, tasks=tasks)
        log(f"teacher: {json.dumps(teacher)}")
        build_tiny_model(staging)  # the embedded recipe: same architecture, same init
        model = AutoModelForCausalLM.from_pretrained(staging, dtype=torch.float32)
        config = SftConfig(steps=steps, seed=seed)
        losses = fine_tune(model, load_rows([data]), config, log=log)
        model.save_pretrained(staging, safe_serialization=True)
        summary = {"name": WARM_MODEL_NAME, "tasks": tasks, "sft": asdict(config), "teacher": teacher,
                   "loss_first": losses[0], "loss_last20": sum(losses[-20:]) / len(losses[-20:])}
        (staging / "warm_start.json").write_text(json.dumps(summary, indent=1) + "\n")
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_warm_model(seed: int = 0, steps: int = DEFAULT_STEPS, cache_dir: str | os.PathLike | None = None,
                      log=print, tasks: str = "embedded") -> Path:
    """Path of the warm-started policy for (seed, steps, teacher tasks), built on first use (module docstring)."""
    target = warm_model_dir(seed, steps, cache_dir, tasks)
    if not (target / "config.json").is_file():
        log(f"building the warm-started policy into {target} (first use: ~25 min on 2 cores; "
            "`intercept-rl warm-start` builds it ahead)")
    return build_warm_model(target, seed=seed, steps=steps, log=log, tasks=tasks)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="intercept-rl warm-start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="Seed of the fine-tune (row order).")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="Rows of supervised fine-tuning (batch of one).")
    parser.add_argument("--cache-dir", default=None, help="Cache root (default $INTERCEPT_RL_CACHE or "
                        "~/.cache/intercept-rl); the model goes to <root>/models/.")
    parser.add_argument("--teacher-data", default=None, help="Reuse recorded teacher rollouts (JSONL) instead of "
                        "recording them again.")
    parser.add_argument("--tasks", default="embedded", help="The embedded tasks the teacher solves: 'embedded' (all) "
                        "or 'embedded:NAME,...'; a subset is cached under its own name.")
    args = parser.parse_args(argv)
    try:
        check_teacher_tasks(args.tasks)
    except UserError as exc:
        parser.error(str(exc))
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.teacher_data is not None and not Path(args.teacher_data).is_file():
        parser.error(f"--teacher-data {args.teacher_data}: no such file")
    target = warm_model_dir(args.seed, args.steps, args.cache_dir, args.tasks)
    path = build_warm_model(target, seed=args.seed, steps=args.steps,
                            teacher_data=Path(args.teacher_data) if args.teacher_data else None,
                            log=lambda line: print(line, file=sys.stderr, flush=True), tasks=args.tasks)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
