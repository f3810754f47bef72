"""Helpers of the Docker tests (no tests here): a client for the engine scripts/docker_up.sh brought up, or a SKIP
with the reason (never a silent pass), and counters of what sandboxes leave behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rollout_worker.environment.sandbox.docker_backend import DEFAULT_BASE_IMAGE, LABEL

_STATE = Path(os.environ.get("INTERCEPT_RL_DOCKER_STATE", "/tmp/intercept-rl-docker"))
_cached: tuple[object | None, str | None] | None = None


def _connect() -> tuple[object | None, str | None]:
    try:
        import docker
    except ImportError:
        return None, "the Docker SDK is not installed"
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        why = (_STATE / "unavailable").read_text().strip() if (_STATE / "unavailable").is_file() else ""
        return None, f"no Docker daemon answers ({type(exc).__name__}){': ' + why if why else ''}; run scripts/docker_up.sh"
    try:
        client.images.get(DEFAULT_BASE_IMAGE)
    except Exception:
        return None, f"the base image {DEFAULT_BASE_IMAGE} is missing; run scripts/docker_up.sh"
    return client, None


def docker_client_or_skip():
    """The engine's client, or pytest.skip with the reason. Cached per session."""
    global _cached
    if _cached is None:
        _cached = _connect()
    client, reason = _cached
    if client is None:
        pytest.skip(f"Docker tests skipped: {reason}")
    return client


def sandbox_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": LABEL})


def socket_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_socket()] if root.exists() else []
