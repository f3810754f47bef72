"""The seams of the rollout side, in one place: every Protocol an implementation plugs into.

Who calls what, and when:
- the worker calls `Engine.complete` (through the turn server) for every agent call, and `EpisodeRunner.run` once per
  rollout, with the rollout's endpoint and a `stop` event it sets when the rollout must end;
- the episode runner asks a `SandboxBackend` for a `Sandbox`, an `AgentLauncher` for the command, starts it as a
  `SandboxProcess`, and once the agent is dead asks the `Grader` for a `GradeResult`;
- graders run the task's tests through a `TestExecutor`.
What an `Engine` raises is declared beside it (`EngineError`, `PromptTooLongError`, `EngineResponseError`). Data
passed across these seams lives in `rollout_worker.types`; statuses in `rollout_worker.outcomes`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from .types import AgentCommand, Completion, EpisodeResult, ExecResult, GradeResult, RolloutEndpoint, Task


class Engine(Protocol):
    """What the turn server needs from an inference engine (`serving.engine_client.EngineClient` speaks vLLM's
    `/v1/completions` over HTTP; tests may pass an in-process fake).

    `complete` is called once per agent call with the exact prompt ids; `max_model_len` once per worker start.
    """

    async def complete(self, prompt_ids: list[int], *, max_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                       top_k: int = -1, seed: int | None = None,
                       stop_token_ids: list[int] | None = None, model: str | None = None) -> Completion:
        """Sample a continuation of exactly `prompt_ids`; the reply's ids and post-temperature logprobs.

        `model` overrides the served model for this call (a LoRA adapter per policy version); the turn server passes
        it only when the trainer publishes adapters, so engines without adapters need not accept it.

        Raises `PromptTooLongError` when the prompt does not fit, `EngineError` for any other failure.
        """
        ...

    async def max_model_len(self) -> int:
        """The served model's context length."""
        ...


# -- what an Engine raises --------------------------------------------------------------------------------------------
class EngineError(RuntimeError):
    """The engine could not produce a completion (after retries, where retrying is allowed)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class EngineUnreachableError(EngineError):
    """The engine stopped answering at the transport level (connection refused or dropped on every attempt): the
    server is gone, not the request at fault. With several replicas it takes that replica out of rotation."""


class PromptTooLongError(EngineError):
    """The prompt (plus max_tokens) exceeds the engine's `max_model_len` (vLLM's 400 and ours)."""

    def __init__(self, message: str, status: int | None = 400, prompt_tokens: int | None = None,
                 max_model_len: int | None = None):
        super().__init__(message, status)
        self.prompt_tokens = prompt_tokens
        self.max_model_len = max_model_len


class EngineResponseError(EngineError):
    """The engine answered 200 but the body lacks what token-exact training needs (ids, logprobs)."""


class EpisodeRunner(Protocol):
    """Runs one agent episode for a task against a rollout endpoint and grades it.

    The worker serves the endpoint's chat calls meanwhile. `stop` is set by the worker when a budget runs out or the
    rollout must end (overlong prompt, staleness, shutdown): the runner must then kill the agent promptly, still grade
    what it left behind unless told the episode is cancelled, and always clean up its sandbox and processes.
    Raising is allowed; the worker turns an exception into an unscorable INFRA_ERROR episode.
    Optional: a `report_truncation` attribute (bool | None), how its agent wants a turn the token limit cut; the
    worker opens each rollout on the gate with it (`GateConfig.report_truncation`, when set, overrides it).
    """

    async def run(self, task: Task, endpoint: RolloutEndpoint, stop: asyncio.Event) -> EpisodeResult: ...


class Grader(Protocol):
    """What the runner needs from the grader (`FailPassGrader`, `SweBenchContainerGrader`, `HarborContainerGrader` and
    `ImageAwareGrader` fit)."""

    async def grade(self, task: Task, agent_repo_dir: Path) -> GradeResult:
        """Grade the repository the agent left. Infrastructure failures are `scorable=False`, never reward 0."""
        ...


class AgentLauncher(Protocol):
    """An agent CLI that can be pointed at a rollout endpoint.

    Optional: a class attribute `report_truncation` (bool): True when the CLI handles a reply the token limit cut
    that is reported as cut (`length`, `max_tokens`, `incomplete`, `MAX_TOKENS`), False when it aborts or retries
    such a turn, so the gate reports it as a normal end of turn. A launcher without it gets the gate's default.
    Optional: `calls_model` (bool, default True): False for an agent that never calls the model (the oracle, noop),
    for which `intercept-rl rollouts` starts no engine.
    """

    name: str

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        """The command that runs this agent on `task` in `sandbox`, talking to `endpoint` (the agent-facing one:
        for isolated sandboxes its inner URL). Raises `AgentUnavailableError` if the agent is not installed."""
        ...


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
