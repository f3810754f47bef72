"""Where the project's own agent installs live (scripts/bootstrap.sh puts them there, pinned).

Sandboxes bind these read-only; launchers run their binaries. Override with `INTERCEPT_RL_AGENTS_VENV` (the
mini-swe-agent venv, which also provides the tasks' pytest), `INTERCEPT_RL_PI_PREFIX` (the npm prefix of pi) and
`INTERCEPT_RL_NPM_AGENTS` (the directory holding one npm prefix per locks/npm/<agent>, default .agents).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def agents_venv() -> Path:
    return Path(os.environ.get("INTERCEPT_RL_AGENTS_VENV", PROJECT_ROOT / ".venv-agents"))


def pi_prefix() -> Path:
    return Path(os.environ.get("INTERCEPT_RL_PI_PREFIX", PROJECT_ROOT / ".agents" / "pi"))


def npm_agent_prefix(name: str) -> Path:
    """The npm prefix scripts/bootstrap.sh installs locks/npm/<name> into."""
    if name == "pi":
        return pi_prefix()
    return Path(os.environ.get("INTERCEPT_RL_NPM_AGENTS", PROJECT_ROOT / ".agents")) / name


NPM_AGENTS = ("pi", "qwen-code", "opencode", "claude-code", "codex", "gemini-cli")


def agent_runtime_paths() -> list[str]:
    """Host paths a sandbox must expose read-only for the shipped agents to run (only those that exist)."""
    paths = [agents_venv(), *(npm_agent_prefix(name) for name in NPM_AGENTS)]
    return [str(p) for p in paths if p.exists()]
