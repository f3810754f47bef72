"""Multi-turn learning on CPU (issue 26): GRPO on the real mini-swe-agent from the warm-started policy raises the mean
reward by >= 0.1 over the run, on every seed.

Everything real: `intercept-rl train --preset mini-swe-warm` — mini-swe-agent 2.4.6 in a bubblewrap sandbox whose
tool calls the policy samples, the gate, the local engine serving the warm-started tiny Qwen3
(`intercept-rl warm-start`), host-side grading by the tasks' own tests, TRL's AsyncGRPOTrainer and the weight sync.
One run per seed; the seed changes sampling and the task order, not the warm start.

    python bench/multiturn_learning.py [--seeds 0 1 2] [--steps 10] [--quick]

Per step it prints what the run's log recorded (`<output_dir>/train.log`, one metrics line per step): reward of the
trained batch, solve rate, turns per rollout, parse failures, forks, the fraction of sampled tokens trained and the
samples TRL dropped as stale. The rise is judged on rollouts, not batches: the mean reward (binary: the solve rate)
of the scorable rollouts sampled by the last K policy versions minus that of the first K, each rollout counted once,
from `<output_dir>/rollouts.jsonl`. (The first versions sample the warm start itself: the baseline, measured in the
same run.) The trained batch's reward is a poor estimator here: a forked rollout adds several rows, and a batch of
8 rows can hold part of a group, so one step's batch reward was 0.0 while 6 of the 8 rollouts its version sampled
were solved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/multiturn_learning.py` puts bench/ first on sys.path
    sys.path.insert(0, str(REPO))

from bench.report import machine_line, table, verdict  # noqa: E402
from trainer.progress import read_step_metrics  # noqa: E402

TARGET_RISE = 0.1
WINDOW = 3  # steps averaged at each end


def step_table(log_text: str) -> list[dict]:
    """One row per optimizer step from the run log's metrics lines."""
    rows = []
    for line in read_step_metrics(log_text):
        step, logs = line.step, line.metrics
        sampled, trained = logs.get("rollout/sampled_tokens_total"), logs.get("rollout/trained_tokens_total")
        rows.append({"step": int(step), "reward": logs.get("reward"), "solved": logs.get("rollout/resolved"),
                     "turns": logs.get("rollout/turns"), "parse_failures": logs.get("rollout/parse_failures_total"),
                     "forks": logs.get("rollout/forks_total"),
                     "trained_fraction": trained / sampled if sampled else None,
                     "stale_dropped": logs.get("sample/dropped_stale_total", 0.0)})  # logged only when > 0
    return rows


def reward_by_version(records: list[dict]) -> dict[int, list[float]]:
    """Rewards of the scorable rollouts in `rollouts.jsonl` records, by the policy version that sampled them."""
    by_version: dict[int, list[float]] = {}
    for record in records:
        if record.get("scorable") and record.get("reward") is not None and record.get("model_version") is not None:
            by_version.setdefault(int(record["model_version"]), []).append(float(record["reward"]))
    return dict(sorted(by_version.items()))


def rise(by_version: dict[int, list[float]], window: int) -> tuple[float, float, int, int]:
    """(mean reward of the first `window` versions' rollouts, of the last `window` versions', and how many rollouts
    each mean is over). The windows never overlap: with fewer than 2 x `window` versions each takes half."""
    versions = list(by_version)
    k = min(window, len(versions) // 2)
    if k == 0:
        raise ValueError(f"rollouts of {len(versions)} policy version(s): no first and last window to compare")
    first = [r for v in versions[:k] for r in by_version[v]]
    last = [r for v in versions[-k:] for r in by_version[v]]
    return sum(first) / len(first), sum(last) / len(last), len(first), len(last)


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
    verdicts: list[list] = []
    for seed in seeds:
        rows, wall, code, tail = run_seed(seed, steps, work, extra)
        if code != 0 or len(rows) < steps:
            print(tail)
            print(f"seed {seed}: training failed (exit {code}, {len(rows)} of {steps} steps logged)")
            return 1
        columns = ("step", "reward", "solved", "turns", "parse_failures", "forks", "trained_fraction", "stale_dropped")
        print(f"\nseed {seed} ({wall:.0f} s wall)")
        print(table(list(columns), [[float("nan") if r[c] is None else r[c] for c in columns] for r in rows]))
        records_path = work / f"seed-{seed}" / "rollouts.jsonl"
        records = [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()]
        first, last, n_first, n_last = rise(reward_by_version(records), WINDOW)
        turns = [r["turns"] for r in rows if r["turns"] is not None]
        verdicts.append([seed, first, n_first, last, n_last, last - first, sum(turns) / max(1, len(turns)), wall])
    print("\n" + table(["seed", f"solve rate, first {WINDOW} versions", "rollouts", f"solve rate, last {WINDOW}",
                        "rollouts", "rise", "mean turns", "wall s"], verdicts))
    print(verdict("the smallest rise over the seeds", min(v[5] for v in verdicts), TARGET_RISE, "reward",
                  higher_is_better=True) + (" (--quick runs too few steps to judge)" if args.quick else ""))
    print(machine_line())
    print(f"(runs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
