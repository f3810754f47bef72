"""Gated vs raw vLLM throughput on the same token traffic, with the loss split into its causes, in one run.

Each agent runs `--turns` chat turns of a fixed SWE-like conversation (a system prompt, a task, then after every reply
a fixed tool result), `--max-tokens` sampled tokens per turn, temperature 1, `--concurrency` rollouts in flight. Modes:

  raw         the agents call the engine's own `/v1/chat/completions` (vLLM renders with the model's template).
  raw-tokens  the agents render each turn themselves exactly as the worker does (the training template through
              `PromptAssembler`: held ids + rendered bridge, `parse_completion`, `commit`) and send the very request
              `EngineClient` sends (`/v1/completions`, token ids, `logprobs: 0`, `return_token_ids`), without the
              gate or the worker. The engine sees the same token traffic as `gated`.
  gated       the agents call their rollout's gate inside a real `RolloutWorker` (groups of `--group`, every record
              assembled): gate → `TurnServer` → `PromptAssembler` → `EngineClient` → `/v1/completions`.

So gated / raw-tokens is the cost of the gate + worker, raw-tokens / raw the cost of the engine request's shape
(token ids, logprobs, the training template's prompts). Agents run on their own event loop in their own thread in
every mode, so the worker's loop serves only the gate and the worker.

Per mode: wall time, turns/s, sampled tokens/s, turn latency seen by the agent (mean, p50, p90, p99, max), prompt
tokens per turn (mean, and per turn index), the engine's latency per turn and the rest (agent latency - engine
latency) where it is known (raw-tokens: the agent's own `EngineClient`; gated: what the worker's `TurnServer`
measured, from each record's `turn_timings`), the CPU each thread used per turn, and the event-loop stalls of the
agents' loop (and in gated mode of the worker's loop): the longest lags and, from a sampler thread, the Python stacks
the stalled loop was in; and the garbage collector's pauses. Reading it: a stall of the worker's loop while engine
calls are in flight lands in the gated mode's *engine* latency (the answer is read only once the loop runs again), so
compare the engine latency of gated with raw-tokens, not only the overhead; the overhead is the gate's HTTP hop and
the serving code. The JSON report is rewritten after every mode (a killed run keeps what it measured); `--deadline-s`
bounds the whole run (modes that would not fit are skipped and say so).

An engine without `/v1/chat/completions` (the local CPU engine) skips `raw` with a message; the other modes run.

Usage: python gpu/bench_gate_vs_raw.py --url http://127.0.0.1:8000 --model-dir DIR --out gate_vs_raw.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import queue
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from gpu.bench_watch import AgentLoop, GcWatch, LoopWatch, _cpu_report, brief, compare, dist, summarize  # noqa: E402  # the worker imports TRL's experimental async GRPO on purpose

SYSTEM = ("You are a software engineering agent. You can run shell commands with the `bash` tool and edit files. "
          "Work step by step: inspect the repository, find the bug, fix it, run the tests. ") * 6
TASK = ("The function `parse_range` in `src/ranges.py` returns an empty list when the upper bound equals the lower "
        "bound; it should return a single-element list. Fix it and make sure the tests in tests/test_ranges.py pass.")
TOOL_RESULT = "\n".join(f"{i:4d}    def helper_{i}(value):  # returns the value unchanged\n            return value"
                        for i in range(12))
MODES = ("raw", "raw-tokens", "gated")
DEFAULT_MODES = ["raw", "raw-tokens", "gated", "raw-tokens", "raw"]
MIN_MODE_S = 10.0  # a mode is not started with less time than this left before the deadline


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="vLLM base URL (no /v1).")
    parser.add_argument("--model", default="policy", help="Served model name.")
    parser.add_argument("--model-dir", required=True, help="Served model directory (its tokenizer and template).")
    parser.add_argument("--chat-template", default=None,
                        help="Training template (path or jinja) as the worker would take it; default: resolved.")
    parser.add_argument("--concurrency", type=int, default=64, help="Rollouts (agents) in flight in every mode.")
    parser.add_argument("--rollouts", type=int, default=128, help="Rollouts per mode.")
    parser.add_argument("--group", type=int, default=8, help="Rollouts per GRPO group (gated mode).")
    parser.add_argument("--turns", type=int, default=4, help="Chat turns per rollout.")
    parser.add_argument("--max-tokens", type=int, default=128, help="Sampled tokens per turn.")
    parser.add_argument("--raw-logprobs", action="store_true",
                        help="Raw chat asks for logprobs too, as every gated turn does (isolates vLLM's logprob cost).")
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES,
                        help="Modes in order (the default brackets gated with raw-tokens and both with raw, against "
                             "drift).")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="Bound on each mode.")
    parser.add_argument("--deadline-s", type=float, default=200.0,
                        help="Bound on the whole run: a mode gets at most what is left, and is skipped with less "
                             f"than {MIN_MODE_S:.0f} s left.")
    parser.add_argument("--stall-ms", type=float, default=50.0,
                        help="An event-loop lag at least this long counts as a stall (and its stack is sampled).")
    parser.add_argument("--out", default="gate_vs_raw.json", help="Where the JSON report goes.")
    return parser


# -- statistics --------------------------------------------------------------------------------------------------


# -- agents ----------------------------------------------------------------------------------------------------------


def initial_messages() -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK}]


async def chat_agent(session, base_url: str, api_key: str, model: str, turns: int, max_tokens: int,
                     sink: list[dict], logprobs: bool = False) -> None:
    """One rollout over a chat endpoint (the engine's own, or the gate): `turns` calls, our replies echoed back, a
    fixed tool result after each. Per turn, appended to `sink`: latency, prompt and sampled tokens (from `usage`)."""
    messages = initial_messages()
    for turn in range(turns):
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 1.0}
        if logprobs:  # --raw-logprobs: raw chat pays vLLM's logprob cost too (every gated turn asks for them)
            body["logprobs"] = True
        started = time.perf_counter()
        async with session.post(f"{base_url.rstrip('/')}/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {api_key}"}) as response:
            reply = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {str(reply)[:300]}")
        latency = time.perf_counter() - started
        usage = reply.get("usage") or {}
        sink.append({"turn": turn, "latency_s": latency, "prompt_tokens": usage.get("prompt_tokens"),
                     "completion_tokens": usage.get("completion_tokens")})
        content = reply["choices"][0]["message"].get("content") or ""
        messages += [{"role": "assistant", "content": content}, {"role": "user", "content": TOOL_RESULT}]


async def token_agent(engine, assembler, tokenizer, max_model_len: int, turns: int, max_tokens: int,
                      sink: list[dict]) -> int:
    """One rollout rendered and sampled the worker's way, without the gate and the worker: the conversation is
    assembled token-exactly (held ids + bridge), sent through `EngineClient.complete` with the worker's sampling,
    parsed and committed as `TurnServer` does. Per turn, appended to `sink`: latency, the engine's share, prompt and
    sampled tokens. Returns the conversation's forks (0 when every echo matched, as in the gated mode)."""
    from rollout_worker.serving.parsing import parse_completion

    conversation = assembler.new_conversation()
    messages = initial_messages()
    for turn in range(turns):
        started = time.perf_counter()
        plan = conversation.prepare(messages, None)
        prompt_len = len(plan.prompt_ids)
        sent = time.perf_counter()
        completion = await engine.complete(plan.prompt_ids, max_tokens=min(max_tokens, max_model_len - prompt_len),
                                           temperature=1.0, top_p=1.0, top_k=-1)
        answered = time.perf_counter()
        parsed = parse_completion(tokenizer, completion.token_ids, plan.prompt_ids, None)
        conversation.commit(plan, completion.token_ids, completion.logprobs, parsed.message, completion.finish_reason,
                            0)
        sink.append({"turn": turn, "latency_s": time.perf_counter() - started, "engine_s": answered - sent,
                     "prompt_tokens": prompt_len, "completion_tokens": len(completion.token_ids)})
        content = parsed.message.get("content") or ""
        messages += [{"role": "assistant", "content": content}, {"role": "user", "content": TOOL_RESULT}]
    return conversation.stats["forks"]


# -- modes -----------------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.agents = AgentLoop()
        self._chat_probe: str | None | bool = False  # False: not probed yet; None: available; str: why not
        self._serving = None

    def serving(self):
        """(tokenizer, training template, assembler), loaded once, outside every timed window."""
        if self._serving is None:
            from transformers import AutoTokenizer

            from rollout_worker.serving.assembly import PromptAssembler
            from rollout_worker.serving.chat_template import resolve_training_template
            from rollout_worker.serving.parsing import parsing_tokenizer
            from rollout_worker.trajectory import sample_type

            tokenizer = AutoTokenizer.from_pretrained(self.args.model_dir)
            template = resolve_training_template(tokenizer, self.args.chat_template)
            assembler = PromptAssembler(tokenizer, template)
            parsing_tokenizer(tokenizer)  # the parser's tokenizer copy, made once and cached
            # TRL's sample type (its import pulls TRL's async GRPO package, and vLLM where installed: seconds). A
            # trainer imports it long before its worker starts; `RolloutWorker.start` would, inside the timed window.
            sample_type()
            self._serving = (tokenizer, template, assembler)
        return self._serving

    def chat_unavailable(self) -> str | None:
        """Why the engine's `/v1/chat/completions` cannot be benchmarked (None: it can)."""
        if self._chat_probe is False:
            import urllib.error
            import urllib.request

            url = f"{self.args.url.rstrip('/')}/v1/chat/completions"
            request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
            try:  # an empty body: vLLM answers 400 (no messages), an engine without the route 404 or 405
                with urllib.request.urlopen(request, timeout=30):
                    status, text = 200, ""
            except urllib.error.HTTPError as error:
                status, text = error.code, error.read(300).decode(errors="replace")
            except (urllib.error.URLError, OSError) as error:
                self._chat_probe = f"{url} is unreachable: {error}"
                return self._chat_probe
            self._chat_probe = (f"the engine at {self.args.url} has no /v1/chat/completions (HTTP {status}: "
                                f"{text.strip()[:120]}; the local CPU engine serves token-level /v1/completions "
                                "only): raw chat needs vLLM" if status in (404, 405) else None)
        return self._chat_probe

    def _watch(self, name: str, loop, thread) -> LoopWatch:
        return LoopWatch(name, loop, thread, self.args.stall_ms / 1000)

    # raw: the engine's chat endpoint
    def run_raw(self, timeout_s: float) -> dict:
        import aiohttp

        args = self.args
        why = self.chat_unavailable()
        if why:
            return {"mode": "raw", "skipped": why}
        sink: list[dict] = []

        async def all_rollouts():
            semaphore = asyncio.Semaphore(args.concurrency)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
                async def one():
                    async with semaphore:
                        await chat_agent(session, f"{args.url.rstrip('/')}/v1", "raw", args.model, args.turns,
                                         args.max_tokens, sink, logprobs=args.raw_logprobs)
                return await asyncio.gather(*(one() for _ in range(args.rollouts)), return_exceptions=True)

        return self._timed("raw", all_rollouts(), timeout_s, sink)

    # raw-tokens: the worker's rendering and request, from the agents' loop
    def run_raw_tokens(self, timeout_s: float) -> dict:
        from rollout_worker.serving.engine_client import EngineClient

        args = self.args
        tokenizer, _, assembler = self.serving()
        sink: list[dict] = []

        async def all_rollouts():
            semaphore = asyncio.Semaphore(args.concurrency)
            # As the worker: one client (one aiohttp session and its connection pool) for every rollout.
            async with EngineClient(args.url, args.model, timeout_s=600.0) as engine:
                max_model_len = await engine.max_model_len()

                async def one():
                    async with semaphore:
                        return await token_agent(engine, assembler, tokenizer, max_model_len, args.turns,
                                                 args.max_tokens, sink)
                return await asyncio.gather(*(one() for _ in range(args.rollouts)), return_exceptions=True)

        return self._timed("raw-tokens", all_rollouts(), timeout_s, sink)

    def _timed(self, name: str, coro, timeout_s: float, sink: list[dict]) -> dict:
        watch = self._watch("agents", self.agents.loop, self.agents.thread)
        gc_watch = GcWatch(self.args.stall_ms / 1000)
        process_cpu = time.process_time()
        started = time.perf_counter()
        timed_out = False
        try:
            results = self.agents.run(coro, timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            results, timed_out = [], True
        finally:
            wall = time.perf_counter() - started
            process_cpu = time.process_time() - process_cpu
            stalls = watch.stop()
            gc_report = gc_watch.stop()
        stats = list(sink)
        errors = [repr(r)[:300] for r in results if isinstance(r, BaseException)]
        report = summarize(name, wall, stats, errors)
        report["timed_out"] = timed_out
        if name == "raw-tokens":
            report["forks"] = sum(r for r in results if isinstance(r, int))
        report.update(_cpu_report({"agents": watch}, process_cpu, len(stats)))
        report["loop_stalls"] = {"agents": stalls}
        report["gc"] = gc_report
        return report

    # gated: the whole serving path inside a RolloutWorker
    def run_gated(self, timeout_s: float) -> dict:
        from intercept_common.rollout_record import RolloutRecord
        from rollout_worker.config import WorkerConfig
        from rollout_worker.types import Task
        from rollout_worker.worker import RolloutWorker

        args = self.args
        tokenizer, template, _ = self.serving()
        groups = max(1, args.rollouts // args.group)
        tasks = [Task(instance_id=f"bench{i}", repo="demo/repo", base_commit="0" * 40, problem_statement=TASK)
                 for i in range(groups)]
        config = WorkerConfig(served_model_name=args.model, num_generations=args.group, max_inflight=args.concurrency,
                              max_groups=groups, temperature=1.0, max_tokens_per_turn=args.max_tokens,
                              max_turns=args.turns + 1, seed=0, keep_trajectories=True,
                              drop_zero_variance_groups=False, episode_timeout_s=timeout_s)
        runner = GatedAgents(args, self.agents)
        worker = RolloutWorker(config, tasks=tasks, episode_runner=runner, tokenizer=tokenizer,
                               chat_template=template, engine_url=args.url)
        records, samples, timed_out = [], 0, False
        first_record_s = None
        watches = {"agents": self._watch("agents", self.agents.loop, self.agents.thread)}
        gc_watch = GcWatch(args.stall_ms / 1000)
        process_cpu = time.process_time()
        started = time.perf_counter()
        try:
            worker.start()
            watches["worker"] = self._watch("worker", worker._loop, worker._thread)
            worker.update_model_version(1)
            while not worker.finished.is_set():
                if time.perf_counter() - started > timeout_s:
                    timed_out = True
                    break
                samples += len(drain(worker.rollout_buffer))
                new = drain(worker.trajectories)
                if new and first_record_s is None:
                    first_record_s = time.perf_counter() - started
                records += new
                worker.finished.wait(0.02)
        finally:
            wall = time.perf_counter() - started
            process_cpu = time.process_time() - process_cpu
            stalls = {name: watch.stop() for name, watch in watches.items()}
            gc_report = gc_watch.stop()
            worker.stop()
            if runner.session is not None:
                self.agents.submit(runner.session.close()).result(timeout=10)
        samples += len(drain(worker.rollout_buffer))
        records += drain(worker.trajectories)
        records = [RolloutRecord.from_json(r) for r in records]
        turn_stats, unpaired = runner.pair_with(records)
        sampled = sum(r.drift.sampled_tokens for r in records if r.drift is not None)
        report = summarize("gated", wall, turn_stats, runner.errors, sampled_tokens=sampled)
        worker_overhead = [x for r in records for x in r.turn_timings.get("overhead_s", [])]
        report.update(_cpu_report(watches, process_cpu, len(turn_stats)))
        report.update({
            "timed_out": timed_out, "records": len(records), "samples": samples,
            "statuses": sorted({r.status for r in records}),
            "forks": sum(r.forks for r in records),
            "usage_completion_tokens": sum(s.get("completion_tokens") or 0 for s in turn_stats),
            "rollouts_without_engine_latency": unpaired,
            # TurnServer's own time per turn (assembly, parse, reply; the engine call excluded), from the records.
            "turn_server_overhead_s": dist(worker_overhead, 5),
            "first_record_at_s": first_record_s and round(first_record_s, 2),
            "loop_stalls": stalls,
            "gc": gc_report,
        })
        return report


class GatedAgents:
    """Episode runner for the worker: the same chat agent, run on the agents' loop against the rollout's gate."""

    def __init__(self, args, agents: AgentLoop):
        self.args, self.agents = args, agents
        self.rewards = itertools.cycle([1.0, 0.0])
        self.turns_by_rollout: dict[str, list[dict]] = {}
        self.errors: list[str] = []
        self.session = None

    async def _session(self):
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                 timeout=aiohttp.ClientTimeout(total=600))
        return self.session

    async def _agent(self, endpoint, sink: list[dict]):
        await chat_agent(await self._session(), endpoint.base_url, endpoint.api_key, endpoint.model,
                         self.args.turns, self.args.max_tokens, sink)

    async def run(self, task, endpoint, stop):
        from rollout_worker.outcomes import EpisodeStatus
        from rollout_worker.types import EpisodeResult

        sink = self.turns_by_rollout.setdefault(endpoint.rollout_id, [])
        future = self.agents.submit(self._agent(endpoint, sink))
        try:
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # the worker stopped (timeout): the agent stops too
            raise
        except Exception as error:  # noqa: BLE001
            self.errors.append(repr(error)[:300])
            return EpisodeResult(status=EpisodeStatus.AGENT_ERROR, reward=None, scorable=False,
                                 agent_output=repr(error)[:500], exit_code=1)
        return EpisodeResult(status=EpisodeStatus.COMPLETED, reward=next(self.rewards), resolved=False,
                             agent_output="", exit_code=0)

    def pair_with(self, records: list) -> tuple[list[dict], int]:
        """Every agent turn, with the engine latency the worker measured for it where the record pairs one to one
        (`records`: `RolloutRecord`s)."""
        engine_by_rollout = {r.rollout_id: r.turn_timings.get("engine_s") for r in records}
        paired, unpaired = [], 0
        for rollout_id, stats in list(self.turns_by_rollout.items()):
            engine = engine_by_rollout.get(rollout_id)
            if engine is None or len(engine) != len(stats):
                unpaired += 1
                paired += stats
                continue
            paired += [{**s, "engine_s": e} for s, e in zip(stats, engine)]
        return paired, unpaired


def drain(q: queue.Queue) -> list:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


# -- the run -----------------------------------------------------------------------------------------------------


def write_report(path: str, report: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(report, handle, indent=1)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    bench = Bench(args)
    runs: list[dict] = []
    report = {"args": vars(args), "runs": runs, "summary": {}}
    try:
        if {"raw-tokens", "gated"} & set(args.modes):
            try:  # the tokenizer, the template and TRL's imports: before the deadline's clock is read by any mode
                bench.serving()
            except Exception as error:  # noqa: BLE001 - the modes that need it crash with it below
                print(f"preparation failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            report["preparation_s"] = round(time.perf_counter() - started, 1)
        for mode in args.modes:
            left = args.deadline_s - (time.perf_counter() - started)
            if left < MIN_MODE_S:
                why = f"deadline: {left:.1f} s left of --deadline-s {args.deadline_s:g}"
                runs.append({"mode": mode, "skipped": why})
            else:
                runner = {"raw": bench.run_raw, "raw-tokens": bench.run_raw_tokens, "gated": bench.run_gated}[mode]
                try:
                    runs.append(runner(min(args.timeout_s, left)))
                except Exception as error:  # noqa: BLE001 - the report must still be written
                    runs.append({"mode": mode, "crash": f"{type(error).__name__}: {error}"[:500]})
            print(brief(runs[-1]), flush=True)
            report["summary"] = compare(runs, MODES)
            report["total_s"] = round(time.perf_counter() - started, 1)
            write_report(args.out, report)
    finally:
        bench.agents.close()
    for key, value in report["summary"].items():
        print(f"{key}: {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
