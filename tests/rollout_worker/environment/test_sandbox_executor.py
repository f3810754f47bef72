"""LocalSandboxTestExecutor: grading commands in a fresh sandbox (repo writable, no network, bounded time)."""

from __future__ import annotations

import time

import pytest

from rollout_worker.environment.grading.host import FailPassGrader
from rollout_worker.environment.sandbox import LocalSandboxConfig, LocalSandboxTestExecutor
from tests.support.sandboxes import FIXED, pids_running

pytestmark = pytest.mark.timeout(120)


async def test_runs_in_repo_writable_offline(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    executor = LocalSandboxTestExecutor(LocalSandboxConfig(state_dir=str(tmp_path / "st")))
    script = ("import os, socket, pathlib\n"
              "pathlib.Path('out.txt').write_text(os.getcwd())\n"
              "try:\n    socket.create_connection(('151.101.0.223', 443), timeout=3); print('online')\n"
              "except OSError as e:\n    print('offline', type(e).__name__)\n"
              "raise SystemExit(3)\n")
    res = await executor.run(repo, ["python3", "-c", script], timeout=60)
    assert res.exit_code == 3 and not res.timed_out
    assert res.stdout.startswith("offline")
    assert (repo / "out.txt").read_text() == "/testbed"


async def test_timeout_kills_the_test_run(tmp_path):
    executor = LocalSandboxTestExecutor()
    started = time.monotonic()
    res = await executor.run(tmp_path, ["sleep", "9191.5"], timeout=1)
    assert res.timed_out and time.monotonic() - started < 8
    assert pids_running("sleep", "9191.5") == []


async def test_grader_scores_through_the_sandboxed_executor(task, tmp_path):
    """The real grader with this executor: base repo → 0, fixed repo → 1 (pytest comes from the agents' venv)."""
    grader = FailPassGrader(LocalSandboxTestExecutor())
    base = await grader.grade(task, __import__("pathlib").Path(task.repo_dir))
    assert base.scorable and base.reward == 0.0, base.details
    fixed = tmp_path / "fixed"
    __import__("shutil").copytree(task.repo_dir, fixed)
    (fixed / "calc.py").write_text(FIXED)
    graded = await grader.grade(task, fixed)
    assert graded.scorable and graded.reward == 1.0 and graded.resolved, graded.details
