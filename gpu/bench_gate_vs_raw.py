"""Gated vs raw vLLM throughput on the same token traffic: same agents, same prompts, same concurrency, one run.

Each agent runs `--turns` chat turns of a fixed SWE-like conversation (a system prompt, a task, then after every reply
a fixed tool result), `--max-tokens` sampled tokens per turn, temperature 1. `raw`: the agents call vLLM's own
`/v1/chat/completions`. `gated`: the same agents call their rollout's gate, i.e. our whole serving path (gate →
`TurnServer` → `PromptAssembler` → `EngineClient` → vLLM's token-level `/v1/completions` → `parse_completion`), inside a
real `RolloutWorker` (groups of `--group`, `--concurrency` rollouts in flight, every record assembled). Agents run on
their own event loop in their own thread in both modes, so the gate's loop serves only the gate.

Reported per mode: wall time, turns/s, sampled tokens/s, mean and p50/p90 turn latency seen by the agent; and gated /
raw throughput (target >= 95 %) and the added latency per turn (the gate + worker's share of a turn's wall time).

Usage: python gpu/bench_gate_vs_raw.py --url http://127.0.0.1:8000 --model-dir DIR --out gate_vs_raw.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SYSTEM = ("You are a software engineering agent. You can run shell commands with the `bash` tool and edit files. "
          "Work step by step: inspect the repository, find the bug, fix it, run the tests. ") * 6
TASK = ("The function `parse_range` in `src/ranges.py` returns an empty list when the upper bound equals the lower "
        "bound; it should return a single-element list. Fix it and make sure the tests in tests/test_ranges.py pass.")
TOOL_RESULT = "\n".join(f"{i:4d}    def helper_{i}(value):  # returns the value unchanged\n            return value"
                        for i in range(12))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="vLLM base URL (no /v1).")
    parser.add_argument("--model", default="policy", help="Served model name.")
    parser.add_argument("--model-dir", required=True, help="Served model directory (its tokenizer and template).")
    parser.add_argument("--concurrency", type=int, default=64, help="Rollouts (agents) in flight in both modes.")
    parser.add_argument("--rollouts", type=int, default=128, help="Rollouts per mode.")
    parser.add_argument("--group", type=int, default=8, help="Rollouts per GRPO group (gated mode).")
    parser.add_argument("--turns", type=int, default=4, help="Chat turns per rollout.")
    parser.add_argument("--max-tokens", type=int, default=128, help="Sampled tokens per turn.")
    parser.add_argument("--modes", nargs="+", default=["raw", "gated", "raw"], choices=("raw", "gated"),
                        help="Modes in order (raw twice brackets the gated run against drift).")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="Bound on each mode.")
    parser.add_argument("--out", default="gate_vs_raw.json", help="Where the JSON report goes.")
    return parser


class AgentLoop:
    """A private event loop in its own thread where every agent runs (both modes)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


