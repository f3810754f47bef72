"""Sandboxes for agents and for grading: one folder per backend, `local/` (bubblewrap, the default) and `docker/`
(optional extra `docker`), and what both use: `errors`, `creation` (dir, record, setup or destroy), `registry`
(orphan reaping), `relay` (the gate's only way in), `inner_init` (runs first inside every sandboxed command),
`output_tail`. The graders are in `environment/grading/`. `get_backend(name, **options)` builds a backend from its
YAML section."""

from __future__ import annotations

import dataclasses
from typing import Any

from intercept_common.errors import ConfigError

from rollout_worker.environment.sandbox.errors import SandboxError, SandboxUnavailableError
from rollout_worker.environment.sandbox.local.backend import LocalSandbox, LocalSandboxBackend
from rollout_worker.environment.sandbox.local.bwrap import LocalSandboxConfig, LocalSandboxTestExecutor
from rollout_worker.environment.sandbox.registry import default_state_dir, reap_orphans
from rollout_worker.protocols import Sandbox, SandboxBackend, SandboxProcess, TestExecutor
from rollout_worker.types import ExecResult

__all__ = [
    "ExecResult", "LocalSandbox", "LocalSandboxBackend", "LocalSandboxConfig", "LocalSandboxTestExecutor", "Sandbox",
    "SandboxBackend", "SandboxError", "SandboxProcess", "SandboxUnavailableError", "TestExecutor",
    "default_state_dir", "get_backend", "reap_orphans", "sandbox_config",
]


def get_backend(name: str, **config: Any) -> SandboxBackend:
    """`local` (bubblewrap) or `docker`; keyword arguments fill that backend's config dataclass (the YAML section
    `sandbox: {backend: ..., <its fields>}`). An unknown backend or field is a `ConfigError` naming it."""
    backend_config = sandbox_config(name, **config)
    if name == "docker":
        from rollout_worker.environment.sandbox.docker.backend import DockerSandboxBackend

        return DockerSandboxBackend(backend_config)
    return LocalSandboxBackend(backend_config)


def sandbox_config(name: str, **config: Any) -> Any:
    """The config dataclass of backend `name` filled with `config`, validated; creates nothing (commands call it to
    check their configuration before they start anything)."""
    if name == "local":
        cls: type = LocalSandboxConfig
    elif name == "docker":
        from rollout_worker.environment.sandbox.docker.config import DockerSandboxConfig

        cls = DockerSandboxConfig
    else:
        raise ConfigError(f"unknown sandbox backend {name!r}: expected 'local' or 'docker'")
    if name == "docker" and "engine_timeout_s" in config:
        raise ConfigError("option 'engine_timeout_s' of section 'sandbox' (backend 'docker') is now 'docker_timeout_s' "
                          "(the Docker API call timeout; the engine call's is worker.engine_timeout_s)")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} in section 'sandbox' (backend {name!r}); its options: "
                          f"{', '.join(sorted(names))}")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"section 'sandbox' (backend {name!r}): {exc}") from exc
