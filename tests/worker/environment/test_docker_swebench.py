"""SWE-bench / SWE-Gym tasks: the exact row schema, the harness's log semantics (checked against verdicts produced by
swebench 5.0.2 itself), and grading in fresh containers of the task's image with the official verdict as reward."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import replace

import pytest

from rollout_worker.environment.sandbox.docker_backend import DockerSandboxBackend
from rollout_worker.environment.sandbox.docker_config import OWNER_PID_LABEL, DockerSandboxConfig
from rollout_worker.environment.sandbox.docker_grading import ImageAwareGrader, SweBenchContainerGrader
from rollout_worker.environment.sandbox.docker_grading_common import ContainerGradingConfig
from rollout_worker.environment.tasks import load_tasks
from rollout_worker.environment.tasks import swebench as swb
from rollout_worker.environment.tasks.schema import docker_image_for
from tests.paths import FIXTURES
from tests.support.docker import docker_client_or_skip, sandbox_containers
from tests.support.sandboxes import sandbox_dirs

pytestmark = pytest.mark.timeout(600)

SWEBENCH_FIXTURES = FIXTURES / "swebench"
TEMPLATE = "intercept-rl-fixture/sweb.eval.x86_64.{swebench_id}:latest"
S, E, X = swb.START_TEST_OUTPUT, swb.END_TEST_OUTPUT, swb.TEST_EXIT_CODE


def _log(body: str, code: int | None = 1, head: str = "+ git apply -v -\n>>>>> Applied Patch\n") -> str:
    tail = f"{X}: {code}\n" if code is not None else ""
    return f"{head}{S}\n{body}\n{E}\n{tail}+ git checkout abc tests/test_x.py\n"


# Logs in the harness's format, each with the verdict swebench 5.0.2's get_logs_eval + get_eval_tests_report +
# get_resolution_status gave on it (run 2026-11-30 in a throwaway venv: pip install swebench==5.0.2; re-checked live
# below when INTERCEPT_RL_SWEBENCH_PYTHON names a Python that has it).
F2P, P2P = ["tests/test_x.py::test_new"], ["tests/test_x.py::test_old", "tests/test_y.py::test_keep[a-b]"]
LOG_CASES = {
    "all_pass": (_log("PASSED tests/test_x.py::test_new\nPASSED tests/test_x.py::test_old\n"
                      "PASSED tests/test_y.py::test_keep[a-b]", 0), "pytest", True),
    "p2p_broken": (_log("PASSED tests/test_x.py::test_new\nFAILED tests/test_x.py::test_old - assert 1 == 2\n"
                        "PASSED tests/test_y.py::test_keep[a-b]"), "pytest", False),
    "f2p_fails": (_log("FAILED tests/test_x.py::test_new - AssertionError\nPASSED tests/test_x.py::test_old\n"
                       "PASSED tests/test_y.py::test_keep[a-b]"), "pytest", False),
    "f2p_xfail_p2p_skipped": (_log("XFAIL tests/test_x.py::test_new - known\nSKIPPED tests/test_x.py::test_old\n"
                                   "PASSED tests/test_y.py::test_keep[a-b]", 0), "pytest", True),
    "f2p_skipped": (_log("SKIPPED tests/test_x.py::test_new\nPASSED tests/test_x.py::test_old\n"
                         "PASSED tests/test_y.py::test_keep[a-b]", 0), "pytest", False),
    "f2p_missing": (_log("PASSED tests/test_x.py::test_old\nPASSED tests/test_y.py::test_keep[a-b]", 0), "pytest",
                    False),
    "p2p_error": (_log("PASSED tests/test_x.py::test_new\nPASSED tests/test_x.py::test_old\n"
                       "ERROR tests/test_y.py::test_keep[a-b] - fixture"), "pytest", False),
    "skip_summary_is_not_a_test": (_log("PASSED tests/test_x.py::test_new\nPASSED tests/test_x.py::test_old\n"
                                        "PASSED tests/test_y.py::test_keep[a-b]\n"
                                        "SKIPPED [1] tests/test_z.py:3: no network", 0), "pytest", True),
    "forged_passes_nonzero_exit": (_log("PASSED tests/test_x.py::test_new\nPASSED tests/test_x.py::test_old\n"
                                        "PASSED tests/test_y.py::test_keep[a-b]", 2), "pytest", False),
    "patch_apply_failed": (">>>>> Patch Apply Failed\nerror: patch failed: a.py:1\n", "pytest", False),
    "markers_missing": ("PASSED tests/test_x.py::test_new\n", "pytest", False),
    "passes_only_outside_markers": (f"PASSED tests/test_x.py::test_new\nPASSED tests/test_x.py::test_old\n"
                                    f"PASSED tests/test_y.py::test_keep[a-b]\n{S}\nnothing\n{E}\n", "pytest", True),
    "truncated_param_id": (_log("PASSED tests/test_x.py::test_new\nPASSED tests/test_x.py::test_old\n"
                                "PASSED tests/test_y.py::test_keep[a-b-c]", 0), "pytest_truncated", True),
    "django": (_log("test_new (tests.test_x.T) ... ok\ntest_old (tests.test_x.T) ... ok\n"
                    "test_keep (tests.test_y.T) ... FAIL\nFAIL: test_keep (tests.test_y.T)", 1), "django", False),
    "django_pass": (_log("test_new (tests.test_x.T) ... ok\ntest_old (tests.test_x.T) ... ok\n"
                         "test_keep (tests.test_y.T) ... skipped 'slow'", 0), "django", True),
}
DJANGO_TESTS = (["test_new (tests.test_x.T)"], ["test_old (tests.test_x.T)", "test_keep (tests.test_y.T)"])


def _tests_for(parser: str) -> tuple[list[str], list[str], str]:
    if parser == "django":
        return (*DJANGO_TESTS, "django")
    if parser == "pytest_truncated":
        return F2P, ["tests/test_x.py::test_old", "tests/test_y.py::test_keep[a-b"], "pytest"
    return F2P, P2P, "pytest"


@pytest.mark.parametrize("case", sorted(LOG_CASES))
def test_log_verdicts_equal_swebench_5_0_2(case):
    log, parser, official = LOG_CASES[case]
    f2p, p2p, name = _tests_for(parser)
    resolved, verdict, _ = swb.resolved_from_log(log, f2p, p2p, name)
    assert resolved is official, (case, verdict)


_SWEBENCH_CHECK = """
import json, sys, tempfile
from swebench.harness.grading import get_logs_eval, get_eval_tests_report, get_resolution_status
from swebench.types import TestSpec
out = {}
for key, (log, parser, f2p, p2p) in json.load(sys.stdin).items():
    spec = TestSpec(instance_id="x", image="", eval_script_list=[], repo="r", version="1", FAIL_TO_PASS=f2p,
                    PASS_TO_PASS=p2p, log_parser="parse_log_" + parser, eval_type="pass_and_fail")
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as fh:
        fh.write(log)
    sm, found = get_logs_eval(spec, fh.name)
    rep = get_eval_tests_report(sm, {"FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p}) if found else None
    out[key] = bool(found and get_resolution_status(rep) == "RESOLVED_FULL")
print(json.dumps(out))
"""


def official_verdicts(cases: dict[str, tuple[str, str, list[str], list[str]]]) -> dict[str, bool] | None:
    """swebench's own verdicts, from the Python named by INTERCEPT_RL_SWEBENCH_PYTHON (None when unset)."""
    python = os.environ.get("INTERCEPT_RL_SWEBENCH_PYTHON")
    if not python:
        return None
    proc = subprocess.run([python, "-c", _SWEBENCH_CHECK], input=json.dumps(cases), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_log_verdicts_against_the_installed_swebench_package():
    cases = {}
    for key, (log, parser, _) in LOG_CASES.items():
        f2p, p2p, name = _tests_for(parser)
        cases[key] = (log, name, f2p, p2p)
    live = official_verdicts(cases)
    if live is None:
        pytest.skip("INTERCEPT_RL_SWEBENCH_PYTHON is unset: the recorded swebench 5.0.2 verdicts are checked instead")
    assert live == {k: v[2] for k, v in LOG_CASES.items()}


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
    assert swb.parser_for("django/django") == "django" and swb.parser_for("x/y") == "pytest"
    with pytest.raises(ValueError, match="dedicated"):
        swb.parser_for("sympy/sympy")


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
    grader = SweBenchContainerGrader(ContainerGradingConfig(timeout_s=120), client=client)
    logs, seen = {}, {}
    for i, pred in enumerate(_predictions()):
        task = tasks[pred["instance_id"]]
        sandbox, tree = await _agent_tree(backend, task, pred["model_patch"])
        try:
            grade = await grader.grade(task, tree)
        finally:
            await sandbox.destroy()
        key = f"{i}:{pred['instance_id']}:{pred['model_name_or_path']}"
        assert grade.scorable, (key, grade.details.get("reason"), grade.details.get("eval_log_tail"))
        assert grade.reward == float(pred["expected_resolved"]) and grade.resolved is pred["expected_resolved"], (
            key, grade.details.get("tests"), grade.details.get("eval_log_tail"))
        assert grade.details["official_resolved"] is pred["expected_resolved"]
        logs[key] = (grade.details["eval_log_tail"], "pytest", task.FAIL_TO_PASS, task.PASS_TO_PASS)
        seen[key] = grade
    # The agent's edits to test files never reach the graded tree; its source fix does.
    weakened = next(g for k, g in seen.items() if k.endswith("fix-and-weakens-tests"))
    assert "tests/test_mean.py" not in weakened.details["agent_patch"] and "mathx/core.py" in weakened.details["agent_patch"]
    broken = next(g for k, g in seen.items() if k.endswith("breaks-pass-to-pass"))
    assert broken.details["pass_to_pass"]["failure"] == ["tests/test_clamp.py::test_clamp_low"]
    assert broken.details["fail_to_pass"]["failure"] == []
    live = official_verdicts(logs)  # the same logs through swebench itself, where it is installed
    if live is not None:
        assert live == {k: g.resolved for k, g in seen.items()}
    mine = [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())]
    assert mine == [] and sandbox_dirs(state_dir) == []


async def test_fraction_reward_and_routing_by_task_kind(fixture_images, state_dir):
    client, tasks = fixture_images
    backend = DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir)), client=client)
    broken = next(p for p in _predictions() if p["model_name_or_path"] == "breaks-pass-to-pass")
    task = tasks[broken["instance_id"]]
    sandbox, tree = await _agent_tree(backend, task, broken["model_patch"])
    try:
        grader = SweBenchContainerGrader(ContainerGradingConfig(reward_mode="fraction", timeout_s=120), client=client)

        class Host:
            async def grade(self, task, repo):
                raise AssertionError("an image task must not reach the host grader")

        grade = await ImageAwareGrader(Host(), grader).grade(task, tree)
        assert grade.scorable and grade.reward == pytest.approx(2 / 3) and not grade.resolved
    finally:
        await sandbox.destroy()


async def test_infrastructure_failures_are_unscorable_never_zero(fixture_images, state_dir, tmp_path):
    client, tasks = fixture_images
    grader = SweBenchContainerGrader(ContainerGradingConfig(timeout_s=120), client=client)
    task = tasks["fixture__mathx-1"]
    (tmp_path / "tree").mkdir()
    cases = {
        "no image": replace(task, image="intercept-rl-fixture/absent:0"),
        "test patch does not apply": replace(task, test_patch=task.test_patch.replace("test_clamp_low", "nope_x")),
        "dedicated parser": replace(task, repo="sympy/sympy"),
        "timeout": replace(task, test_command=["sh", "-c", "sleep 30", "x"]),
    }
    timeout_grader = SweBenchContainerGrader(ContainerGradingConfig(timeout_s=2), client=client)
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
    grader = SweBenchContainerGrader(ContainerGradingConfig(timeout_s=120), client=client)
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
