"""The demo's first minutes, through the real stack (`--preset learning-demo`, shortened to 2 steps): quiet terminal
output (one line per step, no metric dicts, no INFO lines, a reward chart and the dashboard command at the end), the
full log in `<output_dir>/train.log`, rollout traces in the Trackio database in TRL's format, a user's
`TRACKIO_DIR` honoured, and `intercept-rl inspect` rendering the run's rollouts."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import pytest

from tests.paths import REPO

STEPS = 2


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    out, user_trackio = tmp / "out", tmp / "my-trackio"
    argv = [sys.executable, "-m", "intercept_rl_cli", "train", "--preset", "learning-demo", "--max-steps", str(STEPS),
            "--num-generations", "4", "--per-device-train-batch-size", "4", "--max-inflight", "4",
            "--output-dir", str(out), "--project", "demo-test"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRACKIO_DIR": str(user_trackio), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return out, user_trackio, proc.stdout, proc.stderr


@pytest.mark.slow
def test_terminal_is_one_line_per_step_and_ends_with_chart(demo_run):
    out, user_trackio, stdout, stderr = demo_run
    output = stdout + stderr
    step_lines = [line for line in stdout.splitlines() if line.startswith("[intercept-rl] step ")]
    assert [line.split()[2] for line in step_lines] == [f"{i}/{STEPS}" for i in range(1, STEPS + 1)]
    for key in ("reward=", "ratio=", "kl=", "rollouts/s=", "tokens=", "stale=", "step_s="):
        assert all(key in line for line in step_lines), (key, step_lines)
    assert "{'loss'" not in output and "'train/" not in output  # no metric dicts
    assert " INFO " not in output and "Weight sync" not in output and "dropping stale sample" not in output
    assert "* Trackio project initialized" not in output  # trackio's banner went to the log
    assert "Reward per step" in stdout and "(step)" in stdout
    assert f"TRACKIO_DIR={user_trackio} trackio show --project demo-test" in stdout
    assert "--preset cpu-demo" in stdout  # the SWE demo is named at the end
    log = (out / "train.log").read_text()
    assert "Weight sync" in log and " INFO " in log  # what the terminal does not show is in the log


@pytest.mark.slow
def test_trackio_dir_is_honoured_and_holds_rollout_traces(demo_run):
    out, user_trackio, _, _ = demo_run
    assert not (out / "trackio").exists(), "a user's TRACKIO_DIR must win over <output_dir>/trackio"
    db = user_trackio / "demo-test.db"
    assert db.is_file()
    records = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, step, messages, metadata FROM traces").fetchall()
    assert rows, "no rollout traces in the Trackio database"
    assert {key for key, *_ in rows} == {"rollouts"}  # TRL's key
    by_id = {r["rollout_id"]: r for r in records}
    for _, step, messages, metadata in rows:
        meta = json.loads(metadata)
        msgs = json.loads(messages)
        # TRL's fields ...
        for key in ("reward", "advantage", "group_id", "model_version", "prompt_tokens", "completion_tokens"):
            assert key in meta, (key, meta)
        # ... and ours
        for key in ("turns", "forks", "end_reason", "task_id", "rollout_id"):
            assert key in meta, (key, meta)
        record = by_id[meta["rollout_id"]]
        assert meta["reward"] == pytest.approx(record["reward"])
        assert meta["advantage"] == pytest.approx(record["advantage"])
        assert meta["completion_tokens"] == sum(record["rows"][-1]["completion_mask"])
        assert [m["role"] for m in msgs][-1] == "assistant"
        assert 1 <= step <= STEPS
    trained = [r for r in records if r["advantage"] is not None and not r["group_dropped"]]
    assert len(rows) == len({json.loads(m)["rollout_id"] for *_, m in rows})  # each rollout once
    assert len(rows) >= 4 and len(rows) <= len(trained)


@pytest.mark.slow
def test_inspect_renders_the_demo_run(demo_run, tmp_path):
    out, *_ = demo_run
    page = tmp_path / "page.html"
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "inspect", str(out), "--out", str(page)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    html = page.read_text()
    records = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(re.findall(r"<details class='rollout'", html)) == len(records)
    assert f"<b>{len(records)}</b> rollouts" in html


@pytest.mark.slow
def test_rollouts_output_is_one_line_per_rollout_and_a_summary(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "intercept_rl_cli", "rollouts", "--tasks", "learning", "--agent",
                           "single-shot", "--num-generations", "4", "--max-tokens-per-turn", "4", "--max-turns", "1",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("starting the local engine")
    assert [line.split()[0] for line in lines[1:-1]] == [f"[{i}/4]" for i in range(1, 5)], lines
    summary = json.loads(lines[-1])["summary"]
    assert summary["rollouts"] == 4 and summary["log"] == str(tmp_path / "r.log")
    assert (tmp_path / "r.log").is_file()  # the full log (INFO and warnings) lives next to the records
