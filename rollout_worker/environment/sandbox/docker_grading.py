"""Grading SWE-bench / SWE-Gym tasks in a fresh container of the task's image (design §7, docs/containers.md).

`SweBenchContainerGrader` implements `Grader`. After the agent is dead:
1. the pristine base is read from the task's image itself (`/testbed` of a created, never started container, without
   `.git`), so no host checkout is needed;
2. the agent's diff is computed on the host exactly as `FailPassGrader` does it (private temp dirs, scrubbed git, test
   files and test config dropped, junk ignored);
3. a fresh container of the image (`--network none`, limits, labelled for the reaper) gets the diff, the task's test
   patch and an eval script shaped like the harness's (`tasks.swebench.eval_script`: the harness's patch fallbacks,
   test files reset, test patch, the repository's test command between the markers, the exit status recorded);
4. the log is read with the harness's rules (`tasks.swebench.read_log` / `eval_report`): reward 1.0 exactly when the
   official verdict is "resolved" (`fraction`: the share of FAIL_TO_PASS + PASS_TO_PASS tests that succeed).
Infrastructure failures (no image, container errors, markers missing, the test patch not applying, a timeout) are
unscorable, never reward 0. The container and the temp dirs are removed on every path.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
import shlex
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from rollout_worker.environment.sandbox.docker_config import LABEL, OWNER_PID_LABEL, OWNER_START_LABEL
from rollout_worker.environment.sandbox.docker_io import docker_client, in_own_thread
from rollout_worker.environment.sandbox.registry import process_start_time
from rollout_worker.environment.tasks import swebench as swb
from rollout_worker.environment.tasks.trees import (
    GitError,
    TreeFilter,
    copy_filtered_tree,
    git_diff_no_index,
    restore_unchanged_test_config,
)
from rollout_worker.types import ExecResult, GradeResult, Task

logger = logging.getLogger(__name__)

EVAL_DIR = "/tmp/intercept-eval"
# SWE-bench images keep the task's environment in a conda env; the harness activates it before the tests.
CONDA_ACTIVATE = ["if [ -f /opt/miniconda3/bin/activate ]; then source /opt/miniconda3/bin/activate; "
                  "conda activate testbed; fi"]


class _Infra(RuntimeError):
    """A grading step failed for reasons outside the agent's control."""


@dataclass
class ContainerGradingConfig:
    """How `SweBenchContainerGrader` grades."""

    reward_mode: Literal["binary", "fraction"] = field(default="binary", metadata={
        "help": "`binary`: 1.0 exactly when the official verdict is resolved. `fraction`: share of tests succeeding."})
    timeout_s: float = field(default=1800.0, metadata={"help": "Limit of the test command; past it: unscorable."})
    tree_filter: TreeFilter = field(default_factory=TreeFilter, metadata={
        "help": "Which paths count as tests/test config (never taken from the agent) or junk."})
    max_patch_bytes: int = field(default=10 * 1024 * 1024, metadata={"help": "Larger agent diffs score 0."})
    git_timeout_s: float = field(default=300.0, metadata={"help": "Limit of each host git step."})
    keep_patch_chars: int = field(default=65536, metadata={"help": "Agent patch kept in details['agent_patch']."})
    keep_log_chars: int = field(default=8000, metadata={"help": "Eval log tail kept in details['eval_log_tail']."})
    mem_limit: str | None = field(default="8g", metadata={"help": "Grading container memory limit."})
    pids_limit: int | None = field(default=4096, metadata={"help": "Grading container process limit."})
    cpus: float | None = field(default=None, metadata={"help": "Grading container CPUs (None: unlimited)."})
    work_root: str | None = field(default=None, metadata={"help": "Where grading temp dirs go (default: tmp)."})
    engine_timeout_s: float = field(default=300.0, metadata={"help": "Timeout of one Docker API call."})


