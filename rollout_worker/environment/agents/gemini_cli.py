"""Gemini CLI (npm @google/gemini-cli, pinned in locks/npm/gemini-cli, installed under .agents/gemini-cli), unmodified:
the package's bundled `gemini` (Node >= 20).

Wire format: the Gemini API (`POST <root>/v1beta/models/<model>:streamGenerateContent?alt=sse`, key in
`x-goog-api-key`), always streamed; tools as `functionDeclarations` (`run_shell_command`, `read_file`, `write_file`,
`replace`, `glob`, `grep_search`, `list_directory`, …). `GOOGLE_GEMINI_BASE_URL` is the rollout URL without `/v1`
(the SDK appends `/v1beta/models/…`). It keeps our `functionCall.id` in its history and drops thought parts (the
worker's echo check tolerates reasoning on one side only), so its echo extends the held conversation.

Configured by env and `~/.gemini/settings.json` in the sandbox home; the key is only in env (GEMINI_API_KEY):
- `security.auth.selectedType = "gemini-api-key"`: API-key auth, so no Google login / OAuth flow is ever started.
- `privacy.usageStatisticsEnabled = false`, `telemetry.enabled = false`: no Clearcut usage statistics, no OTel.
- `general.enableAutoUpdate = false`, `enableAutoUpdateNotification = false`: no update check against npm.
- `security.folderTrust.enabled = false` and `GEMINI_CLI_TRUST_WORKSPACE=true`: the task repo is trusted (an
  untrusted folder turns `--yolo` back into approvals, which headless mode cannot give).
- `model.skipNextSpeakerCheck = true`, `model.disableLoopDetection = true`, `experimental.enableAgents = false`:
  no side conversations on our endpoint (next-speaker and loop checks are extra calls with their own prompts, a
  sub-agent is a second conversation: each would be a fork).
- `tools.exclude = [google_web_search, web_fetch]`: the web tools call the model with Google-hosted tools (the gate
  refuses them) or fetch URLs; the sandbox has no network anyway.
- Retries stay at the CLI's defaults (`general.maxAttempts` 10, up to 4 for a reply it finds invalid): 0.61.0 treats
  a reply with no text and no call (empty, whitespace, or thoughts only — with `MAX_TOKENS` or `STOP` alike) as an
  invalid stream and asks again; with retries off that would end the rollout as agent_error instead of a fork.
- `tools.shell.enableInteractiveShell = false`: commands run through child_process, not node-pty (whose native
  build bootstrap does not run: npm install scripts are off).
- `GEMINI_CLI_NO_RELAUNCH=true`: one process (it otherwise re-spawns itself with a larger heap).
Checked with `strace -f -e trace=connect` on the host (no sandbox): the only connection is the rollout endpoint.
`gemini --yolo -m <model> -p <task>` runs one prompt headless and exits when the model ends its turn without a call.
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

SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "model": {"skipNextSpeakerCheck": True, "disableLoopDetection": True},
    "experimental": {"enableAgents": False},
    "tools": {"exclude": ["google_web_search", "web_fetch"], "shell": {"enableInteractiveShell": False}},
    "ide": {"enabled": False},
}
QUIET_ENV = {"GEMINI_CLI_TRUST_WORKSPACE": "true", "GEMINI_CLI_NO_RELAUNCH": "true", "NO_COLOR": "1"}


@dataclass
class GeminiCliLauncher:
    """Launches `gemini --yolo -p` from the project's npm prefix."""

    prefix: Path = field(default_factory=lambda: npm_agent_prefix("gemini-cli"),
                         metadata={"help": "npm prefix holding Gemini CLI."})
    name: str = "gemini-cli"
    # How this CLI wants a turn the token limit cut (GateConfig.report_truncation unset): reported; 0.61.0 ends a
    # MAX_TOKENS turn that has text like a STOP one (measured: 2 of 2 rollouts completed with 1024-token cut turns
    # reported), and asks again after a reply with no text whatever the finish reason, so reporting changes nothing.
    report_truncation: ClassVar[bool] = True

    def prepare(self, sandbox: Sandbox, endpoint: RolloutEndpoint | None, task: Task) -> AgentCommand:
        gemini = npm_bin(self.prefix, "gemini", self.name)
        if endpoint is None:
            raise ValueError("gemini-cli needs a rollout endpoint")
        env = QUIET_ENV | {"GOOGLE_GEMINI_BASE_URL": endpoint.base_url.removesuffix("/v1"),
                           "GEMINI_API_KEY": endpoint.api_key}
        argv = [str(gemini), "--yolo", "-m", endpoint.model, "-p", task.problem_statement]
        settings = json.dumps(SETTINGS, indent=2).encode()
        return AgentCommand(argv, env, {f"{sandbox.home}/.gemini/settings.json": settings})
