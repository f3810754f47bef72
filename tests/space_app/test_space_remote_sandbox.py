"""tests/support/remote_sandbox.py's plumbing, offline, on an in-process fake machine (NOT a sandbox: test only).

What this proves: the backend and sandbox satisfy rollout_worker's protocols, upload the task's repository, hand the
agent the public gate URL with the rollout's own key, bring the agent's repository back for the grader, refuse
writes outside workdir/home, and close the machine on every path. What it cannot prove: any real provider (E2B,
Modal, ...), their isolation and network policy — none is reachable here.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from rollout_worker.environment.sandbox.errors import SandboxError
from rollout_worker.protocols import Sandbox, SandboxProcess
from rollout_worker.types import ExecResult, RolloutEndpoint, Task
from tests.support.remote_sandbox import RemoteSandboxBackend, public_endpoint


class FakeProcess:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @property
    def returncode(self):
        return self.proc.poll()

    async def wait(self, timeout=None):
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    async def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        await asyncio.to_thread(self.proc.wait)

    def output_tail(self):
        return ""


class FakeMachine:
    """Maps the machine's absolute paths under a host temp dir and runs commands on this host."""

    def __init__(self, root: Path, fail_on: str | None = None):
        self.root, self.fail_on = root, fail_on
        self.started = self.closed = False
        self.calls: list[str] = []

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    async def start(self, *, image):
        self.calls.append("start")
        self.started = True

    async def exec(self, argv, *, timeout, env, cwd):
        proc = subprocess.run(argv, cwd=self.host(cwd), env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=timeout)
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    async def spawn(self, argv, *, env, cwd, output_limit):
        return FakeProcess(subprocess.Popen(argv, cwd=self.host(cwd), env={**os.environ, **env}))

    async def put_tar(self, directory, data):
        self.calls.append(f"put_tar {directory}")
        if self.fail_on == "put_tar":
            raise ConnectionError("upload failed")
        self.host(directory).mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(self.host(directory), filter="data")

    async def get_tar(self, directory):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(self.host(directory), arcname=".")
        return buffer.getvalue()

    async def put_file(self, path, data, mode):
        self.host(path).parent.mkdir(parents=True, exist_ok=True)
        self.host(path).write_bytes(data)

    async def get_file(self, path):
        return self.host(path).read_bytes()

    async def close(self):
        self.calls.append("close")
        self.closed = True


@pytest.fixture
def task(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("VALUE = 1\n")
    return Task(instance_id="t1", repo="local/t1", base_commit="abc", problem_statement="fix", repo_dir=str(repo))


ENDPOINT = RolloutEndpoint(rollout_id="r1", base_url="http://127.0.0.1:41234/rollout/r1/v1", api_key="irl-key",
                           model="policy")


async def test_remote_sandbox_round_trip(tmp_path, task):
    machines = []

    def factory():
        machines.append(FakeMachine(tmp_path / "machine"))
        return machines[-1]

    backend = RemoteSandboxBackend(factory, "https://someone-test.hf.space")
    async with await backend.create(task, "r1", ENDPOINT) as sandbox:
        assert isinstance(sandbox, Sandbox)
        assert sandbox.endpoint.base_url == "https://someone-test.hf.space/rollout/r1/v1"
        assert sandbox.endpoint.api_key == "irl-key" and sandbox.endpoint.model == "policy"
        result = await sandbox.exec(["cat", "pkg/mod.py"], timeout=10)
        assert result.exit_code == 0 and result.stdout == "VALUE = 1\n"
        await sandbox.write_file(f"{sandbox.workdir}/pkg/mod.py", b"VALUE = 2\n")
        assert await sandbox.read_file(f"{sandbox.workdir}/pkg/mod.py") == b"VALUE = 2\n"
        with pytest.raises(SandboxError):
            await sandbox.write_file("/etc/passwd", b"x")
        with pytest.raises(SandboxError):
            await sandbox.write_file(f"{sandbox.workdir}/../../etc/x", b"x")
        process = await sandbox.start(["sleep", "30"])
        assert isinstance(process, SandboxProcess) and process.returncode is None
        await sandbox.kill()
        assert process.returncode is not None
        host = await sandbox.host_repo_dir()
        assert (host / "pkg" / "mod.py").read_text() == "VALUE = 2\n"
    assert machines[0].closed and not host.exists()


async def test_a_failed_upload_closes_the_machine_and_is_a_sandbox_error(tmp_path, task):
    machine = FakeMachine(tmp_path / "machine", fail_on="put_tar")
    backend = RemoteSandboxBackend(lambda: machine, "https://someone-test.hf.space")
    with pytest.raises(SandboxError, match="upload failed"):
        await backend.create(task, "r1", ENDPOINT)
    assert machine.calls == ["start", "put_tar /workspace/repo", "close"]


def test_public_endpoint_keeps_path_and_key_and_rejects_bad_urls():
    public = public_endpoint(ENDPOINT, "https://x.hf.space/")
    assert public.base_url == "https://x.hf.space/rollout/r1/v1" and public.api_key == "irl-key"
    assert "irl-key" not in repr(public)
    with pytest.raises(SandboxError):
        public_endpoint(ENDPOINT, "x.hf.space")
