"""`intercept-rl inspect` on one very long rollout: seconds to write the page (Python) and milliseconds for the page's
JavaScript to render every token in headless Chromium, against the targets (docs/benchmarks.md, "inspect_page").

    python bench/inspect_page.py [--tokens 160000]

The rollout is synthetic: turns of 2,000-4,000 context tokens and 100-600 sampled ones, one policy version per four
turns, until `--tokens`. It also checks what a user must see: every token rendered as a span.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine_line, table, verdict  # noqa: E402

WRITE_TARGET_S = 30.0
RENDER_TARGET_MS = 20_000.0


def long_rollout(tokens: int, seed: int = 1) -> dict:
    """One record of `rollouts.jsonl` with a single row of at least `tokens` tokens."""
    rng = random.Random(seed)
    ids, mask, lps, versions = [], [], [], []
    while len(ids) < tokens:
        context, sampled = rng.randint(2000, 4000), rng.randint(100, 600)
        ids += [rng.randrange(100, 150_000) for _ in range(context + sampled)]
        mask += [0] * context + [1] * sampled
        lps += [0.0] * context + [-rng.random() * 4 for _ in range(sampled)]
        versions.append(1 + len(versions) // 4)
    sampled_total = sum(mask)
    return {"rollout_id": "big", "task_id": "big", "group_id": 0, "group_index": 0, "status": "submitted",
            "reward": 0.5, "resolved": False, "scorable": True, "advantage": 0.1, "group_dropped": None,
            "turns": len(versions), "model_version": 1,
            "rows": [{"input_ids": ids, "completion_mask": mask, "old_log_probs": lps, "model_versions": versions}],
            "drift": {"forks": 0, "sampled_tokens": sampled_total, "trained_tokens": sampled_total,
                      "parse_failures": 0}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=160_000, help="length of the rollout's one row")
    args = parser.parse_args(argv)
    if args.tokens < 1:
        parser.error(f"--tokens must be >= 1, got {args.tokens}")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("inspect_page: chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    from trainer.inspect_page import main as inspect_main

    record = long_rollout(args.tokens)
    n_tokens = len(record["rows"][0]["input_ids"])
    with tempfile.TemporaryDirectory(prefix="irl-inspect-") as tmp:
        records, page = Path(tmp) / "rollouts.jsonl", Path(tmp) / "page.html"
        records.write_text(json.dumps(record) + "\n")
        started = time.monotonic()
        if inspect_main([str(records), "--out", str(page)]) != 0:
            print("inspect_page: intercept-rl inspect failed", file=sys.stderr)
            return 1
        write_s = time.monotonic() - started
        size_mb = page.stat().st_size / 1e6
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-background-networking", "--virtual-time-budget=60000", "--dump-dom",
                              f"file://{page}#open=0"],
                             capture_output=True, text=True, timeout=600).stdout
    rendered = re.search(r'class="toks" data-rendered="(\d+)"', dom)
    render_ms = re.search(r'data-render-ms="([\d.]+)"', dom)
    if rendered is None or render_ms is None:
        print("inspect_page: the page did not finish rendering in Chromium", file=sys.stderr)
        return 1
    print(machine_line())
    print(table(["tokens", "sampled", "page MB", "write s", "tokens rendered", "render ms (JS)"],
                [[n_tokens, record["drift"]["sampled_tokens"], size_mb, write_s, int(rendered.group(1)),
                  float(render_ms.group(1))]]))
    print(verdict("page written", write_s, WRITE_TARGET_S, "s"))
    print(verdict("every token rendered", float(render_ms.group(1)), RENDER_TARGET_MS, "ms"))
    if int(rendered.group(1)) != n_tokens:
        print(f"inspect_page: {rendered.group(1)} of {n_tokens} tokens rendered", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
