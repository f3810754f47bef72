"""Measuring a bench mode (gpu/bench_gate_vs_raw.py): latency distributions, the mode's summary line, the agents'
private event loop, event-loop stalls with the stacks that caused them, garbage-collector pauses, CPU per turn; the
comparison of modes and the one-line brief of each."""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = str(Path(__file__).resolve().parent.parent) + "/"


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


def _cpu_report(watches: dict[str, LoopWatch], process_cpu_s: float, turns: int) -> dict:
    """CPU milliseconds per agent turn: each watched loop's thread, and the whole process (every thread)."""
    per_turn = {name: round(1000 * cpu / max(turns, 1), 3) for name, w in watches.items()
                if (cpu := w.cpu_s()) is not None}
    per_turn["process"] = round(1000 * process_cpu_s / max(turns, 1), 3)
    return {"cpu_ms_per_turn": per_turn}


# -- the report ------------------------------------------------------------------------------------------------------


def _mean(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def compare(runs: list[dict], modes: tuple[str, ...]) -> dict:
    """gated / raw, gated / raw-tokens, raw-tokens / raw (repeated modes averaged; every run listed for the noise)."""
    done = {mode: [r for r in runs if r["mode"] == mode and r.get("turns")] for mode in modes}
    summary: dict = {"tokens_per_s_runs": {mode: [r["tokens_per_s"] for r in done[mode]] for mode in modes},
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
