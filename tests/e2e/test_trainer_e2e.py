"""`intercept-rl train --preset cpu-demo` through the full stack — real mini-swe-agent in bubblewrap, the gate, the
local engine, host-side grading, TRL's AsyncGRPOTrainer, weight sync — asserting F1 at the first optimizer step from
the run's own Trackio database, the checkpoint with the worker's state, and a clean shutdown."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.paths import REPO


def _processes_with_marker(marker: str) -> set[int]:
    """Processes whose environment carries `marker`: everything the command started inherits it (the engine, bwrap),
    unlike a parent pid, which orphans lose."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_cpu_demo_full_stack_first_step_is_on_policy(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "intercept_rl_cli", "train", "--preset", "cpu-demo", "--max-steps", "1",
            "--save-steps", "1", "--output-dir", str(out), "--project", "e2e-test"]
    marker_value = uuid.uuid4().hex
    marker = f"INTERCEPT_RL_E2E_MARKER={marker_value}"
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1", "INTERCEPT_RL_E2E_MARKER": marker_value}
    env.pop("TRACKIO_DIR", None)
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
    assert proc.returncode == 0, output[-6000:]
    leftovers = _processes_with_marker(marker)
    for pid in leftovers:  # clean up before failing, so a failure does not leak into other tests
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert leftovers == set(), "the command left processes behind (engine, agents or sandboxes)"

    with sqlite3.connect(out / "trackio" / "e2e-test.db") as conn:
        rows = [json.loads(m) for (m,) in conn.execute("SELECT metrics FROM metrics ORDER BY id")]
    first = next(m for m in rows if "train/ratio" in m)
    print(f"full-stack F1: ratio={first['train/ratio']!r} kl={first['train/kl']!r}")
    assert abs(first["train/ratio"] - 1.0) <= 1e-5
    assert first["train/kl"] <= 1e-6
    assert first.get("train/rollout/rollouts_total", 0) >= 2  # real agent episodes produced the step's samples

    state = json.loads((out / "checkpoint-1" / "rollout_worker_state.json").read_text())
    assert state["scheduler"] and "counters" in state
    assert "[intercept-rl] step 1/1" in output
    assert f"TRACKIO_DIR={out / 'trackio'} trackio show --project e2e-test" in output
