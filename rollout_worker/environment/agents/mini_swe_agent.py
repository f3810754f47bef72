"""mini-swe-agent (PyPI, pinned by scripts/bootstrap.sh in its own venv), unmodified (design §7).

It runs non-interactively (`--yolo --exit-immediately`, stdin is /dev/null), reaches the rollout through litellm's
OpenAI provider (model `openai/<name>`, api_base in its config, key in OPENAI_API_KEY), never fetches a price
list (LITELLM_LOCAL_MODEL_COST_MAP) and ends when the model runs `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`,
at its step limit, or when the runner kills it. The problem statement goes in its config file, not on argv.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import yaml

from intercept_common.install_paths import agents_venv
from rollout_worker.environment.agents.base import AgentUnavailableError, openai_env
from rollout_worker.types import AgentCommand

if TYPE_CHECKING:
    from rollout_worker.protocols import Sandbox
    from rollout_worker.types import RolloutEndpoint, Task


@dataclass
class MiniSweAgentLauncher:
    """Launches `mini` from the agents' venv."""

    step_limit: int = field(default=50, metadata={"help": "mini's own step limit (0: none; budgets still apply)."})
    command_timeout_s: int = field(default=60, metadata={"help": "Timeout of each bash command mini runs."})
    venv: Path = field(default_factory=agents_venv, metadata={"help": "The venv holding mini-swe-agent."})
    base_config: str = field(default="mini.yaml", metadata={"help": "mini's built-in config to start from."})
    name: str = "mini-swe-agent"
    # How this CLI wants a turn the token limit cut (GateConfig.report_truncation unset): reported;
    # its configs answer `finish_reason == "length"` with their own "reached the output token limit" prompt.
    report_truncation: ClassVar[bool] = True

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        mini = self.venv / "bin" / "mini"
        if not mini.exists():
            raise AgentUnavailableError(f"mini-swe-agent not installed at {mini}: run scripts/bootstrap.sh")
        if endpoint is None:
            raise ValueError("mini-swe-agent needs a rollout endpoint")
        state = f"{sandbox.home}/.mini-swe-agent"
        config = {
            "run": {"task": task.problem_statement},
            "agent": {"mode": "yolo", "confirm_exit": False, "step_limit": self.step_limit, "cost_limit": 0,
                      "output_path": f"{state}/trajectory.json"},
            "model": {"model_name": f"openai/{endpoint.model}", "cost_tracking": "ignore_errors",
                      "model_kwargs": {"api_base": endpoint.base_url, "drop_params": True}},
            "environment": {"environment_class": "local", "cwd": sandbox.workdir, "timeout": self.command_timeout_s},
        }
        config_path = f"{state}/intercept.yaml"
        env = openai_env(endpoint) | {
            "MSWEA_CONFIGURED": "true",
            "MSWEA_GLOBAL_CONFIG_DIR": state,
            "MSWEA_COST_TRACKING": "ignore_errors",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PAGER": "cat",
        }
        argv = [str(mini), "--yolo", "--exit-immediately", "-c", self.base_config, "-c", config_path]
        return AgentCommand(argv, env, {config_path: yaml.safe_dump(config, sort_keys=False).encode()})
