"""Multi-turn learning on CPU (issue 26): GRPO on the real mini-swe-agent from the warm-started policy raises the mean
reward by >= 0.1 over the run, on every seed.

Everything real: `intercept-rl train --preset mini-swe-warm` — mini-swe-agent 2.4.6 in a bubblewrap sandbox whose
tool calls the policy samples, the gate, the local engine serving the warm-started tiny Qwen3
(`intercept-rl warm-start`), host-side grading by the tasks' own tests, TRL's AsyncGRPOTrainer and the weight sync.
One run per seed; the seed changes sampling and the task order, not the warm start.

    python bench/multiturn_learning.py [--seeds 0 1 2] [--steps 10] [--quick]

Per step it prints what the run's log recorded (`<output_dir>/train.log`, one metrics line per step): reward of the
trained batch, solve rate, turns per rollout, parse failures, forks, and the fraction of sampled tokens trained. The
rise is the mean reward of the last K steps minus that of the first K (the first steps sample the warm start itself:
the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_RISE = 0.1
WINDOW = 3  # steps averaged at each end
METRICS = re.compile(r"metrics at step (\d+): (\{.*\})$", re.M)


def step_table(log_text: str) -> list[dict]:
    """One row per optimizer step from the run log's metrics lines."""
    rows = []
    for step, blob in METRICS.findall(log_text):
        logs = json.loads(blob)
        sampled, trained = logs.get("rollout/sampled_tokens_total"), logs.get("rollout/trained_tokens_total")
        rows.append({"step": int(step), "reward": logs.get("reward"), "solved": logs.get("rollout/resolved"),
                     "turns": logs.get("rollout/turns"), "parse_failures": logs.get("rollout/parse_failures_total"),
                     "forks": logs.get("rollout/forks_total"),
                     "trained_fraction": trained / sampled if sampled else None})
    return rows


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def run_seed(seed: int, steps: int, work: Path, extra: list[str]) -> tuple[list[dict], float, int, str]:
    out = work / f"seed-{seed}"
    cmd = [sys.executable, "-m", "intercept_rl_cli", "train", "--preset", "mini-swe-warm", "--seed", str(seed),
           "--max-steps", str(steps), "--output-dir", str(out), "--report-to", "none", *extra]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=4 * 3600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.monotonic() - started
    log = out / "train.log"
    rows = step_table(log.read_text()) if log.is_file() else []
    return rows, wall, proc.returncode, (proc.stdout + proc.stderr)[-3000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="One seed, 4 steps: shows the machinery, not the rise.")
    parser.add_argument("--output-dir", default=None)
    args, extra = parser.parse_known_args(argv)  # anything else goes to `intercept-rl train`
    seeds, steps = ([args.seeds[0]], 4) if args.quick else (args.seeds, args.steps)
    work = Path(args.output_dir or tempfile.mkdtemp(prefix="intercept-rl-multiturn-"))
    verdicts = []
    for seed in seeds:
        rows, wall, code, tail = run_seed(seed, steps, work, extra)
        if code != 0 or len(rows) < steps:
            print(tail)
            print(f"seed {seed}: training failed (exit {code}, {len(rows)} of {steps} steps logged)")
            return 1
        print(f"\nseed {seed} ({wall:.0f} s wall)")
        print("step | reward | solved | turns | parse failures | forks | trained fraction")
        for r in rows:
            print(f"{r['step']:>4} | {_fmt(r['reward'], '.3f'):>6} | {_fmt(r['solved'], '.2f'):>6} | "
                  f"{_fmt(r['turns'], '.2f'):>5} | {_fmt(r['parse_failures'], '.0f'):>14} | "
                  f"{_fmt(r['forks'], '.0f'):>5} | {_fmt(r['trained_fraction'], '.3f')}")
        rewards = [r["reward"] or 0.0 for r in rows]
        k = min(WINDOW, len(rewards) // 2)
        first, last = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
        turns = [r["turns"] for r in rows if r["turns"] is not None]
        mean_turns = sum(turns) / max(1, len(turns))
        verdicts.append((seed, first, last, mean_turns, wall))
    print("\nseed | reward, first steps | reward, last steps | rise | mean turns | wall")
    for seed, first, last, mean_turns, wall in verdicts:
        print(f"{seed:>4} | {first:.3f} | {last:.3f} | {last - first:+.3f} | {mean_turns:.2f} | {wall:.0f} s")
    met = all(last - first >= TARGET_RISE for _, first, last, _, _ in verdicts)
    print(f"target: rise >= {TARGET_RISE} on every seed (last {WINDOW} steps vs first {WINDOW}) -> "
          f"{'met' if met else 'NOT met'}" + (" (--quick runs too few steps to judge)" if args.quick else ""))
    print(f"(runs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
