"""No leaks under abuse: 56 container rollouts (24 in `make test`'s quick slice) through the gate, agents ended at
random points (own exit, the worker's stop, cancellation mid-create or mid-run), and one dockerd restart in the
middle → 0 containers, 0 relay sockets, 0 sandbox dirs left, counted. Runs on a private dockerd (own data root and
socket) so the restart touches nothing else on the machine."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rollout_worker.environment.agents import CommandAgent
from rollout_worker.environment.episode import EpisodeConfig, SandboxEpisodeRunner
from rollout_worker.environment.sandbox.docker.backend import DockerSandboxBackend
from rollout_worker.environment.sandbox.docker.config import DEFAULT_BASE_IMAGE, LABEL, DockerSandboxConfig
from rollout_worker.outcomes import EpisodeStatus
from tests.support.docker import PrivateDockerd, docker_client_or_skip, socket_files
from tests.support.sandboxes import make_task, sandbox_dirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# `make test` runs the quick slice; the full reliability run (`make test-reliability`, RELIABILITY_FULL=1) the 56.
ROLLOUTS = 56 if os.environ.get("RELIABILITY_FULL") == "1" else 24


@dataclass
class _Grade:
    reward: float | None
    resolved: bool
    scorable: bool
    details: dict = field(default_factory=dict)


class DoneGrader:
    async def grade(self, task, agent_repo_dir: Path) -> _Grade:
        done = (agent_repo_dir / "done").exists()
        return _Grade(float(done), done, True)


@pytest.fixture
def private_dockerd():
    shared = docker_client_or_skip()
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("Docker leak test skipped: a private dockerd needs root and the dockerd binary")
    root = Path(tempfile.mkdtemp(prefix="irl-dd-", dir="/tmp"))
    daemon = PrivateDockerd(root)
    try:
        client = daemon.start()
        # The base image, copied from the shared engine (no registry anywhere).
        save = subprocess.Popen(["docker", "save", DEFAULT_BASE_IMAGE], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", daemon.host, "load", "-q"], stdin=save.stdout, capture_output=True,
                              timeout=300)
        save.wait(60)
        assert load.returncode == 0, load.stderr
        del shared
        yield daemon, client
    finally:
        daemon.stop()


async def test_many_rollouts_random_kills_and_a_dockerd_restart_leave_nothing(private_dockerd, make_gate, tmp_path):
    daemon, client = private_dockerd
    state = Path(tempfile.mkdtemp(prefix="irl-lk-"))
    try:
        await _abuse(daemon, client, state, make_gate, tmp_path)
    finally:
        shutil.rmtree(state, ignore_errors=True)


async def _abuse(daemon, client, state: Path, make_gate, tmp_path) -> None:
    task = make_task(tmp_path)
    holder = {"client": client}

    def backend() -> DockerSandboxBackend:
        return DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state), mem_limit="256m", pids_limit=100,
                                                        cpus=0.5, remove_retry_s=90), client=holder["client"])

    gate = await make_gate()
    rng = random.Random(1234)
    statuses: list[str] = []
    cancelled = 0

    slots = asyncio.Semaphore(10)  # more than the loop's default thread pool: streams must not starve other calls

    async def one(i: int) -> None:
        async with slots:
            await _one(i)

    async def _one(i: int) -> None:
        nonlocal cancelled
        mode = rng.choice(["exit", "stop", "cancel", "wall"])
        delay = rng.uniform(0.0, 2.0)
        agent = CommandAgent(f"sleep {rng.uniform(0, 1.5):.2f}; touch done; sleep 300" if mode != "exit"
                             else f"sleep {rng.uniform(0, 1):.2f}; touch done")
        runner = SandboxEpisodeRunner(backend(), agent, DoneGrader(), EpisodeConfig(agent_wall_time_s=2.5))
        rollout = await gate.open_rollout(f"r-leak-{i}")
        stop = asyncio.Event()
        job = asyncio.ensure_future(runner.run(task, rollout.endpoint, stop))
        try:
            if mode in ("stop", "cancel"):
                done, _ = await asyncio.wait({job}, timeout=delay)
                if not done:
                    if mode == "stop":
                        stop.set()
                    else:
                        job.cancel()
            try:
                result = await asyncio.wait_for(job, 180)
                statuses.append(result.status.value)
            except asyncio.CancelledError:
                cancelled += 1
        finally:
            await rollout.close()

    started = time.monotonic()
    pending = [asyncio.ensure_future(one(i)) for i in range(ROLLOUTS // 2)]
    await asyncio.sleep(2.0)  # restart while the first half is in flight
    new_client = await asyncio.to_thread(daemon.restart)
    holder["client"] = new_client
    await asyncio.gather(*pending)
    await asyncio.gather(*(one(i) for i in range(ROLLOUTS // 2, ROLLOUTS)))
    elapsed = time.monotonic() - started

    assert len(statuses) + cancelled == ROLLOUTS
    assert EpisodeStatus.COMPLETED.value in statuses and cancelled > 0
    left = new_client.containers.list(all=True, filters={"label": LABEL})
    counts = {"containers": len(left), "relay_sockets": len(socket_files(state)), "sandbox_dirs": len(sandbox_dirs(state))}
    print(f"\n{ROLLOUTS} rollouts in {elapsed:.1f}s: statuses {sorted(set(statuses))}, {cancelled} cancelled; left {counts}")
    assert counts == {"containers": 0, "relay_sockets": 0, "sandbox_dirs": 0}, [c.labels for c in left]
    assert new_client.containers.list(all=True) == []  # nothing else either (private daemon)
