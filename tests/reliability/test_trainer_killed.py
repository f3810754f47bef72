"""The trainer SIGKILLed mid-run (no cleanup of its own runs) and resumed: the resumed run reaps what the killed one
left, trains on from the last checkpoint to the end, and nothing is left behind at the end (processes, sandboxes,
grading dirs), counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.test_resume import FAST, REPO, _processes_with_marker



def _start(out: Path, tmp: Path, marker: str, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1", "RESUME_TEST_MARKER": marker,
           "TMPDIR": str(tmp)}
    env.pop("TRACKIO_DIR", None)
    argv = [sys.executable, "-m", "intercept_rl_cli", "train", *FAST, "--save-steps", "1", "--output-dir", str(out),
            *extra]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_regression_latest_skips_a_checkpoint_whose_save_did_not_finish(tmp_path):
    """Found by the SIGKILL test below: a run killed mid-save left `checkpoint-2/` without `trainer_state.json`, and
    `--resume-from-checkpoint latest` chose it and crashed."""
    from trainer.train_swe_async_grpo import resolve_checkpoint

    for step, complete in ((1, True), (2, True), (3, False), (10, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert resolve_checkpoint("latest", str(tmp_path)) == str(tmp_path / "checkpoint-2")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint("latest", str(tmp_path / "empty"))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_sigkilled_trainer_resumes_and_leaves_nothing(tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    marker = uuid.uuid4().hex
    killed = _start(out, tmp, marker, ["--max-steps", "6"])
    try:
        deadline = time.monotonic() + 600
        while not (out / "checkpoint-2").is_dir() and time.monotonic() < deadline and killed.poll() is None:
            time.sleep(0.5)
        assert (out / "checkpoint-2").is_dir(), "the first run never saved a checkpoint"
        os.kill(killed.pid, signal.SIGKILL)  # the trainer only: its children are orphaned, as on a real pre-emption
        killed.wait(timeout=60)
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
    # What the killed trainer left running dies with it (bubblewrap's --die-with-parent, the engine's parent watch)
    # or is reaped by the next run; give orphans a moment to notice.
    time.sleep(5)
    resumed = _start(out, tmp, marker, ["--max-steps", "4", "--resume-from-checkpoint", "latest"])
    try:
        output, _ = resumed.communicate(timeout=900)
    finally:
        if resumed.poll() is None:
            os.killpg(resumed.pid, signal.SIGKILL)
    assert resumed.returncode == 0, output[-5000:]
    assert (out / "checkpoint-4").is_dir()
    leftovers = _processes_with_marker(f"RESUME_TEST_MARKER={marker}".encode())
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    state_dir = tmp / f"intercept-rl-{os.getuid()}"
    sandboxes = list(state_dir.iterdir()) if state_dir.exists() else []
    stray = [p.name for p in tmp.iterdir() if p != state_dir]
    print(f"\ntrainer SIGKILL + resume: leaked processes {len(leftovers)}, sandboxes {len(sandboxes)}, "
          f"temp entries {len(stray)}")
    assert not leftovers and not sandboxes and not stray, (leftovers, sandboxes, stray)
