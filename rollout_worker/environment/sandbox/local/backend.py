"""The `local` sandbox backend: bubblewrap, no Docker engine needed (design §7).

Each sandbox is a directory `<state_dir>/sb-<hex>/` holding a private copy of the task repository (bound
writable at `config.workdir`), a persistent home (bound at `config.home`), the host end of the gate relay
(`gate.sock`) and its registry record. Each command runs in its own fresh bwrap namespaces with those binds, so
files persist between commands while processes never outlive `kill()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from rollout_worker.environment.sandbox.creation import new_sandbox_dir, set_up_or_destroy
from rollout_worker.environment.sandbox.errors import SandboxError
from rollout_worker.environment.sandbox.local.bwrap import (
    BwrapProcess,
    LocalSandboxConfig,
    build_bwrap_argv,
    resolve_bwrap,
    sandbox_env,
)
from rollout_worker.environment.sandbox.registry import (
    SandboxRecord,
    default_state_dir,
    kill_processes_mentioning,
    process_start_time,
    remove_tree,
)
from rollout_worker.environment.sandbox.relay import GateProxy
from rollout_worker.types import ExecResult, RolloutEndpoint

if TYPE_CHECKING:
    from types import TracebackType

    from rollout_worker.types import Task

logger = logging.getLogger(__name__)


def inner_endpoint(endpoint: RolloutEndpoint, port: int) -> RolloutEndpoint:
    """The agent-facing endpoint: same path, key and model, host part replaced by the sandbox's relay port."""
    path = urlsplit(endpoint.base_url).path.rstrip("/")
    return replace(endpoint, base_url=f"http://127.0.0.1:{port}{path}")


