"""The bubblewrap sandbox: isolation, the gate relay, process teardown, files, limits, start failures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from openai import AsyncOpenAI

from rollout_worker.environment.sandbox import (
    LocalSandboxBackend,
    LocalSandboxConfig,
    SandboxError,
    SandboxUnavailableError,
)
from tests.support.sandboxes import PROBE, pids_running, pids_with, sandbox_dirs, wait_until

pytestmark = pytest.mark.timeout(120)


async def _host_http_server() -> tuple[web.AppRunner, int]:
    async def hello(_request):
        return web.Response(text="host service")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def test_exec_sees_private_repo_copy_minimal_env_and_read_only_system(backend, task, monkeypatch):
    monkeypatch.setenv("IRL_HOST_SECRET", "must-not-leak")
    async with await backend.create(task, "r-exec") as sb:
        res = await sb.exec(["sh", "-c", "id -u; pwd; ls; env; echo changed > calc.py; touch /usr/x; "
                             "ls /etc/shadow; ls /root/.ssh"], timeout=30)
        lines = res.stdout.splitlines()
        assert lines[0] == "65534" and lines[1] == "/testbed"
        assert "calc.py" in lines and "tests" in lines
        assert "IRL_HOST_SECRET" not in res.stdout and "must-not-leak" not in res.stdout
        assert "HOME=/home/agent" in lines
        assert "Read-only file system" in res.stderr
        assert "/etc/shadow" in res.stderr and "/root/.ssh" in res.stderr  # both absent inside
        # The agent's copy changed, the task's repo did not.
        assert (sb.host_workdir / "calc.py").read_text() == "changed\n"
        assert "a - b" in Path(task.repo_dir, "calc.py").read_text()
        limits = await sb.exec(["python3", "-c", "import resource as r; print(r.getrlimit(r.RLIMIT_NOFILE)[0], "
                                "r.getrlimit(r.RLIMIT_FSIZE)[0], r.getrlimit(r.RLIMIT_CORE)[0])"], timeout=30)
        assert limits.stdout.split() == ["4096", str(2 << 30), "0"]


async def test_exec_timeout_kills_and_output_is_a_bounded_tail(backend, task):
    async with await backend.create(task, "r-timeout") as sb:
        started = time.monotonic()
        res = await sb.exec(["sh", "-c", "echo begin; sleep 4242.5"], timeout=1.0)
        assert res.timed_out and res.exit_code == -9
        assert time.monotonic() - started < 8
        assert res.stdout == "begin\n"
        assert pids_with("4242.5") == []
        big = await sb.exec(["python3", "-c", "print('x' * 500000 + 'END')"], timeout=30, output_limit=1000)
        assert big.exit_code == 0 and len(big.stdout) == 1000 and big.stdout.endswith("END\n")


async def test_kill_takes_down_every_process_including_detached_ones(backend, task):
    async with await backend.create(task, "r-kill") as sb:
        proc = await sb.start(["sh", "-c", "(setsid sleep 7311.5 &); nohup sleep 7311.6 >/dev/null 2>&1 & "
                               "echo up; sleep 7311.7"])
        sleepers = lambda: [pid for n in (5, 6, 7) for pid in pids_running("sleep", f"7311.{n}")]  # noqa: E731
        assert await wait_until(lambda: "up" in proc.output_tail() and len(sleepers()) == 3)
        assert await proc.wait(0.2) is None and proc.returncode is None
        await sb.kill()
        assert proc.returncode is not None
        assert await wait_until(lambda: sleepers() == [] and pids_with("7311.") == [], timeout=5)
        # The sandbox stays usable after a kill: files persist, new commands start.
        again = await sb.exec(["cat", "calc.py"], timeout=30)
        assert "a - b" in again.stdout


async def test_files_inside_home_and_workdir_and_no_escape(backend, task):
    async with await backend.create(task, "r-files") as sb:
        await sb.write_file("/home/agent/.cfg/x.json", b'{"a": 1}')
        res = await sb.exec(["cat", "/home/agent/.cfg/x.json"], timeout=30)
        assert res.stdout == '{"a": 1}'
        assert await sb.read_file("/testbed/calc.py") == Path(task.repo_dir, "calc.py").read_bytes()
        for bad in ("/etc/passwd", "/testbed/../etc/passwd", "/tmp/x"):
            with pytest.raises(PermissionError):
                await sb.write_file(bad, b"x")
        # A link planted by the agent must not let the host follow it out of the sandbox.
        await sb.exec(["ln", "-s", "/etc", "/testbed/evil"], timeout=30)
        with pytest.raises(PermissionError):
            await sb.read_file("/testbed/evil/hostname")
        with pytest.raises(PermissionError):
            await sb.write_file("/testbed/evil/pwned", b"x")


async def test_endpoint_reachable_with_key_everything_else_unreachable(make_gate, backend, task):
    gate = await make_gate()
    mine, other = await gate.open_rollout("r-mine"), await gate.open_rollout("r-other")
    host_runner, host_port = await _host_http_server()
    try:
        sb = await backend.create(task, mine.rollout_id, mine.endpoint)
        async with sb:
            inner = sb.endpoint
            assert inner.base_url == "http://127.0.0.1:8080/rollout/r-mine/v1"
            assert inner.api_key == mine.api_key and inner.model == mine.endpoint.model
            probes = {
                "own_with_key": f"get('{inner.base_url}/models', os.environ['OPENAI_API_KEY'])",
                "own_without_key": f"get('{inner.base_url}/models')",
                "own_with_other_key": f"get('{inner.base_url}/models', os.environ['OTHER_KEY'])",
                "other_rollout_path": "get('http://127.0.0.1:8080/rollout/r-other/v1/models', "
                                      "os.environ['OPENAI_API_KEY'])",
                "gate_port_direct": f"connect('127.0.0.1', {gate.port})",
                "host_service": f"connect('127.0.0.1', {host_port})",
                "pypi_by_name": "get('https://pypi.org/simple/')",
                "pypi_by_ip": "connect('151.101.0.223', 443)",
            }
            res = await sb.exec(["python3", "-c", PROBE, json.dumps(probes)], timeout=60,
                                env={"OPENAI_API_KEY": inner.api_key, "OTHER_KEY": other.api_key})
            assert res.exit_code == 0, res.stderr
            seen = json.loads(res.stdout)
            assert seen["own_with_key"] == 200
            assert seen["own_without_key"] == 401
            assert seen["own_with_other_key"] == 401  # a key opens its own rollout only
            assert seen["other_rollout_path"] == 403  # the relay forwards this rollout's paths only
            assert seen["gate_port_direct"] == "ConnectionRefusedError"
            assert seen["host_service"] == "ConnectionRefusedError"
            assert seen["pypi_by_name"] == "URLError"
            assert seen["pypi_by_ip"] in ("OSError", "ConnectionRefusedError", "TimeoutError")
            assert sb.proxy.requests_refused == 1
        # And on the host: the other rollout's endpoint refuses this rollout's key.
        client = AsyncOpenAI(base_url=other.base_url, api_key=mine.api_key, max_retries=0, timeout=10)
        with pytest.raises(Exception) as refused:
            await client.models.list()
        assert getattr(refused.value, "status_code", None) == 401
        await client.close()
    finally:
        await host_runner.cleanup()


async def test_streamed_chat_call_through_both_relays(make_gate, backend, task):
    """A real OpenAI SDK inside the sandbox (the agents' venv has it) streams a chat answer through the relays."""
    gate = await make_gate()
    rollout = await gate.open_rollout("r-stream")
    script = ("from openai import OpenAI; import os\n"
              "c = OpenAI(base_url=os.environ['OPENAI_BASE_URL'], api_key=os.environ['OPENAI_API_KEY'], max_retries=0)\n"
              "s = c.chat.completions.create(model=os.environ['OPENAI_MODEL'], stream=True,\n"
              "    messages=[{'role': 'user', 'content': 'hi'}])\n"
              "print(''.join(ch.choices[0].delta.content or '' for ch in s if ch.choices))\n")
    async with await backend.create(task, rollout.rollout_id, rollout.endpoint) as sb:
        from rollout_worker.environment.agents import openai_env

        proc = await sb.start(["python", "-c", script], env=openai_env(sb.endpoint))
        request = await rollout.next_request(timeout=30)
        assert request.stream and request.messages == [{"role": "user", "content": "hi"}]
        await request.reply({"role": "assistant", "content": "hello from the gate " * 20})
        assert await proc.wait(30) == 0, proc.output_tail()
        assert proc.output_tail().strip() == ("hello from the gate " * 20).strip()
    await rollout.close()


async def test_rollout_key_never_on_a_command_line(make_gate, backend, task):
    gate = await make_gate()
    rollout = await gate.open_rollout("r-cmdline")
    async with await backend.create(task, rollout.rollout_id, rollout.endpoint) as sb:
        proc = await sb.start(["sleep", "5151.5"], env={"OPENAI_API_KEY": rollout.api_key})
        assert await wait_until(lambda: pids_with("5151.5") != [])
        assert pids_with(rollout.api_key) == []
        inside = await sb.exec(["sh", "-c", "cat /proc/*/cmdline | tr '\\0' ' '"], timeout=30)
        assert rollout.api_key not in inside.stdout
        await proc.kill()


async def test_start_failures_leak_nothing(state_dir, task, tmp_path, make_gate):
    gate = await make_gate()
    rollout = await gate.open_rollout("r-fail")
    # 1. no such repository
    bad_task = type(task)(**{**task.__dict__, "repo_dir": str(tmp_path / "missing")})
    with pytest.raises(SandboxError, match="repo_dir"):
        await LocalSandboxBackend(LocalSandboxConfig(state_dir=str(state_dir))).create(bad_task, "x", rollout.endpoint)
    # 2. a bwrap that cannot create namespaces (stands in for a kernel that refuses them)
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(SandboxError, match="No permissions"):
        await LocalSandboxBackend(LocalSandboxConfig(state_dir=str(state_dir), bwrap_path=str(broken))).create(
            task, "y", rollout.endpoint)
    # 3. no bwrap at all
    with pytest.raises(SandboxUnavailableError, match="bubblewrap"):
        await LocalSandboxBackend(LocalSandboxConfig(state_dir=str(state_dir), bwrap_path="no-such-bwrap")).create(
            task, "z", rollout.endpoint)
    assert sandbox_dirs(state_dir) == []
    assert list(state_dir.rglob("*.sock")) == []


async def test_cancelled_create_and_exec_leak_nothing(backend, state_dir, task):
    creating = asyncio.ensure_future(backend.create(task, "r-cancel"))
    await asyncio.sleep(0.01)
    creating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await creating
    assert sandbox_dirs(state_dir) == []
    async with await backend.create(task, "r-cancel-exec") as sb:
        running = asyncio.ensure_future(sb.exec(["sleep", "6262.5"], timeout=60))
        assert await wait_until(lambda: pids_with("6262.5") != [])
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await wait_until(lambda: pids_with("6262.5") == [], timeout=5)
    assert sandbox_dirs(state_dir) == []


async def test_starts_cancelled_at_random_points_leave_no_process(backend, state_dir, task):
    """Cancelling `start` anywhere in bwrap's start-up must not leak bwrap, its monitor or the agent. Before the fix,
    6 of 150 such cancellations left processes running after destroy() (the spawn lost by asyncio, or bwrap's monitor
    escaping the process-group kill before --die-with-parent was armed)."""
    import random

    rng = random.Random(7)
    for i in range(30):
        async with await backend.create(task, f"r-cancel-start-{i}") as sb:
            starting = asyncio.ensure_future(sb.start(["sh", "-c", "sleep 5151.5"]))
            await asyncio.sleep(rng.uniform(0, 0.03))
            starting.cancel()
            try:
                process = await starting
            except asyncio.CancelledError:
                pass
            else:
                await process.kill()
    assert await wait_until(lambda: pids_with("5151.5") == [], timeout=10), pids_with("5151.5")
    assert sandbox_dirs(state_dir) == []


async def test_destroy_kills_what_escaped_the_process_group(backend, task):
    """A process that mentions the sandbox's directory but is outside every tracked process group (as bwrap's monitor
    can be) is killed by destroy()."""
    import subprocess
    import sys

    sb = await backend.create(task, "r-escaped")
    # One process (no shell with a child that would outlive it), the sandbox's directory among its arguments.
    escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(sb.root / "escaped")],
                               start_new_session=True)
    try:
        # Popen returns after the fork; the command line is the new one only once the child has exec'd.
        assert await wait_until(lambda: pids_with(str(sb.root)) == [escaped.pid], timeout=10)
        await sb.destroy()
        assert escaped.wait(timeout=10) == -9  # SIGKILL
    finally:
        if escaped.poll() is None:
            escaped.kill()
