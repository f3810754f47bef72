"""Sandboxes for agents and for grading: protocols (`base`), the bubblewrap backend (`local`, default) and the
Docker backend (`docker_backend`, optional extra `docker`)."""

from __future__ import annotations

from typing import Any

from rollout_worker.sandbox.base import (
    ExecResult,
    Sandbox,
    SandboxBackend,
    SandboxError,
    SandboxProcess,
    SandboxUnavailableError,
    TestExecutor,
)
from rollout_worker.sandbox.bwrap import LocalSandboxConfig, LocalSandboxTestExecutor
from rollout_worker.sandbox.local import LocalSandbox, LocalSandboxBackend
from rollout_worker.sandbox.registry import default_state_dir, reap_orphans

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
        from rollout_worker.sandbox.docker_backend import DockerSandboxBackend, DockerSandboxConfig

        return DockerSandboxBackend(DockerSandboxConfig(**config))
    raise ValueError(f"unknown sandbox backend {name!r}: expected 'local' or 'docker'")
