"""Task synthesis end to end on a small real package (issue #24): its sdist from the package index, its suite run
twice in its image, a handful of mutants screened, task images built; then, independently of the build, a sample
validated through the container grader (gold patch 1.0, no change 0.0) and every image searched for a copy of the
unmutated source (with a positive control: the same search finds the mutated file it is pointed at). No container
of this process is left."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from rollout_worker.environment.sandbox.docker.config import OWNER_PID_LABEL
from rollout_worker.environment.tasks import load_tasks
from rollout_worker.environment.tasks.synth import images
from rollout_worker.environment.tasks.synth.manifest import PackageSpec, SynthSettings
from rollout_worker.environment.tasks.synth.pipeline import synth_package
from rollout_worker.environment.tasks.synth.validate import grader, validate_row
from tests.support.docker import docker_client_or_skip, remove_history_images, sandbox_containers

pytestmark = pytest.mark.timeout(1800)

SPEC = PackageSpec(name="inflection", version="0.5.1", source=("inflection/*.py",), tests=("test_inflection.py",))
SETTINGS = SynthSettings(seed=5, max_mutants_tried=8, singles_per_package=2, combined_per_package=1)


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    client = docker_client_or_skip()
    work = tmp_path_factory.mktemp("synth")
    report = asyncio.run(synth_package(client, SPEC, SETTINGS, work))
    yield client, report, work
    for row in report.rows:
        remove_history_images(client, row["image"])
        client.images.remove(row["image"], noprune=False)


def _mine(client) -> list:
    return [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())]


def test_a_small_package_gives_validated_rows(synthesized, tmp_path):
    client, report, _ = synthesized
    assert report.tests_kept > 50 and report.rows, report.as_json()
    screened_out = sum(n for reason, n in report.dropped.items() if not reason.startswith(("validation", "unmutated")))
    assert report.tried == report.kept + screened_out  # every mutant tried is kept or dropped with a reason
    assert not any(reason.startswith("unmutated") for reason in report.dropped)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in report.rows))
    tasks = load_tasks(str(path), image_template=None)  # SWE-bench's schema, as the loader reads it
    for task, row in zip(tasks, report.rows):
        assert task.image == row["image"] and task.test_patch == "" and task.FAIL_TO_PASS
        assert set(task.FAIL_TO_PASS).isdisjoint(task.PASS_TO_PASS)
        assert len(task.FAIL_TO_PASS) + len(task.PASS_TO_PASS) == report.tests_kept
        assert row["synth"]["mutations"] in (1, 2, 3) and row["synth"]["lines_changed"] >= 1
    # Independently of the build: the sample graded again in fresh containers by the container grader.
    container_grader = grader(client)
    for row in report.rows[:2]:
        verdict = asyncio.run(validate_row(row, client, container_grader))
        assert verdict.ok and verdict.gold_reward == 1.0 and verdict.nochange_reward == 0.0, verdict
    assert _mine(client) == []


def test_no_copy_of_the_unmutated_source_in_the_images(synthesized):
    client, report, work = synthesized
    tree = next((work / SPEC.slug / "src").iterdir())
    for row in report.rows:
        touched = sorted({line[6:] for line in row["patch"].splitlines() if line.startswith("+++ b/")})
        originals = {p: (tree / p).read_bytes() for p in touched}
        assert images.leak_check(client, row["image"], originals, ["inflection"]) == [], row["instance_id"]
        # Positive control: pointed at what the image does hold (the mutated file), the same search finds it, in
        # /testbed and as a git object.
        mutated = {p: client.containers.run(row["image"], ["cat", f"/testbed/{p}"], network_mode="none",
                                            remove=True) for p in touched}
        found = images.leak_check(client, row["image"], mutated, ["inflection"])
        assert any(f.startswith("copy of") and "/testbed/" in f for f in found), found
        assert any(f.startswith("git object") for f in found), found
        count = client.containers.run(row["image"], ["git", "-c", "safe.directory=*", "rev-list", "--all",
                                                     "--count"], network_mode="none", remove=True)
        assert count.decode().strip() == "1"
    assert _mine(client) == []


def test_images_are_rebuilt_from_the_rows_alone(synthesized, tmp_path):
    """What a fresh machine does with committed rows: the missing image rebuilt from the sdist and the row's patch,
    at the row's tag and base commit."""
    from rollout_worker.environment.tasks.synth.manifest import Manifest
    from rollout_worker.environment.tasks.synth.rebuild import build_missing_images

    client, report, _ = synthesized
    row = report.rows[0]
    remove_history_images(client, row["image"])
    client.images.remove(row["image"], noprune=False)
    counts = build_missing_images(client, Manifest(SETTINGS, (SPEC,)), report.rows, tmp_path)
    assert counts == {"present": len(report.rows) - 1, "built": 1, "failed": 0}
    assert images.image_exists(client, row["image"])
    head = client.containers.run(row["image"], ["git", "-c", "safe.directory=*", "rev-parse", "HEAD"],
                                 network_mode="none", remove=True)
    assert head.decode().strip() == row["base_commit"]
    assert _mine(client) == []
