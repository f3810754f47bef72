"""Host-side grading: the agent's source changes, applied to a fresh base, judged by the task's tests (design §7).

The grader runs after the agent is killed and never inside its sandbox. It never runs git in the agent's repository
(its `.git` may carry hooks, an fsmonitor or a hostile config): it copies the agent's tree (without `.git`, without
test files and test config) and a pristine base into a private temp dir, diffs them there with `git diff --no-index`
under a scrubbed environment, applies that diff and then the task's `test_patch` to a fresh copy of the base, and
runs FAIL_TO_PASS + PASS_TO_PASS in one pytest run through a `TestExecutor`. Grading infrastructure failures make the
episode unscorable (`reward=None`), never reward 0; a run that says nothing (timed out, no results) counts as ours only
when the unchanged repository's run says nothing too, else the agent broke it: reward 0 (docs/reliability.md). The
reward is returned to the worker only, never to the agent.

Known limit (shared with SWE-bench): the agent's code runs inside the pytest process, so a hostile patch could tamper
with pytest itself; the sandboxed executor bounds what it can reach, not what it reports.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from intercept_common.errors import ConfigError
from rollout_worker.environment.tasks.pytest_report import (
    TestOutcomes,
    files_of_tests,
    parse_junit_xml,
    parse_summary_lines,
)
from rollout_worker.environment.tasks.trees import (
    GitError,
    TreeFilter,
    copy_filtered_tree,
    export_base_tree,
    git_apply,
    git_diff_no_index,
    restore_unchanged_test_config,
)
from rollout_worker.protocols import TestExecutor
from rollout_worker.types import ExecResult, GradeResult, Task

__all__ = [
    "ExecResult",
    "GradeResult",
    "FailPassGrader",
    "GradingConfig",
    "GradingError",
    "SubprocessTestExecutor",
    "TestExecutor",
]


class GradingError(RuntimeError):
    """A grading step failed for reasons outside the agent's control (the episode becomes unscorable)."""


class BrokenRun(GradingError):
    """The test run says nothing (timed out, no parseable results, none of the task's tests): whose fault it is
    depends on whether the unchanged repository's run says something (`FailPassGrader._unchanged_run_is_usable`)."""


