"""mini-swe-agent's own Docker mode (mini on the host, commands through `docker exec`): a real mini run through the
gate, graded, its container and dirs gone afterwards; and the contained side really is contained."""

from __future__ import annotations

import asyncio
import os

import pytest

from rollout_worker.environment.grading.host import FailPassGrader
from rollout_worker.environment.sandbox import LocalSandboxTestExecutor
from rollout_worker.environment.sandbox.docker.config import OWNER_PID_LABEL
from rollout_worker.outcomes import EpisodeStatus
from tests.support.docker import docker_client_or_skip, sandbox_containers
from tests.support.mini_docker_mode import MiniDockerModeConfig, MiniSweAgentDockerModeRunner
from tests.support.sandboxes import sandbox_dirs

pytestmark = pytest.mark.timeout(300)


def _bash(call_id: str, command: str) -> dict:
    return {"content": "THOUGHT: next", "tool_calls": [{"id": call_id, "function": {
        "name": "bash", "arguments": {"command": command}}}]}


async def test_mini_in_docker_mode_fixes_the_task_through_the_gate(make_gate, state_dir, task):
    client = docker_client_or_skip()
    runner = MiniSweAgentDockerModeRunner(FailPassGrader(LocalSandboxTestExecutor()),
                                          MiniDockerModeConfig(state_dir=str(state_dir)), client=client)
    gate = await make_gate()
    rollout = await gate.open_rollout("r-mini-docker")
    seen = []

    async def model():
        first = await rollout.next_request(timeout=120)
        await first.reply(_bash("c1", "sed -i 's/a - b/a + b/' calc.py && cat /sys/class/net/*/address | wc -l; "
                                "(python3 -c \"import urllib.request; urllib.request.urlopen('https://pypi.org', "
                                "timeout=3)\" && echo NET-OPEN) || echo NET-CLOSED"), finish_reason="tool_calls")
        second = await rollout.next_request(timeout=60)
        seen.append(second.messages)
        await second.reply(_bash("c2", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"), finish_reason="tool_calls")

    scripted = asyncio.ensure_future(model())
    try:
        result = await runner.run(task, rollout.endpoint, asyncio.Event())
    finally:
        await rollout.close()
        scripted.cancel()
        await asyncio.gather(scripted, return_exceptions=True)
    assert (result.status, result.reward) == (EpisodeStatus.COMPLETED, 1.0), (result.details, result.agent_output[-3000:])
    observation = str(seen[0][-1])
    assert "NET-CLOSED" in observation and "NET-OPEN" not in observation  # commands ran with --network none
    mine = [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())]
    assert mine == [] and sandbox_dirs(state_dir) == []


async def test_missing_image_is_an_infrastructure_error(make_gate, state_dir, task):
    from dataclasses import replace

    client = docker_client_or_skip()
    runner = MiniSweAgentDockerModeRunner(FailPassGrader(LocalSandboxTestExecutor()),
                                          MiniDockerModeConfig(state_dir=str(state_dir)), client=client)
    gate = await make_gate()
    rollout = await gate.open_rollout("r-mini-noimg")
    try:
        result = await runner.run(replace(task, image="intercept-rl/absent:0"), rollout.endpoint, asyncio.Event())
    finally:
        await rollout.close()
    assert result.status == EpisodeStatus.INFRA_ERROR and not result.scorable
    assert sandbox_dirs(state_dir) == []
