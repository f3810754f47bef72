"""Codex CLI (npm @openai/codex, pinned in locks/npm/codex, installed under .agents/codex), unmodified: the package's
native `codex` binary.

Wire format: OpenAI Responses (`POST <base>/responses`, `wire_api = "responses"`), always streamed, `store: false`
(it re-sends the whole input each turn); function tools only (`exec_command`, `write_stdin`, `view_image`,
`request_user_input`): the gate answers 400 `unsupported_tool` to anything else, so every non-function tool is off.
Codex treats a stream without `response.completed` as an error: the launcher declares `report_truncation = False`,
so the gate reports a turn the token limit cut as completed (unless the user sets `--report-truncation`).

Configured by `$CODEX_HOME/config.toml` in the sandbox home; the key is only in env (the provider's `env_key`):
- one provider `intercept` with our `base_url`, `env_key`, `wire_api = "responses"`; no retries (a failed turn ends
  the rollout instead of re-sending it); the API-key provider needs no login.
- `check_for_update_on_startup = false`; `[analytics] enabled = false`; `[otel] exporter = "none"`.
- `web_search = "disabled"`, `[agents] enabled = false` (the sub-agent `namespace` tool), and features off:
  goals, apps, plugins, remote_plugin, in_app_updates, api_key_model_discovery, skill_mcp_dependency_install,
  tool_suggest, image_generation. Measured with strace (host, no sandbox): before, a DNS lookup; after, the only
  connection is the rollout endpoint.
`codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox <task>`: one headless task; its own
sandbox is off because ours isolates it (Landlock/seccomp inside bubblewrap is not needed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from intercept_common.install_paths import npm_agent_prefix
from rollout_worker.environment.agents.base import npm_bin
from rollout_worker.types import AgentCommand

if TYPE_CHECKING:
    from rollout_worker.protocols import Sandbox
    from rollout_worker.types import RolloutEndpoint, Task

PROVIDER = "intercept"
KEY_ENV = "INTERCEPT_ROLLOUT_API_KEY"
FEATURES_OFF = ("goals", "apps", "plugins", "remote_plugin", "in_app_updates", "api_key_model_discovery",
                "skill_mcp_dependency_install", "tool_suggest", "image_generation")


def codex_config(base_url: str, model: str, context_window: int) -> str:
    """config.toml (TOML strings written as JSON strings: same escapes for what a URL or model name holds)."""
    lines = [
        f"model = {json.dumps(model)}",
        f"model_provider = {json.dumps(PROVIDER)}",
        "check_for_update_on_startup = false",
        'web_search = "disabled"',
        f"model_context_window = {int(context_window)}",
        f"[model_providers.{PROVIDER}]",
        f"name = {json.dumps(PROVIDER)}",
        f"base_url = {json.dumps(base_url)}",
        f"env_key = {json.dumps(KEY_ENV)}",
        'wire_api = "responses"',
        "request_max_retries = 0",
        "stream_max_retries = 0",
        "[features]",
        *(f"{name} = false" for name in FEATURES_OFF),
        "[agents]",
        "enabled = false",
        "[analytics]",
        "enabled = false",
        "[otel]",
        'exporter = "none"',
    ]
    return "\n".join(lines) + "\n"


@dataclass
class CodexLauncher:
    """Launches `codex exec` from the project's npm prefix."""

    prefix: Path = field(default_factory=lambda: npm_agent_prefix("codex"),
                         metadata={"help": "npm prefix holding Codex."})
    context_window: int = field(default=65536, metadata={"help": "Context window Codex assumes for the model."})
    name: str = "codex"
    # How this CLI wants a turn the token limit cut (GateConfig.report_truncation unset): as an end of turn;
    # a Responses stream ending `incomplete` makes 0.171.0 exit 1 ("Incomplete response returned, reason:
    # max_output_tokens"): agent_error, unscorable.
    report_truncation: ClassVar[bool] = False

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        codex = npm_bin(self.prefix, "codex", self.name)
        if endpoint is None:
            raise ValueError("codex needs a rollout endpoint")
        codex_home = f"{sandbox.home}/.codex"
        env = {KEY_ENV: endpoint.api_key, "CODEX_HOME": codex_home, "NO_COLOR": "1"}
        argv = [str(codex), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
                task.problem_statement]
        config = codex_config(endpoint.base_url, endpoint.model, self.context_window)
        return AgentCommand(argv, env, {f"{codex_home}/config.toml": config.encode()})
