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

from tests.e2e.test_resume import FAST, REPO
from tests.support.sandboxes import processes_with_marker

from .conftest import FULL


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
    from trainer.checkpoints import resolve_checkpoint

    for step, complete in ((1, True), (2, True), (3, False), (10, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert resolve_checkpoint("latest", str(tmp_path)) == str(tmp_path / "checkpoint-2")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint("latest", str(tmp_path / "empty"))


def test_regression_the_engine_exits_when_the_process_that_started_it_is_killed(tmp_path):
    """Found by the SIGKILL test below: the local engine runs in its own session, so a SIGKILLed trainer left it
    serving forever. A parent that starts it and is SIGKILLed must take it along within seconds."""
    script = ("import sys, time; from intercept_common.engine_process import LocalEngineProcess; "
              "from local_engine.embedded import ensure_tiny_model; "
              "e = LocalEngineProcess(str(ensure_tiny_model()), max_model_len=256).start(); "
              "print(e.proc.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        engine_pid = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{engine_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        gone = not Path(f"/proc/{engine_pid}").exists() or "Z" in Path(f"/proc/{engine_pid}/stat").read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
    assert gone, f"the engine (pid {engine_pid}) outlived the process that started it"


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.skipif(not FULL, reason="the full reliability run only (make test-reliability): two training runs")
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
    leftovers = processes_with_marker(f"RESUME_TEST_MARKER={marker}")
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
