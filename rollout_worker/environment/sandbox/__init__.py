"""Sandboxes for agents and for grading: protocols (`base`), the bubblewrap backend (`local`, default) and the
Docker backend (`docker_backend`, optional extra `docker`)."""

from __future__ import annotations

from typing import Any

from rollout_worker.environment.sandbox.base import SandboxError, SandboxUnavailableError
from rollout_worker.environment.sandbox.bwrap import LocalSandboxConfig, LocalSandboxTestExecutor
from rollout_worker.environment.sandbox.local import LocalSandbox, LocalSandboxBackend
from rollout_worker.environment.sandbox.registry import default_state_dir, reap_orphans
from rollout_worker.protocols import Sandbox, SandboxBackend, SandboxProcess, TestExecutor
from rollout_worker.types import ExecResult

__all__ = [
    "ExecResult", "LocalSandbox", "LocalSandboxBackend", "LocalSandboxConfig", "LocalSandboxTestExecutor", "Sandbox",
    "SandboxBackend", "SandboxError", "SandboxProcess", "SandboxUnavailableError", "TestExecutor",
    "default_state_dir", "get_backend", "reap_orphans",
]


def get_backend(name: str, **config: Any) -> SandboxBackend:
    """`local` (bubblewrap) or `docker`; keyword arguments fill that backend's config dataclass."""
    if name == "local":
        return LocalSandboxBackend(LocalSandboxConfig(**config))
    if name == "docker":
        from rollout_worker.environment.sandbox.docker_backend import DockerSandboxBackend
        from rollout_worker.environment.sandbox.docker_config import DockerSandboxConfig

        return DockerSandboxBackend(DockerSandboxConfig(**config))
    raise ValueError(f"unknown sandbox backend {name!r}: expected 'local' or 'docker'")
