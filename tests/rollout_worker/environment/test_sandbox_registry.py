"""Orphan reaping: a run that dies leaves no process behind and the next run removes its dirs and sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from rollout_worker.environment.sandbox import reap_orphans
from rollout_worker.environment.sandbox.registry import SandboxRecord
from tests.support.sandboxes import pids_running, sandbox_dirs, wait_until

pytestmark = pytest.mark.timeout(120)

OWNER = textwrap.dedent('''
    import asyncio, sys
    from rollout_worker.environment.sandbox import LocalSandboxBackend, LocalSandboxConfig
    from rollout_worker.types import RolloutEndpoint, Task
    async def main():
        backend = LocalSandboxBackend(LocalSandboxConfig(state_dir=sys.argv[1]))
        task = Task("t", "r", "c", "p", repo_dir=sys.argv[2])
        endpoint = RolloutEndpoint("r-orphan", "http://127.0.0.1:9/rollout/r-orphan/v1", "k", "m")
        sb = await backend.create(task, "r-orphan", endpoint)
        await sb.start(["sleep", "8383.5"])
        print("ready", flush=True)
        await asyncio.sleep(600)
    asyncio.run(main())
''')


async def test_killed_owner_leaves_no_process_and_reap_removes_its_state(state_dir, task):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(state_dir), task.repo_dir], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout.readline().strip() == "ready"
        assert await wait_until(lambda: pids_running("sleep", "8383.5") != [])
        [leftover] = sandbox_dirs(state_dir)
        assert (state_dir / leftover / "gate.sock").exists()
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        # --die-with-parent: the agent dies with its owner, before any reaping.
        assert await wait_until(lambda: pids_running("sleep", "8383.5") == [], timeout=10)
        assert reap_orphans(state_dir) == [leftover]
        assert sandbox_dirs(state_dir) == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)


async def test_reap_spares_live_owners_and_kills_recorded_processes_of_dead_ones(backend, state_dir, task):
    async with await backend.create(task, "r-live") as sb:
        proc = await sb.start(["sleep", "8484.5"])
        assert await wait_until(lambda: pids_running("sleep", "8484.5") != [])
        assert reap_orphans(state_dir) == []  # its owner (this test) is alive
        assert sandbox_dirs(state_dir) == [sb.sandbox_id]
        # Pretend the owner died while its sandbox kept running (e.g. bwrap without --die-with-parent).
        record = SandboxRecord.load(sb.root)
        record.owner_pid, record.owner_start_time = 1, -1
        record.save(sb.root)
        assert reap_orphans(state_dir) == [sb.sandbox_id]
        assert await wait_until(lambda: pids_running("sleep", "8484.5") == [], timeout=10)
        assert proc.returncode is None or proc.returncode < 0
        assert sandbox_dirs(state_dir) == []
    assert sandbox_dirs(state_dir) == []  # destroy after a reap is a quiet no-op


def test_unreadable_record_is_reaped_only_when_old(state_dir):
    fresh = state_dir / "sb-000000000001"
    fresh.mkdir()
    assert reap_orphans(state_dir) == []
    os.utime(fresh, (0, 0))
    assert reap_orphans(state_dir) == ["sb-000000000001"]
