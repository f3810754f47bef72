"""Container scale on this 2-core machine: many rollout containers at once with memory and pid limits enforced — an
agent that forks without bound and one that allocates without bound are contained while the others keep working —
and nothing is left afterwards (containers, networks, volumes, relay sockets, sandbox directories), counted.

`make test` runs 8 at once; `make test-reliability` runs 32."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from rollout_worker.environment.sandbox.docker.backend import DockerSandboxBackend
from rollout_worker.environment.sandbox.docker.config import OWNER_PID_LABEL, DockerSandboxConfig
from tests.reliability.conftest import scaled
from tests.support.docker import docker_client_or_skip, sandbox_containers, socket_files
from tests.support.sandboxes import make_task, sandbox_dirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

MEM_LIMIT, PIDS_LIMIT = "256m", 96
FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 20"
MEMORY_HOG = "import time\nblocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n    time.sleep(0.01)\n"


async def test_many_containers_at_once_contain_a_fork_bomb_and_a_memory_hog(state_dir, tmp_path):
    client = docker_client_or_skip()
    count = scaled(8, 32)
    networks, volumes = len(client.networks.list()), len(client.volumes.list())
    backend = DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir), mem_limit=MEM_LIMIT,
                                                       pids_limit=PIDS_LIMIT, cpus=0.5), client=client)
    task = make_task(tmp_path)
    started = time.monotonic()
    sandboxes = await asyncio.gather(*(backend.create(task, f"scale-{i}") for i in range(count)))
    created_s = time.monotonic() - started
    try:
        assert len({s.container.id for s in sandboxes}) == count
        bomb, hog, rest = sandboxes[0], sandboxes[1], sandboxes[2:]
        bomb_run = asyncio.ensure_future(bomb.exec(["bash", "-c", FORK_BOMB], timeout=60))
        hog_run = asyncio.ensure_future(hog.exec(["python3", "-c", MEMORY_HOG], timeout=120))
        await asyncio.sleep(3)
        # While both run, every other container still answers, and does real work in its repository.
        started = time.monotonic()
        answers = await asyncio.gather(*(s.exec(["python3", "-c", "import os; print(len(os.listdir('.')))"],
                                                timeout=120) for s in rest))
        others_s = time.monotonic() - started
        assert all(a.exit_code == 0 and int(a.stdout.strip()) > 0 for a in answers), answers
        stats = await asyncio.to_thread(client.api.stats, bomb.container.id, stream=False)  # from outside: the
        in_bomb = (stats.get("pids_stats") or {}).get("current")  # bomb leaves no pid to exec a reader inside
        hog_result = await hog_run
        bomb_result = await bomb_run
        print(f"\ncontainer scale: {count} containers created in {created_s:.1f}s; {len(rest)} others answered in "
              f"{others_s:.1f}s during the attacks; fork bomb: {in_bomb} processes (limit {PIDS_LIMIT}), exit "
              f"{bomb_result.exit_code}; memory hog: exit {hog_result.exit_code} (limit {MEM_LIMIT})")
        # The memory hog is killed by the kernel's OOM killer inside its own container (SIGKILL: 137 / -9).
        assert hog_result.exit_code in (137, -9), hog_result
        assert PIDS_LIMIT // 2 <= in_bomb <= PIDS_LIMIT  # it did fill its container, and no more
        assert bomb_result.exit_code is not None
        after_hog = await hog.exec(["true"], timeout=120)
        assert after_hog.exit_code == 0, after_hog  # the OOM kill took the hog, not its container
        after_bomb = await bomb.exec(["true"], timeout=120)  # the bomb's processes still hold every pid it may have
        assert after_bomb.exit_code == 0 or "Resource temporarily unavailable" in after_bomb.stdout, after_bomb
    finally:
        await asyncio.gather(*(s.destroy() for s in sandboxes))
    leaked = {"containers": [c.name for c in sandbox_containers(client)
                             if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())],
              "networks": len(client.networks.list()) - networks, "volumes": len(client.volumes.list()) - volumes,
              "relay sockets": socket_files(state_dir), "sandbox dirs": sandbox_dirs(state_dir)}
    print(f"leaks: { {k: (len(v) if isinstance(v, list) else v) for k, v in leaked.items()} }")
    assert not any(leaked.values()), leaked
