"""Host-side grading of real agent trees for an embedded task (real git, real pytest runs, no mocks).

"Agents" here are edits made to a copy of the task repository, like a sandbox leaves behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rollout_worker.environment.grading.host import FailPassGrader, GradingConfig, SubprocessTestExecutor
from rollout_worker.environment.tasks import load_tasks
from rollout_worker.environment.tasks.trees import git_apply
from rollout_worker.types import ExecResult, Task


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Task:
    cache = tmp_path_factory.mktemp("embedded-cache")
    (ini,) = load_tasks("embedded:iniconf", embedded_cache_dir=str(cache))
    return ini


@pytest.fixture
def grader() -> FailPassGrader:
    return FailPassGrader(SubprocessTestExecutor())


def agent_copy(task: Task, tmp_path: Path) -> Path:
    """What a sandbox starts from: a full copy of the task repo, .git included."""
    dest = tmp_path / "agent-repo"
    shutil.copytree(task.repo_dir, dest, symlinks=True)
    return dest


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


async def test_oracle_scores_one_noop_scores_zero(task, grader, tmp_path):
    noop = agent_copy(task, tmp_path / "noop")
    result = await grader.grade(task, noop)
    assert (result.reward, result.resolved, result.scorable) == (0.0, False, True)
    assert all(result.details["tests"][t] == "failed" for t in task.FAIL_TO_PASS)
    assert all(result.details["tests"][t] == "passed" for t in task.PASS_TO_PASS)
    assert result.details["agent_patch"] == ""

    oracle = agent_copy(task, tmp_path / "oracle")
    git_apply(oracle, task.patch)
    result = await grader.grade(task, oracle)
    assert (result.reward, result.resolved, result.scorable) == (1.0, True, True), result.details.get("reason")
    assert result.details["fail_to_pass"] == {"passed": len(task.FAIL_TO_PASS), "total": len(task.FAIL_TO_PASS)}
    assert "iniconf/parser.py" in result.details["agent_patch"]


async def test_fraction_mode_gives_the_passing_fraction(task, tmp_path):
    grader = FailPassGrader(SubprocessTestExecutor(), GradingConfig(reward_mode="fraction"))
    result = await grader.grade(task, agent_copy(task, tmp_path))
    total = len(task.FAIL_TO_PASS) + len(task.PASS_TO_PASS)
    assert result.scorable and not result.resolved
    assert result.reward == pytest.approx(len(task.PASS_TO_PASS) / total)
    assert 0.0 < result.reward < 1.0


async def test_agent_that_rewrites_tests_and_test_config_gets_zero(task, grader, tmp_path):
    repo = agent_copy(task, tmp_path)
    fake_tests = "".join(f"\n\ndef {t.split('::')[-1]}():\n    assert True\n" for t in task.FAIL_TO_PASS)
    test_file = repo / "tests" / "test_parser.py"
    test_file.write_text(test_file.read_text() + fake_tests)
    (repo / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n    outcome.get_result().outcome = 'passed'\n")
    (repo / "pytest.ini").write_text("[pytest]\naddopts = -p no:junitxml\n")
    (repo / "tox.ini").write_text("[pytest]\naddopts = -x\n")
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('testpaths = ["tests"]', 'testpaths = ["nothing"]'))
    # Proof the cheat works when tests are run in the agent's own tree: every test, even the failing ones, "passes".
    naive = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--disable-plugin-autoload",
                            "-o", "testpaths=tests", "tests"], cwd=repo, capture_output=True, text=True, timeout=120,
                           env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"})
    assert naive.returncode == 0 and " passed" in naive.stdout, naive.stdout[-2000:]
    assert "failed" not in naive.stdout

    result = await grader.grade(task, repo)
    assert (result.reward, result.scorable) == (0.0, True)
    assert result.details["agent_patch"] == ""  # nothing of it is taken: tests, conftest, ini files, pytest config
    assert result.details["test_config_changes_dropped"] == ["pyproject.toml"]


async def test_agent_that_deletes_the_tests_still_gets_zero(task, grader, tmp_path):
    repo = agent_copy(task, tmp_path)
    shutil.rmtree(repo / "tests")
    result = await grader.grade(task, repo)
    assert (result.reward, result.scorable) == (0.0, True)
    assert all(result.details["tests"][t] == "failed" for t in task.FAIL_TO_PASS)
    assert all(result.details["tests"][t] == "passed" for t in task.PASS_TO_PASS)


async def test_renames_binary_new_deleted_files_and_links_are_applied(task, grader, tmp_path):
    repo = agent_copy(task, tmp_path)
    git_apply(repo, task.patch)
    pkg = repo / "iniconf"
    # rename the fixed module and make the package depend on a new binary file: only a faithful apply passes
    (pkg / "parser.py").rename(pkg / "ini_parser.py")
    (pkg / "blob.bin").write_bytes(bytes(range(256)) * 4)
    init = (pkg / "__init__.py").read_text().replace("from .parser import", "from .ini_parser import")
    init += ("\nimport os as _os\n\nwith open(_os.path.join(_os.path.dirname(__file__), 'blob.bin'), 'rb') as _f:\n"
             "    assert _f.read() == bytes(range(256)) * 4\n")
    (pkg / "__init__.py").write_text(init)
    (repo / "README.md").unlink()
    (repo / "HOST_LINK").symlink_to("/etc/hostname")
    os.mkfifo(repo / "agent.fifo")  # reading a FIFO would block grading forever
    before = tree_digest(repo)

    result = await grader.grade(task, repo)
    assert (result.reward, result.resolved) == (1.0, True), result.details.get("reason")
    patch = result.details["agent_patch"]
    assert "GIT binary patch" in patch and "new file mode 120000" in patch
    assert "deleted file mode" in patch and "iniconf/ini_parser.py" in patch and "README.md" in patch
    assert result.details["agent_files_skipped"] == ["agent.fifo"]
    assert tree_digest(repo) == before  # grading never touches the agent's tree


async def test_agent_breaking_the_package_is_scorable_zero(task, grader, tmp_path):
    repo = agent_copy(task, tmp_path)
    (repo / "iniconf" / "__init__.py").write_text("def broken(:\n")
    result = await grader.grade(task, repo)
    assert (result.reward, result.scorable) == (0.0, True)
    assert result.details["collection_errors"] == ["tests/test_parser.py"]
    assert set(result.details["tests"].values()) == {"error"}


async def test_grader_never_runs_git_in_the_agent_repo(task, grader, tmp_path):
    repo = agent_copy(task, tmp_path)
    git_apply(repo, task.patch)
    marker = tmp_path / "pwned"
    hook = repo / ".git" / "evil.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    with open(repo / ".git" / "config", "a") as config:
        config.write(f"[core]\n\tfsmonitor = {hook}\n\thooksPath = {repo / '.git'}\n")
    # Proof the trap is armed: any git status in that repo runs the fsmonitor.
    subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, timeout=60)
    assert marker.exists()
    marker.unlink()

    result = await grader.grade(task, repo)
    assert result.reward == 1.0, result.details.get("reason")
    assert not marker.exists()


class CrashingExecutor:
    async def run(self, repo_dir: Path, argv: list[str], timeout: float) -> ExecResult:
        raise RuntimeError("sandbox backend died")


async def test_unscorable_when_the_executor_crashes(task, tmp_path):
    result = await FailPassGrader(CrashingExecutor()).grade(task, agent_copy(task, tmp_path))
    assert (result.reward, result.scorable, result.resolved) == (None, False, False)
    assert "test executor failed" in result.details["reason"] and "sandbox backend died" in result.details["reason"]


async def test_unscorable_when_the_test_run_times_out(task, tmp_path):
    config = GradingConfig(test_command=[sys.executable, "-c", "import time; time.sleep(120)"], test_timeout_s=1.5)
    started = time.monotonic()
    result = await FailPassGrader(SubprocessTestExecutor(), config).grade(task, agent_copy(task, tmp_path))
    assert (result.reward, result.scorable) == (None, False)
    assert "timed out" in result.details["reason"]
    assert time.monotonic() - started < 30


async def test_unscorable_when_results_cannot_be_parsed(task, tmp_path):
    config = GradingConfig(test_command=["/bin/true"])
    result = await FailPassGrader(SubprocessTestExecutor(), config).grade(task, agent_copy(task, tmp_path))
    assert (result.reward, result.scorable) == (None, False)
    assert "no parseable test results" in result.details["reason"]


@pytest.mark.parametrize("exit_code, reward", [(4, 0.0), (0, 1.0)])
async def test_forged_summary_lines_in_a_failed_run_score_zero(task, tmp_path, exit_code, reward):
    """No JUnit report, `PASSED` lines for every task test: trusted only when the run exited 0 (SWE-bench's rule)."""
    lines = "\n".join(f"PASSED {t}" for t in [*task.FAIL_TO_PASS, *task.PASS_TO_PASS])
    forger = [sys.executable, "-c", f"import sys; print({lines!r}); sys.exit({exit_code})"]
    result = await FailPassGrader(SubprocessTestExecutor(), GradingConfig(test_command=forger)).grade(
        task, agent_copy(task, tmp_path))
    assert (result.reward, result.scorable) == (reward, True), result.details
    if exit_code:
        assert f"exited {exit_code} but reported no failing test" in result.details["reason"]


async def test_unscorable_when_a_patch_does_not_apply(task, grader, tmp_path):
    # the patch's context no longer matches the base file
    bad = dataclasses.replace(task, test_patch=task.test_patch.replace(' parse("[broken', ' parse("[mended', 1))
    assert bad.test_patch != task.test_patch
    result = await grader.grade(bad, agent_copy(task, tmp_path))
    assert (result.reward, result.scorable) == (None, False)
    assert "apply test_patch" in result.details["reason"]


async def test_unscorable_when_the_task_tests_do_not_exist(task, grader, tmp_path):
    bad = dataclasses.replace(task, FAIL_TO_PASS=["tests/test_nope.py::test_x"], PASS_TO_PASS=[])
    result = await grader.grade(bad, agent_copy(task, tmp_path))
    assert (result.reward, result.scorable) == (None, False)
    assert "none of the task's tests were reported" in result.details["reason"]


async def test_unscorable_without_inputs(task, grader, tmp_path):
    result = await grader.grade(dataclasses.replace(task, repo_dir=None), agent_copy(task, tmp_path))
    assert not result.scorable and "repo_dir" in result.details["reason"]
    result = await grader.grade(task, tmp_path / "nowhere")
    assert not result.scorable and "does not exist" in result.details["reason"]
    result = await grader.grade(dataclasses.replace(task, base_commit="f" * 40), agent_copy(task, tmp_path / "b"))
    assert not result.scorable and "export base tree" in result.details["reason"]


async def test_oversized_agent_patch_scores_zero(task, tmp_path):
    repo = agent_copy(task, tmp_path)
    git_apply(repo, task.patch)
    (repo / "iniconf" / "huge.txt").write_text("x" * 5000)
    result = await FailPassGrader(SubprocessTestExecutor(), GradingConfig(max_patch_bytes=2000)).grade(task, repo)
    assert (result.reward, result.scorable) == (0.0, True)
    assert "max_patch_bytes" in result.details["reason"]


async def test_pyproject_changes_outside_pytest_config_are_kept(task, grader, tmp_path):
    repo = agent_copy(task, tmp_path)
    git_apply(repo, task.patch)
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('requires-python = ">=3.9"', 'requires-python = ">=3.10"'))
    result = await grader.grade(task, repo)
    assert result.reward == 1.0
    assert result.details["test_config_changes_dropped"] == []
    assert '+requires-python = ">=3.10"' in result.details["agent_patch"]


