"""Grading SWE-bench / SWE-Gym tasks in a fresh container of the task's image (design §7, docs/containers.md).

`SweBenchContainerGrader` implements `Grader`. After the agent is dead:
1. the pristine base is read from the task's image itself (`/testbed` of a created, never started container, without
   `.git`), so no host checkout is needed;
2. the agent's diff is computed on the host exactly as `FailPassGrader` does it (private temp dirs, scrubbed git, test
   files and test config dropped, junk ignored);
3. a fresh container of the image (`--network none`, limits, labelled for the reaper) gets the diff, applied with the
   harness's fallbacks, then runs the eval script: the row's own `eval_script` exactly as the harness runs it, or one
   generated in the harness's shape for classic rows (`tasks.swebench.eval_script`);
4. the log is graded by the `swebench` package itself (`tasks.swebench.grade_log`): reward 1.0 exactly when the
   official verdict is "resolved" (`fraction`: the share of FAIL_TO_PASS + PASS_TO_PASS tests that succeed). The log
   is kept in the record (`details["eval_log"]`) so that `intercept-rl grade` can re-grade it offline.
Infrastructure failures (no image, container errors, the evidence in `tasks.swebench.INFRA_EVIDENCE`, markers missing)
are unscorable, never reward 0. The container and the temp dirs are removed on every path.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import shlex
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from rollout_worker.environment.grading.container_common import (
    ContainerGradingConfig,
    GradingInfraError,
    LazyDockerClient,
    container_labels,
    exec_output,
    isolated_spec,
    remove_quietly,
    start_container,
)
from rollout_worker.environment.grading.harbor_container import HarborContainerGrader
from rollout_worker.environment.grading.host import grade_in_work_dir
from rollout_worker.environment.tasks import swebench as swb
from rollout_worker.environment.tasks.trees import (
    GitError,
    copy_filtered_tree,
    git_diff_no_index,
    restore_unchanged_test_config,
)
from rollout_worker.types import GradeResult, Task

logger = logging.getLogger(__name__)

EVAL_DIR = "/tmp/intercept-eval"
# SWE-bench images keep the task's environment in a conda env; the harness activates it before the tests.
CONDA_ACTIVATE = ["if [ -f /opt/miniconda3/bin/activate ]; then source /opt/miniconda3/bin/activate; "
                  "conda activate testbed; fi"]
TIMED_OUT = 124  # `timeout`'s own status when the limit ended the command (a killed shell reads 137 instead)


def harness_row(task: Task) -> swb.HarnessRow:
    """The task as the harness sees it (its extra columns included: version, log_parser, eval_type, eval_script)."""
    return swb.HarnessRow.from_row({"version": "", **task.extra, "instance_id": task.instance_id, "repo": task.repo,
                                    "FAIL_TO_PASS": task.FAIL_TO_PASS, "PASS_TO_PASS": task.PASS_TO_PASS})


def kept_log(log: str, limit: int) -> str:
    """The eval log for the record: whole up to `limit` characters, else its head and tail with the cut marked."""
    if len(log) <= limit:
        return log
    half = limit // 2
    return f"{log[:half]}\n[intercept-rl: {len(log) - 2 * half} characters cut]\n{log[-half:]}"


class SweBenchContainerGrader:
    """Grades a task that names an image, in a fresh container of it (see the module docstring)."""

    def __init__(self, config: ContainerGradingConfig | None = None, client: Any = None):
        self.config = config or ContainerGradingConfig()
        self.docker = LazyDockerClient(client, self.config.docker_timeout_s)
        self._baseline_usable: dict[tuple[str, str, bytes], bool] = {}

    async def grade(self, task: Task, agent_repo_dir: Path) -> GradeResult:
        details: dict[str, Any] = {"instance_id": task.instance_id, "reward_mode": self.config.reward_mode,
                                   "grader": "swebench-container"}
        return await grade_in_work_dir(functools.partial(self._grade, task, Path(agent_repo_dir)), details,
                                       work_root=self.config.work_root, prefix="irl-cgrade-",
                                       infrastructure_errors=(GradingInfraError, GitError))

    async def _grade(self, task: Task, agent_dir: Path, work: Path, details: dict[str, Any]) -> GradeResult:
        cfg = self.config
        if not task.image:
            raise GradingInfraError("task names no image: container grading needs the task's image")
        if not task.FAIL_TO_PASS:
            raise GradingInfraError("task has no FAIL_TO_PASS tests")
        try:
            row = harness_row(task)
        except swb.RowError as exc:
            raise GradingInfraError(f"the task cannot be graded by the harness: {exc}") from exc
        if not agent_dir.is_dir():
            raise GradingInfraError(f"agent repository {agent_dir} does not exist")
        workdir = str(task.extra.get("workdir") or swb_workdir())
        client = await asyncio.to_thread(lambda: self.docker.client)

        base, before, after = work / "base", work / "a", work / "b"
        await asyncio.to_thread(self._export_base, client, task.image, workdir, base)
        keep = cfg.tree_filter.keeps_source
        await asyncio.to_thread(copy_filtered_tree, base, before, keep)
        skipped = await asyncio.to_thread(copy_filtered_tree, agent_dir, after, keep)
        restored = await asyncio.to_thread(restore_unchanged_test_config, before, after)
        patch = await asyncio.to_thread(git_diff_no_index, work, "a", "b", cfg.git_timeout_s)
        script, script_source = swb.eval_script(
            {**task.extra, "repo": task.repo, "test_patch": task.test_patch}, workdir=workdir,
            base_commit=task.base_commit, test_patch_path=f"{EVAL_DIR}/test.patch", pre=CONDA_ACTIVATE,
            test_cmd=shlex.join(task.test_command) if task.test_command else task.extra.get("test_cmd") or None)
        details.update(agent_patch=patch[: cfg.keep_patch_chars].decode("utf-8", "replace"),
                       agent_patch_bytes=len(patch), agent_files_skipped=skipped,
                       test_config_changes_dropped=restored, image=task.image, log_parser=row.log_parser,
                       log_parser_source=row.log_parser_source, eval_type=row.eval_type,
                       eval_script_source=script_source)
        if len(patch) > cfg.max_patch_bytes:
            details["reason"] = f"agent patch is {len(patch)} bytes, over max_patch_bytes"
            return GradeResult(reward=0.0, resolved=False, scorable=True, details=details)

        files = {"agent.patch": patch, "test.patch": task.test_patch.encode(), "eval.sh": script.encode(),
                 "apply.sh": swb.apply_patch_script(workdir, f"{EVAL_DIR}/agent.patch").encode()}
        run_started = time.monotonic()
        log = await self._run_eval(client, task.image, files, apply_patch=bool(patch.strip()))
        details.update(test_run_s=round(time.monotonic() - run_started, 3),
                       eval_log=kept_log(log, cfg.keep_log_chars))

        graded = swb.grade_log(log, row)
        details.update(official_resolved=graded.resolved, test_exit_code=graded.test_exit_code,
                       tests=graded.tests, fail_to_pass=graded.fail_to_pass, pass_to_pass=graded.pass_to_pass)
        if graded.infra_hint:
            details["harness_infra_hint"] = graded.infra_hint  # advisory, as in the harness: the verdict stands
        if graded.verdict is swb.Verdict.UNSCORABLE:
            # Unscorable only when the unchanged repository's run is unusable too: otherwise the agent's change
            # broke the run (ended the eval script, hung the tests), which the harness scores "not resolved".
            if not patch.strip() or not await self._unchanged_run_is_usable(client, task, row, files):
                raise GradingInfraError(f"eval log unusable: {graded.reason} (the unchanged repository's too)")
            details["reason"] = f"the agent's change broke the test run: {graded.reason}"
            return GradeResult(reward=0.0, resolved=False, scorable=True, details=details)
        if graded.reason:
            details["reason"] = graded.reason
        resolved = graded.verdict is swb.Verdict.RESOLVED
        reward = float(resolved) if cfg.reward_mode == "binary" else graded.fraction()
        return GradeResult(reward=reward, resolved=resolved, scorable=True, details=details)

    async def _unchanged_run_is_usable(self, client: Any, task: Task, row: swb.HarnessRow,
                                       files: dict[str, bytes]) -> bool:
        """Whether the eval script's log of the unchanged repository grades (cached per task and script)."""
        key = (task.image or "", task.instance_id, files["eval.sh"])
        if key not in self._baseline_usable:
            log = await self._run_eval(client, task.image or "", files, apply_patch=False)
            self._baseline_usable[key] = swb.grade_log(log, row).verdict is not swb.Verdict.UNSCORABLE
        return self._baseline_usable[key]

    def _export_base(self, client: Any, image: str, workdir: str, dest: Path) -> None:
        from docker.errors import ImageNotFound

        try:
            container = client.containers.create(image, ["true"], network_mode="none", labels=container_labels("base"))
        except ImageNotFound as exc:
            raise GradingInfraError(f"image {image!r} is not present") from exc
        try:
            stream, _ = container.get_archive(workdir)
            top = PurePosixPath(workdir).name
            dest.mkdir(parents=True)

            def members(tar: tarfile.TarFile):
                for member in tar:
                    parts = PurePosixPath(member.name).parts
                    if not parts or parts[0] != top or (len(parts) > 1 and parts[1] == ".git"):
                        continue
                    if len(parts) == 1:
                        continue
                    member.name = str(PurePosixPath(*parts[1:]))
                    yield member

            from rollout_worker.environment.sandbox.docker.client import StreamReader, safe_tar_member

            with tarfile.open(fileobj=StreamReader(stream), mode="r|") as tar:
                tar.extractall(dest, members=members(tar), filter=safe_tar_member)
        finally:
            container.remove(force=True)

    async def _run_eval(self, client: Any, image: str, files: dict[str, bytes], apply_patch: bool) -> str:
        """The agent patch applied as the harness applies it, then the eval script under `timeout`; the log graded
        (the apply output alone when the patch does not apply: the harness then has no test output either)."""
        cfg = self.config
        spec = isolated_spec(image, "grade", mem_limit=cfg.mem_limit, pids_limit=cfg.pids_limit, cpus=cfg.cpus)
        container = await start_container(client, spec, "grading")
        try:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for name, data in files.items():
                    info = tarfile.TarInfo(f"intercept-eval/{name}")
                    info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
                    tar.addfile(info, io.BytesIO(data))
            if not await asyncio.to_thread(container.put_archive, "/tmp", buffer.getvalue()):
                raise GradingInfraError("copying the eval files into the container failed")
            if apply_patch:
                applied, code = await exec_output(client, container.id, ["bash", f"{EVAL_DIR}/apply.sh"],
                                                  cfg.git_timeout_s, "patch application")
                if code != 0:
                    return applied
            limit = int(cfg.timeout_s)
            log, code = await exec_output(client, container.id,
                                          ["timeout", "-k", "5", str(limit), "bash", f"{EVAL_DIR}/eval.sh"],
                                          limit + 120, "eval script")
            if code == TIMED_OUT:  # the harness's own words for a run its timeout cut (swb.INFRA_EVIDENCE)
                log += f"\n\nTimeout error: {limit} seconds exceeded."
            return log
        finally:
            await remove_quietly(container, "grading")


def swb_workdir() -> str:
    from rollout_worker.environment.tasks.schema import SWE_BENCH_WORKDIR

    return SWE_BENCH_WORKDIR


class ImageAwareGrader:
    """Routes each task to the grader that can grade it: Harbor tasks to the Harbor verifier, tasks that name an
    image (SWE-bench, SWE-Gym) to the container grader, tasks with a host checkout (`repo_dir`: embedded, learning)
    to the host grader."""

    def __init__(self, host_grader: Any, container_grader: SweBenchContainerGrader, harbor_grader: Any = None):
        self.host_grader = host_grader
        self.container_grader = container_grader
        self.harbor_grader = harbor_grader or HarborContainerGrader(container_grader.config,
                                                                    client=container_grader.docker.created)

    async def grade(self, task: Task, agent_repo_dir: Path) -> GradeResult:
        if "harbor_dir" in task.extra:
            return await self.harbor_grader.grade(task, agent_repo_dir)
        if task.image and not task.repo_dir:
            return await self.container_grader.grade(task, agent_repo_dir)
        return await self.host_grader.grade(task, agent_repo_dir)
