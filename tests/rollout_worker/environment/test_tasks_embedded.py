"""The embedded offline task set: shape of every task, its single-commit repo, and (slow) full verification by grading."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rollout_worker.environment.grading.host import FailPassGrader, SubprocessTestExecutor
from rollout_worker.environment.tasks import embedded_task_names, load_tasks, materialize_embedded_repo
from rollout_worker.environment.tasks.embedded_tasks import EMBEDDED_DIR
from rollout_worker.environment.tasks.trees import TreeFilter, git_apply
from rollout_worker.types import Task


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedded-cache")


@pytest.fixture(scope="module")
def tasks(cache_dir) -> list[Task]:
    return load_tasks("embedded", embedded_cache_dir=str(cache_dir))


def git(repo: str | Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True, env=env,
                          timeout=60).stdout


def patched_paths(patch: str) -> list[str]:
    return [line.split()[-1][2:] for line in patch.splitlines() if line.startswith("diff --git ")]


def test_at_least_twelve_distinct_tasks(tasks):
    assert len(tasks) >= 12 and len(tasks) == len(embedded_task_names())
    for field in ("instance_id", "repo", "problem_statement", "patch", "test_patch", "base_commit"):
        values = [getattr(t, field) for t in tasks]
        assert len(set(values)) == len(values), f"{field} repeats"
    packages = {t.instance_id: sorted(p.name for p in Path(t.repo_dir).iterdir() if (p / "__init__.py").exists())
                for t in tasks}
    assert len({tuple(p) for p in packages.values()}) == len(tasks), packages


def test_each_task_is_well_formed(tasks):
    tree_filter = TreeFilter()
    for task in tasks:
        assert len(task.problem_statement) > 200, task.instance_id
        assert task.FAIL_TO_PASS and task.PASS_TO_PASS, task.instance_id
        assert not set(task.FAIL_TO_PASS) & set(task.PASS_TO_PASS)
        gold_paths, test_paths = patched_paths(task.patch), patched_paths(task.test_patch)
        assert gold_paths and all(tree_filter.keeps_source(p) for p in gold_paths), (task.instance_id, gold_paths)
        assert test_paths and all(tree_filter.is_test(p) for p in test_paths), (task.instance_id, test_paths)
        # the tests that check the fix are not in the base repository
        base_text = "\n".join(p.read_text() for p in Path(task.repo_dir).rglob("*.py"))
        for test_id in task.FAIL_TO_PASS:
            name = re.sub(r"\[.*$", "", test_id.split("::")[-1])
            assert f"def {name}(" not in base_text, (task.instance_id, name)
        meta = json.loads((EMBEDDED_DIR / task.instance_id.split("__")[1].rsplit("-", 1)[0] / "task.json").read_text())
        assert meta["instance_id"] == task.instance_id


def test_repos_have_exactly_one_commit_and_nothing_to_mine(tasks):
    for task in tasks:
        repo = task.repo_dir
        assert git(repo, "rev-parse", "HEAD").strip() == task.base_commit
        assert git(repo, "rev-list", "--all", "--count").strip() == "1"
        assert git(repo, "remote").strip() == ""
        assert git(repo, "status", "--porcelain").strip() == ""
        assert git(repo, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]
        assert git(repo, "stash", "list").strip() == ""
        assert git(repo, "log", "-1", "--format=%an <%ae> %aI | %cn %cI").strip() == (
            "intercept-rl <tasks@intercept-rl.invalid> 2024-01-01T00:00:00+00:00 | intercept-rl "
            "2024-01-01T00:00:00+00:00")
        git_dir = Path(repo) / ".git"
        assert not (git_dir / "logs").exists() and not (git_dir / "hooks").exists()
        assert not (git_dir / "COMMIT_EDITMSG").exists()


def test_base_commit_is_deterministic_and_cached(tasks, cache_dir, tmp_path):
    name = embedded_task_names()[0]
    first_dir, first_commit = materialize_embedded_repo(name, cache_dir)
    again_dir, again_commit = materialize_embedded_repo(name, cache_dir)
    other_dir, other_commit = materialize_embedded_repo(name, tmp_path / "other-cache")
    assert first_dir == again_dir and first_commit == again_commit
    assert other_dir != first_dir and other_commit == first_commit
    assert first_commit in {t.base_commit for t in tasks}
    # a leftover from a crashed build does not confuse the next materialization
    assert not [p for p in Path(cache_dir).iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="unknown embedded task"):
        materialize_embedded_repo("no-such-task", cache_dir)
    with pytest.raises(ValueError, match="unknown embedded task"):
        load_tasks("embedded:no-such-task", embedded_cache_dir=str(cache_dir))


def test_select_embedded_tasks_by_name(cache_dir):
    names = embedded_task_names()[:2]
    selected = load_tasks("embedded:" + ",".join(names), embedded_cache_dir=str(cache_dir))
    assert [t.repo for t in selected] == [f"intercept-rl-embedded/{n}" for n in names]


@pytest.mark.slow
async def test_every_task_verifies_base_fails_gold_passes(tasks, tmp_path):
    """base + test_patch: FAIL_TO_PASS fail, PASS_TO_PASS pass (noop → 0.0); base + gold + test_patch: all pass (1.0)."""
    grader = FailPassGrader(SubprocessTestExecutor())
    limit = asyncio.Semaphore(2)  # two cores

    async def grade(task: Task, apply_gold: bool):
        repo = tmp_path / f"{task.instance_id}-{'gold' if apply_gold else 'noop'}"
        shutil.copytree(task.repo_dir, repo, symlinks=True)
        if apply_gold:
            git_apply(repo, task.patch)
        async with limit:
            return task, apply_gold, await grader.grade(task, repo)

    results = await asyncio.gather(*(grade(t, gold) for t in tasks for gold in (False, True)))
    for task, gold, result in results:
        assert result.scorable, (task.instance_id, result.details.get("reason"))
        outcomes = result.details["tests"]
        if gold:
            assert (result.reward, result.resolved) == (1.0, True), (task.instance_id, outcomes)
        else:
            assert result.reward == 0.0, task.instance_id
            assert all(outcomes[t] == "failed" for t in task.FAIL_TO_PASS), (task.instance_id, outcomes)
            assert all(outcomes[t] == "passed" for t in task.PASS_TO_PASS), (task.instance_id, outcomes)
