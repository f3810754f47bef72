"""Contracts for sandboxes: where an agent runs, how commands run inside, and how grading runs tests.

A `SandboxBackend` turns a task into a `Sandbox`: an isolated copy of the task's repository plus the only network
path the agent gets, its own rollout endpoint (DESIGN §7). Backends: `local` (bubblewrap, the default) and `docker`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from types import TracebackType

    from rollout_worker.types import RolloutEndpoint, Task


class SandboxError(RuntimeError):
    """A sandbox could not be created or used (infrastructure failure: the episode is unscorable)."""


class SandboxUnavailableError(SandboxError):
    """The backend cannot run at all here (no bwrap binary, no Docker engine, missing optional extra)."""


@dataclass
class ExecResult:
    """Outcome of a command run to completion (or killed at its timeout).

    `exit_code` is the process's status; a negative value is the signal that ended it (e.g. -9 after a timeout kill).
    `stdout` / `stderr` hold at most the command's output limit (the tail) and are decoded leniently.
    """

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False


@runtime_checkable
class SandboxProcess(Protocol):
    """A background process in a sandbox (the agent). Its stdout and stderr are merged into one bounded tail."""

    @property
    def returncode(self) -> int | None:
        """Exit status once it has ended (negative: killed by that signal), else None."""
        ...

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` seconds for the exit; returns the exit status, or None if it is still running."""
        ...

    async def kill(self) -> None:
        """Kill the process and everything it started; returns once it is gone. Idempotent."""
        ...

    def output_tail(self) -> str:
        """The last bytes (up to the output limit) the process wrote, decoded leniently."""
        ...


@runtime_checkable
class Sandbox(Protocol):
    """One rollout's isolated workspace. Use as `async with` so `destroy()` runs on every path."""

    @property
    def workdir(self) -> str:
        """The repository path as the agent sees it (inside the sandbox)."""
        ...

    @property
    def home(self) -> str:
        """A writable, persistent home directory inside the sandbox (agent config files go here)."""
        ...

    @property
    def endpoint(self) -> RolloutEndpoint | None:
        """The agent-facing endpoint (the sandbox's inner URL, same key and model), or None without one."""
        ...

    async def exec(
        self, argv: list[str], timeout: float, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> ExecResult:
        """Run `argv` inside the sandbox to completion, killing it after `timeout` seconds."""
        ...

    async def start(
        self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None, output_limit: int = 65536
    ) -> SandboxProcess:
        """Start `argv` in the background inside the sandbox; its output is kept up to `output_limit` bytes (tail)."""
        ...

    async def read_file(self, path: str) -> bytes:
        """Read a file by its inside path."""
        ...

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file by its inside path (must lie under `workdir` or `home`), creating parent directories."""
        ...

    async def host_repo_dir(self) -> Path:
        """A host directory holding the repository as the agent left it; call after `kill()` so it is frozen."""
        ...

    async def kill(self) -> None:
        """Kill every process running in the sandbox. Idempotent."""
        ...

    async def destroy(self) -> None:
        """Kill everything and remove every trace (dirs, sockets, relays, registry entry). Idempotent."""
        ...

    async def __aenter__(self) -> Sandbox: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class SandboxBackend(Protocol):
    """Creates sandboxes. `endpoint`, when given, is the host-side rollout endpoint the sandbox relays to."""

    name: str

    async def create(self, task: Task, rollout_id: str, endpoint: RolloutEndpoint | None = None) -> Sandbox:
        """Create a ready sandbox holding a private, writable copy of `task`'s repository.

        Raises `SandboxError` on failure, having cleaned up everything it made.
        """
        ...


class TestExecutor(Protocol):
    """Runs a task's tests for the grader, isolated from the host (no network, read-only system)."""

    __test__ = False  # not a pytest test class

    async def run(self, repo_dir: Path, argv: list[str], timeout: float) -> ExecResult:
        """Run `argv` with `repo_dir` (a host directory, writable) as the working directory."""
        ...
