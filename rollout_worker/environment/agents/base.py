"""What every agent launcher shares (the `AgentLauncher` Protocol is in `rollout_worker.protocols`, the
`AgentCommand` it returns in `rollout_worker.types`).

The episode ends when the agent's process exits or a budget runs out (turns, tokens, wall time) — never on an idle
heuristic. Launchers only describe the command; the episode runner writes the files, starts it and kills it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from intercept_common.errors import UserError

if TYPE_CHECKING:
    from rollout_worker.types import RolloutEndpoint


class AgentUnavailableError(RuntimeError, UserError):
    """The agent's install is missing (run scripts/bootstrap.sh) or the spec names no known agent."""


def openai_env(endpoint: RolloutEndpoint | None) -> dict[str, str]:
    """The conventional variables most OpenAI-compatible agents read."""
    if endpoint is None:
        return {}
    return {"OPENAI_BASE_URL": endpoint.base_url, "OPENAI_API_BASE": endpoint.base_url,
            "OPENAI_API_KEY": endpoint.api_key, "OPENAI_MODEL": endpoint.model}


def npm_bin(prefix: Path, command: str, agent: str) -> Path:
    """`<prefix>/node_modules/.bin/<command>` of an npm agent installed by scripts/bootstrap.sh, or a clear error."""
    path = prefix / "node_modules" / ".bin" / command
    if not path.exists():
        raise AgentUnavailableError(f"{agent} not installed at {path}: run scripts/bootstrap.sh (locks/npm/{agent}, "
                                    "needs Node >= 20.6 and npm)")
    return path
