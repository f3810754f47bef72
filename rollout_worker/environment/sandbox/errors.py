"""Sandbox errors. The sandbox Protocols (`Sandbox`, `SandboxBackend`, `SandboxProcess`, `TestExecutor`) are declared
with the other seams in `rollout_worker.protocols`; `ExecResult` is in `rollout_worker.types`.

Backends: `local` (bubblewrap, the default) and `docker` turn a task into an isolated copy of its repository plus the
only network path the agent gets, its own rollout endpoint (design §7).
"""

from __future__ import annotations

from intercept_common.errors import UserError


class SandboxError(RuntimeError):
    """A sandbox could not be created or used (infrastructure failure: the episode is unscorable)."""


class SandboxUnavailableError(SandboxError, UserError):
    """The backend cannot run at all here (no bwrap binary, no Docker engine, missing optional extra)."""
