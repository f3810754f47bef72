"""pi (npm @mariozechner/pi-coding-agent, pinned by scripts/bootstrap.sh under .agents/pi), unmodified (design §7).

Configured through `models.json` in PI_CODING_AGENT_DIR: one provider `intercept` with api "openai-completions"
and the rollout's inner base URL; its `apiKey` names the env variable holding the key, so the key is never
written to disk. PI_OFFLINE=1 stops update checks. `-p` runs one prompt and exits; `--no-session` keeps nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from intercept_common.install_paths import pi_prefix
from rollout_worker.environment.agents.base import AgentUnavailableError, openai_env
from rollout_worker.types import AgentCommand

if TYPE_CHECKING:
    from rollout_worker.protocols import Sandbox
    from rollout_worker.types import RolloutEndpoint, Task

PROVIDER = "intercept"
KEY_ENV = "INTERCEPT_ROLLOUT_API_KEY"


@dataclass
class PiLauncher:
    """Launches `pi -p` from the project's npm prefix."""

    prefix: Path = field(default_factory=pi_prefix, metadata={"help": "npm prefix holding pi."})
    context_window: int = field(default=32768, metadata={"help": "Context window pi assumes for the model."})
    max_tokens: int = field(default=4096, metadata={"help": "Max output tokens pi asks for per call."})
    name: str = "pi"
    # How this CLI wants a turn the token limit cut (GateConfig.report_truncation unset): reported;
    # pi-ai maps `length` to stopReason "length", which its loop treats as a normal end (only "error" and
    # "aborted" fail the run).
    report_truncation: ClassVar[bool] = True

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        pi = self.prefix / "node_modules" / ".bin" / "pi"
        if not pi.exists():
            raise AgentUnavailableError(f"pi not installed at {pi}: run scripts/bootstrap.sh (needs Node >= 20.6)")
        if endpoint is None:
            raise ValueError("pi needs a rollout endpoint")
        agent_dir = f"{sandbox.home}/.pi/agent"
        models = {"providers": {PROVIDER: {
            "baseUrl": endpoint.base_url,
            "api": "openai-completions",
            "apiKey": KEY_ENV,
            # Our gate speaks plain chat completions: system role, no reasoning_effort, no store.
            "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False, "supportsStore": False},
            "models": [{"id": endpoint.model, "contextWindow": self.context_window, "maxTokens": self.max_tokens}],
        }}}
        env = openai_env(endpoint) | {KEY_ENV: endpoint.api_key, "PI_CODING_AGENT_DIR": agent_dir,
                                      "PI_OFFLINE": "1", "NO_COLOR": "1"}
        argv = [str(pi), "--provider", PROVIDER, "--model", endpoint.model, "--no-session", "-p",
                task.problem_statement]
        return AgentCommand(argv, env, {f"{agent_dir}/models.json": json.dumps(models, indent=2).encode()})