class SweBenchContainerGrader:
    """Grades a task that names an image, in a fresh container of it (see the module docstring)."""

    def __init__(self, config: ContainerGradingConfig | None = None, client: Any = None):
        self.config = config or ContainerGradingConfig()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(self.config.engine_timeout_s)
        return self._client

    async def grade(self, task: Task, agent_repo_dir: Path) -> GradeResult:
        started = time.monotonic()
        details: dict[str, Any] = {"instance_id": task.instance_id, "reward_mode": self.config.reward_mode,
                                   "grader": "swebench-container"}
        work = Path(tempfile.mkdtemp(prefix="irl-cgrade-", dir=self.config.work_root))
        try:
            result = await self._grade(task, Path(agent_repo_dir), work, details)
        except (_Infra, GitError) as exc:
            result = _unscorable(details, str(exc))
        except Exception as exc:  # anything else here is ours, not the agent's
            result = _unscorable(details, f"grader crashed: {type(exc).__name__}: {exc}")
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        result.details["grading_s"] = round(time.monotonic() - started, 3)
        return result

    def _names(self, task: Task) -> tuple[str, str, str, str]:
        image = task.image
        if not image:
            raise _Infra("task names no image: container grading needs the task's image")
        workdir = str(task.extra.get("workdir") or swb_workdir())
        try:
            parser = swb.parser_for(task.repo, task.extra.get("log_parser") or None)
        except ValueError as exc:
            raise _Infra(str(exc)) from exc
        if task.test_command:
            test_cmd = shlex.join(task.test_command)
        else:
            test_cmd = str(task.extra.get("test_cmd") or swb.REPO_TEST_CMD.get(task.repo, swb.TEST_PYTEST))
        return image, workdir, parser, test_cmd

    async def _grade(self, task: Task, agent_dir: Path, work: Path, details: dict[str, Any]) -> GradeResult:
        cfg = self.config
        image, workdir, parser, test_cmd = self._names(task)
        if not task.FAIL_TO_PASS:
            raise _Infra("task has no FAIL_TO_PASS tests")
        if not agent_dir.is_dir():
            raise _Infra(f"agent repository {agent_dir} does not exist")
        client = await asyncio.to_thread(lambda: self.client)

        base, before, after = work / "base", work / "a", work / "b"
        await asyncio.to_thread(self._export_base, client, image, workdir, base)
        keep = cfg.tree_filter.keeps_source
        await asyncio.to_thread(copy_filtered_tree, base, before, keep)
        skipped = await asyncio.to_thread(copy_filtered_tree, agent_dir, after, keep)
        restored = await asyncio.to_thread(restore_unchanged_test_config, before, after)
        patch = await asyncio.to_thread(git_diff_no_index, work, "a", "b", cfg.git_timeout_s)
        details.update(agent_patch=patch[: cfg.keep_patch_chars].decode("utf-8", "replace"),
                       agent_patch_bytes=len(patch), agent_files_skipped=skipped,
                       test_config_changes_dropped=restored, image=image, log_parser=parser, test_cmd=test_cmd)
        if len(patch) > cfg.max_patch_bytes:
            details["reason"] = f"agent patch is {len(patch)} bytes, over max_patch_bytes"
            return GradeResult(reward=0.0, resolved=False, scorable=True, details=details)

        test_files = swb.test_patch_files(task.test_patch)
        script = swb.eval_script(
            workdir=workdir, base_commit=task.base_commit, test_cmd=test_cmd,
            directives=list(task.extra.get("test_directives") or swb.test_directives(task.repo, task.test_patch)),
            test_files=test_files, patch_path=f"{EVAL_DIR}/agent.patch" if patch.strip() else None,
            test_patch_path=f"{EVAL_DIR}/test.patch", pre=CONDA_ACTIVATE, timeout_s=cfg.timeout_s)
        files = {"agent.patch": patch, "test.patch": task.test_patch.encode(), "eval.sh": script.encode()}
        run_started = time.monotonic()
        log, exit_code = await self._run_eval(client, image, files)
        details.update(eval_exit_code=exit_code, test_run_s=round(time.monotonic() - run_started, 3),
                       eval_log_tail=log[-cfg.keep_log_chars:])

        resolved, verdict, report = swb.resolved_from_log(log, task.FAIL_TO_PASS, task.PASS_TO_PASS, parser)
        details.update(official_resolved=resolved, log_found=verdict.found, test_exit_code=verdict.exit_code)
        if not verdict.found:
            if verdict.infra:
                raise _Infra(f"eval log unusable: {verdict.failure}")
            details["reason"] = verdict.failure
            return GradeResult(reward=0.0, resolved=False, scorable=True, details=details)
        assert report is not None
        details.update(tests={t: verdict.status_map.get(t, "MISSING") for t in [*task.FAIL_TO_PASS, *task.PASS_TO_PASS]},
                       fail_to_pass={"success": report.f2p_success, "failure": report.f2p_failure},
                       pass_to_pass={"success": report.p2p_success, "failure": report.p2p_failure},
                       resolution=report.resolution)
        reward = float(resolved) if cfg.reward_mode == "binary" else report.fraction()
        return GradeResult(reward=reward, resolved=resolved, scorable=True, details=details)

    @staticmethod
    def _labels(kind: str) -> dict[str, str]:
        return {LABEL: f"{kind}-{secrets.token_hex(6)}", OWNER_PID_LABEL: str(os.getpid()),
                OWNER_START_LABEL: str(process_start_time(os.getpid()) or "")}

    def _export_base(self, client: Any, image: str, workdir: str, dest: Path) -> None:
        from docker.errors import ImageNotFound

        try:
            container = client.containers.create(image, ["true"], network_mode="none", labels=self._labels("base"))
        except ImageNotFound as exc:
            raise _Infra(f"image {image!r} is not present") from exc
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

            from rollout_worker.environment.sandbox.docker_io import StreamReader, safe_tar_member

            with tarfile.open(fileobj=StreamReader(stream), mode="r|") as tar:
                tar.extractall(dest, members=members(tar), filter=safe_tar_member)
        finally:
            container.remove(force=True)

    async def _run_eval(self, client: Any, image: str, files: dict[str, bytes]) -> tuple[str, int | None]:
        cfg = self.config
        spec: dict[str, Any] = dict(image=image, command=["sleep", "infinity"], detach=True, init=True,
                                    network_mode="none", labels=self._labels("grade"),
                                    security_opt=["no-new-privileges"], user="0:0")
        if cfg.mem_limit:
            spec.update(mem_limit=cfg.mem_limit, memswap_limit=cfg.mem_limit)
        if cfg.pids_limit:
            spec["pids_limit"] = cfg.pids_limit
        if cfg.cpus:
            spec["nano_cpus"] = int(cfg.cpus * 1e9)
        try:
            container = await asyncio.to_thread(client.containers.run, **spec)
        except Exception as exc:
            raise _Infra(f"grading container did not start: {exc}") from exc
        try:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for name, data in files.items():
                    info = tarfile.TarInfo(f"intercept-eval/{name}")
                    info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
                    tar.addfile(info, io.BytesIO(data))
            if not await asyncio.to_thread(container.put_archive, "/tmp", buffer.getvalue()):
                raise _Infra("copying the eval files into the container failed")
            exec_id = (await asyncio.to_thread(client.api.exec_create, container.id, ["bash", f"{EVAL_DIR}/eval.sh"],
                                               stdout=True, stderr=True))["Id"]

            def run() -> tuple[str, int | None]:
                chunks = [c for c in client.api.exec_start(exec_id, stream=True)]
                return b"".join(chunks).decode("utf-8", "replace"), client.api.exec_inspect(exec_id).get("ExitCode")

            try:
                return await asyncio.wait_for(asyncio.shield(in_own_thread(run)), cfg.timeout_s + 120)
            except TimeoutError as exc:
                raise _Infra(f"eval script did not finish within {cfg.timeout_s + 120:g}s") from exc
        finally:
            try:
                await asyncio.to_thread(container.remove, force=True)
            except Exception as exc:  # left to reap_docker_orphans
                logger.warning("removing grading container failed: %r", exc)