async def test_cancelled_grading_kills_the_tests_and_removes_its_temp_dirs(task, tmp_path):
    work_root = tmp_path / "grading-work"
    work_root.mkdir()
    pid_file = tmp_path / "test-run.pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    config = GradingConfig(test_command=[sys.executable, "-c", code], work_root=str(work_root))
    grading = asyncio.ensure_future(FailPassGrader(SubprocessTestExecutor(), config).grade(task, agent_copy(task, tmp_path)))
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert pid_file.exists(), "the test run never started"
    grading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(grading, 30)
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    assert list(work_root.iterdir()) == []


async def test_grading_through_the_bubblewrap_test_executor(task, tmp_path):
    """The production executor (sandbox engineer's `LocalSandboxTestExecutor`) mounts the repo elsewhere: the grader's
    relative paths (test files, junit report, --rootdir) must still line up."""
    from rollout_worker.environment.sandbox import LocalSandboxTestExecutor

    grader = FailPassGrader(LocalSandboxTestExecutor())
    noop = await grader.grade(task, agent_copy(task, tmp_path / "noop"))
    assert (noop.reward, noop.scorable) == (0.0, True), noop.details.get("reason")
    oracle_repo = agent_copy(task, tmp_path / "oracle")
    git_apply(oracle_repo, task.patch)
    oracle = await grader.grade(task, oracle_repo)
    assert (oracle.reward, oracle.resolved) == (1.0, True), oracle.details.get("reason")
