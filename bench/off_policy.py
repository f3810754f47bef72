"""Use every rollout (issue #27): the learning demo's run under staleness settings and off-policy corrections.

Each run is `intercept-rl train --preset learning-demo` (the demo's mechanism: the single-shot agent in a bubblewrap
sandbox, the local engine, host-side grading, TRL's AsyncGRPOTrainer, weight sync every step) with one setting's
flags, one run at a time. From the run's train.log (one JSON metrics line per step, time-stamped) it reads, per
step: reward, wall-clock since the first step's log line's run start, rollouts generated so far, stale samples dropped,
stale rollouts aborted, and the token counts that give generation utilisation (trained ÷ generated sampled tokens).

    python bench/off_policy.py [--settings s0-drop,s0,s2,...] [--seeds 0,1,2] [--steps 30] [--out DIR]

Writes `<out>/<setting>-seed<k>.json` per run (kept: a re-run skips runs already done) and prints the table of
mean ± spread (half the range) over seeds: reward gain (mean of the last 5 steps − first 5), wall-clock, rollouts
generated, % dropped or aborted, utilisation, and the reward reached per 100 generated rollouts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) .*metrics at step (\d+): (\{.*\})$", re.M)

# name -> extra flags over the learning-demo preset
SETTINGS: dict[str, list[str]] = {
    "s0-drop": ["--max-staleness", "0", "--bound-run-ahead", "false"],  # the demo before issue #27
    "s0": ["--max-staleness", "0"],
    "s2": ["--max-staleness", "2"],
    "s4": ["--max-staleness", "4"],
    "s2-tis": ["--max-staleness", "2", "--off-policy-correction", "tis"],
    "s2-mis-token": ["--max-staleness", "2", "--off-policy-correction", "mis-token"],
    "s2-mis-seq": ["--max-staleness", "2", "--off-policy-correction", "mis-seq"],
    "s2-decoupled": ["--max-staleness", "2", "--off-policy-correction", "decoupled"],
    "s4-tis": ["--max-staleness", "4", "--off-policy-correction", "tis"],
}


def run_one(setting: str, seed: int, steps: int, out: Path) -> dict:
    run_dir = out / f"{setting}-seed{seed}"
    cmd = [sys.executable, "-m", "intercept_rl_cli", "train", "--preset", "learning-demo", *SETTINGS[setting],
           "--seed", str(seed), "--max-steps", str(steps), "--output-dir", str(run_dir), "--report-to", "none"]
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.time() - started
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else ""
    result = {"setting": setting, "seed": seed, "flags": SETTINGS[setting], "exit": proc.returncode,
              "wall_s": wall, "load_avg_1m_at_end": os.getloadavg()[0], "steps": parse_steps(log, started)}
    if proc.returncode != 0:
        result["tail"] = (proc.stdout + proc.stderr)[-3000:]
    return result


def parse_steps(log: str, started: float) -> list[dict]:
    """Per step: reward, seconds since the command started, and cumulative generation / waste counts."""
    rows, totals = [], {"rollouts": 0.0, "dropped": 0.0, "aborted": 0.0, "generated_tokens": 0.0,
                        "trained_tokens": 0.0}
    for stamp, step, payload in METRICS.findall(log):
        m = json.loads(payload)
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        totals["rollouts"] += m.get("rollout/rollouts_total") or 0.0
        totals["dropped"] += m.get("sample/dropped_stale_total") or 0.0
        totals["aborted"] += m.get("rollout/aborted_stale_total") or 0.0
        totals["generated_tokens"] += m.get("rollout/sampled_tokens_total") or 0.0
        totals["trained_tokens"] += m.get("batch/trained_tokens_per_step") or 0.0
        rows.append({"step": int(step), "reward": m.get("reward"), "t_s": at - started, **totals,
                     "is_weight_mean": m.get("off_policy/is_weight_mean"),
                     "cut_frac": m.get("off_policy/is_truncated_frac", m.get("off_policy/is_masked_frac")),
                     "token_staleness_mean": m.get("off_policy/token_staleness_mean")})
    return rows


def summarize(run: dict) -> dict | None:
    steps = [s for s in run["steps"] if s["reward"] is not None]
    if len(steps) < 10:
        return None
    k = 5
    first = sum(s["reward"] for s in steps[:k]) / k
    last = sum(s["reward"] for s in steps[-k:]) / k
    end = steps[-1]
    wasted = end["dropped"] + end["aborted"]
    return {"gain": last - first, "final": last, "wall_s": run["wall_s"], "rollouts": end["rollouts"],
            "wasted_pct": 100 * wasted / max(end["rollouts"], 1),
            "utilisation": end["trained_tokens"] / max(end["generated_tokens"], 1),
            "staleness": _mean([s["token_staleness_mean"] for s in steps]),
            "cut_frac": _mean([s["cut_frac"] for s in steps])}


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _pm(values, spec):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    spread = (max(values) - min(values)) / 2
    return f"{mean:{spec}} ± {spread:{spec}}" if len(values) > 1 else f"{mean:{spec}}"


def table(out: Path, settings: list[str]) -> str:
    lines = ["| setting | seeds | reward gain (last 5 − first 5) | final reward | wall s | rollouts generated | "
             "dropped+aborted % | utilisation | token staleness | IS cut frac |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for setting in settings:
        runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{setting}-seed*.json"))]
        sums = [s for s in (summarize(r) for r in runs) if s is not None]
        if not sums:
            continue
        seeds = ",".join(str(r["seed"]) for r in runs if summarize(r) is not None)
        col = {key: [s[key] for s in sums] for key in sums[0]}
        lines.append(f"| {setting} | {seeds} | {_pm(col['gain'], '+.3f')} | {_pm(col['final'], '.3f')} | "
                     f"{_pm(col['wall_s'], '.0f')} | {_pm(col['rollouts'], '.0f')} | {_pm(col['wasted_pct'], '.1f')} | "
                     f"{_pm(col['utilisation'], '.2f')} | {_pm(col['staleness'], '.2f')} | "
                     f"{_pm(col['cut_frac'], '.3f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"Comma-separated, of: {', '.join(SETTINGS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="runs/bench-off-policy")
    parser.add_argument("--table-only", action="store_true", help="Print the table of the runs already in --out.")
    args = parser.parse_args(argv)
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for setting in settings:
                target = out / f"{setting}-seed{seed}.json"
                if target.is_file():
                    continue
                result = run_one(setting, seed, args.steps, out)
                target.write_text(json.dumps(result, indent=1))
                summary = summarize(result)
                print(f"{setting} seed {seed}: exit {result['exit']}, {result['wall_s']:.0f} s, "
                      f"load {result['load_avg_1m_at_end']:.1f}, {summary}", flush=True)
    print(table(out, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
