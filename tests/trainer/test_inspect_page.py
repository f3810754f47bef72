"""`intercept-rl inspect`: the page renders in headless Chromium, the token counts it shows match the record (per
row, after the JavaScript rendered every token), policy versions per sampled turn and forks are marked, and failures
are one line with exit 2. (A 160k-token rollout's write and render times are a benchmark: bench/inspect_page.py.)"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from trainer.inspect_page import main, rollout_summary

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _row(turns: list[tuple[int, int]], versions: list[int], rng: random.Random) -> dict:
    ids, mask, lps = [], [], []
    for context, sampled in turns:
        ids += [rng.randrange(100, 150_000) for _ in range(context)]
        mask += [0] * context
        lps += [0.0] * context
        ids += [rng.randrange(100, 150_000) for _ in range(sampled)]
        mask += [1] * sampled
        lps += [-rng.random() * 4 for _ in range(sampled)]
    return {"input_ids": ids, "completion_mask": mask, "old_log_probs": lps, "model_versions": versions}


def _record(rid: str, task: str, reward: float, advantage: float | None, rows: list[dict], status="submitted",
            dropped=None, forks=0) -> dict:
    sampled = sum(sum(r["completion_mask"]) for r in rows)
    return {"rollout_id": rid, "task_id": task, "group_id": 3, "group_index": 0, "status": status, "reward": reward,
            "resolved": reward == 1.0, "scorable": True, "advantage": advantage, "group_dropped": dropped,
            "turns": sum(len(r["model_versions"]) for r in rows), "rows": rows,
            "drift": {"forks": forks, "sampled_tokens": sampled, "trained_tokens": sampled, "parse_failures": 0},
            "model_version": 1}


def _records() -> list[dict]:
    rng = random.Random(0)
    return [
        _record("a", "task-a", 1.0, 0.7, [_row([(40, 5), (12, 7), (9, 3)], [1, 2, 2], rng)]),
        _record("b", "task-b", 0.0, -0.7, [_row([(30, 4)], [2], rng), _row([(50, 6), (8, 2)], [2, 3], rng)],
                status="budget", forks=1),
        _record("c", "task-a", 0.5, None, [_row([(20, 3)], [1], rng)], dropped="zero_variance"),
    ]


def _write(tmp: Path, records: list[dict]) -> Path:
    path = tmp / "rollouts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _chromium(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           *args], capture_output=True, text=True, timeout=timeout)


def test_summary_counts():
    a, b, c = (rollout_summary(r) for r in _records())
    assert (a["tokens"], a["sampled"], a["context"], a["versions"]) == (76, 15, 61, [1, 2])
    assert (b["rows"], b["forks"], b["tokens"], b["sampled"]) == (2, 1, 34 + 66, 12)
    assert a["trained"] and b["trained"] and not c["trained"]


@needs_chromium
def test_page_renders_in_chromium_and_counts_match(tmp_path):
    records = _records()
    page = tmp_path / "page.html"
    assert main([str(_write(tmp_path, records)), "--out", str(page)]) == 0
    dom = _chromium(["--virtual-time-budget=20000", "--dump-dom", f"file://{page}#open=all"]).stdout
    assert 'data-ready="1"' in dom, dom[-2000:]
    blocks = re.findall(r"<details class=\"rollout\"(.*?)</details>", dom, re.S)
    assert len(blocks) == len(records)
    for block, record in zip(blocks, records):
        rows = record["rows"]
        assert f'data-tokens="{sum(len(r["input_ids"]) for r in rows)}"' in block
        shown_total = int(re.search(r"class=\"n-tokens\">(\d+)<", block).group(1))
        shown_sampled = int(re.search(r"class=\"n-sampled\">(\d+)<", block).group(1))
        assert shown_total == sum(len(r["input_ids"]) for r in rows)
        assert shown_sampled == sum(sum(r["completion_mask"]) for r in rows)
        rendered = [int(n) for n in re.findall(r'class="toks" data-rendered="(\d+)"', block)]
        assert rendered == [len(r["input_ids"]) for r in rows]  # every token became a span, per row
        sampled_spans = len(re.findall(r'class="t s p\d+"', block))
        assert sampled_spans == shown_sampled
        tags = re.findall(r'<span class="v"[^>]*>v(\d+)</span>', block)
        assert tags == [str(v) for r in rows for v in r["model_versions"]]  # one version tag per sampled turn
        assert ("fork</span>" in block) == (len(rows) > 1)
    screenshot = tmp_path / "inspect.png"
    _chromium(["--virtual-time-budget=10000", "--window-size=1280,900", f"--screenshot={screenshot}",
               f"file://{page}#open=1"])
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000


def test_failures_are_one_line_with_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path)]) == 2  # a directory without rollouts.jsonl
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"rows": []}\nnot json\n')
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("intercept-rl inspect: ") for line in err), err
    assert "does not exist" in err[0] and "no rollouts.jsonl" in err[1] and "bad.jsonl:2 is not JSON" in err[2]


def test_serve_port_in_use_is_one_line(tmp_path, capsys):
    path = _write(tmp_path, _records()[:1])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main([str(path), "--serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot serve on 127.0.0.1:{port}" in err[0] and "--port" in err[0]


@needs_chromium
def test_filters_from_the_url(tmp_path):
    page = tmp_path / "page.html"
    assert main([str(_write(tmp_path, _records())), "--out", str(page)]) == 0

    def shown(fragment: str) -> list[str]:
        dom = _chromium(["--virtual-time-budget=10000", "--dump-dom", f"file://{page}#{fragment}"]).stdout
        assert 'data-ready="1"' in dom
        tags = re.findall(r"<details ([^>]*)>", dom)
        return [re.search(r'data-task="([^"]*)"', t).group(1) + "/" + re.search(r'data-end="([^"]*)"', t).group(1)
                for t in tags if "hidden" not in t]

    assert shown("") == ["task-a/submitted", "task-b/budget", "task-a/submitted"]
    assert shown("end=budget") == ["task-b/budget"]
    assert shown("task=task-a&rmin=0.6") == ["task-a/submitted"]  # reward 1.0, not 0.5
    assert shown("trained=1") == ["task-a/submitted", "task-b/budget"]  # the dropped group's rollout is hidden
