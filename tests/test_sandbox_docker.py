"""The Docker backend without a Docker engine: a clear, fast failure and the container/exec specs it would use."""

from __future__ import annotations

import time

import pytest

from rollout_worker.environment.sandbox import SandboxUnavailableError, get_backend
from rollout_worker.environment.sandbox.bwrap import INNER_INIT
from rollout_worker.environment.sandbox.docker_backend import (
    INIT_INSIDE,
    RELAY_DIR_INSIDE,
    DockerSandboxConfig,
    container_spec,
    inner_command,
)
from tests.test_sandbox_support import sandbox_dirs, state_dir, task  # noqa: F401 (fixtures)


async def test_no_engine_fails_fast_with_a_clear_message(state_dir, task, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    backend = get_backend("docker", state_dir=str(state_dir), image="python:3.11-slim")
    started = time.monotonic()
    with pytest.raises(SandboxUnavailableError, match="no Docker engine reachable.*--sandbox local"):
        await backend.create(task, "r-docker")
    assert time.monotonic() - started < 10
    assert sandbox_dirs(state_dir) == []


def test_container_spec_has_no_network_and_binds_only_the_relay_and_init(tmp_path):
    config = DockerSandboxConfig(mem_limit="2g", pids_limit=256)
    spec = container_spec(config, "img:1", tmp_path / "relay", "sb-abc")
    assert spec["network_mode"] == "none" and spec["image"] == "img:1"
    assert spec["cap_drop"] == ["ALL"] and "no-new-privileges" in spec["security_opt"]
    assert spec["mem_limit"] == "2g" and spec["pids_limit"] == 256 and "nano_cpus" not in spec
    assert spec["labels"]["intercept-rl.sandbox"] == "sb-abc"
    mounts = {m["Target"]: m for m in spec["mounts"]}
    assert set(mounts) == {RELAY_DIR_INSIDE, INIT_INSIDE}
    assert mounts[RELAY_DIR_INSIDE]["Source"] == str(tmp_path / "relay") and not mounts[RELAY_DIR_INSIDE]["ReadOnly"]
    assert mounts[INIT_INSIDE]["Source"] == str(INNER_INIT) and mounts[INIT_INSIDE]["ReadOnly"]
    assert spec["environment"] == {}  # nothing from the host


def test_inner_command_wraps_argv_with_the_relay_only_when_there_is_an_endpoint():
    config = DockerSandboxConfig(relay_port=9000)
    with_relay = inner_command(config, ["pi", "-p", "x"], relay=True)
    assert with_relay[:4] == ["python3", "-I", "-S", INIT_INSIDE]
    assert with_relay[with_relay.index("--relay-port") + 1] == "9000"
    assert with_relay[with_relay.index("--relay-socket") + 1] == f"{RELAY_DIR_INSIDE}/gate.sock"
    assert with_relay[-4:] == ["--", "pi", "-p", "x"]
    assert "--relay-port" not in inner_command(config, ["true"], relay=False)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown sandbox backend 'podman'"):
        get_backend("podman")
