"""The sandboxed episode: sandbox → agent → exit / budget / stop → kill → host-side grading → destroy.

`SandboxEpisodeRunner` implements `EpisodeRunner` (rollout_worker/types.py). Grading always sees the agent's tree
after every agent process is dead (design §2.5, §7), and the sandbox is destroyed on every path, cancellation
included. Failures map to unscorable statuses: sandbox creation → INFRA_ERROR, agent preparation/start or a
crash → AGENT_ERROR, grader failure → INFRA_ERROR. The reward never reaches the agent: it is dead by then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from intercept_common.errors import ConfigError
from rollout_worker.outcomes import AgentEnd, EpisodeStatus
from rollout_worker.types import EpisodeResult, RolloutEndpoint, Task

if TYPE_CHECKING:
    from rollout_worker.protocols import AgentLauncher, Grader, Sandbox, SandboxBackend, SandboxProcess

logger = logging.getLogger(__name__)


@dataclass
class EpisodeConfig:
    """Budgets and bookkeeping of one sandboxed episode."""

    _argument_group_name = "Episode: the agent's budget in its sandbox (environment.episode.EpisodeConfig)"
    _config_section = "episode"  # its YAML section (intercept_common.config_tree)

    agent_wall_time_s: float = field(default=900.0, metadata={"help": "Agent wall-time budget; past it the agent is "
                                                           "killed and its work graded (status `budget`)."})
    output_tail_bytes: int = field(default=65536, metadata={"help": "How much of the agent's output to keep."})
    crash_is_agent_error: bool = field(
        default=True,
        metadata={"help": "An agent exiting non-zero on its own is AGENT_ERROR (unscorable); False grades it."},
    )
    file_setup_timeout_s: float = field(default=60.0, metadata={"help": "Bound on writing the agent's files."})

    def __post_init__(self) -> None:
        for name in ("agent_wall_time_s", "file_setup_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.output_tail_bytes < 0:
            raise ConfigError(f"output_tail_bytes must be >= 0, got {self.output_tail_bytes}")


class SandboxEpisodeRunner:
    """Runs one agent episode in a fresh sandbox and grades it on the host (implements `EpisodeRunner`)."""

    def __init__(
        self, backend: SandboxBackend, agent: AgentLauncher, grader: Grader, config: EpisodeConfig | None = None
    ):
        self.backend = backend
        self.agent = agent
        self.grader = grader
        self.config = config or EpisodeConfig()

    @property
    def report_truncation(self) -> bool | None:
        """How the agent wants a turn the token limit cut (its launcher's declaration; None: it declares nothing)."""
        return getattr(self.agent, "report_truncation", None)

    async def run(self, task: Task, endpoint: RolloutEndpoint, stop: asyncio.Event) -> EpisodeResult:
        timings: dict[str, float] = {}
        started = time.monotonic()
        try:
            sandbox = await self.backend.create(task, endpoint.rollout_id, endpoint)
        except Exception as exc:
            logger.warning("episode %s: sandbox creation failed: %r", endpoint.rollout_id, exc)
            return _unscorable(EpisodeStatus.INFRA_ERROR, f"sandbox creation failed: {exc}", timings)
        timings["sandbox_setup"] = time.monotonic() - started
        try:
            return await self._run_in(sandbox, task, stop, timings)
        finally:
            # Shielded: a cancelled episode still tears its sandbox down completely.
            await asyncio.shield(sandbox.destroy())

    async def _run_in(
        self, sandbox: Sandbox, task: Task, stop: asyncio.Event, timings: dict[str, float]
    ) -> EpisodeResult:
        started = time.monotonic()
        try:
            command = self.agent.prepare(sandbox, sandbox.endpoint, task)
            async with asyncio.timeout(self.config.file_setup_timeout_s):
                for path, data in command.files.items():
                    await sandbox.write_file(path, data)
            process = await sandbox.start(command.argv, command.env, command.cwd, self.config.output_tail_bytes)
        except Exception as exc:
            logger.warning("episode: agent %s failed to start: %r", self.agent.name, exc)
            reason = f"agent {self.agent.name} failed to start: {exc}"
            return _unscorable(EpisodeStatus.AGENT_ERROR, reason, timings)

        try:
            ended_by = await self._wait_for_end(process, stop)
        finally:
            await asyncio.shield(sandbox.kill())  # every agent process is gone before grading reads the tree
        timings["agent"] = time.monotonic() - started
        exit_code = process.returncode
        output = process.output_tail()

        if ended_by is AgentEnd.EXIT:
            crashed = exit_code != 0 and self.config.crash_is_agent_error
            status = EpisodeStatus.AGENT_ERROR if crashed else EpisodeStatus.COMPLETED
        else:
            status = EpisodeStatus.BUDGET
        details: dict[str, Any] = {"agent_end": ended_by.value, "agent": self.agent.name}
        if status is EpisodeStatus.AGENT_ERROR:
            details["reason"] = f"agent exited with code {exit_code}"
            return EpisodeResult(EpisodeStatus.AGENT_ERROR, None, scorable=False, agent_output=output,
                                 exit_code=exit_code, details=details, timings=timings)

        grading_started = time.monotonic()
        try:
            grade = await self.grader.grade(task, await sandbox.host_repo_dir())
        except Exception as exc:
            logger.warning("episode: grading failed: %r", exc)
            details["reason"] = f"grading failed: {type(exc).__name__}: {exc}"
            return EpisodeResult(EpisodeStatus.INFRA_ERROR, None, scorable=False, agent_output=output,
                                 exit_code=exit_code, details=details, timings=timings)
        finally:
            timings["grading"] = time.monotonic() - grading_started
        details.update(grade.details or {})
        return EpisodeResult(
            status=status if grade.scorable else EpisodeStatus.INFRA_ERROR,
            reward=grade.reward if grade.scorable else None,
            resolved=bool(grade.resolved),
            scorable=bool(grade.scorable),
            agent_output=output,
            exit_code=exit_code,
            details=details,
            timings=timings,
        )

    async def _wait_for_end(self, process: SandboxProcess, stop: asyncio.Event) -> AgentEnd:
        """EXIT (the agent ended on its own), STOP (the worker's event) or WALL_TIME."""
        if stop.is_set():
            return AgentEnd.STOP
        exited = asyncio.ensure_future(process.wait(self.config.agent_wall_time_s))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (exited, stopped):
                waiter.cancel()
        # The worker's stop wins a tie: the agent often exits *because* the gate closed its rollout.
        if stop.is_set():
            return AgentEnd.STOP
        return AgentEnd.EXIT if process.returncode is not None else AgentEnd.WALL_TIME


def _unscorable(status: EpisodeStatus, reason: str, timings: dict[str, float]) -> EpisodeResult:
    return EpisodeResult(status, None, scorable=False, details={"reason": reason}, timings=timings)
