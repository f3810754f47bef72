"""Claude Code (npm @anthropic-ai/claude-code, pinned in locks/npm/claude-code, installed under .agents/claude-code),
unmodified: the package's native `claude` binary.

Wire format: Anthropic Messages (`POST <root>/v1/messages?beta=true`), always streamed; tools `Bash`, `Read`, `Edit`,
`Write`, … as `tool_use` blocks. `ANTHROPIC_BASE_URL` is the rollout URL without `/v1` (the SDK appends it).

Everything is env (the key only in ANTHROPIC_API_KEY, nothing on argv or on disk):
- `DISABLE_TELEMETRY`, `DISABLE_ERROR_REPORTING`, `DISABLE_AUTOUPDATER`, `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`:
  no Statsig/Sentry/OTel, no update check, no release notes or other non-essential calls. With an API key in env and
  `-p` there is no login or onboarding flow. Measured with strace (host, no sandbox): the only connection is the
  rollout endpoint.
- `ANTHROPIC_MODEL` and `ANTHROPIC_SMALL_FAST_MODEL` / `ANTHROPIC_DEFAULT_HAIKU_MODEL`: our model name for the main
  loop and for background calls, so nothing asks for a Claude model.
- `CLAUDE_CODE_MODEL_CAPABILITIES=-mid_conv_system,-mid_conv_tool_change,-context_management`: for a model it does
  not know, 2.1.332 assumes it accepts mid-conversation `system` turns and puts its environment block in a
  `role: "system"` message after the user's (which the Messages API we serve rejects); with these capabilities off it
  sends that block as a `<system-reminder>` in the user turn, and no tool-set changes or context-management edits.
- `CLAUDE_CODE_MAX_CONTEXT_TOKENS`: the window it assumes for our model (else it warns and assumes 1M).
- `IS_SANDBOX=1`: lets `--dangerously-skip-permissions` run as root too (the sandbox user is not root anyway).
`claude -p <task> --dangerously-skip-permissions` runs one prompt headless and exits at the model's end of turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from intercept_common.install_paths import npm_agent_prefix
from rollout_worker.environment.agents.base import npm_bin
from rollout_worker.types import AgentCommand

if TYPE_CHECKING:
    from rollout_worker.protocols import Sandbox
    from rollout_worker.types import RolloutEndpoint, Task

QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_MODEL_CAPABILITIES": "-mid_conv_system,-mid_conv_tool_change,-context_management",
    "IS_SANDBOX": "1",
    "NO_COLOR": "1",
}


@dataclass
class ClaudeCodeLauncher:
    """Launches `claude -p` from the project's npm prefix."""

    prefix: Path = field(default_factory=lambda: npm_agent_prefix("claude-code"),
                         metadata={"help": "npm prefix holding Claude Code."})
    context_window: int = field(default=65536, metadata={"help": "Context window Claude Code assumes for the model."})
    name: str = "claude-code"
    # How this CLI wants a turn the token limit cut (GateConfig.report_truncation unset): as an end of turn;
    # a turn reported as `max_tokens` makes 2.1.332 ask again with the cut reply in its history, and after 4 cut
    # turns exit 1 ("response exceeded the 128000 output token maximum"): agent_error, unscorable (issue #29).
    report_truncation: ClassVar[bool] = False

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        claude = npm_bin(self.prefix, "claude", self.name)
        if endpoint is None:
            raise ValueError("claude-code needs a rollout endpoint")
        env = QUIET_ENV | {
            "ANTHROPIC_BASE_URL": endpoint.base_url.removesuffix("/v1"),
            "ANTHROPIC_API_KEY": endpoint.api_key,
            "ANTHROPIC_MODEL": endpoint.model,
            "ANTHROPIC_SMALL_FAST_MODEL": endpoint.model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": endpoint.model,
            "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(self.context_window),
        }
        argv = [str(claude), "-p", task.problem_statement, "--dangerously-skip-permissions"]
        return AgentCommand(argv, env)
