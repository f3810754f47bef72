"""Gate overhead: what the interception gate + worker serving path adds to every agent turn.

Three processes: the engine stand-in (answers at once), the serving path under test (gate + one `TurnServer` per
rollout with the real assembler, parser and `EngineClient`; `bench/gate_process.py`), and the agents (async clients
playing SWE episodes with tool calls, tool results and echoed replies; `bench/agent_traffic.py`).

For 1, 16 and 256 concurrent rollouts the same agents run, in this one run, against:
  direct    — the stand-in's `/v1/chat/completions` (one hop, nothing of ours: the baseline);
  gate-only — the gate answering a canned reply (its HTTP path alone: auth, body, validation, queue, reply);
  gated     — the gate + TurnServer: assembles token ids, calls the stand-in's `/v1/completions`, parses, answers.
Modes:
  saturated — agents call again as soon as answered: turns/s, and each process's CPU ms per turn. 1000 / (gate CPU
              ms per turn) is what one gate serves on one core of its own; on this 2-core box it shares them.
  paced     — agents idle between turns (uniform around N / --paced-rate s, as real agents run tools and wait for
              generation): latency per turn; added = gated minus direct percentile.
Agents are raw HTTP clients (aiohttp + orjson, the same bodies) for these tables, because the `openai` SDK's own
client CPU (tens of ms per call at 30-message histories) would saturate the box before the gate; a last table runs
real async `openai` SDK agents, paced at --sdk-rate, through the same paths.

    python bench/gate_overhead.py [--quick] [--concurrency 1 16 256] [--uvloop]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agent_traffic import TOOLS, TrafficSpec, run_client_process  # noqa: E402
from bench.concurrency import wait_for_turns  # noqa: E402
from bench.gate_process import run_gate_process  # noqa: E402
from bench.processes import Child  # noqa: E402
from bench.report import exit_on_sigterm, machine_line, percentile, table, verdict  # noqa: E402
from bench.standin_engine import canned_tool_call_turn, run_standin_process  # noqa: E402

TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_TURNS_PER_S = 2000.0
EPISODE_TURNS = 30


@dataclass
class Run:
    concurrency: int
    path: str  # "direct" | "gate-only" | "gated"
    mode: str  # "saturated" | "paced"
    client: str  # "raw" | "openai"
    turns_per_s: float
    p50_ms: float
    p99_ms: float
    samples: int
    errors: int
    cpu_ms_per_turn: dict  # process name -> CPU ms per turn in the window
    worker_overhead_ms: tuple[float, float] = (float("nan"), float("nan"))  # TurnServer's own p50/p99
    forks: int = 0


class Bench:
    def __init__(self, args):
        self.args = args
        from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

        turn = canned_tool_call_turn(load_qwen3_tokenizer(), TOOLS)
        self.standin = Child("engine-standin", run_standin_process, turn)
        self.gate = Child("gate", run_gate_process, self.standin.info["url"],
                          {"uvloop": args.uvloop, "canned_message": turn.message})
        self.clients = Child("agents", run_client_process)

    def close(self) -> None:
        for child in (self.clients, self.gate, self.standin):
            child.close()

    def run(self, concurrency: int, path: str, mode: str, client: str = "raw") -> Run:
        args = self.args
        rate = args.sdk_rate if client == "openai" else args.paced_rate
        think = 0.0 if mode == "saturated" else concurrency / rate
        # Enough fresh rollouts that no agent reuses one within the run (a reuse would be a fork, counted).
        episodes = concurrency + int((args.duration + args.warmup) * 1500) // EPISODE_TURNS
        if path == "direct":
            endpoints = [(self.standin.info["url"] + "/v1", "none")]
        else:
            endpoints = self.gate.request("open", episodes, "canned" if path == "gate-only" else "turns")
        spec = TrafficSpec(endpoints=endpoints, agents=concurrency, think_s=think, episode_turns=EPISODE_TURNS,
                           first_call_spread_s=min(think, 2.0), seed=concurrency, client=client)
        processes = {"gate": self.gate, "stand-in": self.standin, "agents": self.clients}
        self.clients.request("start", spec)
        try:
            # Every agent's first call renders its whole prompt (a new row); measure once all of them are past it.
            wait_for_turns(self.clients, concurrency, 120 + concurrency)
            time.sleep(args.warmup)
            before = {name: child.request("snapshot") for name, child in processes.items()}
            time.sleep(args.duration)
            after = {name: child.request("snapshot") for name, child in processes.items()}
            stats = self.clients.request("stats", before["agents"]["at"], after["agents"]["at"])
        finally:
            self.clients.request("halt")
        closed = self.gate.request("close_all") if path != "direct" else None
        latencies = stats["latencies"]
        window = after["agents"]["at"] - before["agents"]["at"]
        turns = after["agents"]["turns_total"] - before["agents"]["turns_total"]
        cpu = {name: 1e3 * (after[name]["cpu_s"] - before[name]["cpu_s"]) / max(turns, 1) for name in processes
               if path != "direct" or name != "gate"}
        run = Run(concurrency, path, mode, client, turns / window, 1e3 * percentile(latencies, 50),
                  1e3 * percentile(latencies, 99), len(latencies), len(stats["errors"]), cpu)
        if stats["errors"]:
            print(f"  ! {len(stats['errors'])} errors, first: {stats['errors'][0]}", file=sys.stderr)
        if closed is not None and path == "gated":
            overhead = closed["overhead_s"]
            run.worker_overhead_ms = (1e3 * percentile(overhead, 50), 1e3 * percentile(overhead, 99))
            run.forks = closed["forks"]
        print(f"... {concurrency:>4} rollouts {path:>9} {mode:>9} {client:>6}: {run.turns_per_s:7.0f} turns/s, "
              f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms", file=sys.stderr, flush=True)
        return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows (under 3 minutes on 2 cores)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--duration", type=float, default=None, help="measurement window per run, seconds")
    parser.add_argument("--warmup", type=float, default=None, help="unmeasured seconds before each window")
    parser.add_argument("--paced-rate", type=float, default=50.0,
                        help="paced mode: offered turns/s over all rollouts (each idles ~N/rate s between turns)")
    parser.add_argument("--sdk-rate", type=float, default=10.0, help="offered turns/s of the openai-SDK agents")
    parser.add_argument("--sdk-concurrency", type=int, nargs="+", default=None,
                        help="rollout counts of the openai-SDK table (default: all; --quick: those <= 16)")
    parser.add_argument("--uvloop", action="store_true", help="run the gate process on uvloop")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    args.duration = args.duration or (3.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 3.0)
    if args.sdk_concurrency is None:
        args.sdk_concurrency = [n for n in args.concurrency if n <= 16 or not args.quick]

    started = time.perf_counter()
    before_line = machine_line()
    bench = Bench(args)
    runs: list[Run] = []
    try:
        for n in args.concurrency:
            for path in ("direct", "gate-only", "gated"):
                runs.append(bench.run(n, path, "saturated"))
            for path in ("direct", "gated"):
                runs.append(bench.run(n, path, "paced"))
            if n in args.sdk_concurrency:
                for path in ("direct", "gated"):
                    runs.append(bench.run(n, path, "paced", client="openai"))
    finally:
        bench.close()
    print(before_line + "  (before)")
    print(machine_line() + "  (after)")

    def find(n, path, mode, client="raw") -> Run:
        return next(r for r in runs if (r.concurrency, r.path, r.mode, r.client) == (n, path, mode, client))

    print(f"\nThroughput, saturated raw-HTTP agents (all three processes share the box), window {args.duration:g} s"
          f"{', gate on uvloop' if args.uvloop else ''}")
    rows = []
    for n in args.concurrency:
        d, o, g = (find(n, p, "saturated") for p in ("direct", "gate-only", "gated"))
        rows.append([n, d.turns_per_s, o.turns_per_s, g.turns_per_s, f"{g.turns_per_s / d.turns_per_s:.2f}x",
                     o.cpu_ms_per_turn["gate"], g.cpu_ms_per_turn["gate"], 1e3 / g.cpu_ms_per_turn["gate"],
                     g.cpu_ms_per_turn["agents"], g.cpu_ms_per_turn["stand-in"]])
    print(table(["rollouts", "direct turns/s", "gate-only turns/s", "gated turns/s", "gated/direct",
                 "gate-only CPU ms/turn", "gated CPU ms/turn", "1-core gate cap turns/s", "agents CPU ms/turn",
                 "stand-in CPU ms/turn"], rows))

    def latency_table(client: str, rate: float) -> None:
        rows = []
        for n in args.concurrency if client == "raw" else args.sdk_concurrency:
            d, g = find(n, "direct", "paced", client), find(n, "gated", "paced", client)
            rows.append([n, g.turns_per_s, d.p50_ms, d.p99_ms, g.p50_ms, g.p99_ms, g.p50_ms - d.p50_ms,
                         g.p99_ms - d.p99_ms, g.worker_overhead_ms[0], g.worker_overhead_ms[1], g.samples,
                         g.errors + d.errors, g.forks])
        print(table(["rollouts", "turns/s", "direct p50", "direct p99", "gated p50", "gated p99", "added p50 ms",
                     "added p99 ms", "worker-code p50", "worker-code p99", "samples", "errors", "forks"], rows))

    print(f"\nLatency per turn (ms), paced raw-HTTP agents, {args.paced_rate:g} turns/s offered in total")
    latency_table("raw", args.paced_rate)
    print(f"\nLatency per turn (ms), paced async openai-SDK agents, {args.sdk_rate:g} turns/s offered in total")
    latency_table("openai", args.sdk_rate)
    sdk_cpu = [find(n, "direct", "paced", "openai").cpu_ms_per_turn["agents"] for n in args.sdk_concurrency]
    print(f"(openai SDK client CPU per call: {min(sdk_cpu, default=0):.1f}-{max(sdk_cpu, default=0):.1f} ms; worker-code: the TurnServer's "
          "own time per turn — assembly, parse, commit — HTTP and engine call excluded)")

    top = max(args.concurrency)
    d, g = find(top, "direct", "paced"), find(top, "gated", "paced")
    print()
    print(verdict(f"added p50 at {top} rollouts", g.p50_ms - d.p50_ms, TARGET_ADDED_P50_MS, "ms"))
    print(verdict(f"added p99 at {top} rollouts", g.p99_ms - d.p99_ms, TARGET_ADDED_P99_MS, "ms"))
    best = max(find(n, "gated", "saturated").turns_per_s for n in args.concurrency)
    print(verdict("turns/s through one gate on this box (agents and stand-in share its 2 cores)", best,
                  TARGET_TURNS_PER_S, "turns/s", higher_is_better=True))
    capacity = max(1e3 / find(n, "gated", "saturated").cpu_ms_per_turn["gate"] for n in args.concurrency)
    print(verdict("turns/s one gate serves on one core of its own (1000 / gate CPU ms per turn)", capacity,
                  TARGET_TURNS_PER_S, "turns/s", higher_is_better=True))
    print(f"(wall time {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