class LocalSandbox:
    """A bubblewrap sandbox (implements `Sandbox`). Created by `LocalSandboxBackend.create`."""

    def __init__(
        self, config: LocalSandboxConfig, bwrap: str, root: Path, record: SandboxRecord,
        endpoint: RolloutEndpoint | None,
    ):
        self.config = config
        self._bwrap = bwrap
        self.root = root
        self.host_workdir = root / "repo"
        self.host_home = root / "home"
        self.socket_path = root / "gate.sock"
        self._record = record
        self._host_endpoint = endpoint
        self._endpoint = inner_endpoint(endpoint, config.relay_port) if endpoint else None
        self._proxy: GateProxy | None = None
        self._processes: list[BwrapProcess] = []
        self._destroyed = False
        self._copying: asyncio.Future | None = None

    @property
    def sandbox_id(self) -> str:
        return self._record.sandbox_id

    @property
    def workdir(self) -> str:
        return self.config.workdir

    @property
    def home(self) -> str:
        return self.config.home

    @property
    def endpoint(self) -> RolloutEndpoint | None:
        return self._endpoint

    @property
    def proxy(self) -> GateProxy | None:
        return self._proxy

    async def _setup(self, task: Task) -> None:
        if not task.repo_dir or not Path(task.repo_dir).is_dir():
            raise SandboxError(f"task {task.instance_id}: repo_dir {task.repo_dir!r} is not a directory")
        # copytree blocks, so it runs off the loop; shielded and remembered so that a cancelled create still waits
        # for the copy to finish before destroy() removes the directory under it.
        self._copying = asyncio.get_running_loop().run_in_executor(
            None, lambda: shutil.copytree(task.repo_dir, self.host_workdir, symlinks=True)
        )
        await asyncio.shield(self._copying)
        self.host_home.mkdir()
        if self._host_endpoint is not None:
            self._proxy = GateProxy(
                self.socket_path, self._host_endpoint.base_url, self._host_endpoint.rollout_id,
                self.config.upstream_timeout_s,
            )
            await self._proxy.start()
        if self.config.probe_on_create:
            probe = await self.exec(["true"], timeout=30)
            if probe.exit_code != 0:
                raise SandboxError(f"bubblewrap sandbox does not start here (exit {probe.exit_code}): {probe.stderr.strip()[-2000:]}")

    async def _spawn(
        self, argv: list[str], env: dict[str, str] | None, cwd: str | None, output_limit: int, merge_stderr: bool
    ) -> BwrapProcess:
        if self._destroyed:
            raise SandboxError(f"sandbox {self.sandbox_id} is destroyed")
        if not argv:
            raise ValueError("argv must not be empty")
        full = build_bwrap_argv(
            self.config,
            self._bwrap,
            list(argv),
            writable_binds=[(str(self.host_workdir), self.config.workdir), (str(self.host_home), self.config.home)],
            chdir=cwd or self.config.workdir,
            relay_socket=str(self.socket_path) if self._proxy is not None else None,
        )
        # Shielded: cancelled mid-spawn, asyncio may already have started bwrap and then lose it (measured: 6 of 150
        # cancelled starts left bwrap and the agent running after destroy()). The spawn always completes; a
        # cancelled caller's process is then killed before the cancellation goes on.
        spawning = asyncio.ensure_future(BwrapProcess.spawn(
            full, sandbox_env(self.config, self.config.home, env), output_limit, merge_stderr,
            self.config.kill_timeout_s,
        ))
        try:
            proc = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            try:
                await asyncio.wait_for(spawning, self.config.kill_timeout_s)
            except BaseException:  # noqa: BLE001 - the spawn failed or hung: nothing of ours to kill
                raise asyncio.CancelledError from None
            await spawning.result().kill()
            raise
        self._processes.append(proc)
        self._record.pids[str(proc.pid)] = process_start_time(proc.pid)
        self._record.save(self.root)
        return proc

    def _forget_finished(self) -> None:
        live = [p for p in self._processes if p.returncode is None]
        if len(live) != len(self._processes):
            self._processes = live
            self._record.pids = {k: v for k, v in self._record.pids.items() if int(k) in {p.pid for p in live}}
            self._record.save(self.root)

    async def exec(
        self, argv: list[str], timeout: float, env: dict[str, str] | None = None, cwd: str | None = None,
        output_limit: int = 1 << 20,
    ) -> ExecResult:
        proc = await self._spawn(argv, env, cwd, output_limit, merge_stderr=False)
        try:
            return await proc.result(timeout)
        finally:
            await proc.kill()  # no-op after a normal exit; reaps on cancellation
            if not self._destroyed:
                self._forget_finished()

    async def start(
        self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None, output_limit: int = 65536
    ) -> BwrapProcess:
        return await self._spawn(argv, env, cwd, output_limit, merge_stderr=True)

    def _host_path(self, path: str) -> Path:
        """Map an inside path to its host file, refusing anything outside the writable binds (symlinks included:
        the agent controls these trees)."""
        inside = PurePosixPath(path)
        for inner_root, host_root in ((self.config.workdir, self.host_workdir), (self.config.home, self.host_home)):
            try:
                relative = inside.relative_to(inner_root)
            except ValueError:
                continue
            if ".." in relative.parts:
                break
            host = host_root / relative
            real_root, real = os.path.realpath(host_root), os.path.realpath(host)
            if real != real_root and not real.startswith(real_root + os.sep):
                raise PermissionError(f"{path} resolves outside the sandbox")
            return host
        raise PermissionError(f"{path} is not under the sandbox's workdir {self.workdir} or home {self.home}")

    async def read_file(self, path: str) -> bytes:
        return await asyncio.to_thread(self._host_path(path).read_bytes)

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        host = self._host_path(path)

        def write() -> None:
            host.parent.mkdir(parents=True, exist_ok=True)
            if host.is_symlink():
                host.unlink()
            host.write_bytes(data)
            os.chmod(host, mode)

        await asyncio.to_thread(write)

    async def host_repo_dir(self) -> Path:
        return self.host_workdir

    async def kill(self) -> None:
        await asyncio.gather(*(p.kill() for p in self._processes))
        if not self._destroyed:
            self._forget_finished()

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        try:
            await self.kill()
            escaped = await asyncio.to_thread(kill_processes_mentioning, str(self.root))
            if escaped:
                logger.warning("sandbox %s: killed %d process(es) outside its process group", self.sandbox_id, escaped)
        finally:
            if self._proxy is not None:
                await self._proxy.close()
            if self._copying is not None:
                await asyncio.wait([self._copying])
            await asyncio.to_thread(remove_tree, self.root)

    async def __aenter__(self) -> LocalSandbox:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.destroy()


class LocalSandboxBackend:
    """Creates bubblewrap sandboxes (implements `SandboxBackend`)."""

    name = "local"

    def __init__(self, config: LocalSandboxConfig | None = None):
        self.config = config or LocalSandboxConfig()
        self.state_dir = Path(self.config.state_dir) if self.config.state_dir else default_state_dir()

    async def create(self, task: Task, rollout_id: str, endpoint: RolloutEndpoint | None = None) -> LocalSandbox:
        bwrap = resolve_bwrap(self.config)
        root, record = new_sandbox_dir(self.state_dir, rollout_id, self.name)
        sandbox = LocalSandbox(self.config, bwrap, root, record, endpoint)
        await set_up_or_destroy(sandbox, record, root, task, "local")
        return sandbox
