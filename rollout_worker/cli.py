"""`intercept-rl rollouts`: run agents on tasks through the gate, grade them, write trajectories (no training)."""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import time
from pathlib import Path

from .config import WorkerConfig
from .factory import EpisodeOptions, build_episode_runner, build_worker, load_tokenizer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="intercept-rl rollouts",
        description="Run agents on tasks through the interception gate against an engine, grade them host-side and "
        "write one JSON line per rollout (token ids, masks, logprobs, reward, advantage, drift, timings) plus a "
        "summary line on stderr.",
    )
    eng = p.add_mutually_exclusive_group()
    eng.add_argument("--engine-url", help="Base URL of a running vLLM server or local engine.")
    eng.add_argument("--engine", choices=["local"], help="Start the embedded local engine for this run.")
    p.add_argument("--model", default="embedded",
                   help="Model path or hub name (its tokenizer renders prompts; `--engine local` serves it). "
                   "`embedded` is the tiny demo model. Default: embedded.")
    p.add_argument("--served-model-name", default=None,
                   help="Name the engine serves the model under (default: asked from the engine's /v1/models).")
    p.add_argument("--chat-template", default=None,
                   help="Path to a prefix-preserving training chat template (default: the tokenizer's, else TRL's).")
    p.add_argument("--tasks", default="embedded", help="embedded | PATH (.json/.jsonl/.parquet) | HUB_DATASET_NAME.")
    p.add_argument("--split", default="train", help="Dataset split for hub/parquet tasks.")
    p.add_argument("--max-tasks", type=int, default=None, help="Run at most this many tasks (one group each).")
    p.add_argument("--agent", default="oracle", help="oracle | noop | mini-swe-agent | pi | cmd:<shell command>.")
    p.add_argument("--sandbox", default="local", choices=["local", "docker"], help="Sandbox backend.")
    p.add_argument("--reward", default="binary", choices=["binary", "fraction"], help="Reward mode of the grader.")
    p.add_argument("--num-generations", type=int, default=1, help="Rollouts per task (one group).")
    p.add_argument("--max-inflight", type=int, default=2, help="Rollouts running at once.")
    p.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (the agent's is ignored).")
    p.add_argument("--max-tokens-per-turn", type=int, default=512, help="Cap on tokens sampled per agent call.")
    p.add_argument("--max-turns", type=int, default=30, help="Agent calls per rollout before the budget ends it.")
    p.add_argument("--max-completion-tokens", type=int, default=None,
                   help="Sampled tokens per rollout before the budget ends it (default: no cap).")
    p.add_argument("--budget-grace", type=float, default=30.0,
                   help="Seconds the agent may still act on the reply that spent its token budget (s).")
    p.add_argument("--agent-timeout", type=float, default=600.0, help="Agent wall-time budget per rollout (s).")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="Context length of `--engine local` (default: the model's max positions).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the task order.")
    p.add_argument("--out", default="rollouts.jsonl", help="Where to write the trajectory lines.")
    p.add_argument("--quiet", action="store_true", help="No per-rollout progress lines.")
    return p


def _served_name(engine_url: str) -> str:
    import requests

    resp = requests.get(f"{engine_url.rstrip('/')}/v1/models", timeout=30)
    resp.raise_for_status()
    return resp.json()["data"][0]["id"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.engine_url and not args.engine:
        args.engine = "local"
    from .environment.tasks import load_tasks

    try:
        tasks = load_tasks(args.tasks, split=args.split, max_tasks=args.max_tasks, seed=args.seed)
        runner = build_episode_runner(EpisodeOptions(agent=args.agent, sandbox=args.sandbox, reward=args.reward,
                                                     agent_timeout_s=args.agent_timeout))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"intercept-rl rollouts: {exc}", file=sys.stderr)
        return 2
    engine_proc = None
    try:
        if args.engine == "local":
            from intercept_common.engine_process import LocalEngineProcess

            print(f"starting the local engine on {args.model} …", file=sys.stderr)
            engine_proc = LocalEngineProcess(args.model, served_model_name=args.served_model_name or "policy",
                                             max_model_len=args.max_model_len, seed=args.seed).start()
            engine_url, served = engine_proc.url, args.served_model_name or "policy"
        else:
            engine_url = args.engine_url
            served = args.served_model_name or _served_name(engine_url)
        config = WorkerConfig(served_model_name=served, num_generations=args.num_generations,
                              max_inflight=args.max_inflight, temperature=args.temperature,
                              max_tokens_per_turn=args.max_tokens_per_turn, max_turns=args.max_turns,
                              max_completion_tokens=args.max_completion_tokens, budget_grace_s=args.budget_grace,
                              seed=args.seed, max_groups=len(tasks), keep_trajectories=True,
                              drop_zero_variance_groups=False,
                              episode_timeout_s=args.agent_timeout + 600)
        worker = build_worker(config, tasks=tasks, episode_runner=runner, tokenizer=load_tokenizer(args.model),
                              chat_template=args.chat_template, engine_url=engine_url)
        return _run(worker, len(tasks) * args.num_generations, Path(args.out), quiet=args.quiet)
    finally:
        if engine_proc is not None:
            engine_proc.stop()


def _run(worker, expected: int, out: Path, quiet: bool) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rewards, resolved, unscorable, written = [], 0, 0, 0
    worker.start()
    try:
        with out.open("w") as fh:
            while written < expected:
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
