"""Nothing of the future in an image task's repository: an image built the way SWE-bench builds its images (the
whole history cloned, then reset to the base commit) holds the fix in every git route; the agent's container of it
holds none of them."""

from __future__ import annotations

import io
import os
import tarfile
import time

import pytest

from rollout_worker.environment.sandbox.docker.backend import DockerSandboxBackend
from rollout_worker.environment.sandbox.docker.config import OWNER_PID_LABEL, DockerSandboxConfig
from rollout_worker.environment.sandbox.docker.history import history_free_image
from rollout_worker.types import Task
from tests.support.docker import docker_client_or_skip, remove_history_images, sandbox_containers
from tests.support.sandboxes import sandbox_dirs

pytestmark = pytest.mark.timeout(600)

MARKER = "FUTURE-FIX-7f3a9c"
IMAGE = "intercept-rl-fixture/future-history:1"

# A repository at its base commit whose .git still holds the future: a later commit on another branch, a tag, a
# remote-tracking ref (packed), a stash, ORIG_HEAD, reflog entries, and a dangling commit; main reset to the base.
_BUILD = rf"""set -e
export GIT_AUTHOR_NAME=f GIT_AUTHOR_EMAIL=f@x.invalid GIT_COMMITTER_NAME=f GIT_COMMITTER_EMAIL=f@x.invalid
mkdir -p /upstream /testbed && cd /upstream && git init -q -b main
printf 'def add(a, b):\n    return a - b\n' > calc.py && git add -A && git commit -qm base
printf 'def add(a, b):\n    return a + b  # {MARKER}\n' > calc.py && git commit -qam 'fix {MARKER}'
git tag v-fixed && git branch fixed
cd / && git clone -q /upstream /testbed && cd /testbed
git branch fixed-local origin/fixed
git pack-refs --all
git reset -q --hard HEAD~1
echo "stash {MARKER}" >> calc.py && git stash -q
echo "dangling {MARKER}" > d.txt && git add d.txt && git commit -qm "dangling {MARKER}" && git reset -q --hard HEAD~1
git rev-parse HEAD > /base_commit
"""

# Every git route the field has seen agents use to read the future (and then some).
_PROBE = rf"""cd /testbed
export GIT_PAGER=cat
{{
git log --all --format='%H %s'; git reflog --all; git stash list; git stash show -p 2>/dev/null; git remote -v
git branch -a; git tag; git show-ref; cat .git/packed-refs .git/ORIG_HEAD .git/FETCH_HEAD 2>/dev/null
git fsck --lost-found --no-progress 2>&1; cat .git/lost-found/*/* 2>/dev/null
git cat-file --batch-all-objects --batch-check 2>/dev/null | cut -d' ' -f1 | git cat-file --batch 2>/dev/null
for c in $(git rev-list --all --reflog 2>/dev/null); do git show "$c"; done
git log -p -g 2>/dev/null; git grep -I {MARKER} $(git rev-list --all 2>/dev/null) 2>/dev/null
}} 2>&1 | grep -c {MARKER}
exit 0
"""


@pytest.fixture(scope="module")
def future_image():
    client = docker_client_or_skip()
    dockerfile = (f"FROM intercept-rl/base:1\nUSER root\nARG BUILD\nRUN sh -c \"$BUILD\"\nWORKDIR /testbed\n").encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=IMAGE, buildargs={"BUILD": _BUILD}, network_mode="none",
                        rm=True, forcerm=True)
    base = _read(client, IMAGE, "/base_commit").strip()
    yield client, base
    remove_history_images(client, IMAGE)
    client.images.remove(IMAGE, force=True)


def _read(client, image: str, path: str) -> str:
    container = client.containers.create(image, ["true"], network_mode="none")
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            return tar.extractfile(tar.getmembers()[0]).read().decode()
    finally:
        container.remove(force=True)


def _probe(client, image: str) -> int:
    out = client.containers.run(image, ["bash", "-c", _PROBE], network_mode="none", remove=True, user="0:0")
    return int(out.decode().strip().splitlines()[-1])


def test_the_fixture_image_does_hold_the_future(future_image):
    """The probe finds the fix in the image as built: the test below can fail."""
    client, _ = future_image
    assert _probe(client, IMAGE) >= 8


async def test_the_agent_finds_nothing_of_the_future_through_any_git_route(future_image, state_dir):
    client, base = future_image
    started = time.monotonic()
    derived = history_free_image(client, IMAGE, "/testbed", base, 300)
    first_s = time.monotonic() - started
    started = time.monotonic()
    assert history_free_image(client, IMAGE, "/testbed", base, 300) == derived  # cached: prepared once per image
    assert time.monotonic() - started < first_s
    assert _probe(client, derived) == 0

    backend = DockerSandboxBackend(DockerSandboxConfig(state_dir=str(state_dir)), client=client)
    task = Task(instance_id="future__fixture-1", repo="future/fixture", base_commit=base, problem_statement="add",
                FAIL_TO_PASS=["t.py::t"], image=IMAGE, extra={"workdir": "/testbed"})
    async with await backend.create(task, "r-future") as sandbox:
        found = await sandbox.exec(["bash", "-c", _PROBE], timeout=120)
        log = await sandbox.exec(["git", "log", "--all", "--format=%H"], timeout=30)
        status = await sandbox.exec(["git", "status", "--porcelain"], timeout=30)
        source = await sandbox.exec(["cat", "calc.py"], timeout=30)
    assert found.stdout.strip().splitlines()[-1] == "0", found.stdout[-2000:]
    assert log.stdout.split() == [base] and status.stdout.strip() == ""  # history up to the base, tree untouched
    assert "return a - b" in source.stdout
    mine = [c for c in sandbox_containers(client) if c.labels.get(OWNER_PID_LABEL) == str(os.getpid())]
    assert mine == [] and sandbox_dirs(state_dir) == []


def test_an_image_not_at_its_base_commit_is_refused_clearly(future_image):
    from rollout_worker.environment.sandbox.errors import SandboxError

    client, _ = future_image
    with pytest.raises(SandboxError, match="not the base commit"):
        history_free_image(client, IMAGE, "/testbed", "v-fixed", 300)  # a later commit, not HEAD


def test_an_image_without_the_workdir_or_a_repository_is_used_as_it_is(future_image):
    """Image tasks whose workdir the sandbox creates (or holds no git repository) start as before."""
    client, _ = future_image
    for workdir in ("/nonexistent/repo", "/tmp"):
        derived = history_free_image(client, "intercept-rl/base:1", workdir, "", 300)
        assert derived.startswith("intercept-rl-history/")
    remove_history_images(client, "intercept-rl/base:1")
