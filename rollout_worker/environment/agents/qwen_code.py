"""qwen-code (npm @qwen-code/qwen-code, pinned in locks/npm/qwen-code, installed under .agents/qwen-code), unmodified.

Wire format: OpenAI chat completions, always streamed (SSE with `stream_options.include_usage`), native tool calls
(`run_shell_command`, `read_file`, `edit`, `write_file`, `glob`, `grep_search`, …).

Configured by env and `~/.qwen/settings.json` in the sandbox home; the key is only in env (OPENAI_API_KEY):
- `OPENAI_BASE_URL` / `OPENAI_API_KEY` / `OPENAI_MODEL` and `security.auth.selectedType = "openai"`: the OpenAI
  auth type with our endpoint, so no Qwen OAuth / login flow is ever started.
- `privacy.usageStatisticsEnabled = false` and `telemetry.enabled = false`: no usage statistics, no OpenTelemetry.
- `general.enableAutoUpdate = false` (and the older `disableAutoUpdate` / `disableUpdateNag`): no update check.
  Measured with strace on the host (no sandbox): without these settings qwen-code resolves DNS for outside hosts and
  its first call comes 16 s after start instead of 9 s; with them it connects to nothing but the rollout endpoint.
- `memory.enableManagedAutoMemory / enableManagedAutoDream / enableAutoSkill = false`: after each answer 0.24.4 starts
  a "managed memory extraction subagent", a second conversation (its own system prompt) on the same endpoint; in a
  rollout that was one extra call and one fork per episode (measured on the local engine before this was set).
- `QWEN_CODE_SUPPRESS_YOLO_WARNING=1`: `--yolo` (approve every tool call) without the warning; our sandbox is the
  sandbox (qwen's own is not configured).
`qwen --yolo -p <task>` runs one prompt headless and exits when the model ends its turn without a tool call.
Its bundled ripgrep (vendor/ripgrep/*/rg) ships without the exec bit: scripts/bootstrap.sh makes it executable.
Note: the package declares Node >= 22; it runs on the machine's Node 20 (checked: tool calls, shell, edits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from intercept_common.install_paths import npm_agent_prefix
from rollout_worker.environment.agents.base import npm_bin, openai_env
from rollout_worker.types import AgentCommand

if TYPE_CHECKING:
    from rollout_worker.protocols import Sandbox
    from rollout_worker.types import RolloutEndpoint, Task


@dataclass
class QwenCodeLauncher:
    """Launches `qwen --yolo -p` from the project's npm prefix."""

    prefix: Path = field(default_factory=lambda: npm_agent_prefix("qwen-code"),
                         metadata={"help": "npm prefix holding qwen-code."})
    name: str = "qwen-code"
    # How this CLI wants a turn the token limit cut (GateConfig.report_truncation unset): as an end of turn;
    # a cut turn reported as `length` makes 0.24.4 re-send the same request ("Retrying provider attempt"):
    # a fork per retry until the turn budget ends the rollout.
    report_truncation: ClassVar[bool] = False

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        qwen = npm_bin(self.prefix, "qwen", self.name)
        if endpoint is None:
            raise ValueError("qwen-code needs a rollout endpoint")
        settings = {
            "security": {"auth": {"selectedType": "openai"}},
            "model": {"name": endpoint.model},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
            "general": {"enableAutoUpdate": False, "disableAutoUpdate": True, "disableUpdateNag": True},
            "memory": {"enableManagedAutoMemory": False, "enableManagedAutoDream": False, "enableAutoSkill": False},
        }
        env = openai_env(endpoint) | {"QWEN_CODE_SUPPRESS_YOLO_WARNING": "1", "NO_COLOR": "1"}
        argv = [str(qwen), "--yolo", "-p", task.problem_statement]
        return AgentCommand(argv, env, {f"{sandbox.home}/.qwen/settings.json": json.dumps(settings, indent=2).encode()})