async def agent(session, base_url: str, api_key: str, model: str, turns: int, max_tokens: int) -> list[dict]:
    """One rollout: `turns` chat calls, our replies echoed back, a fixed tool result after each. Returns per-turn
    latency and sampled tokens."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK}]
    stats = []
    for _ in range(turns):
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 1.0}
        started = time.perf_counter()
        async with session.post(f"{base_url.rstrip('/')}/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {api_key}"}) as response:
            reply = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {str(reply)[:300]}")
        latency = time.perf_counter() - started
        usage = reply.get("usage") or {}
        stats.append({"latency_s": latency, "completion_tokens": usage.get("completion_tokens")})
        content = reply["choices"][0]["message"].get("content") or ""
        messages += [{"role": "assistant", "content": content}, {"role": "user", "content": TOOL_RESULT}]
    return stats


def summarize(name: str, wall_s: float, turn_stats: list[dict], errors: int, sampled_tokens: int | None = None):
    latencies = sorted(s["latency_s"] for s in turn_stats)
    tokens = sampled_tokens if sampled_tokens is not None else sum(s["completion_tokens"] or 0 for s in turn_stats)
    return {"mode": name, "wall_s": round(wall_s, 3), "turns": len(turn_stats), "errors": errors,
            "sampled_tokens": tokens, "turns_per_s": round(len(turn_stats) / wall_s, 2),
            "tokens_per_s": round(tokens / wall_s, 1),
            "latency_mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
            "latency_p50_s": round(latencies[len(latencies) // 2], 4) if latencies else None,
            "latency_p90_s": round(latencies[int(len(latencies) * 0.9)], 4) if latencies else None}


def run_raw(args, agents: AgentLoop) -> dict:
    import aiohttp

    async def all_rollouts():
        semaphore = asyncio.Semaphore(args.concurrency)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
            async def one():
                async with semaphore:
                    return await agent(session, f"{args.url.rstrip('/')}/v1", "raw", args.model, args.turns,
                                       args.max_tokens)
            return await asyncio.gather(*(one() for _ in range(args.rollouts)), return_exceptions=True)

    started = time.perf_counter()
    results = agents.submit(all_rollouts()).result(timeout=args.timeout_s)
    wall = time.perf_counter() - started
    stats = [s for r in results if not isinstance(r, BaseException) for s in r]
    errors = [repr(r)[:300] for r in results if isinstance(r, BaseException)]
    report = summarize("raw", wall, stats, len(errors))
    report["first_errors"] = errors[:3]
    return report


class GatedAgents:
    """Episode runner for the worker: the same agent coroutine, run on the agents' loop against the rollout's gate."""

    def __init__(self, args, agents: AgentLoop):
        self.args, self.agents = args, agents
        self.rewards = itertools.cycle([1.0, 0.0])
        self.turn_stats: list[dict] = []
        self.errors: list[str] = []
        self.session = None

    async def _session(self):
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                 timeout=aiohttp.ClientTimeout(total=600))
        return self.session

    async def _agent(self, endpoint):
        return await agent(await self._session(), endpoint.base_url, endpoint.api_key, endpoint.model,
                           self.args.turns, self.args.max_tokens)

    async def run(self, task, endpoint, stop):
        from rollout_worker.outcomes import EpisodeStatus
        from rollout_worker.types import EpisodeResult

        try:
            stats = await asyncio.wrap_future(self.agents.submit(self._agent(endpoint)))
        except Exception as error:  # noqa: BLE001
            self.errors.append(repr(error)[:300])
            return EpisodeResult(status=EpisodeStatus.AGENT_ERROR, reward=None, scorable=False, agent_output=repr(error)[:500],
                                 exit_code=1)
        self.turn_stats += stats
        return EpisodeResult(status=EpisodeStatus.COMPLETED, reward=next(self.rewards), resolved=False, agent_output="", exit_code=0)


def run_gated(args, agents: AgentLoop) -> dict:
    from transformers import AutoTokenizer

    from rollout_worker.serving.chat_template import resolve_training_template
    from rollout_worker.config import WorkerConfig
    from rollout_worker.types import Task
    from rollout_worker.worker import RolloutWorker

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    groups = max(1, args.rollouts // args.group)
    tasks = [Task(instance_id=f"bench{i}", repo="demo/repo", base_commit="0" * 40, problem_statement=TASK)
             for i in range(groups)]
    config = WorkerConfig(served_model_name=args.model, num_generations=args.group, max_inflight=args.concurrency,
                          max_groups=groups, temperature=1.0, max_tokens_per_turn=args.max_tokens,
                          max_turns=args.turns + 1, seed=0, keep_trajectories=True, drop_zero_variance_groups=False)
    runner = GatedAgents(args, agents)
    worker = RolloutWorker(config, tasks=tasks, episode_runner=runner, tokenizer=tokenizer,
                           chat_template=resolve_training_template(tokenizer), engine_url=args.url)
    records, samples = [], 0
    started = time.perf_counter()
    worker.start()
    try:
        worker.update_model_version(1)
        while not worker.finished.is_set() and time.perf_counter() - started < args.timeout_s:
            samples += len(drain(worker.rollout_buffer))
            records += drain(worker.trajectories)
            time.sleep(0.05)
        wall = time.perf_counter() - started
    finally:
        worker.stop()
        if runner.session is not None:
            agents.submit(runner.session.close()).result(timeout=10)
    samples += len(drain(worker.rollout_buffer))
    records += drain(worker.trajectories)
    sampled = sum(r["drift"]["sampled_tokens"] for r in records)
    report = summarize("gated", wall, runner.turn_stats, len(runner.errors), sampled_tokens=sampled)
    report.update({"records": len(records), "samples": samples, "first_errors": runner.errors[:3],
                   "statuses": sorted({r["status"] for r in records}),
                   "usage_completion_tokens": sum(s["completion_tokens"] or 0 for s in runner.turn_stats)})
    return report


def drain(q: queue.Queue) -> list:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    agents = AgentLoop()
    runs = []
    try:
        for mode in args.modes:
            try:
                runs.append(run_raw(args, agents) if mode == "raw" else run_gated(args, agents))
            except Exception as error:  # noqa: BLE001 - the report must still be written
                runs.append({"mode": mode, "crash": f"{type(error).__name__}: {error}"[:500]})
            print(json.dumps(runs[-1]), flush=True)
    finally:
        agents.close()
    raw = [r for r in runs if r["mode"] == "raw" and "crash" not in r]
    gated = [r for r in runs if r["mode"] == "gated" and "crash" not in r]
    summary = {}
    if raw and gated:
        raw_tok_s = statistics.fmean(r["tokens_per_s"] for r in raw)
        raw_turn_s = statistics.fmean(r["turns_per_s"] for r in raw)
        raw_latency = statistics.fmean(r["latency_mean_s"] for r in raw)
        g = gated[0]
        summary = {"gated_over_raw_tokens_per_s": round(g["tokens_per_s"] / raw_tok_s, 4),
                   "gated_over_raw_turns_per_s": round(g["turns_per_s"] / raw_turn_s, 4),
                   "added_latency_per_turn_s": round(g["latency_mean_s"] - raw_latency, 4),
                   "gate_share_of_turn_wall": round((g["latency_mean_s"] - raw_latency) / g["latency_mean_s"], 4),
                   "target_met": g["tokens_per_s"] / raw_tok_s >= 0.95}
    report = {"args": vars(args), "runs": runs, "summary": summary}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
