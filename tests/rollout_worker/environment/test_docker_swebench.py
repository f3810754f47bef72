"""SWE-bench / SWE-Gym tasks: the exact row schema, and grading in fresh containers of the task's image with the
official verdict (the `swebench` package's, re-checked here on the very logs the containers produced) as reward."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace

import pytest

from rollout_worker.environment.grading.container_common import ContainerGradingConfig
from rollout_worker.environment.grading.host import GradingConfig
from rollout_worker.environment.grading.swebench_container import ImageAwareGrader, SweBenchContainerGrader, harness_row
from rollout_worker.environment.sandbox.docker.backend import DockerSandboxBackend
from rollout_worker.environment.sandbox.docker.config import OWNER_PID_LABEL, DockerSandboxConfig
from rollout_worker.environment.tasks import load_tasks
from rollout_worker.environment.tasks import swebench as swb
from rollout_worker.environment.tasks.schema import docker_image_for
from tests.paths import FIXTURES
from tests.support.docker import docker_client_or_skip, remove_history_images, sandbox_containers
from tests.support.sandboxes import sandbox_dirs

pytestmark = pytest.mark.timeout(600)

SWEBENCH_FIXTURES = FIXTURES / "swebench"
TEMPLATE = "intercept-rl-fixture/sweb.eval.x86_64.{swebench_id}:latest"
def test_rows_load_in_the_exact_schema_with_image_names():
    tasks = load_tasks(str(SWEBENCH_FIXTURES / "instances.jsonl"), image_template=TEMPLATE)
    assert [t.instance_id for t in tasks] == ["fixture__mathx-1", "fixture__mathx-2", "fixture__mathx-3"]
    t = tasks[0]
    assert t.image == "intercept-rl-fixture/sweb.eval.x86_64.fixture_1776_mathx-1:latest" and t.repo_dir is None
    assert t.FAIL_TO_PASS == ["tests/test_clamp.py::test_clamp_high"] and len(t.PASS_TO_PASS) == 2
    assert t.extra["version"] == "1.0" and t.extra["workdir"] == "/testbed"
    assert swb.image_name("django__django-11099") == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    assert swb.image_name("getmoto__moto-5752", "swe-gym") == "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-5752"
    assert docker_image_for("a__b-1", "a/b", "{docker_id}|{swebench_id}") == "a_s_b-1|a_1776_b-1"
    assert swb.test_directives("django/django", "diff --git a/tests/m/tests.py b/tests/m/tests.py\n") == ["m.tests"]
    assert swb.parser_for("django/django") == ("parse_log_django", "repository")
    assert swb.parser_for("sympy/sympy") == ("parse_log_sympy", "repository")
    assert swb.parser_for("fixture/mathx") == ("parse_log_pytest", "default")


def _config(test_timeout_s: float, **grading) -> ContainerGradingConfig:
    return ContainerGradingConfig(grading=GradingConfig(test_timeout_s=test_timeout_s, **grading))


# -- in containers --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_images():
    client = docker_client_or_skip()
    image, _ = client.images.build(path=str(SWEBENCH_FIXTURES), tag="intercept-rl-fixture/mathx:1", network_mode="none",
                                   rm=True, forcerm=True)
    tasks = load_tasks(str(SWEBENCH_FIXTURES / "instances.jsonl"), image_template=TEMPLATE)
    for task in tasks:
        repository, tag = task.image.rsplit(":", 1)
        image.tag(repository, tag)
    head = client.containers.run(image.id, ["git", "rev-parse", "HEAD"], network_mode="none", remove=True)
    assert head.decode().strip() == tasks[0].base_commit  # the image holds the repo at the rows' base commit
    yield client, {t.instance_id: t for t in tasks}
    for task in tasks:
        remove_history_images(client, task.image)
        client.images.remove(task.image, noprune=True)
    client.images.remove("intercept-rl-fixture/mathx:1")


def _predictions() -> list[dict]:
    return [json.loads(line) for line in (SWEBENCH_FIXTURES / "predictions.jsonl").read_text().splitlines()]


async def _agent_tree(backend: DockerSandboxBackend, task, model_patch: str):
    """Run a `git apply` agent in the task's image (as the non-root agent user) and export what it left."""
    sandbox = await backend.create(task, f"r-{task.instance_id}")
    if model_patch:
        await sandbox.write_file("/home/agent/model.patch", model_patch.encode())
        res = await sandbox.exec(["git", "apply", "/home/agent/model.patch"], timeout=60)
        assert res.exit_code == 0, res.stdout
    await sandbox.kill()
    return sandbox, await sandbox.host_repo_dir()


