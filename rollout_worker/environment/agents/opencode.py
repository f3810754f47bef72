"""OpenCode (npm opencode-ai, pinned in locks/npm/opencode, installed under .agents/opencode), unmodified: the
package's native `opencode` binary.

Wire format: OpenAI chat completions through its bundled `@ai-sdk/openai-compatible` provider, always streamed
(`stream_options.include_usage`), native tool calls (`bash`, `read`, `edit`, `write`, `glob`, `grep`, …).

Configured by `$XDG_CONFIG_HOME/opencode/opencode.json` in the sandbox home (the key stays in env: the config says
`{env:INTERCEPT_ROLLOUT_API_KEY}`): one provider `intercept` with our baseURL and model; `autoupdate: false`,
`share: "disabled"`, every tool permission allowed but `webfetch`. Env: `OPENCODE_DISABLE_AUTOUPDATE`,
`OPENCODE_DISABLE_MODELS_FETCH` (no models.dev download), `OPENCODE_DISABLE_LSP_DOWNLOAD`,
`OPENCODE_DISABLE_DEFAULT_PLUGINS`, `OPENCODE_DISABLE_SHARE`, `OPENCODE_DISABLE_CLAUDE_CODE` (no ~/.claude prompts or
skills). Two more things it does that this launcher stops:
- a side call that titles the session (another conversation on the same rollout): `run --title <instance id>` gives
  the session its title, so none is generated;
- an `npm install @opencode-ai/plugin` into its config directory in the background on every start (DNS and HTTPS to
  registry.npmjs.org, measured with strace): it is skipped when the directory's `node_modules/` exists and its
  `package-lock.json` lists the package, so the launcher writes both (an empty node_modules; `--pure` loads no
  plugins anyway). With all this the only connection is the rollout endpoint (strace, host, no sandbox).
`opencode run --pure --title … <task>` runs one prompt headless and exits at the model's end of turn.
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
QUIET_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "NO_COLOR": "1",
}


@dataclass
class OpencodeLauncher:
    """Launches `opencode run` from the project's npm prefix."""

    prefix: Path = field(default_factory=lambda: npm_agent_prefix("opencode"),
                         metadata={"help": "npm prefix holding OpenCode."})
    context_window: int = field(default=65536, metadata={"help": "Context window OpenCode assumes for the model."})
    max_tokens: int = field(default=4096, metadata={"help": "Max output tokens OpenCode asks for per call."})
    name: str = "opencode"
    # How this CLI wants a turn the token limit cut (GateConfig.report_truncation unset): reported;
    # a cut turn reported as `length` ends the turn normally (measured, docs/agents.md).
    report_truncation: ClassVar[bool] = True

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        opencode = npm_bin(self.prefix, "opencode", self.name)
        if endpoint is None:
            raise ValueError("opencode needs a rollout endpoint")
        config_home = f"{sandbox.home}/.config"
        config = {
            "$schema": "https://opencode.ai/config.json",
            "provider": {PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": PROVIDER,
                "options": {"baseURL": endpoint.base_url, "apiKey": "{env:" + KEY_ENV + "}"},
                "models": {endpoint.model: {"name": endpoint.model,
                                            "limit": {"context": self.context_window, "output": self.max_tokens}}},
            }},
            "model": f"{PROVIDER}/{endpoint.model}",
            "small_model": f"{PROVIDER}/{endpoint.model}",
            "autoupdate": False,
            "share": "disabled",
            "permission": {"edit": "allow", "bash": "allow", "webfetch": "deny"},
        }
        lock = {"packages": {"": {"dependencies": {"@opencode-ai/plugin": "*"}}}}
        files = {
            f"{config_home}/opencode/opencode.json": json.dumps(config, indent=2).encode(),
            f"{config_home}/opencode/package-lock.json": json.dumps(lock).encode(),
            f"{config_home}/opencode/node_modules/.keep": b"",
        }
        env = QUIET_ENV | {KEY_ENV: endpoint.api_key, "XDG_CONFIG_HOME": config_home}
        argv = [str(opencode), "run", "--pure", "--title", task.instance_id, task.problem_statement]
        return AgentCommand(argv, env, files)
