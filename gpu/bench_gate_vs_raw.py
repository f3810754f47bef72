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
import collections
import gc
import itertools
import json
import os
import queue
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the worker imports TRL's experimental async GRPO on purpose

SYSTEM = ("You are a software engineering agent. You can run shell commands with the `bash` tool and edit files. "
          "Work step by step: inspect the repository, find the bug, fix it, run the tests. ") * 6
TASK = ("The function `parse_range` in `src/ranges.py` returns an empty list when the upper bound equals the lower "
        "bound; it should return a single-element list. Fix it and make sure the tests in tests/test_ranges.py pass.")
TOOL_RESULT = "\n".join(f"{i:4d}    def helper_{i}(value):  # returns the value unchanged\n            return value"
                        for i in range(12))
MODES = ("raw", "raw-tokens", "gated")
DEFAULT_MODES = ["raw", "raw-tokens", "gated", "raw-tokens", "raw"]
MIN_MODE_S = 10.0  # a mode is not started with less time than this left before the deadline
REPO = str(Path(__file__).resolve().parent.parent) + "/"


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


def dist(values: list[float], digits: int = 4) -> dict | None:
    """mean / p50 / p90 / p99 / max of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], digits)

    return {"mean": round(statistics.fmean(ordered), digits), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
            "max": round(ordered[-1], digits), "n": len(ordered)}


def summarize(name: str, wall_s: float, turn_stats: list[dict], errors: list[str],
              sampled_tokens: int | None = None) -> dict:
    """The mode's line: throughput, latency seen by the agent, prompt sizes, engine vs the rest where known."""
    latencies = [s["latency_s"] for s in turn_stats]
    tokens = sampled_tokens if sampled_tokens is not None else sum(s.get("completion_tokens") or 0 for s in turn_stats)
    latency = dist(latencies)
    prompts = [s["prompt_tokens"] for s in turn_stats if s.get("prompt_tokens") is not None]
    by_turn = collections.defaultdict(list)
    for s in turn_stats:
        if s.get("prompt_tokens") is not None:
            by_turn[s["turn"]].append(s["prompt_tokens"])
    report = {
        "mode": name, "wall_s": round(wall_s, 3), "turns": len(turn_stats), "errors": len(errors),
        "sampled_tokens": tokens, "turns_per_s": round(len(turn_stats) / wall_s, 2) if wall_s > 0 else None,
        "tokens_per_s": round(tokens / wall_s, 1) if wall_s > 0 else None,
        "latency_mean_s": latency and latency["mean"], "latency_p50_s": latency and latency["p50"],
        "latency_p90_s": latency and latency["p90"], "latency_s": latency,
        "prompt_tokens_mean": round(statistics.fmean(prompts), 1) if prompts else None,
        "prompt_tokens_mean_by_turn": [round(statistics.fmean(by_turn[t]), 1) for t in sorted(by_turn)],
        "completion_tokens_mean": (round(statistics.fmean(s["completion_tokens"] for s in turn_stats), 1)
                                   if turn_stats and all(s.get("completion_tokens") is not None for s in turn_stats)
                                   else None),
        "first_errors": errors[:3],
    }
    engine = [s["engine_s"] for s in turn_stats if s.get("engine_s") is not None]
    if engine:
        report["engine_latency_s"] = dist(engine)
        report["overhead_s"] = dist([s["latency_s"] - s["engine_s"] for s in turn_stats
                                     if s.get("engine_s") is not None])
        report["turns_with_engine_latency"] = len(engine)
    return report


# -- threads, loops, stalls ----------------------------------------------------------------------------------------


class AgentLoop:
    """A private event loop in its own thread where every agent runs (every mode)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-agents", daemon=True)
        self.thread.start()

    def run(self, coro, timeout_s: float):
        """Run `coro` on the agents' loop, bounded by `timeout_s` there (cancelled, not left running)."""
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout_s), self.loop)
        try:
            return future.result(timeout=timeout_s + 30)
        except BaseException:
            future.cancel()
            raise

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _short(filename: str) -> str:
    for marker in ("site-packages/", REPO):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