async def test_predictions_graded_in_fresh_containers_match_the_official_verdict(fixture_images, state_dir):
    client, tasks = fixture_images
    backend = DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir)), client=client)
    grader = SweBenchContainerGrader(_config(120), client=client)
    logs, seen = {}, {}
    for i, pred in enumerate(_predictions()):
        task = tasks[pred["instance_id"]]
        sandbox, tree = await _agent_tree(backend, task, pred["model_patch"])
        try:
            grade = await grader.grade(task, tree)
        finally:
            await sandbox.destroy()
        key = f"{i}:{pred['instance_id']}:{pred['model_name_or_path']}"
        assert grade.scorable, (key, grade.details.get("reason"), grade.details.get("eval_log"))
        assert grade.reward == float(pred["expected_resolved"]) and grade.resolved is pred["expected_resolved"], (
            key, grade.details.get("tests"), grade.details.get("eval_log"))
        assert grade.details["official_resolved"] is pred["expected_resolved"]
        logs[key] = (grade.details["eval_log"], task)
        seen[key] = grade
    # The agent's edits to test files never reach the graded tree; its source fix does.
    weakened = next(g for k, g in seen.items() if k.endswith("fix-and-weakens-tests"))
    assert "tests/test_mean.py" not in weakened.details["agent_patch"] and "mathx/core.py" in weakened.details["agent_patch"]
    broken = next(g for k, g in seen.items() if k.endswith("breaks-pass-to-pass"))
    assert broken.details["pass_to_pass"]["failure"] == ["tests/test_clamp.py::test_clamp_low"]
    assert broken.details["fail_to_pass"]["failure"] == []
    # The kept log re-grades to the same verdict offline (what `intercept-rl grade` does with a record).
    for key, (log, task) in logs.items():
        assert swb.grade_log(log, harness_row(task)).resolved is seen[key].resolved, key
        assert seen[key].details["eval_script_source"] == "generated"
        assert seen[key].details["log_parser"] == "parse_log_pytest"
    mine = [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())]
    assert mine == [] and sandbox_dirs(state_dir) == []


async def test_fraction_reward_and_routing_by_task_kind(fixture_images, state_dir):
    client, tasks = fixture_images
    backend = DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir)), client=client)
    broken = next(p for p in _predictions() if p["model_name_or_path"] == "breaks-pass-to-pass")
    task = tasks[broken["instance_id"]]
    sandbox, tree = await _agent_tree(backend, task, broken["model_patch"])
    try:
        grader = SweBenchContainerGrader(_config(120, reward_mode="fraction"), client=client)

        class Host:
            async def grade(self, task, repo):
                raise AssertionError("an image task must not reach the host grader")

        grade = await ImageAwareGrader(Host(), grader).grade(task, tree)
        assert grade.scorable and grade.reward == pytest.approx(2 / 3) and not grade.resolved
    finally:
        await sandbox.destroy()


