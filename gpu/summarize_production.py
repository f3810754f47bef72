"""Boil a `gpu/production.sh train` run down to the figures docs/gpu.md quotes.

Reads, under `--work`: `train.log` (the trainer's per-step log dicts, as transformers prints them), `rollouts.jsonl`
(one record per finished rollout), `gate_vs_raw.json` and `sync_proof.json`. Writes one JSON: per-step ratio / kl /
loss / weight-sync seconds / tokens/s / MFU, rollout turns/s and timing shares, gated/raw throughput, probe diffs.

Usage: python gpu/summarize_production.py --work /tmp/prod --out /tmp/prod/summary_train.json
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

STEP_KEYS = ("loss", "ratio", "kl", "entropy", "perf/weight_sync_s", "perf/weight_sync_transfer_s",
             "perf/weight_sync_pause_s", "perf/step_s", "perf/fwd_bwd_s", "perf/optimizer_s", "perf/rollout_wait_s",
             "perf/forwarded_tok_s_fwd_bwd", "perf/forwarded_tok_s_wall_clock", "perf/trained_tok_s_wall_clock",
             "perf/mfu_fwd_bwd", "perf/mfu_wall_clock", "batch/forwarded_tokens_per_step",
             "batch/trained_tokens_per_step", "clip_ratio/region_mean", "reward", "rollout/reward_mean")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="The run's work folder (/tmp/prod).")
    parser.add_argument("--out", required=True, help="Where the summary goes (JSON).")
    return parser


def step_logs(text: str) -> list[dict]:
    """Every `{'loss': ...}`-style dict line transformers printed (the per-step logs)."""
    logs = []
    for line in text.splitlines():
        if "metrics at step " in line:  # trainer/progress.py's log-file line: the full dict as JSON
            try:
                logs.append(json.loads(line[line.find("{"):]))
            except ValueError:
                pass
            continue
        start = line.find("{")
        if start < 0 or not any(key in line for key in ("'loss'", "'ratio'", "'train_runtime'")):
            continue
        try:
            value = ast.literal_eval(line[start:line.rfind("}") + 1])
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            logs.append(value)
    return logs


def rollout_stats(path: Path) -> dict:
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        return {"rollouts": 0}
    timings = [r.get("timings") or {} for r in records]
    turns = sum(r.get("turns") or 0 for r in records)
    total = sum(t.get("total", 0.0) for t in timings)

    def share(key):
        return round(sum(t.get(key, 0.0) for t in timings) / total, 4) if total else None

    return {"rollouts": len(records), "turns": turns,
            "statuses": {s: sum(r.get("status") == s for r in records) for s in {r.get("status") for r in records}},
            "sampled_tokens": sum((r.get("drift") or {}).get("sampled_tokens", 0) for r in records),
            "mean_rollout_s": round(total / len(records), 3),
            "share_sandbox_setup": share("sandbox_setup"), "share_agent": share("agent"),
            "share_grading": share("grading"),
            "rewards": sorted({r.get("reward") for r in records}, key=str)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work)
    summary: dict = {}
    logs_read = [p for p in (work / "train.log", work / "run_train.log") if p.is_file()]
    if logs_read:
        text = "\n".join(p.read_text(errors="replace") for p in logs_read)
        logs = step_logs(text)
        summary["steps"] = [{k: log[k] for k in STEP_KEYS if k in log} for log in logs if "train_runtime" not in log]
        summary["final_log"] = next((log for log in reversed(logs) if "train_runtime" in log), None)
        summary["weight_sync_lines"] = [line.split("Weight sync: ")[-1] for line in text.splitlines()
                                        if "Weight sync: done" in line]
    summary["rollouts"] = rollout_stats(work / "rollouts.jsonl")
    for name in ("gate_vs_raw", "sync_proof"):
        path = work / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            summary[name] = data.get("summary", data.get("pairs", data)) if name != "gate_vs_raw" else {
                "summary": data.get("summary"), "runs": data.get("runs")}
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
