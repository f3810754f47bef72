"""Running the host grader's test command in a fresh container, for hosts with Docker but no bubblewrap."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from rollout_worker.environment.grading.container_common import LazyDockerClient, isolated_spec, remove_quietly
from rollout_worker.environment.sandbox.docker.client import in_own_thread
from rollout_worker.types import ExecResult


class DockerTestExecutor:
    """Runs the host grader's test command in a fresh container (implements `TestExecutor`), for hosts that have
    Docker but no bubblewrap: the base image, `--network none`, no capabilities, limits, labelled; `repo_dir` (the
    grader's private fresh copy) bound read-write at /testbed, and this interpreter's venv and Python prefix bound
    read-only at their own paths (the embedded tasks' test command is `<this python> -m pytest`)."""

    __test__ = False

    def __init__(self, image: str | None = None, client: Any = None, mem_limit: str = "4g", pids_limit: int = 1024,
                 output_limit: int = 1 << 20):
        from rollout_worker.environment.sandbox.docker.config import DEFAULT_BASE_IMAGE

        self.image = image or DEFAULT_BASE_IMAGE
        self.docker = LazyDockerClient(client, 120)
        self.mem_limit, self.pids_limit, self.output_limit = mem_limit, pids_limit, output_limit

    async def run(self, repo_dir: Path, argv: list[str], timeout: float) -> ExecResult:
        import sys

        from docker.types import Mount

        repo_dir = Path(repo_dir).resolve()
        if not repo_dir.is_dir():
            raise FileNotFoundError(f"repo_dir {repo_dir} is not a directory")
        client = await asyncio.to_thread(lambda: self.docker.client)
        ro = [p for p in dict.fromkeys([os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)])
              if p not in ("/", "/usr", "/usr/local")]
        mounts = [Mount(target="/testbed", source=str(repo_dir), type="bind")]
        mounts += [Mount(target=p, source=p, type="bind", read_only=True) for p in ro]
        spec = isolated_spec(self.image, "test", mem_limit=self.mem_limit, pids_limit=self.pids_limit,
                             mounts=mounts, cap_drop=["ALL"], working_dir="/testbed")
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
            await remove_quietly(container, "test")
