"""Where the project's own agent installs live (scripts/bootstrap.sh puts them there, pinned).

Sandboxes bind these read-only; launchers run their binaries. Override with `INTERCEPT_RL_AGENTS_VENV` (the
mini-swe-agent venv, which also provides the tasks' pytest) and `INTERCEPT_RL_PI_PREFIX` (the npm prefix of pi).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def agents_venv() -> Path:
    return Path(os.environ.get("INTERCEPT_RL_AGENTS_VENV", PROJECT_ROOT / ".venv-agents"))


def pi_prefix() -> Path:
    return Path(os.environ.get("INTERCEPT_RL_PI_PREFIX", PROJECT_ROOT / ".agents" / "pi"))


def agent_runtime_paths() -> list[str]:
    """Host paths a sandbox must expose read-only for the shipped agents to run (only those that exist)."""
    return [str(p) for p in (agents_venv(), pi_prefix()) if p.exists()]