class HarborContainerGrader:
    """Grades a Harbor task (`tasks.harbor`) the way Harbor does, in a fresh container: the image's working directory
    is replaced by the agent's final one, `tests/` is copied to /tests, `bash /tests/test.sh` runs (as root, no
    network, the task's verifier timeout), and the reward is what it wrote to /logs/verifier. Unlike Harbor's default
    (the verifier runs in the agent's own container), only the working directory carries over from the agent: what it
    changed elsewhere in its container is gone, and so is anything it left running."""

    def __init__(self, config: ContainerGradingConfig | None = None, client: Any = None):
        self.config = config or ContainerGradingConfig()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(self.config.engine_timeout_s)
        return self._client

    async def grade(self, task: Task, agent_repo_dir: Path) -> GradeResult:
        from rollout_worker.environment.tasks.harbor import read_reward

        started = time.monotonic()
        details: dict[str, Any] = {"instance_id": task.instance_id, "grader": "harbor-container"}
        try:
            if not task.image or "harbor_dir" not in task.extra:
                raise _Infra("not a Harbor task (no image or harbor_dir)")
            client = await asyncio.to_thread(lambda: self.client)
            timeout = float(task.extra.get("verifier_timeout_s") or self.config.timeout_s)
            log, code, files = await self._verify(client, task, Path(agent_repo_dir), timeout)
            details.update(verifier_exit_code=code, verifier_log_tail=log[-self.config.keep_log_chars:],
                           verifier_files=sorted(files))
            if code == 137 or "[intercept-rl] verifier timed out" in log:
                raise _Infra(f"verifier timed out after {timeout:g}s")
            try:
                reward = read_reward(files)
            except ValueError as exc:
                raise _Infra(f"verifier failed: {exc}") from exc
            result = GradeResult(reward=reward, resolved=reward >= 1.0, scorable=True, details=details)
        except _Infra as exc:
            result = _unscorable(details, str(exc))
        except Exception as exc:
            result = _unscorable(details, f"grader crashed: {type(exc).__name__}: {exc}")
        result.details["grading_s"] = round(time.monotonic() - started, 3)
        return result

    async def _verify(self, client: Any, task: Task, agent_dir: Path, timeout: float):
        cfg = self.config
        workdir = str(task.extra.get("workdir") or "/app")
        tests = Path(task.extra["harbor_dir"]) / "tests"
        spec: dict[str, Any] = dict(image=task.image, command=["sleep", "infinity"], detach=True, init=True,
                                    network_mode="none", labels=SweBenchContainerGrader._labels("verify"),
                                    security_opt=["no-new-privileges"], user="0:0")
        if cfg.mem_limit:
            spec.update(mem_limit=cfg.mem_limit, memswap_limit=cfg.mem_limit)
        if cfg.pids_limit:
            spec["pids_limit"] = cfg.pids_limit
        try:
            container = await asyncio.to_thread(client.containers.run, **spec)
        except Exception as exc:
            raise _Infra(f"verifier container did not start: {exc}") from exc
        try:
            def prepare() -> None:
                code, out = container.exec_run(["sh", "-c", 'rm -rf "$1" && mkdir -p "$1" /logs/verifier /logs/agent',
                                                "prepare", workdir], user="0")
                if code != 0:
                    raise _Infra(f"preparing the verifier container failed: {out[-500:]!r}")
                for source, dest, arcname in ((agent_dir, workdir, "."), (tests, "/", "tests")):
                    buffer = io.BytesIO()
                    with tarfile.open(fileobj=buffer, mode="w") as tar:
                        tar.add(source, arcname=arcname)
                    if not container.put_archive(dest, buffer.getvalue()):
                        raise _Infra(f"copying {source.name} into the verifier container failed")

            await asyncio.to_thread(prepare)
            script = (f'timeout -s KILL {int(timeout)} bash /tests/test.sh; code=$?; '
                      'if [ $code -eq 137 ]; then echo "[intercept-rl] verifier timed out"; fi; exit $code')
            exec_id = (await asyncio.to_thread(client.api.exec_create, container.id, ["bash", "-c", script],
                                               stdout=True, stderr=True, workdir=workdir))["Id"]

            def run() -> tuple[str, int | None]:
                chunks = [c for c in client.api.exec_start(exec_id, stream=True)]
                return b"".join(chunks).decode("utf-8", "replace"), client.api.exec_inspect(exec_id).get("ExitCode")

            try:
                log, code = await asyncio.wait_for(asyncio.shield(in_own_thread(run)), timeout + 120)
            except TimeoutError as exc:
                raise _Infra(f"verifier did not finish within {timeout + 120:g}s") from exc

            def collect() -> dict[str, bytes]:
                stream, _ = container.get_archive("/logs/verifier/.")
                out = {}
                with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                    for member in tar.getmembers():
                        if member.isfile() and member.size < (1 << 20):
                            extracted = tar.extractfile(member)
                            if extracted is not None:
                                out[PurePosixPath(member.name).name] = extracted.read()
                return out

            return log, code, await asyncio.to_thread(collect)
        finally:
            try:
                await asyncio.to_thread(container.remove, force=True)
            except Exception as exc:
                logger.warning("removing verifier container failed: %r", exc)


