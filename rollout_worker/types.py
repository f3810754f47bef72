"""Data shared across the rollout side: tasks, agent endpoints and episode results.

These are the contracts between the worker (which owns the gate and the engine), the episode runners (sandbox +
agent + grader) and the task loaders. Keep them small and free of heavy imports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol


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


@dataclass(frozen=True)
class RolloutEndpoint:
    """Where an agent reaches the policy: the rollout's own gate URL (ends in /v1), its own key and model name.

    `base_url` is a host-side URL on loopback; sandboxes that isolate the network relay it (DESIGN §7) and hand the
    agent their inner URL instead.
    """

    rollout_id: str
    base_url: str
    api_key: str = field(repr=False)
    model: str


# Episode statuses. Only "completed" and "budget" episodes are graded normally; "overlong" follows the worker's
# overlong policy; everything else is unscorable (excluded from the group baseline, never trained).
COMPLETED = "completed"  # the agent exited on its own
BUDGET = "budget"  # a turn/token/wall-time budget ended the agent; its work is still graded
OVERLONG = "overlong"  # the prompt outgrew the engine's max_model_len
AGENT_ERROR = "agent_error"  # the agent crashed or could not start
INFRA_ERROR = "infra_error"  # sandbox / grading infrastructure failed
CANCELLED = "cancelled"  # the worker stopped or the rollout went stale


@dataclass
class EpisodeResult:
    """What an episode runner reports once the agent is gone and the work is graded."""

    status: str
    reward: float | None  # None when the episode is unscorable
    resolved: bool = False
    scorable: bool = True
    agent_output: str = ""  # tail of the agent's stdout/stderr, for the trajectory record
    exit_code: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # grading details (tests passed/failed, errors)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: sandbox_setup, agent, grading, ...


class EpisodeRunner(Protocol):
    """Runs one agent episode for a task against a rollout endpoint and grades it.

    The worker serves the endpoint's chat calls meanwhile. `stop` is set by the worker when a budget runs out or the
    rollout must end (overlong prompt, staleness, shutdown): the runner must then kill the agent promptly, still grade
    what it left behind unless told the episode is cancelled, and always clean up its sandbox and processes.
    Raising is allowed; the worker turns an exception into an unscorable INFRA_ERROR episode.
    """

    async def run(self, task: Task, endpoint: RolloutEndpoint, stop: asyncio.Event) -> EpisodeResult: ...