class LoopWatch:
    """Lag of an event loop (a timer every `period_s`, how late it fires) and, while it lags past `stall_s`, the
    Python stack of the loop's thread, sampled by a thread of its own: what blocked the loop. The timer also reads
    the loop thread's CPU time (`time.thread_time` on that thread: no other thread's clock is touched)."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, thread: threading.Thread, stall_s: float,
                 period_s: float = 0.005):
        self.name, self.loop, self.thread = name, loop, thread
        self.stall_s, self.period_s = stall_s, period_s
        self.t0 = time.perf_counter()
        self.beat = self.t0
        self.max_lag = 0.0
        self.stalls: list[tuple[float, float]] = []  # (seconds since start, lag)
        self.stacks: collections.Counter = collections.Counter()
        self.samples = 0
        self.cpu_first: float | None = None
        self.cpu_last: float | None = None
        self._stop = threading.Event()
        try:
            loop.call_soon_threadsafe(self._tick, None)
        except RuntimeError:  # the loop is already closed
            self._stop.set()
        self._sampler = threading.Thread(target=self._sample, name=f"watch-{name}", daemon=True)
        self._sampler.start()

    def _tick(self, expected: float | None) -> None:
        now = time.perf_counter()
        self.cpu_last = time.thread_time()
        if self.cpu_first is None:
            self.cpu_first = self.cpu_last
        if expected is not None:
            lag = max(0.0, now - expected)
            self.max_lag = max(self.max_lag, lag)
            if lag >= self.stall_s:
                self.stalls.append((expected - self.t0, lag))
        self.beat = now
        if not self._stop.is_set():
            self.loop.call_later(self.period_s, self._tick, now + self.period_s)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            if time.perf_counter() - self.beat < self.stall_s:
                continue
            frame = sys._current_frames().get(self.thread.ident)
            if frame is None:
                continue
            entries = traceback.extract_stack(frame)
            # The innermost frames (what is running) and the innermost of ours (who asked for it).
            ours = [e for e in entries[:-6] if e.filename.startswith(REPO) and "/.venv" not in e.filename][-3:]
            shown = [*reversed(entries[-6:]), *(["..."] if ours else []), *reversed(ours)]
            self.stacks[" <- ".join(e if isinstance(e, str) else f"{_short(e.filename)}:{e.lineno} {e.name}"
                                    for e in shown)] += 1
            self.samples += 1

    def cpu_s(self) -> float | None:
        """CPU seconds the loop's thread used while watched (up to its last tick)."""
        return None if self.cpu_first is None else self.cpu_last - self.cpu_first

    def stop(self) -> dict:
        self._stop.set()
        self._sampler.join(timeout=5)
        worst = sorted(self.stalls, key=lambda s: -s[1])[:5]
        return {"max_lag_ms": round(1000 * self.max_lag, 1), "stalls": len(self.stalls),
                "stalled_s": round(sum(lag for _, lag in self.stalls), 3),
                "worst": [{"at_s": round(at, 2), "lag_ms": round(1000 * lag, 1)} for at, lag in worst],
                "stall_stacks": [{"samples": n, "stack": stack} for stack, n in self.stacks.most_common(3)]}


class GcWatch:
    """The garbage collector's pauses while a mode runs: a collection holds the GIL, so every loop waits for it (a
    full one walks every tracked object of the process: torch, transformers and TRL make that ~0.5 M)."""

    def __init__(self, stall_s: float):
        self.stall_s = stall_s
        self.t0 = time.perf_counter()
        self.count = collections.Counter()
        self.total = collections.Counter()
        self.longest: list[tuple[float, float, int]] = []  # (at, pause, generation) of pauses >= stall_s
        self.max_pause = 0.0
        self._began: float | None = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._began = now
            return
        if self._began is None:
            return
        pause, generation, self._began = now - self._began, info.get("generation", -1), None
        self.count[generation] += 1
        self.total[generation] += pause
        self.max_pause = max(self.max_pause, pause)
        if pause >= self.stall_s:
            self.longest.append((now - pause - self.t0, pause, generation))

    def stop(self) -> dict:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        return {"collections": {str(g): n for g, n in sorted(self.count.items())},
                "paused_s": {str(g): round(t, 4) for g, t in sorted(self.total.items())},
                "max_pause_ms": round(1000 * self.max_pause, 1),
                "long_pauses": [{"at_s": round(at, 2), "pause_ms": round(1000 * p, 1), "generation": g}
                                for at, p, g in self.longest[:5]]}


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