class DockerTestExecutor:
    """Runs the host grader's test command in a fresh container (implements `TestExecutor`), for hosts that have
    Docker but no bubblewrap: the base image, `--network none`, no capabilities, limits, labelled; `repo_dir` (the
    grader's private fresh copy) bound read-write at /testbed, and this interpreter's venv and Python prefix bound
    read-only at their own paths (the embedded tasks' test command is `<this python> -m pytest`)."""

    __test__ = False

    def __init__(self, image: str | None = None, client: Any = None, mem_limit: str = "4g", pids_limit: int = 1024,
                 output_limit: int = 1 << 20):
        from rollout_worker.environment.sandbox.docker_config import DEFAULT_BASE_IMAGE

        self.image = image or DEFAULT_BASE_IMAGE
        self._client = client
        self.mem_limit, self.pids_limit, self.output_limit = mem_limit, pids_limit, output_limit

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(120)
        return self._client

    async def run(self, repo_dir: Path, argv: list[str], timeout: float) -> ExecResult:
        import sys

        from docker.types import Mount

        repo_dir = Path(repo_dir).resolve()
        if not repo_dir.is_dir():
            raise FileNotFoundError(f"repo_dir {repo_dir} is not a directory")
        client = await asyncio.to_thread(lambda: self.client)
        ro = [p for p in dict.fromkeys([os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)])
              if p not in ("/", "/usr", "/usr/local")]
        mounts = [Mount(target="/testbed", source=str(repo_dir), type="bind")]
        mounts += [Mount(target=p, source=p, type="bind", read_only=True) for p in ro]
        spec: dict[str, Any] = dict(image=self.image, command=["sleep", "infinity"], detach=True, init=True,
                                    network_mode="none", labels=SweBenchContainerGrader._labels("test"),
                                    mounts=mounts, cap_drop=["ALL"], security_opt=["no-new-privileges"],
                                    user="0:0", working_dir="/testbed", mem_limit=self.mem_limit,
                                    memswap_limit=self.mem_limit, pids_limit=self.pids_limit)
        container = await asyncio.to_thread(client.containers.run, **spec)
        try:
            env = {"HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                   "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
            script = 'timeout -s KILL "$0" "$@"'
            exec_id = (await asyncio.to_thread(client.api.exec_create, container.id,
                                               ["sh", "-c", script, str(max(1, int(timeout))), *argv],
                                               stdout=True, stderr=True, environment=env, workdir="/testbed"))["Id"]

            def run() -> tuple[bytes, bytes, int | None]:
                out, err = client.api.exec_start(exec_id, demux=True)
                return out or b"", err or b"", client.api.exec_inspect(exec_id).get("ExitCode")

            try:
                out, err, code = await asyncio.wait_for(asyncio.shield(in_own_thread(run)), timeout + 60)
            except TimeoutError:
                return ExecResult(-9, "", "", timed_out=True)
            timed_out = code == 137
            return ExecResult(-9 if timed_out else (code if code is not None else -9),
                              out[-self.output_limit:].decode("utf-8", "replace"),
                              err[-self.output_limit:].decode("utf-8", "replace"), timed_out=timed_out)
        finally:
            try:
                await asyncio.to_thread(container.remove, force=True)
            except Exception as exc:
                logger.warning("removing test container failed: %r", exc)


def swb_workdir() -> str:
    from rollout_worker.environment.tasks.schema import SWE_BENCH_WORKDIR

    return SWE_BENCH_WORKDIR


class ImageAwareGrader:
    """Routes each task to the grader that can grade it: Harbor tasks to the Harbor verifier, tasks that name an
    image (SWE-bench, SWE-Gym) to the container grader, tasks with a host checkout (`repo_dir`: embedded, learning) to the host grader."""

    def __init__(self, host_grader: Any, container_grader: Any, harbor_grader: Any = None):
        self.host_grader = host_grader
        self.container_grader = container_grader
        self.harbor_grader = harbor_grader or HarborContainerGrader(client=getattr(container_grader, "_client", None))

    async def grade(self, task: Task, agent_repo_dir: Path) -> GradeResult:
        if "harbor_dir" in task.extra:
            return await self.harbor_grader.grade(task, agent_repo_dir)
        if task.image and not task.repo_dir:
            return await self.container_grader.grade(task, agent_repo_dir)
        return await self.host_grader.grade(task, agent_repo_dir)


def _unscorable(details: dict[str, Any], reason: str) -> GradeResult:
    details["reason"] = reason
    return GradeResult(reward=None, resolved=False, scorable=False, details=details)
