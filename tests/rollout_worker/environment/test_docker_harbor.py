"""Harbor task dirs: loaded without the harbor package, the environment built locally, agents (the reference solution,
a no-op, and real mini-swe-agent through the gate) run in the task's container, the verifier run in a fresh one."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

import pytest

from rollout_worker.environment.agents import CommandAgent, get_agent
from rollout_worker.environment.episode import SandboxEpisodeRunner
from rollout_worker.environment.grading.harbor_container import HarborContainerGrader
from rollout_worker.environment.grading.swebench_container import ImageAwareGrader
from rollout_worker.environment.sandbox.docker.backend import DockerSandboxBackend
from rollout_worker.environment.sandbox.docker.config import OWNER_PID_LABEL, DockerSandboxConfig
from rollout_worker.environment.tasks import load_tasks
from rollout_worker.environment.tasks.harbor import (
    HarborTaskError,
    build_harbor_image,
    harbor_task,
    load_harbor_tasks,
    read_reward,
)
from rollout_worker.outcomes import EpisodeStatus
from tests.paths import FIXTURES
from tests.support.docker import docker_client_or_skip, remove_history_images, sandbox_containers
from tests.support.sandboxes import sandbox_dirs

pytestmark = pytest.mark.timeout(600)
TASKS = FIXTURES / "harbor"


def test_task_dir_is_read_without_the_harbor_package(tmp_path):
    (task,) = load_harbor_tasks(TASKS)
    assert load_tasks(str(TASKS)) == [task] and load_tasks(str(TASKS / "fix-greeting")) == [task]
    assert task.instance_id == "harbor__intercept-rl-fix-greeting"
    assert task.image.startswith("intercept-rl-harbor/intercept-rl-fix-greeting:")
    assert task.extra["workdir"] == "/app" and task.extra["verifier_timeout_s"] == 120.0
    assert task.extra["agent_timeout_s"] == 300.0 and task.extra["environment"]["allow_internet"] is False
    assert "greet" in task.problem_statement and "Hello, {name}!" in task.extra["solution"]
    assert "tests" not in task.problem_statement  # the verifier is never shown to the agent
    with pytest.raises(HarborTaskError, match="not a Harbor task"):
        harbor_task(tmp_path)
    assert read_reward({"reward.txt": b"0.5\n"}) == 0.5 and read_reward({"reward.json": b'{"reward": 1}'}) == 1.0
    assert read_reward({"reward.json": b'{"accuracy": 0.25}'}) == 0.25
    with pytest.raises(ValueError, match="no reward"):
        read_reward({})


@pytest.fixture(scope="module")
def harbor_image():
    client = docker_client_or_skip()
    (task,) = load_harbor_tasks(TASKS)
    build_harbor_image(client, task)
    yield client, task
    remove_history_images(client, task.image)
    client.images.remove(task.image)


async def _episode(gate, runner, task, rollout_id, script=None):
    rollout = await gate.open_rollout(rollout_id)
    scripted = asyncio.ensure_future(script(rollout)) if script else None
    try:
        return await runner.run(task, rollout.endpoint, asyncio.Event())
    finally:
        await rollout.close()
        if scripted is not None:
            scripted.cancel()
            await asyncio.gather(scripted, return_exceptions=True)


def _bash(call_id: str, command: str) -> dict:
    return {"content": "THOUGHT: next", "tool_calls": [{"id": call_id, "function": {
        "name": "bash", "arguments": {"command": command}}}]}


async def test_harbor_task_end_to_end_with_a_real_agent(harbor_image, state_dir, make_gate):
    client, task = harbor_image
    remove_history_images(client, task.image)
    client.images.remove(task.image)  # the backend builds a Harbor task's environment itself when it is missing
    backend = DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir)), client=client)
    grader = ImageAwareGrader(host_grader=None, container_grader=None,
                              harbor_grader=HarborContainerGrader(client=client))
    gate = await make_gate()
    requests = []

    async def model(rollout):  # a scripted policy: the agent, its sandbox, the gate and the grading are all real
        first = await rollout.next_request(timeout=120)
        requests.append(first)
        fix = "printf 'def greet(name):\\n    return f\"Hello, {name}!\"\\n' > greet.py && python3 -c 'import greet'"
        await first.reply(_bash("c1", fix), finish_reason="tool_calls")
        second = await rollout.next_request(timeout=60)
        requests.append(second)
        await second.reply(_bash("c2", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"), finish_reason="tool_calls")

    results = {
        "mini": await _episode(gate, SandboxEpisodeRunner(backend, get_agent("mini-swe-agent"), grader), task,
                               "r-harbor-mini", model),
        "solution": await _episode(gate, SandboxEpisodeRunner(backend, CommandAgent(task.extra["solution"]), grader),
                                   task, "r-harbor-solution"),
        "noop": await _episode(gate, SandboxEpisodeRunner(backend, get_agent("noop"), grader), task, "r-harbor-noop"),
    }
    mini = results["mini"]
    assert (mini.status, mini.reward, mini.resolved) == (EpisodeStatus.COMPLETED, 1.0, True), (
        mini.details, mini.agent_output[-2000:])
    assert len(requests) == 2 and "greet" in str(requests[0].messages)  # mini read the instruction, in /app
    assert (results["solution"].status, results["solution"].reward) == (EpisodeStatus.COMPLETED, 1.0)
    assert (results["noop"].status, results["noop"].reward) == (EpisodeStatus.COMPLETED, 0.0)
    assert results["noop"].details["grader"] == "harbor-container"
    mine = [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())]
    assert mine == [] and sandbox_dirs(state_dir) == []


async def test_verifier_failures_are_unscorable(harbor_image, tmp_path):
    client, task = harbor_image
    grader = HarborContainerGrader(client=client)
    broken = tmp_path / "broken"
    (broken / "tests").mkdir(parents=True)
    (broken / "tests" / "test.sh").write_text("#!/bin/bash\nexit 3\n")  # writes no reward
    (tmp_path / "tree").mkdir()
    no_reward = await grader.grade(replace(task, extra={**task.extra, "harbor_dir": str(broken)}), tmp_path / "tree")
    assert not no_reward.scorable and no_reward.reward is None and "no reward" in no_reward.details["reason"]
    (broken / "tests" / "test.sh").write_text("#!/bin/bash\nsleep 60\n")
    slow = await grader.grade(replace(task, extra={**task.extra, "harbor_dir": str(broken), "verifier_timeout_s": 2}),
                              tmp_path / "tree")
    assert not slow.scorable and "timed out" in slow.details["reason"]
    missing = await grader.grade(replace(task, image="intercept-rl-harbor/absent:0"), tmp_path / "tree")
    assert not missing.scorable