def _cpu_report(watches: dict[str, LoopWatch], process_cpu_s: float, turns: int) -> dict:
    """CPU milliseconds per agent turn: each watched loop's thread, and the whole process (every thread)."""
    per_turn = {name: round(1000 * cpu / max(turns, 1), 3) for name, w in watches.items()
                if (cpu := w.cpu_s()) is not None}
    per_turn["process"] = round(1000 * process_cpu_s / max(turns, 1), 3)
    return {"cpu_ms_per_turn": per_turn}


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
        turn_stats, unpaired = runner.pair_with(records)
        sampled = sum(r["drift"]["sampled_tokens"] for r in records)
        report = summarize("gated", wall, turn_stats, runner.errors, sampled_tokens=sampled)
        worker_overhead = [x for r in records for x in (r.get("turn_timings") or {}).get("overhead_s", [])]
        report.update(_cpu_report(watches, process_cpu, len(turn_stats)))
        report.update({
            "timed_out": timed_out, "records": len(records), "samples": samples,
            "statuses": sorted({r["status"] for r in records}),
            "forks": sum(r["drift"]["forks"] for r in records),
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

    def pair_with(self, records: list[dict]) -> tuple[list[dict], int]:
        """Every agent turn, with the engine latency the worker measured for it where the record pairs one to one."""
        engine_by_rollout = {r["rollout_id"]: (r.get("turn_timings") or {}).get("engine_s") for r in records}
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


def _mean(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def compare(runs: list[dict]) -> dict:
    """gated / raw, gated / raw-tokens, raw-tokens / raw (repeated modes averaged; every run listed for the noise)."""
    done = {mode: [r for r in runs if r["mode"] == mode and r.get("turns")] for mode in MODES}
    summary: dict = {"tokens_per_s_runs": {mode: [r["tokens_per_s"] for r in done[mode]] for mode in MODES},
                     "ratios": {}}
    for num, den in (("gated", "raw"), ("gated", "raw-tokens"), ("raw-tokens", "raw")):
        if done[num] and done[den]:
            summary["ratios"][f"{num}/{den}"] = {
                "tokens_per_s": round(_mean(done[num], "tokens_per_s") / _mean(done[den], "tokens_per_s"), 4),
                "turns_per_s": round(_mean(done[num], "turns_per_s") / _mean(done[den], "turns_per_s"), 4),
                "added_latency_per_turn_s": round(_mean(done[num], "latency_mean_s") - _mean(done[den],
                                                                                             "latency_mean_s"), 4)}
    ratios = summary["ratios"]
    if "gated/raw" in ratios:  # the target: gated >= 95 % of raw vLLM chat (keys of the earlier report kept)
        summary["gated_over_raw_tokens_per_s"] = ratios["gated/raw"]["tokens_per_s"]
        summary["target_met"] = ratios["gated/raw"]["tokens_per_s"] >= 0.95
    if "gated/raw-tokens" in ratios:  # what the gate + worker cost on the very same engine traffic
        summary["gate_and_worker_within_5pct"] = ratios["gated/raw-tokens"]["tokens_per_s"] >= 0.95
    summary["engine_latency_p50_p90_s"] = {mode: [[r["engine_latency_s"]["p50"], r["engine_latency_s"]["p90"]]
                                                  for r in done[mode] if r.get("engine_latency_s")]
                                           for mode in ("raw-tokens", "gated")}
    if done["gated"] and done["gated"][0].get("overhead_s"):
        summary["gated_overhead_per_turn_s"] = done["gated"][0]["overhead_s"]  # agent latency - engine latency
    if done["gated"]:
        summary["gated_worker_loop_max_lag_ms"] = (done["gated"][0]["loop_stalls"].get("worker") or {}).get(
            "max_lag_ms")
    return summary


def brief(run: dict) -> str:
    """One short line per mode for the console (the JSON report has everything)."""
    if "skipped" in run:
        return f"{run['mode']}: skipped: {run['skipped']}"
    if "turns" not in run:
        return json.dumps(run)
    parts = [f"{run['mode']}: {run['wall_s']:.1f} s, {run['turns']} turns, {run['errors']} errors",
             f"{run['tokens_per_s']} tok/s", f"latency mean/p50/p90 {run['latency_mean_s']}/{run['latency_p50_s']}/"
             f"{run['latency_p90_s']} s", f"prompt {run['prompt_tokens_mean']} tok"]
    if run.get("overhead_s"):
        engine, rest = run["engine_latency_s"], run["overhead_s"]
        parts.append(f"engine p50/p90 {engine['p50']}/{engine['p90']} s, rest mean/p50/p90/max {rest['mean']}/"
                     f"{rest['p50']}/{rest['p90']}/{rest['max']} s")
    lags = ", ".join(f"{name} {stall['max_lag_ms']}" for name, stall in run["loop_stalls"].items())
    return "; ".join([*parts, f"max loop lag ms: {lags}", f"max gc pause ms: {run['gc']['max_pause_ms']}"])


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
            report["summary"] = compare(runs)
            report["total_s"] = round(time.perf_counter() - started, 1)
            write_report(args.out, report)
    finally:
        bench.agents.close()
    for key, value in report["summary"].items():
        print(f"{key}: {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
