"""How an agent CLI is started inside a sandbox: the `AgentLauncher` protocol and the command it produces.

The episode ends when the agent's process exits or a budget runs out (turns, tokens, wall time) — never on an idle
heuristic. Launchers only describe the command; the episode runner writes the files, starts it and kills it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rollout_worker.sandbox.base import Sandbox
    from rollout_worker.types import RolloutEndpoint, Task


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


class AgentLauncher(Protocol):
    """An agent CLI that can be pointed at a rollout endpoint."""

    name: str

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        """The command that runs this agent on `task` in `sandbox`, talking to `endpoint` (the agent-facing one:
        for isolated sandboxes its inner URL). Raises `AgentUnavailableError` if the agent is not installed."""
        ...


class AgentUnavailableError(RuntimeError):
    """The agent's install is missing (run scripts/bootstrap.sh) or the spec names no known agent."""


def openai_env(endpoint: RolloutEndpoint | None) -> dict[str, str]:
    """The conventional variables most OpenAI-compatible agents read."""
    if endpoint is None:
        return {}
    return {"OPENAI_BASE_URL": endpoint.base_url, "OPENAI_API_BASE": endpoint.base_url,
            "OPENAI_API_KEY": endpoint.api_key, "OPENAI_MODEL": endpoint.model}
