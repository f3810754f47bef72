"""The Docker sandbox backend: specs without an engine, then real containers on the engine scripts/docker_up.sh
brings up (skipped, with the reason, where no engine can be started)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from rollout_worker.environment.agents import get_agent, openai_env
from rollout_worker.environment.episode import SandboxEpisodeRunner
from rollout_worker.environment.grading.host import FailPassGrader
from rollout_worker.environment.sandbox import LocalSandboxTestExecutor, SandboxUnavailableError, get_backend
from rollout_worker.environment.sandbox.docker.backend import DockerSandboxBackend, reap_docker_orphans
from rollout_worker.environment.sandbox.docker.config import (
    INIT_INSIDE,
    LABEL,
    OWNER_PID_LABEL,
    RELAY_DIR_INSIDE,
    RUNTIME_BIN_INSIDE,
    DockerSandboxConfig,
    container_spec,
    inner_command,
)
from rollout_worker.environment.sandbox.local.bwrap import INNER_INIT
from rollout_worker.outcomes import EpisodeStatus
from tests.support.docker import docker_client_or_skip, sandbox_containers, socket_files
from tests.support.sandboxes import PROBE, sandbox_dirs

pytestmark = pytest.mark.timeout(300)


# -- without an engine ----------------------------------------------------------------------------------------------
async def test_no_engine_fails_fast_with_a_clear_message(state_dir, task, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    backend = get_backend("docker", state_dir=str(state_dir), image="python:3.11-slim")
    started = time.monotonic()
    with pytest.raises(SandboxUnavailableError, match="no Docker engine reachable.*docker_up.sh.*--sandbox local"):
        await backend.create(task, "r-docker")
    assert time.monotonic() - started < 10
    assert sandbox_dirs(state_dir) == []


def test_container_spec_no_network_limits_labels_and_read_only_runtimes(tmp_path):
    config = DockerSandboxConfig(mem_limit="2g", pids_limit=256, cpus=0.5, runtime_paths=["/opt/rt"],
                                 node_binary="/usr/bin/node")
    spec = container_spec(config, "img:1", tmp_path / "relay", "sb-abc", image_path="/img/bin:/usr/bin")
    assert spec["network_mode"] == "none" and spec["image"] == "img:1" and spec["user"] == "0:0"
    assert spec["cap_drop"] == ["ALL"] and "no-new-privileges" in spec["security_opt"]
    assert set(spec["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER"}
    assert spec["mem_limit"] == spec["memswap_limit"] == "2g" and spec["pids_limit"] == 256
    assert spec["nano_cpus"] == 500_000_000
    assert spec["labels"][LABEL] == "sb-abc" and spec["labels"][OWNER_PID_LABEL] == str(os.getpid())
    mounts = {m["Target"]: m for m in spec["mounts"]}
    assert set(mounts) == {RELAY_DIR_INSIDE, INIT_INSIDE, "/opt/rt", f"{RUNTIME_BIN_INSIDE}/node"}
    assert mounts[RELAY_DIR_INSIDE]["Source"] == str(tmp_path / "relay") and not mounts[RELAY_DIR_INSIDE]["ReadOnly"]
    assert mounts[INIT_INSIDE]["Source"] == str(INNER_INIT)
    assert all(m["ReadOnly"] for t, m in mounts.items() if t != RELAY_DIR_INSIDE)
    assert not any("docker.sock" in m["Source"] for m in mounts.values())
    # The image's PATH first (a task image's python/pytest win), the runtimes after; nothing else from the host.
    assert spec["environment"]["PATH"].startswith("/img/bin:/usr/bin:" + RUNTIME_BIN_INSIDE)
    assert set(spec["environment"]) == {"PATH", "LANG"}
    cmd = spec["command"]
    assert cmd[cmd.index("--relay-port") + 1] == "8080"
    assert cmd[cmd.index("--relay-socket") + 1] == f"{RELAY_DIR_INSIDE}/gate.sock"
    assert "--relay-port" not in container_spec(config, "img:1", tmp_path, "sb-x", relay=False)["command"]


def test_inner_command_and_root_user_refused():
    config = DockerSandboxConfig(python="python3")
    assert inner_command(config, ["pi", "-p", "x"]) == ["python3", "-I", "-S", INIT_INSIDE, "--rlimit", "core=0",
                                                        "--", "pi", "-p", "x"]
    with pytest.raises(ValueError, match="non-root"):
        DockerSandboxConfig(user="0:0")


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown sandbox backend 'podman'"):
        get_backend("podman")


# -- real containers ------------------------------------------------------------------------------------------------
@pytest.fixture
def client():
    return docker_client_or_skip()


@pytest.fixture
def dbackend(client, state_dir):
    yield DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir), mem_limit="512m", pids_limit=200,
                                                   cpus=0.5), client=client)
    mine = [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())]
    assert mine == [], f"containers left behind: {[c.name for c in mine]}"
    assert sandbox_dirs(state_dir) == [] and socket_files(state_dir) == []


async def test_container_is_isolated_limited_non_root_and_has_the_agent_runtimes(client, dbackend, task):
    async with await dbackend.create(task, "r-iso") as sb:
        attrs = client.api.inspect_container(sb.container.id)
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none" and host["Memory"] == 512 * 1024 ** 2 and host["PidsLimit"] == 200
        assert host["NanoCpus"] == 500_000_000 and host["CapDrop"] == ["ALL"] and not host["Privileged"]
        assert attrs["Config"]["Labels"][LABEL] == sb.sandbox_id
        res = await sb.exec(["sh", "-c", "id -u; ls /sys/class/net; cat /testbed/calc.py; ls /var/run/docker.sock "
                             "2>&1; python -c 'import sys; print(sys.version_info[:2])'; node --version; "
                             "mini --help >/dev/null 2>&1 && echo mini-ok; "
                             f"{os.path.realpath('.agents/pi/node_modules/.bin/pi')} --version"], timeout=60)
        lines = res.stdout.splitlines()
        assert res.exit_code == 0, res.stdout
        assert lines[0] == "65534" and lines[1] == "lo"  # non-root, loopback only
        assert "return a - b" in res.stdout and "No such file" in res.stdout
        assert lines[-3].startswith("v") and lines[-2] == "mini-ok" and lines[-1][0].isdigit(), res.stdout
        # The repository copy belongs to the agent user; the system does not.
        res = await sb.exec(["sh", "-c", "touch /testbed/new && touch /usr/x"], timeout=30)
        assert res.exit_code != 0 and "/usr/x" in res.stdout


async def test_relay_reaches_only_this_rollout_and_nothing_else(make_gate, dbackend, task):
    gate = await make_gate()
    mine, other = await gate.open_rollout("r-mine"), await gate.open_rollout("r-other")
    async with await dbackend.create(task, mine.rollout_id, mine.endpoint) as sb:
        inner = sb.endpoint
        assert inner.base_url == "http://127.0.0.1:8080/rollout/r-mine/v1"
        probes = {
            "own_with_key": f"get('{inner.base_url}/models', os.environ['OPENAI_API_KEY'])",
            "own_with_other_key": f"get('{inner.base_url}/models', os.environ['OTHER_KEY'])",
            "other_rollout_path": "get('http://127.0.0.1:8080/rollout/r-other/v1/models', "
                                  "os.environ['OPENAI_API_KEY'])",
            "gate_port_direct": f"connect('127.0.0.1', {gate.port})",
            "pypi_by_name": "get('https://pypi.org/simple/')",
            "pypi_by_ip": "connect('151.101.0.223', 443)",
        }
        res = await sb.exec(["python3", "-c", PROBE, json.dumps(probes)], timeout=60,
                            env={"OPENAI_API_KEY": inner.api_key, "OTHER_KEY": other.api_key})
        assert res.exit_code == 0, res.stdout
        seen = json.loads(res.stdout.strip().splitlines()[-1])
        assert seen["own_with_key"] == 200 and seen["own_with_other_key"] == 401
        assert seen["other_rollout_path"] == 403
        assert seen["gate_port_direct"] == "ConnectionRefusedError"
        assert seen["pypi_by_name"] == "URLError"
        assert seen["pypi_by_ip"] in ("OSError", "ConnectionRefusedError", "TimeoutError")
        # The rollout key is in the agent's environment only, never on a command line inside.
        proc = await sb.start(["sleep", "300"], env=openai_env(sb.endpoint))
        # `start` returns once the exec is created; the process may still be in `runc init` for a moment: look until
        # it shows (bounded), then check that no command line carries the key.
        for _ in range(50):
            ps = await sb.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"], timeout=30)
            if "sleep 300" in ps.stdout:
                break
            await asyncio.sleep(0.2)
        assert "sleep 300" in ps.stdout and inner.api_key not in ps.stdout
        await proc.kill()
        assert proc.returncode == -9


async def test_streamed_chat_call_from_inside_the_container(make_gate, dbackend, task):
    gate = await make_gate()
    rollout = await gate.open_rollout("r-stream")
    script = ("from openai import OpenAI; import os\n"
              "c = OpenAI(base_url=os.environ['OPENAI_BASE_URL'], api_key=os.environ['OPENAI_API_KEY'], max_retries=0)\n"
              "s = c.chat.completions.create(model=os.environ['OPENAI_MODEL'], stream=True,\n"
              "    messages=[{'role': 'user', 'content': 'hi'}])\n"
              "print(''.join(ch.choices[0].delta.content or '' for ch in s if ch.choices))\n")
    venv_python = os.path.realpath(".venv-agents") + "/bin/python"
    async with await dbackend.create(task, rollout.rollout_id, rollout.endpoint) as sb:
        proc = await sb.start([venv_python, "-c", script], env=openai_env(sb.endpoint))
        request = await rollout.next_request(timeout=30)
        assert request.stream
        await request.reply({"role": "assistant", "content": "hello from the gate"})
        assert await proc.wait(30) == 0, proc.output_tail()
        assert proc.output_tail().strip() == "hello from the gate"
    await rollout.close()


async def test_kill_ends_every_agent_process_timeouts_and_files(dbackend, task):
    async with await dbackend.create(task, "r-kill") as sb:
        await sb.start(["sh", "-c", "setsid sleep 4001 & nohup sleep 4002 & sleep 4003"])
        res = await sb.exec(["sleep", "30"], timeout=0.5)
        assert res.timed_out and res.exit_code == -9
        await sb.kill()
        ps = await sb.exec(["sh", "-c", "ps -eo user,args"], timeout=30)
        assert "sleep 400" not in ps.stdout
        assert "intercept-init" in ps.stdout  # the relay (root) survives the agent user's kill
        await sb.write_file("/home/agent/cfg/a.json", b"{}")
        assert await sb.read_file("/home/agent/cfg/a.json") == b"{}"
        for bad in ("/etc/passwd", "/testbed/../etc/passwd"):
            with pytest.raises(PermissionError):
                await sb.write_file(bad, b"x")
        await sb.exec(["sh", "-c", "echo fixed > calc.py && ln -s /etc/shadow evil"], timeout=30)
        exported = await sb.host_repo_dir()
        assert (exported / "calc.py").read_text() == "fixed\n" and (exported / ".git").is_dir()
        assert not (exported / "evil").exists() or (exported / "evil").is_symlink()


async def test_create_failure_and_orphans_leave_nothing(client, dbackend, state_dir, task):
    from dataclasses import replace

    with pytest.raises(Exception, match="not present"):
        await dbackend.create(replace(task, image="intercept-rl/no-such-image:0"), "r-bad")
    assert sandbox_dirs(state_dir) == []
    # A container whose owner died (a crashed worker) is reaped; one of a live owner is not.
    orphan = client.containers.create("intercept-rl/base:1", ["true"], labels={LABEL: "sb-orphan",
                                      OWNER_PID_LABEL: "999999999"})
    live = client.containers.create("intercept-rl/base:1", ["true"], labels={LABEL: "sb-live",
                                    OWNER_PID_LABEL: str(os.getpid())})
    try:
        assert reap_docker_orphans(client) == ["sb-orphan"]
        assert {c.id for c in sandbox_containers(client)} >= {live.id}
    finally:
        live.remove(force=True)
        orphan.remove(force=True) if orphan.id in {c.id for c in sandbox_containers(client)} else None


def test_reaping_passes_over_a_container_removed_while_it_lists(client, monkeypatch):
    """Another rollout's container removed between the listing's ids and its per-container fetch (a 404 there made
    concurrent rollouts of one task fail their creation): reaping goes on with the rest."""
    image = "intercept-rl/base:1"
    gone = client.containers.create(image, ["true"], labels={LABEL: "sb-gone", OWNER_PID_LABEL: "999999999"})
    orphan = client.containers.create(image, ["true"], labels={LABEL: "sb-orphan2", OWNER_PID_LABEL: "999999999"})
    listed = client.api.containers

    def list_then_remove_one(*args, **kwargs):
        found = listed(*args, **kwargs)
        client.api.remove_container(gone.id, force=True)  # as a concurrent rollout's destroy() does
        return found

    monkeypatch.setattr(client.api, "containers", list_then_remove_one)
    try:
        assert reap_docker_orphans(client) == ["sb-orphan2"]
    finally:
        monkeypatch.undo()
        for container in (gone, orphan):
            if container.id in {c.id for c in sandbox_containers(client)}:
                container.remove(force=True)


async def test_oracle_and_noop_episodes_in_containers(make_gate, dbackend, task):
    gate = await make_gate()
    grader = FailPassGrader(LocalSandboxTestExecutor())
    results = {}
    for agent in ("oracle", "noop"):
        rollout = await gate.open_rollout(f"r-{agent}")
        try:
            runner = SandboxEpisodeRunner(dbackend, get_agent(agent), grader)
            results[agent] = await runner.run(task, rollout.endpoint, asyncio.Event())
        finally:
            await rollout.close()
    assert (results["oracle"].status, results["oracle"].reward) == (EpisodeStatus.COMPLETED, 1.0), results["oracle"]
    assert (results["noop"].status, results["noop"].reward) == (EpisodeStatus.COMPLETED, 0.0), results["noop"]


async def test_host_grader_runs_its_tests_in_a_container_without_bubblewrap(client, task, state_dir):
    """Hosts with Docker but no bubblewrap: FailPassGrader + DockerTestExecutor grades in a fresh container."""
    from rollout_worker.environment.sandbox.docker.executor import DockerTestExecutor

    grader = FailPassGrader(DockerTestExecutor(client=client))
    pristine = await grader.grade(task, Path(task.repo_dir))
    assert (pristine.reward, pristine.scorable) == (0.0, True), pristine.details
    fixed = Path(state_dir) / "fixed"
    shutil.copytree(task.repo_dir, fixed)
    (fixed / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    graded = await grader.grade(task, fixed)
    assert (graded.reward, graded.resolved) == (1.0, True), graded.details
    res = await DockerTestExecutor(client=client).run(fixed, ["sleep", "30"], timeout=1)
    assert res.timed_out and res.exit_code == -9
    assert [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())] == []
    shutil.rmtree(fixed)
