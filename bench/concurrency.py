"""Concurrency: 1,000 open rollouts in one gate process, their agents idling between turns.

Same three processes as `gate_overhead` (engine stand-in, gate + TurnServers, agents). Rollouts are opened in steps
(125, 250, 500, 1000 by default); at each step every agent has made at least one turn and holds its keep-alive
connection, and the gate process reports its resident memory and the bytes its conversations hold in token buffers
(ids, mask, logprobs) and held messages. Memory per open rollout = (RSS − RSS before any rollout − those buffers) /
open rollouts: the fixed cost of a rollout (handle, queue, TurnServer task, conversation, connection), which should be
flat as rollouts grow. Buffers grow with each rollout's context and are reported apart.

With all rollouts open, agents keep taking turns (each idles uniform around --think-s, default 60 s: 1,000 agents ⇒
~17 turns/s) and the per-turn latency is measured; then the same agents run directly against the stand-in's chat
route (the baseline, same run). Target: added p99 ≤ 10 ms at 1,000 rollouts.

    python bench/concurrency.py [--quick] [--levels 125 250 500 1000] [--client raw|openai]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agent_traffic import TOOLS, TrafficSpec, run_client_process, wait_for_turns  # noqa: E402
from bench.gate_process import run_gate_process  # noqa: E402
from bench.processes import Child  # noqa: E402
from bench.report import exit_on_sigterm, machine_line, percentile, table, verdict  # noqa: E402
from bench.standin_engine import canned_tool_call_turn, run_standin_process  # noqa: E402

TARGET_ADDED_P99_MS = 10.0
MB = 1024 * 1024


def drain_backlog(gate: Child, timeout_s: float) -> None:
    """Wait (bounded) until the gate holds no more than a handful of unanswered requests."""
    deadline = time.monotonic() + timeout_s
    while gate.request("snapshot")["pending"] > 5:
        if time.monotonic() > deadline:
            print("  ! the gate still has a backlog; the window measures it", file=sys.stderr)
            return
        time.sleep(1.0)
    time.sleep(2.0)


def measure_window(clients: Child, seconds: float) -> list[float]:
    start = clients.request("snapshot")["at"]
    time.sleep(seconds)
    end = clients.request("snapshot")["at"]
    stats = clients.request("stats", start, end)
    if stats["errors"]:
        print(f"  ! {len(stats['errors'])} errors, first: {stats['errors'][0]}", file=sys.stderr)
    return stats["latencies"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter window (under 3 minutes on 2 cores)")
    parser.add_argument("--levels", type=int, nargs="+", default=[125, 250, 500, 1000])
    parser.add_argument("--think-s", type=float, default=60.0,
                        help="mean idle time of an agent between turns (60 s: 1,000 agents offer ~17 turns/s)")
    parser.add_argument("--window", type=float, default=None, help="latency window at the top level, seconds")
    parser.add_argument("--client", choices=["raw", "openai"], default="raw",
                        help="agents as raw HTTP clients (default: cheap enough for 1,000 on 2 cores) or openai SDK")
    parser.add_argument("--uvloop", action="store_true", help="run the gate process on uvloop")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    args.window = args.window or (20.0 if args.quick else 60.0)
    levels = sorted(set(args.levels))
    top = levels[-1]

    started = time.perf_counter()
    before_line = machine_line()
    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer

    turn = canned_tool_call_turn(load_qwen3_tokenizer(), TOOLS)
    memory_rows, gated, direct, overhead, closed = [], [], [], [], {}
    standin = Child("engine-standin", run_standin_process, turn)
    try:
        url = standin.info["url"]
        with Child("gate", run_gate_process, url, {"uvloop": args.uvloop, "canned_message": turn.message}) as gate, \
                Child("agents", run_client_process) as clients:
            # Warm the gate (template compile, tokenizer caches, first parses) so the baseline RSS includes them.
            warm = gate.request("open", 8)
            clients.request("start", TrafficSpec(endpoints=warm, agents=8, episode_turns=3, client=args.client))
            wait_for_turns(clients, 8, 120)
            time.sleep(1.0)
            clients.request("halt")
            gate.request("close_all")
            base = gate.request("memory")

            gate.request("trace", True)  # Python-heap bytes allocated by the rollouts, exactly (slower while on)
            opened = 0
            for level in levels:
                endpoints = gate.request("open", level - opened)
                spread = max(2.0, (level - opened) / 50)  # ~50 first calls/s: each renders a whole prompt
                clients.request("start", TrafficSpec(endpoints=endpoints, agents=level - opened, think_s=args.think_s,
                                                     episode_turns=10**6, first_call_spread_s=spread,
                                                     seed=level, client=args.client))
                opened = level
                wait_for_turns(clients, level, 120 + level / 5)
                mem = gate.request("memory")
                buffers = mem["token_bytes"] + mem["message_bytes"]
                delta = mem["rss_bytes"] - base["rss_bytes"]
                traced = mem["traced_bytes"]
                memory_rows.append([mem["open_rollouts"], delta / MB, traced / MB, mem["token_bytes"] / MB,
                                    mem["message_bytes"] / MB, delta / level / 1024, traced / level / 1024,
                                    (traced - buffers) / level / 1024, mem["turns_total"] - base["turns_total"]])
                print(f"... {level} rollouts open: RSS +{delta / MB:.1f} MB", file=sys.stderr, flush=True)
            gate.request("trace", False)
            drain_backlog(gate, 180.0)  # tracing slows the gate; measure only once it has caught up again
            gate.request("gc_pauses")  # reset: count the window's collector pauses only
            gated = measure_window(clients, args.window)
            clients.request("halt")
            closed = gate.request("close_all")
            overhead = closed["overhead_s"]

            clients.request("start", TrafficSpec(endpoints=[(url + "/v1", "none")], agents=top, think_s=args.think_s,
                                                 episode_turns=10**6, first_call_spread_s=max(2.0, top / 50),
                                                 seed=top, client=args.client))
            wait_for_turns(clients, top, 120 + top / 5)
            direct = measure_window(clients, args.window)
            clients.request("halt")
    finally:
        standin.close()

    print(before_line + "  (before)")
    print(machine_line() + "  (after)")
    print(f"\nMemory of the gate process per open rollout (each agent answered at least once, connection kept open; "
          f"RSS {base['rss_bytes'] / MB:.0f} MB after warm-up; Python heap traced from the first rollout on — RSS "
          f"then also holds tracemalloc's own bookkeeping)")
    print(table(["open rollouts", "RSS delta MB", "heap MB", "token buffers MB", "held messages MB",
                 "RSS KB/rollout", "heap KB/rollout", "heap KB/rollout excl. buffers", "turns so far"], memory_rows))
    per_rollout = [row[7] for row in memory_rows]
    print(f"(excl. buffers: {min(per_rollout):.1f}-{max(per_rollout):.1f} KB per rollout across "
          f"{levels[0]}-{top} rollouts; max/min {max(per_rollout) / max(min(per_rollout), 1e-9):.2f})")

    print(f"\nLatency per turn (ms) with {top} open rollouts, {args.client} agents idling ~{args.think_s:g} s between "
          f"turns, window {args.window:g} s")
    d50, d99, g50, g99 = (1e3 * percentile(direct, 50), 1e3 * percentile(direct, 99),
                          1e3 * percentile(gated, 50), 1e3 * percentile(gated, 99))
    print(table(["path", "turns/s", "p50", "p99", "max", "samples"],
                [["direct", len(direct) / args.window, d50, d99, 1e3 * max(direct, default=float("nan")), len(direct)],
                 ["gated", len(gated) / args.window, g50, g99, 1e3 * max(gated, default=float("nan")), len(gated)],
                 ["added", "", g50 - d50, g99 - d99, "", ""]]))
    print(f"(worker-code per turn: p50 {1e3 * percentile(overhead, 50):.2f} ms, p99 {1e3 * percentile(overhead, 99):.2f}"
          f" ms; forks {closed.get('forks')}, parse failures {closed.get('parse_failures')})")
    pauses = ", ".join(f"gen{g}: {n} x, longest {1e3 * longest:.1f} ms" for g, (n, _, longest)
                       in sorted(closed.get("gc", {}).items()))
    print(f"(gate-process garbage-collector pauses in the window: {pauses or 'none'})")
    print()
    print(verdict(f"added p99 at {top} open rollouts", g99 - d99, TARGET_ADDED_P99_MS, "ms"))
    print(f"memory per open rollout, excl. token/message buffers: {per_rollout[-1]:.1f} KB at {top} "
          f"(flat if max/min stays near 1: {max(per_rollout) / max(min(per_rollout), 1e-9):.2f})")
    print(f"(wall time {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
