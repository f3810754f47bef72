"""Data shared across the rollout side: tasks, agent endpoints, episode results, engine completions. Data only.

These are what the worker (which owns the gate and the engine), the episode runners (sandbox + agent + grader) and
the task loaders pass each other: dataclasses without behaviour and free of heavy imports. The seams that exchange
them, and the errors those seams raise, are in `rollout_worker.protocols`; statuses in `rollout_worker.outcomes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from control_plane import RolloutEndpoint

from .outcomes import EpisodeStatus

__all__ = [  # RolloutEndpoint is the gate's product, re-exported for the rollout side
    "AgentCommand", "Completion", "EpisodeResult", "ExecResult", "GradeResult", "RolloutEndpoint", "Task",
]


@dataclass
class Task:
    """One SWE-Gym / SWE-bench style task.

    `patch` (the gold patch) and `test_patch` never reach the agent; `repo_dir`, when set, is a local checkout of the
    repository at `base_commit` with no later history (embedded tasks, prepared caches). Docker tasks may instead name
    an `image` that already holds the repository at `workdir`.
    """

    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str = ""
    test_patch: str = ""
    FAIL_TO_PASS: list[str] = field(default_factory=list)
    PASS_TO_PASS: list[str] = field(default_factory=list)
    repo_dir: str | None = None
    image: str | None = None
    test_command: list[str] | None = None  # argv run in the repo root; test ids are appended. Default: pytest
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpisodeResult:
    """What an episode runner reports once the agent is gone and the work is graded."""

    status: EpisodeStatus
    reward: float | None  # None when the episode is unscorable
    resolved: bool = False
    scorable: bool = True
    agent_output: str = ""  # tail of the agent's stdout/stderr, for the trajectory record
    exit_code: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # grading details (tests passed/failed, errors)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: sandbox_setup, agent, grading, ...


@dataclass
class GradeResult:
    """A graded episode. `reward` is None exactly when `scorable` is False; `details` says why and what ran."""

    reward: float | None
    resolved: bool
    scorable: bool
    details: dict[str, Any] = field(default_factory=dict)


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


@dataclass
class AgentCommand:
    """What to run: `argv` with `env` added to the sandbox's minimal environment, after writing `files`.

    `files` maps inside paths (under the sandbox's home or workdir) to contents. Secrets (the rollout key) go in
    `env` only: never in `argv` (visible to every process) and never in a file unless the agent cannot read env.
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    cwd: str | None = None  # default: the sandbox's workdir

    def __repr__(self) -> str:  # env holds the rollout key: never print it
        return f"AgentCommand(argv={self.argv!r}, env_keys={sorted(self.env)!r}, files={sorted(self.files)!r})"


@dataclass(frozen=True)
class Completion:
    """One sampled turn: ids (the stop token included, as vLLM returns it) and their processed logprobs."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length" | "abort"
    prompt_tokens: int
    latency_s: float