async def test_infrastructure_failures_are_unscorable_never_zero(fixture_images, state_dir, tmp_path):
    client, tasks = fixture_images
    grader = SweBenchContainerGrader(_config(120), client=client)
    task = tasks["fixture__mathx-1"]
    (tmp_path / "tree").mkdir()
    cases = {
        "no image": replace(task, image="intercept-rl-fixture/absent:0"),
        "test patch does not apply": replace(task, test_patch=task.test_patch.replace("test_clamp_low", "nope_x")),
        "unknown parser": replace(task, extra={**task.extra, "log_parser": "parse_log_nonesuch"}),
        "timeout": replace(task, test_command=["sh", "-c", "sleep 30", "x"]),
    }
    timeout_grader = SweBenchContainerGrader(_config(2), client=client)
    for name, bad in cases.items():
        g = timeout_grader if name == "timeout" else grader
        grade = await g.grade(bad, tmp_path / "tree")
        assert not grade.scorable and grade.reward is None, (name, grade.details)
    assert [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())] == []


async def test_agent_rollout_in_a_swebench_image_through_the_episode_runner(fixture_images, state_dir, make_gate):
    from rollout_worker.environment.agents import get_agent
    from rollout_worker.environment.episode import SandboxEpisodeRunner
    from rollout_worker.outcomes import EpisodeStatus

    client, tasks = fixture_images
    backend = DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir)), client=client)
    grader = SweBenchContainerGrader(_config(120), client=client)
    gate = await make_gate()
    results = {}
    for agent in ("oracle", "noop"):
        rollout = await gate.open_rollout(f"r-swe-{agent}")
        try:
            runner = SandboxEpisodeRunner(backend, get_agent(agent), grader)
            results[agent] = await runner.run(tasks["fixture__mathx-2"], rollout.endpoint, asyncio.Event())
        finally:
            await rollout.close()
    assert (results["oracle"].status, results["oracle"].reward) == (EpisodeStatus.COMPLETED, 1.0), results["oracle"]
    assert (results["noop"].status, results["noop"].reward) == (EpisodeStatus.COMPLETED, 0.0), results["noop"]


def _row_eval_script(task) -> str:
    """An eval.sh in the shape SWE-bench's current datasets ship (their `eval_script` column): set -x trace, the test
    files reset, the test patch from a heredoc, the markers as `:` commands, pytest -rA, the reset after."""
    files = " ".join(swb.test_directives(task.repo, task.test_patch))
    return "\n".join([
        "#!/bin/bash", "set -uxo pipefail", "cd /testbed", "git config --global --add safe.directory /testbed",
        f"git checkout {task.base_commit} {files}", "git apply -v - <<'EOF_114329324912'",
        task.test_patch.rstrip("\n"), "EOF_114329324912", ": '>>>>> Start Test Output'",
        f"python -m pytest -rA -p no:cacheprovider {files}", ": '>>>>> End Test Output'",
        f"git checkout {task.base_commit} {files}", ""])


async def test_a_rows_own_eval_script_runs_as_the_harness_runs_it(fixture_images, state_dir):
    """The schema of SWE-bench's current datasets: the row's eval_script is what runs, and the record says so."""
    client, tasks = fixture_images
    backend = DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir)), client=client)
    grader = SweBenchContainerGrader(_config(120), client=client)
    task = tasks["fixture__mathx-1"]
    task = replace(task, extra={**task.extra, "eval_script": _row_eval_script(task)})
    gold = next(p for p in _predictions() if p["instance_id"] == task.instance_id and p["expected_resolved"])
    for patch, resolved in ((gold["model_patch"], True), ("", False)):
        sandbox, tree = await _agent_tree(backend, task, patch)
        try:
            grade = await grader.grade(task, tree)
        finally:
            await sandbox.destroy()
        assert grade.scorable and grade.resolved is resolved, (grade.details.get("reason"), grade.details["eval_log"])
        assert grade.details["eval_script_source"] == "row" and "+ : '>>>>> Start Test Output'" in grade.details[
            "eval_log"]
        assert grade.details["test_exit_code"] == (0 if resolved else 1)
    assert [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())] == []
