"""Grading a Harbor task (`tasks.harbor`) in a fresh container of its image, the way Harbor's verifier does."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from rollout_worker.environment.grading.container_common import (
    ContainerGradingConfig,
    GradingInfraError,
    LazyDockerClient,
    exec_output,
    isolated_spec,
    remove_quietly,
    start_container,
)
from rollout_worker.environment.grading.host import unscorable
from rollout_worker.types import GradeResult, Task


class HarborContainerGrader:
    """Grades a Harbor task (`tasks.harbor`) the way Harbor does, in a fresh container: the image's working directory
    is replaced by the agent's final one, `tests/` is copied to /tests, `bash /tests/test.sh` runs (as root, no
    network, the task's verifier timeout), and the reward is what it wrote to /logs/verifier. Unlike Harbor's default
    (the verifier runs in the agent's own container), only the working directory carries over from the agent: what it
    changed elsewhere in its container is gone, and so is anything it left running."""

    def __init__(self, config: ContainerGradingConfig | None = None, client: Any = None):
        self.config = config or ContainerGradingConfig()
        self.docker = LazyDockerClient(client, self.config.docker_timeout_s)

    async def grade(self, task: Task, agent_repo_dir: Path) -> GradeResult:
        from rollout_worker.environment.tasks.harbor import read_reward

        started = time.monotonic()
        details: dict[str, Any] = {"instance_id": task.instance_id, "grader": "harbor-container"}
        try:
            if not task.image or "harbor_dir" not in task.extra:
                raise GradingInfraError("not a Harbor task (no image or harbor_dir)")
            client = await asyncio.to_thread(lambda: self.docker.client)
            timeout = float(task.extra.get("verifier_timeout_s") or self.config.timeout_s)
            log, code, files = await self._verify(client, task, Path(agent_repo_dir), timeout)
            details.update(verifier_exit_code=code, verifier_log_tail=log[-self.config.keep_log_chars:],
                           verifier_files=sorted(files))
            if code == 137 or "[intercept-rl] verifier timed out" in log:
                raise GradingInfraError(f"verifier timed out after {timeout:g}s")
            try:
                reward = read_reward(files)
            except ValueError as exc:
                raise GradingInfraError(f"verifier failed: {exc}") from exc
            result = GradeResult(reward=reward, resolved=reward >= 1.0, scorable=True, details=details)
        except GradingInfraError as exc:
            result = unscorable(details, str(exc))
        except Exception as exc:
            result = unscorable(details, f"grader crashed: {type(exc).__name__}: {exc}")
        result.details["grading_s"] = round(time.monotonic() - started, 3)
        return result

    async def _verify(self, client: Any, task: Task, agent_dir: Path, timeout: float):
        cfg = self.config
        workdir = str(task.extra.get("workdir") or "/app")
        tests = Path(task.extra["harbor_dir"]) / "tests"
        spec = isolated_spec(task.image, "verify", mem_limit=cfg.mem_limit, pids_limit=cfg.pids_limit)
        container = await start_container(client, spec, "verifier")
        try:
            def prepare() -> None:
                code, out = container.exec_run(["sh", "-c", 'rm -rf "$1" && mkdir -p "$1" /logs/verifier /logs/agent',
                                                "prepare", workdir], user="0")
                if code != 0:
                    raise GradingInfraError(f"preparing the verifier container failed: {out[-500:]!r}")
                for source, dest, arcname in ((agent_dir, workdir, "."), (tests, "/", "tests")):
                    buffer = io.BytesIO()
                    with tarfile.open(fileobj=buffer, mode="w") as tar:
                        tar.add(source, arcname=arcname)
                    if not container.put_archive(dest, buffer.getvalue()):
                        raise GradingInfraError(f"copying {source.name} into the verifier container failed")

            await asyncio.to_thread(prepare)
            script = (f'timeout -s KILL {int(timeout)} bash /tests/test.sh; code=$?; '
                      'if [ $code -eq 137 ]; then echo "[intercept-rl] verifier timed out"; fi; exit $code')
            log, code = await exec_output(client, container.id, ["bash", "-c", script], timeout + 120, "verifier",
                                          workdir=workdir)

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
            await remove_quietly(container, "verifier")
