"""Proof of learning (issue 5, F4): the mean reward of a synthetic task rises by >= 0.2 within 40 GRPO steps.

Everything real: the `single-shot` agent process in a bubblewrap sandbox, the gate, the local engine, host-side
grading (`--reward fraction` over ten checks of the share of lowercase letters in the file the agent writes), TRL's
AsyncGRPOTrainer and the weight sync. The policy is a random-init tiny Qwen3 with a larger init scale (0.5): the
default init (0.02) gives a near-uniform distribution over 152k tokens, where no sampled token recurs often enough
for 40 steps to move anything; a peaked random model's tokens do. `max_staleness 0` keeps every step on-policy.

    python bench/learning.py [--quick] [--steps 40] [--lr 1e-2]

Prints the reward per step and the rise of the mean reward (last 5 steps vs first 5), next to the 0.2 target.
Baseline measured in the same run: the first steps' mean reward (the untrained random policy).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_RISE = 0.2
STEP_LINE = re.compile(r"^\[intercept-rl\] step (\d+)/\d+ .*?reward=([0-9.eE+-]+)", re.M)


def build_peaked_model(target: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from local_engine.embedded import build_tiny_model

    if not (target / "config.json").is_file():
        target.mkdir(parents=True, exist_ok=True)
        build_tiny_model(target, initializer_range=0.5)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 steps (shows the machinery, not the 0.2 rise).")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--num-generations", type=int, default=8, help="Rollouts per group = samples per step.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    steps = 10 if args.quick else args.steps
    work = Path(args.output_dir or tempfile.mkdtemp(prefix="intercept-rl-learning-"))
    model = build_peaked_model(work / "peaked-model")
    cmd = [sys.executable, "-m", "intercept_rl_cli", "train", "--preset", "cpu-demo",
           "--model-name-or-path", str(model), "--tasks", "learning", "--agent", "single-shot",
           "--reward-mode", "fraction", "--num-generations", str(args.num_generations),
           "--per-device-train-batch-size", str(args.num_generations),
           "--max-tokens-per-turn", "4", "--max-turns", "1", "--max-completion-length", "4",
           "--learning-rate", str(args.lr), "--max-steps", str(steps), "--max-staleness", "0",
           "--max-inflight", str(args.num_generations), "--seed", str(args.seed), "--output-dir", str(work / "run"),
           "--save-steps", "100000", "--report-to", "none"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rewards = {int(s): float(r) for s, r in STEP_LINE.findall(proc.stdout + proc.stderr)}
    if proc.returncode != 0 or len(rewards) < steps:
        print((proc.stdout + proc.stderr)[-4000:])
        print(f"training failed (exit {proc.returncode}, {len(rewards)} of {steps} steps logged)")
        return 1
    series = [rewards[i] for i in sorted(rewards)]
    print("step | reward (mean of the 8 rollouts trained at that step)")
    for i, r in enumerate(series, 1):
        print(f"{i:>4} | {r:.3f} {'#' * round(r * 40)}")
    k = 5
    first, last = sum(series[:k]) / k, sum(series[-k:]) / k
    rise = last - first
    verdict = "met" if rise >= TARGET_RISE else "NOT met"
    print(f"\nbaseline (steps 1-{k}, untrained policy): mean reward {first:.3f}")
    print(f"trained (steps {len(series) - k + 1}-{len(series)}): mean reward {last:.3f}")
    print(f"target: rise >= {TARGET_RISE} within {steps} steps: {rise:+.3f} -> {verdict}"
          + (" (--quick runs too few steps to judge)" if args.quick else ""))
    print(f"(wall time {time.monotonic() - started:.0f} s; run in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