@dataclass
class GradingConfig:
    """How the grader turns an agent's repository into a reward."""

    _argument_group_name = "Grading: how the agent's work becomes a reward (environment.grading.GradingConfig)"
    _config_section = "grading"  # its YAML section (intercept_common.config_tree)

    reward_mode: Literal["binary", "fraction"] = field(
        default="binary",
        metadata={"help": "`binary`: 1.0 only if every FAIL_TO_PASS and PASS_TO_PASS test passes, else 0.0. "
                  "`fraction`: the fraction of those tests that pass."},
    )
    test_timeout_s: float = field(
        default=1800.0,
        metadata={"help": "Wall-clock limit of the single test run (host or grading container; SWE-bench's harness "
                  "uses 1800 s). Past it: reward 0 if the unchanged repository's run finishes in time (the agent's "
                  "change hung it), else unscorable."},
    )
    test_command: list[str] | None = field(
        default=None,
        metadata={"help": "argv of the test runner (pytest-compatible; test files are appended). Default: the "
                  "task's `test_command`, else `<this python> -m pytest`."},
    )
    tree_filter: TreeFilter = field(
        default_factory=TreeFilter,
        metadata={"help": "Which paths count as tests/test config (never taken from the agent) or as junk."},
    )
    max_patch_bytes: int = field(
        default=10 * 1024 * 1024,
        metadata={"help": "An agent diff larger than this is not applied and scores 0 (scorable)."},
    )
    git_timeout_s: float = field(
        default=300.0, metadata={"help": "Limit for each git step (export, diff, apply; host or grading container)."})
    keep_patch_chars: int = field(
        default=65536, metadata={"help": "How much of the agent's patch to keep in `details['agent_patch']`."}
    )
    work_root: str | None = field(
        default=None, metadata={"help": "Where grading temp dirs are made (default: the system temp dir)."}
    )

    def __post_init__(self) -> None:
        for name in ("test_timeout_s", "git_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_patch_bytes < 1 or self.keep_patch_chars < 0:
            raise ConfigError(f"max_patch_bytes must be >= 1 and keep_patch_chars >= 0, got {self.max_patch_bytes} "
                              f"and {self.keep_patch_chars}")


class SubprocessTestExecutor:
    """Runs tests as a plain host subprocess: scrubbed env, own process group, group killed on timeout.

    For tests and machines without bubblewrap. It isolates nothing but the environment variables and the process
    tree: use the sandbox backend's executor for untrusted code in production.
    """

    __test__ = False

    def __init__(self, output_limit: int = 1 << 20, extra_env: dict[str, str] | None = None):
        self.output_limit = output_limit
        self.extra_env = dict(extra_env or {})

    def _env(self, home: str) -> dict[str, str]:
        # Only what a test run needs; nothing inherited from the host (no tokens, no proxies, no HF cache paths).
        path = os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])
        env = {"PATH": path, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTHONHASHSEED": "0"}
        env.update(self.extra_env)
        return env

    async def run(self, repo_dir: Path, argv: list[str], timeout: float) -> ExecResult:
        with tempfile.TemporaryDirectory(prefix="irl-exec-home-") as home:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=str(repo_dir), env=self._env(home), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
            readers = [asyncio.ensure_future(self._read_tail(s)) for s in (proc.stdout, proc.stderr)]
            timed_out = False
            try:
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                except asyncio.TimeoutError:
                    timed_out = True
            finally:
                # Kill the whole group on every path: stragglers a test spawned would otherwise hold the pipes open.
                self._kill_group(proc.pid)
                if proc.returncode is None:
                    await asyncio.wait_for(proc.wait(), 10)
                done, pending = await asyncio.wait(readers, timeout=5)
                for task in pending:  # a process that escaped the group still holds a pipe; stop reading it
                    task.cancel()
            out, err = (r.result() if r in done and not r.cancelled() else b"" for r in readers)
            return ExecResult(
                exit_code=proc.returncode if proc.returncode is not None else -signal.SIGKILL,
                stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"), timed_out=timed_out,
            )

    async def _read_tail(self, stream: asyncio.StreamReader | None) -> bytes:
        buf = bytearray()
        if stream is None:
            return b""
        while chunk := await stream.read(65536):
            buf += chunk
            if len(buf) > 2 * self.output_limit:  # keep memory bounded; only the tail is reported
                del buf[: len(buf) - self.output_limit]
        return bytes(buf[-self.output_limit:])

    @staticmethod
    def _kill_group(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class FailPassGrader:
    """Grades an agent's repository against a task (see the module docstring for the procedure)."""

    def __init__(self, executor: TestExecutor, config: GradingConfig | None = None):
        self.executor = executor
        self.config = config or GradingConfig()
        self._baseline_usable: dict[tuple[str, str, str], bool] = {}

    async def grade(self, task: Task, agent_repo_dir: Path) -> GradeResult:
        """Grade the repository the agent left at `agent_repo_dir` (host path; the agent must be dead)."""
        details: dict[str, Any] = {"instance_id": task.instance_id, "reward_mode": self.config.reward_mode}
        return await grade_in_work_dir(functools.partial(self._grade, task, Path(agent_repo_dir)), details,
                                       work_root=self.config.work_root, prefix="irl-grade-",
                                       infrastructure_errors=(GradingError, GitError))

    async def _grade(self, task: Task, agent_dir: Path, work: Path, details: dict[str, Any]) -> GradeResult:
        cfg = self.config
        tests = list(dict.fromkeys([*task.FAIL_TO_PASS, *task.PASS_TO_PASS]))
        if not task.FAIL_TO_PASS:
            raise GradingError("task has no FAIL_TO_PASS tests")
        if not task.repo_dir:
            raise GradingError("task has no repo_dir: host-side grading needs a local base checkout")
        if not agent_dir.is_dir():
            raise GradingError(f"agent repository {agent_dir} does not exist")

        base, before, after, fresh = (work / n for n in ("base", "a", "b", "fresh"))
        await self._in_thread(export_base_tree, Path(task.repo_dir), task.base_commit, base, cfg.git_timeout_s)
        keep = cfg.tree_filter.keeps_source
        await self._in_thread(copy_filtered_tree, base, before, keep)
        skipped = await self._in_thread(copy_filtered_tree, agent_dir, after, keep)
        restored = await self._in_thread(restore_unchanged_test_config, before, after)
        patch = await self._in_thread(git_diff_no_index, work, "a", "b", cfg.git_timeout_s)
        details.update(agent_patch=patch[: cfg.keep_patch_chars].decode("utf-8", "replace"),
                       agent_patch_bytes=len(patch), agent_files_skipped=skipped,
                       test_config_changes_dropped=restored)

        if len(patch) > cfg.max_patch_bytes:
            details["reason"] = f"agent patch is {len(patch)} bytes, over max_patch_bytes"
            return GradeResult(reward=0.0, resolved=False, scorable=True, details=details)

        await self._in_thread(shutil.copytree, base, fresh, symlinks=True)
        if patch.strip():
            await self._in_thread(git_apply, fresh, patch, cfg.git_timeout_s, "agent patch")
        if task.test_patch.strip():
            await self._in_thread(git_apply, fresh, task.test_patch, cfg.git_timeout_s, "test_patch")

        try:
            res, outcomes = await self._run_tests(task, fresh, tests, details)
        except BrokenRun as broken:
            # Unscorable only on evidence that does not depend on the agent: the same run on the unchanged
            # repository. If that run is fine, the agent's change broke this one (ended the test process, hung it,
            # hid every result): its failure, reward 0, as the official harness scores it.
            if not patch.strip() or not await self._unchanged_run_is_usable(task, base, work, tests):
                raise GradingError(f"{broken} (the unchanged repository's run fails the same way)") from broken
            details["reason"] = f"the agent's change broke the test run: {broken} (the unchanged repository's is fine)"
            return GradeResult(reward=0.0, resolved=False, scorable=True, details=details)
        if res.exit_code != 0 and not outcomes.failure_reported:
            # SWE-bench's rule: a failed run whose report shows no failure is not describing that run (forged
            # PASSED lines, a report rewritten from inside the package). The agent's change caused it: reward 0.
            details.update(tests={t: outcomes.outcome(t) for t in tests},
                           reason=f"the test command exited {res.exit_code} but reported no failing test")
            return GradeResult(reward=0.0, resolved=False, scorable=True, details=details)
        return self._score(task, outcomes, details)

    async def _run_tests(self, task: Task, tree: Path, tests: list[str],
                         details: dict[str, Any]) -> tuple[ExecResult, TestOutcomes]:
        """One test run in `tree`; BrokenRun when it says nothing (timed out, no results, none of the tests)."""
        cfg = self.config
        report_name = f".irl-junit-{uuid.uuid4().hex}.xml"
        argv = [*self._test_command(task), "-rA", "-p", "no:cacheprovider", "--rootdir=.", "--tb=short",
                "--continue-on-collection-errors", f"--junitxml={report_name}", *files_of_tests(tests)]
        run_started = time.monotonic()
        try:
            res = await self.executor.run(tree, argv, cfg.test_timeout_s)
        except Exception as e:
            raise GradingError(f"test executor failed: {type(e).__name__}: {e}") from e
        details.update(test_exit_code=res.exit_code, test_run_s=round(time.monotonic() - run_started, 3),
                       test_output_tail=(res.stdout + res.stderr)[-4000:])
        if res.timed_out:
            raise BrokenRun(f"test run timed out after {cfg.test_timeout_s:g}s")
        return res, self._read_outcomes(tree / report_name, res, tests)

    async def _unchanged_run_is_usable(self, task: Task, base: Path, work: Path, tests: list[str]) -> bool:
        """Whether the task's tests run usably on the base commit plus the test patch (cached per task)."""
        key = (task.instance_id, task.base_commit, task.test_patch)
        if key not in self._baseline_usable:
            tree = work / "unchanged"
            await self._in_thread(shutil.copytree, base, tree, symlinks=True)
            if task.test_patch.strip():
                await self._in_thread(git_apply, tree, task.test_patch, self.config.git_timeout_s, "test_patch")
            try:
                await self._run_tests(task, tree, tests, {})
                self._baseline_usable[key] = True
            except BrokenRun:
                self._baseline_usable[key] = False
        return self._baseline_usable[key]

    def _test_command(self, task: Task) -> list[str]:
        return list(self.config.test_command or task.test_command or [sys.executable, "-m", "pytest"])

    @staticmethod
    def _read_outcomes(report: Path, res: ExecResult, tests: list[str]) -> TestOutcomes:
        outcomes: TestOutcomes | None = None
        if report.is_file():
            try:
                outcomes = parse_junit_xml(report.read_bytes(), tests)
            except ValueError:
                outcomes = None  # fall back to the -rA summary below
        if outcomes is None:
            outcomes = parse_summary_lines(res.stdout, tests)
        if outcomes is None:
            raise BrokenRun(f"no parseable test results (exit code {res.exit_code})")
        if not outcomes.any_reported(tests) and not outcomes.collection_errors:
            # Nothing we asked for ran and nothing failed to import: the task's ids or the test command are wrong,
            # or the agent's change hid every test (the unchanged repository's run tells which).
            raise BrokenRun(f"none of the task's tests were reported (exit code {res.exit_code})")
        return outcomes

    def _score(self, task: Task, outcomes: TestOutcomes, details: dict[str, Any]) -> GradeResult:
        per_test = {t: outcomes.outcome(t) for t in dict.fromkeys([*task.FAIL_TO_PASS, *task.PASS_TO_PASS])}
        f2p_ok = sum(outcomes.passed(t) for t in task.FAIL_TO_PASS)
        p2p_ok = sum(outcomes.passed(t) for t in task.PASS_TO_PASS)
        passed, total = sum(outcomes.passed(t) for t in per_test), len(per_test)
        resolved = passed == total
        reward = (passed / total) if self.config.reward_mode == "fraction" else float(resolved)
        details.update(
            tests=per_test, collection_errors=outcomes.collection_errors,
            fail_to_pass={"passed": f2p_ok, "total": len(task.FAIL_TO_PASS)},
            pass_to_pass={"passed": p2p_ok, "total": len(task.PASS_TO_PASS)},
        )
        return GradeResult(reward=reward, resolved=resolved, scorable=True, details=details)

    @staticmethod
    async def _in_thread(fn, *args, **kwargs):
        # The tree and git steps are blocking I/O; keep the worker's event loop (and its gate) responsive.
        return await asyncio.to_thread(fn, *args, **kwargs)


def unscorable(details: dict[str, Any], reason: str) -> GradeResult:
    """An ungradeable episode: no reward (never 0), excluded from the group baseline; `reason` says why."""
    details["reason"] = reason
    return GradeResult(reward=None, resolved=False, scorable=False, details=details)


async def grade_in_work_dir(grade: Callable[[Path, dict[str, Any]], Awaitable[GradeResult]], details: dict[str, Any],
                            *, work_root: str | None, prefix: str,
                            infrastructure_errors: tuple[type[BaseException], ...]) -> GradeResult:
    """The frame every grader runs in: `grade(work_dir, details)` in a private work dir removed on every path; an
    infrastructure failure, or any other exception (ours, never the agent's), is unscorable, never reward 0; the time
    taken lands in `details["grading_s"]`."""
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=work_root))
    try:
        result = await grade(work, details)
    except infrastructure_errors as exc:
        result = unscorable(details, str(exc))
    except Exception as exc:  # noqa: BLE001 - a grader's own failure must not score the agent
        result = unscorable(details, f"grader crashed: {type(exc).__name__}: {exc}")
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    result.details["grading_s"] = round(time.monotonic() - started, 3)
    return result
