"""Gate shards: turns/s and added latency through 1 vs 2 gate processes, side by side in one run (issue #28).

Under `--cluster`, every rollout node holds its own gate shard and each rollout's URL names its node, so the gate tier
scales with processes, with no router in front. This measures that on one box: the same serving path as
bench/gate_overhead.py (`bench/gate_process.py`: gate + one `TurnServer` per rollout, real assembly, parsing and
`EngineClient`), the same engine stand-in and raw-HTTP agents (`bench/agent_traffic.py`), with the rollouts' endpoints
dealt round-robin over 1 or 2 gate processes.

  saturated — agents call again as soon as answered: turns/s (and each gate's CPU ms per turn);
  paced     — agents idle between turns at --paced-rate turns/s offered: latency per turn, added = gated - direct.

All processes share the box: on 2 cores the agents and the stand-in take CPU the second shard would need, so the
ratio here is a floor of what shards on cores of their own give.

    python bench/gate_shards.py [--quick] [--concurrency 16 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agent_traffic import TOOLS, TrafficSpec, run_client_process  # noqa: E402
from bench.concurrency import wait_for_turns  # noqa: E402
from bench.gate_overhead import EPISODE_TURNS  # noqa: E402
from bench.gate_process import run_gate_process  # noqa: E402
from bench.processes import Child  # noqa: E402
from bench.report import exit_on_sigterm, machine_line, percentile, table, verdict  # noqa: E402
from bench.standin_engine import canned_tool_call_turn, run_standin_process  # noqa: E402

TARGET_SPEEDUP = 1.7


def run_once(standin, gates, clients, args, shards: int, concurrency: int, mode: str) -> dict:
    """One window: `shards` gate processes (0: direct to the stand-in), `concurrency` agents."""
    think = 0.0 if mode == "saturated" else concurrency / args.paced_rate
    episodes = concurrency + int((args.duration + args.warmup) * 1500) // EPISODE_TURNS
    if shards == 0:
        endpoints = [(standin.info["url"] + "/v1", "none")]
    else:
        per_shard = [gate.request("open", -(-episodes // shards), "turns") for gate in gates[:shards]]
        endpoints = [ep for group in zip(*per_shard) for ep in group]  # alternate shards, rollout by rollout
    spec = TrafficSpec(endpoints=endpoints, agents=concurrency, think_s=think, episode_turns=EPISODE_TURNS,
                       first_call_spread_s=min(think, 2.0), seed=concurrency, client="raw")
    used = {f"gate-{i + 1}": gate for i, gate in enumerate(gates[:shards])}
    processes = {**used, "stand-in": standin, "agents": clients}
    clients.request("start", spec)
    try:
        wait_for_turns(clients, concurrency, 120 + concurrency)
        time.sleep(args.warmup)
        before = {name: child.request("snapshot") for name, child in processes.items()}
        time.sleep(args.duration)
        after = {name: child.request("snapshot") for name, child in processes.items()}
        stats = clients.request("stats", before["agents"]["at"], after["agents"]["at"])
    finally:
        clients.request("halt")
    for gate in used.values():
        gate.request("close_all")
    turns = after["agents"]["turns_total"] - before["agents"]["turns_total"]
    window = after["agents"]["at"] - before["agents"]["at"]
    latencies = stats["latencies"]
    gate_cpu = [1e3 * (after[name]["cpu_s"] - before[name]["cpu_s"]) / max(turns, 1) for name in used]
    result = {"shards": shards, "concurrency": concurrency, "mode": mode, "turns_per_s": turns / window,
              "p50_ms": 1e3 * percentile(latencies, 50), "p99_ms": 1e3 * percentile(latencies, 99),
              "errors": len(stats["errors"]), "gate_cpu_ms_per_turn": sum(gate_cpu)}
    print(f"... {concurrency:>4} rollouts {shards} shard(s) {mode:>9}: {result['turns_per_s']:7.0f} turns/s, "
          f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows (about 2 minutes on 2 cores)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--duration", type=float, default=None, help="measurement window per run, seconds")
    parser.add_argument("--warmup", type=float, default=None, help="unmeasured seconds before each window")
    parser.add_argument("--paced-rate", type=float, default=50.0, help="paced mode: offered turns/s in total")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    args.duration = args.duration or (3.0 if args.quick else 12.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

    started = time.perf_counter()
    before_line = machine_line()
    turn = canned_tool_call_turn(load_qwen3_tokenizer(), TOOLS)
    standin = Child("engine-standin", run_standin_process, turn)
    gates = [Child(f"gate-{i + 1}", run_gate_process, standin.info["url"], {"canned_message": turn.message})
             for i in range(2)]
    clients = Child("agents", run_client_process)
    runs = []
    try:
        for n in args.concurrency:
            for shards in (1, 2):  # alternating in the same run: the box's load hits both alike
                runs.append(run_once(standin, gates, clients, args, shards, n, "saturated"))
            for shards in (0, 1, 2):
                runs.append(run_once(standin, gates, clients, args, shards, n, "paced"))
    finally:
        for child in (clients, *gates, standin):
            child.close()
    print(before_line + "  (before)")
    print(machine_line() + "  (after)")

    def find(shards, n, mode):
        return next(r for r in runs if (r["shards"], r["concurrency"], r["mode"]) == (shards, n, mode))

    print(f"\nThroughput, saturated raw-HTTP agents, window {args.duration:g} s (every process shares the box)")
    rows = [[n, find(1, n, "saturated")["turns_per_s"], find(2, n, "saturated")["turns_per_s"],
             f"{find(2, n, 'saturated')['turns_per_s'] / find(1, n, 'saturated')['turns_per_s']:.2f}x",
             find(1, n, "saturated")["gate_cpu_ms_per_turn"], find(2, n, "saturated")["gate_cpu_ms_per_turn"]]
            for n in args.concurrency]
    print(table(["rollouts", "1 shard turns/s", "2 shards turns/s", "2 / 1", "1 shard gate CPU ms/turn",
                 "2 shards gate CPU ms/turn (sum)"], rows))
    print(f"\nLatency per turn (ms), paced at {args.paced_rate:g} turns/s offered")
    rows = []
    for n in args.concurrency:
        d = find(0, n, "paced")
        for shards in (1, 2):
            g = find(shards, n, "paced")
            rows.append([n, shards, d["p50_ms"], g["p50_ms"], g["p50_ms"] - d["p50_ms"], d["p99_ms"], g["p99_ms"],
                         g["p99_ms"] - d["p99_ms"], g["errors"] + d["errors"]])
    print(table(["rollouts", "shards", "direct p50", "gated p50", "added p50", "direct p99", "gated p99", "added p99",
                 "errors"], rows))
    best = max(find(2, n, "saturated")["turns_per_s"] / find(1, n, "saturated")["turns_per_s"]
               for n in args.concurrency)
    print()
    print(verdict("turns/s through 2 gate shards / 1 on this box", best, TARGET_SPEEDUP, "x", higher_is_better=True))
    print(f"(wall time {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
