"""The per-package table of a synthesized set (docs/synth_tasks.md): tasks, mean FAIL_TO_PASS size, lines changed,
single vs combined mutations, and the build's counts (mutants tried, kept, dropped per reason, seconds)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path


def markdown(out_dir: Path) -> str:
    rows = [json.loads(line) for line in (out_dir / "tasks.jsonl").read_text().splitlines() if line.strip()]
    report = json.loads((out_dir / "report.json").read_text()) if (out_dir / "report.json").exists() else {}
    per: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        per[row["synth"]["package"]].append(row)
    lines = ["| package | version | tests kept | tasks | single / combined | mean FAIL_TO_PASS | mean lines changed |"
             " mutants tried | suite (s) | build (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    totals: Counter = Counter()
    dropped: Counter = Counter()
    for pkg in report.get("packages", []):
        name, mine = pkg["package"], per.get(pkg["package"], [])
        if "error" in pkg:
            lines.append(f"| {name} | {pkg['version']} | — | 0 | — | — | — | — | — | error: {pkg['error'][:80]} |")
            continue
        singles = sum(1 for r in mine if r["synth"]["mutations"] == 1)
        f2p = [len(json.loads(r["FAIL_TO_PASS"])) for r in mine]
        changed = [r["synth"]["lines_changed"] for r in mine]
        mean = (lambda xs: f"{sum(xs) / len(xs):.1f}" if xs else "—")
        lines.append(f"| {name} | {pkg['version']} | {pkg['tests_kept']} | {len(mine)} | {singles} / "
                     f"{len(mine) - singles} | {mean(f2p)} | {mean(changed)} | {pkg['mutants_tried']} | "
                     f"{pkg['baseline_s']} | {pkg['seconds']} |")
        totals.update(tasks=len(mine), tried=pkg["mutants_tried"], kept=pkg["screen_kept"], seconds=pkg["seconds"],
                      singles=singles)
        dropped.update(pkg["dropped"])
    lines.append(f"| **all** | | | **{totals['tasks']}** | {totals['singles']} / {totals['tasks'] - totals['singles']}"
                 f" | | | {totals['tried']} | | {totals['seconds']:.0f} |")
    lines += ["", f"Mutants tried: {totals['tried']}; kept by screening: {totals['kept']}; shipped after validation: "
              f"{totals['tasks']}. Dropped, per reason:", ""]
    lines += [f"- {reason}: {n}" for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1])]
    ops = Counter(op for row in rows for op in row["synth"]["operators"])
    lines += ["", "Operators in the shipped tasks: " + ", ".join(f"{op} {n}" for op, n in ops.most_common())]
    return "\n".join(lines) + "\n"
