"""Helpers of the Docker tests (no tests here): a client for the engine scripts/docker_up.sh brought up, or a SKIP
with the reason (never a silent pass), and counters of what sandboxes leave behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rollout_worker.environment.sandbox.docker.config import DEFAULT_BASE_IMAGE, LABEL

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


class PrivateDockerd:
    """A second, private dockerd (own data root, exec root, socket; no bridge, no iptables) that a test may restart
    without touching the shared one. Root only. `start()`, `restart()`, `stop()`; `stop()` also removes its dirs."""

    def __init__(self, root: Path):
        self.root = root
        self.socket = root / "d.sock"
        self.log = root / "dockerd.log"
        self.proc = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60.0):
        import subprocess
        import time

        import docker

        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["dockerd", "--storage-driver=overlay2", "--iptables=false", "--bridge=none", "--ip-masq=false",
             f"--data-root={self.root / 'data'}", f"--exec-root={self.root / 'x'}", f"--pidfile={self.root / 'pid'}",
             f"--host={self.host}"], stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = docker.DockerClient(base_url=self.host, timeout=60)
                client.ping()
                return client
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private dockerd did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.3)

    def kill(self, timeout: float = 30.0) -> None:
        import signal
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self):
        self.kill()
        return self.start()

    def stop(self) -> None:
        import shutil

        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def remove_history_images(client, *images: str) -> None:
    """Remove the history-free images derived from `images` (rollout_worker/environment/sandbox/docker/history.py),
    listing the derived images once (a list call per source image costs ~0.1 s, 20 s over the synthesized set)."""
    from rollout_worker.environment.sandbox.docker.history import SOURCE_LABEL

    sources = set(images)
    for derived in client.images.list(filters={"label": SOURCE_LABEL}):
        if derived.labels.get(SOURCE_LABEL) in sources:
            client.images.remove(derived.id, force=True)
