"""Agent launchers: the shipped agents and `get_agent(spec)`.

Specs: `mini-swe-agent` (alias `mini`), `pi`, `qwen-code`, `opencode`, `claude-code`, `codex`, `gemini-cli`,
`cmd:<shell command>`, `oracle`, `noop`, `single-shot`. docs/agents.md: each agent's wire format, first-prompt size
and how it is tested.
"""

from __future__ import annotations

from intercept_common.errors import ConfigError
from rollout_worker.environment.agents.base import AgentUnavailableError, openai_env
from rollout_worker.environment.agents.claude_code import ClaudeCodeLauncher
from rollout_worker.environment.agents.codex import CodexLauncher
from rollout_worker.environment.agents.gemini_cli import GeminiCliLauncher
from rollout_worker.environment.agents.mini_swe_agent import MiniSweAgentLauncher
from rollout_worker.environment.agents.opencode import OpencodeLauncher
from rollout_worker.environment.agents.pi import PiLauncher
from rollout_worker.environment.agents.qwen_code import QwenCodeLauncher
from rollout_worker.environment.agents.simple import CommandAgent, NoopAgent, OracleAgent
from rollout_worker.environment.agents.single_shot import SingleShotAgent
from rollout_worker.protocols import AgentLauncher
from rollout_worker.types import AgentCommand

__all__ = [
    "AgentCommand", "AgentLauncher", "AgentUnavailableError", "ClaudeCodeLauncher", "CodexLauncher", "CommandAgent",
    "GeminiCliLauncher",
    "MiniSweAgentLauncher", "NoopAgent", "OpencodeLauncher", "OracleAgent", "PiLauncher", "QwenCodeLauncher",
    "SingleShotAgent", "get_agent", "openai_env",
]

_NAMED = {"mini-swe-agent": MiniSweAgentLauncher, "mini": MiniSweAgentLauncher, "pi": PiLauncher,
          "qwen-code": QwenCodeLauncher, "opencode": OpencodeLauncher, "claude-code": ClaudeCodeLauncher,
          "codex": CodexLauncher, "gemini-cli": GeminiCliLauncher, "oracle": OracleAgent, "noop": NoopAgent,
          "single-shot": SingleShotAgent}


def get_agent(spec: str) -> AgentLauncher:
    """The launcher a spec names (see the module docstring)."""
    if spec.startswith("cmd:"):
        command = spec[len("cmd:"):].strip()
        if not command:
            raise ConfigError("`cmd:` needs a shell command, e.g. cmd:my-agent --task-file $TASK_FILE")
        return CommandAgent(command)
    try:
        return _NAMED[spec]()
    except KeyError:
        raise ConfigError(f"unknown agent {spec!r}: expected one of {sorted(_NAMED)} or cmd:<shell command>") from None
