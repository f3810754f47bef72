"""A remote sandbox backend SKELETON for Spaces whose container cannot run bubblewrap (docs/space.md). Test-only:
it lives under tests/ until a real provider adapter exists (no product module may import it: import-linter).

UNTESTED AGAINST ANY REAL PROVIDER. No E2B / Modal / other adapter is written here: neither service is reachable from
where this was built. What exists and is tested offline (tests/space_app/test_space_remote_sandbox.py, with an
in-process fake machine): the `SandboxBackend` / `Sandbox` plumbing of rollout_worker.protocols on top of a small
provider seam, `RemoteMachine`, that an adapter for a real service would implement.

How it is meant to work: the agent runs on a machine elsewhere, with the task's repository uploaded as a tar; it
reaches the policy through the gate's *public* URL (the Space's status page forwards `/rollout/<id>/v1/...` to the
gate on loopback), with the rollout's own key. The repository the agent left comes back as a tar, into a host
directory the grader reads (grading still happens host-side, in a fresh sandbox the grader's executor makes).

Limits to know before using it: a private Space's URL needs an HF token in `Authorization`, where the agent sends its
rollout key, so this needs a public Space or a gate that reads the rollout key elsewhere; the remote machine's own
network isolation (egress only to the Space) is the provider's to enforce and must be checked per provider.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from rollout_worker.environment.sandbox.errors import SandboxError
from rollout_worker.protocols import SandboxProcess
from rollout_worker.types import ExecResult, RolloutEndpoint, Task


class RemoteMachine(Protocol):
    """What a remote sandbox provider must offer. One instance is one machine, used by one rollout."""

    async def start(self, *, image: str | None) -> None:
        """Boot the machine (from `image` when the task names one)."""
        ...

    async def exec(self, argv: list[str], *, timeout: float, env: dict[str, str], cwd: str) -> ExecResult: ...

    async def spawn(self, argv: list[str], *, env: dict[str, str], cwd: str, output_limit: int) -> SandboxProcess:
        ...

    async def put_tar(self, directory: str, data: bytes) -> None:
        """Extract the tar `data` into `directory` (created)."""
        ...

    async def get_tar(self, directory: str) -> bytes:
        """`directory` as a tar (paths relative to it)."""
        ...

    async def put_file(self, path: str, data: bytes, mode: int) -> None: ...

    async def get_file(self, path: str) -> bytes: ...

    async def close(self) -> None:
        """Stop and delete the machine. Idempotent."""
        ...


def public_endpoint(endpoint: RolloutEndpoint, public_url: str) -> RolloutEndpoint:
    """The rollout's endpoint as a remote machine reaches it: the public origin, the gate's own path, the same key."""
    public = urlsplit(public_url)
    if public.scheme not in ("https", "http") or not public.netloc:
        raise SandboxError(f"public gate URL must be http(s)://host, got {public_url!r}")
    path = urlsplit(endpoint.base_url).path
    return RolloutEndpoint(rollout_id=endpoint.rollout_id, api_key=endpoint.api_key, model=endpoint.model,
                           base_url=urlunsplit((public.scheme, public.netloc, path, "", "")))


def tar_directory(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return buffer.getvalue()


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    return buffer.getvalue()


EMPTY_TAR = _empty_tar()


class RemoteSandbox:
    """A `Sandbox` on a `RemoteMachine`. Use as `async with`; `destroy()` closes the machine on every path."""

    def __init__(self, machine: RemoteMachine, *, workdir: str, home: str, endpoint: RolloutEndpoint | None):
        self._machine, self._workdir, self._home, self._endpoint = machine, workdir, home, endpoint
        self._processes: list[SandboxProcess] = []
        self._host_copy: tempfile.TemporaryDirectory | None = None
        self._destroyed = False

    @property
    def workdir(self) -> str:
        return self._workdir

    @property
    def home(self) -> str:
        return self._home

    @property
    def endpoint(self) -> RolloutEndpoint | None:
        return self._endpoint

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        return {"HOME": self._home, "PATH": "/usr/local/bin:/usr/bin:/bin", **(env or {})}

    async def exec(self, argv: list[str], timeout: float, env: dict[str, str] | None = None,
                   cwd: str | None = None) -> ExecResult:
        return await self._machine.exec(argv, timeout=timeout, env=self._env(env), cwd=cwd or self._workdir)

    async def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                    output_limit: int = 65536) -> SandboxProcess:
        process = await self._machine.spawn(argv, env=self._env(env), cwd=cwd or self._workdir,
                                            output_limit=output_limit)
        self._processes.append(process)
        return process

    async def read_file(self, path: str) -> bytes:
        return await self._machine.get_file(path)

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        normalized = posixpath.normpath(path)
        if not any(normalized == root or normalized.startswith(root + "/") for root in (self._workdir, self._home)):
            raise SandboxError(f"write_file outside the workdir and home: {path}")
        await self._machine.put_file(normalized, data, mode)

    async def host_repo_dir(self) -> Path:
        """Download the repository as the agent left it into a host directory (kept until `destroy`)."""
        if self._host_copy is None:
            self._host_copy = tempfile.TemporaryDirectory(prefix="irl-remote-repo-")
            data = await self._machine.get_tar(self._workdir)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(self._host_copy.name, filter="data")  # no absolute paths, links out, devices
        return Path(self._host_copy.name)

    async def kill(self) -> None:
        for process in self._processes:
            await process.kill()

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        try:
            await self.kill()
        finally:
            await self._machine.close()
            if self._host_copy is not None:
                self._host_copy.cleanup()

    async def __aenter__(self) -> RemoteSandbox:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.destroy()


class RemoteSandboxBackend:
    """`SandboxBackend` that puts each rollout on a fresh `RemoteMachine` (from `machine_factory`).

    Args:
        machine_factory: makes one (not yet started) machine per rollout; a provider adapter.
        public_url: the origin remote machines reach the gate at (on a Space: `https://$SPACE_HOST`).
        workdir, home: paths on the machine.
    """

    name = "remote"

    def __init__(self, machine_factory: Callable[[], RemoteMachine], public_url: str, *,
                 workdir: str = "/workspace/repo", home: str = "/workspace/home"):
        self.machine_factory, self.public_url, self.workdir, self.home = machine_factory, public_url, workdir, home

    async def create(self, task: Task, rollout_id: str, endpoint: RolloutEndpoint | None = None) -> RemoteSandbox:
        if task.repo_dir is None and task.image is None:
            raise SandboxError(f"task {task.instance_id}: neither a local repository nor an image to start from")
        agent_endpoint = public_endpoint(endpoint, self.public_url) if endpoint is not None else None
        machine = self.machine_factory()
        try:
            await machine.start(image=task.image)
            if task.repo_dir is not None:
                await machine.put_tar(self.workdir, tar_directory(Path(task.repo_dir)))
            await machine.put_tar(self.home, EMPTY_TAR)
        except Exception as error:
            await machine.close()
            if isinstance(error, SandboxError):
                raise
            raise SandboxError(f"remote sandbox for {rollout_id} failed: {type(error).__name__}: {error}") from error
        return RemoteSandbox(machine, workdir=self.workdir, home=self.home, endpoint=agent_endpoint)
