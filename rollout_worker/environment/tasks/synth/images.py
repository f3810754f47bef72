"""Docker images of synthesized tasks (issue #24).

- The **environment image** of a package (`intercept-rl-synth/env-<pkg>:<version>-<hash>`): the project's base image
  plus the package's test dependencies and a pinned pytest, installed from wheels in a build stage (pip runs from its
  own wheel; the wheels never reach the final image), a `.pth` putting `/testbed/<import_root>` on `sys.path`, and
  the base image's Debian copies of `more_itertools` and `attrs` removed (pytest 8 needs neither; they would be old
  copies of packages we synthesize from). Built with `--network none` from wheels downloaded on the host: the
  network is used only while downloading, and the images run offline.
- The **task image** (`intercept-rl-synth/<pkg>:<task>`): the environment image plus /testbed, a git repository of
  ONE commit holding the mutated source (fixed identity and dates: the same tree gives the same commit id
  everywhere). The unmutated source is nowhere in it (`leak_check` proves it for a task).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from rollout_worker.environment.tasks.synth.manifest import PackageSpec, SynthInputError

BASE_IMAGE = "intercept-rl/base:1"
SITE = "/usr/local/lib/python3.11/dist-packages"
BUILD_TIMEOUT_S = 900
GIT_ENV = {"GIT_AUTHOR_NAME": "intercept-rl synth", "GIT_AUTHOR_EMAIL": "synth@intercept-rl.invalid",
           "GIT_COMMITTER_NAME": "intercept-rl synth", "GIT_COMMITTER_EMAIL": "synth@intercept-rl.invalid",
           "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00"}
_ENV_DOCKERFILE = """\
FROM {base} AS deps
COPY wheels /wheels
RUN python3 $(ls /wheels/pip-*.whl)/pip install --no-index --find-links /wheels --no-cache-dir --no-compile \\
      --disable-pip-version-check --target /opt/synth-deps {requirements}
FROM {base}
COPY --from=deps /opt/synth-deps {site}
RUN rm -rf /usr/lib/python3/dist-packages/more_itertools* /usr/lib/python3/dist-packages/attr \\
      /usr/lib/python3/dist-packages/attrs* \\
 && echo /testbed/{import_root} > {site}/intercept-rl-testbed.pth
ENV PYTHONDONTWRITEBYTECODE=1
WORKDIR /testbed
"""
_TASK_DOCKERFILE = "FROM {env}\nCOPY testbed /testbed\nWORKDIR /testbed\n"


def env_image_tag(spec: PackageSpec, requirements: list[str]) -> str:
    digest = hashlib.sha256("\n".join([BASE_IMAGE, spec.import_root, *requirements, _ENV_DOCKERFILE]).encode())
    return f"intercept-rl-synth/env-{spec.slug}:{spec.version}-{digest.hexdigest()[:10]}"


def task_image_tag(spec: PackageSpec, instance_id: str, commit: str) -> str:
    """The task's tag: its id and its commit (another seed's task of the same id never takes this tag)."""
    return f"intercept-rl-synth/{spec.slug}:{instance_id.split('__', 1)[-1].lower()}-{commit[:12]}"


def image_exists(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
        return True
    except ImageNotFound:
        return False


def _build(client: Any, context: Path, tag: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(context, arcname=".")
    buffer.seek(0)
    try:
        for chunk in client.api.build(fileobj=buffer, custom_context=True, tag=tag, network_mode="none", rm=True,
                                      forcerm=True, decode=True, timeout=BUILD_TIMEOUT_S):
            if "error" in chunk:
                raise SynthInputError(f"building {tag} failed: {str(chunk['error']).strip()[-300:]}")
    except SynthInputError:
        raise
    except Exception as exc:
        raise SynthInputError(f"building {tag} failed: {type(exc).__name__}: {exc}") from exc


def build_env_image(client: Any, spec: PackageSpec, requirements: list[str], wheels: Path, work: Path) -> str:
    """The package's environment image (cached by tag: built only when missing)."""
    tag = env_image_tag(spec, requirements)
    if image_exists(client, tag):
        return tag
    context = work / "env-context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copytree(wheels, context / "wheels")
    (context / "Dockerfile").write_text(_ENV_DOCKERFILE.format(
        base=BASE_IMAGE, site=SITE, import_root=spec.import_root.strip("/") or ".",
        requirements=" ".join(f"'{r}'" for r in requirements)))
    _build(client, context, tag)
    return tag


def git_repository(tree: Path, message: str) -> str:
    """Make `tree` a git repository of one commit holding exactly its files; the commit id. No hooks, no logs."""
    env = {**os.environ, **GIT_ENV, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tree, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SynthInputError(f"git {args[0]} in {tree} failed: {done.stderr.strip()[-300:]}")
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "--no-gpg-sign", "-m", message)
    shutil.rmtree(tree / ".git" / "hooks", ignore_errors=True)
    shutil.rmtree(tree / ".git" / "logs", ignore_errors=True)
    for name in ("description", "COMMIT_EDITMSG"):
        (tree / ".git" / name).unlink(missing_ok=True)
    return git("rev-parse", "HEAD")


def build_task_image(client: Any, env_tag: str, mutated_tree: Path, spec: PackageSpec, instance_id: str,
                     work: Path) -> tuple[str, str]:
    """The task image from a directory holding the mutated source (consumed): (its tag, its base commit)."""
    context = work / "task-context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.move(str(mutated_tree), context / "testbed")
    for junk in list((context / "testbed").rglob("__pycache__")) + list((context / "testbed").rglob("*.py[co]")):
        shutil.rmtree(junk, ignore_errors=True) if junk.is_dir() else junk.unlink(missing_ok=True)
    commit = git_repository(context / "testbed", f"{spec.name} {spec.version}")
    tag = task_image_tag(spec, instance_id, commit)
    if not image_exists(client, tag):
        (context / "Dockerfile").write_text(_TASK_DOCKERFILE.format(env=env_tag))
        _build(client, context, tag)
    shutil.rmtree(context, ignore_errors=True)
    return tag, commit


# The leak check runs inside a container of the task image: every regular file outside /proc, /sys and /dev whose
# size matches an original (unmutated) file is hashed; git must hold one commit, no blob of an original, and no
# unreachable object; no `.pyc` of the package's modules and no installed copy of it may exist.
_LEAK_SCRIPT = r"""
import hashlib, json, os, subprocess, sys
want = json.loads(sys.argv[1])  # {"sha256": {hex: path}, "sizes": [..], "blobs": {hex: path}, "modules": [..]}
found = []
sizes = set(want["sizes"])
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys", "/dev") or root.startswith(("/proc/", "/sys/", "/dev/")):
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(root, name)
        try:
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            if name.endswith(".pyc") and any(s in path for s in want["pyc"]):
                found.append(f"pyc {path}")
            if os.path.getsize(path) in sizes:
                digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
                if digest in want["sha256"]:
                    found.append(f"copy of {want['sha256'][digest]} at {path}")
        except OSError:
            continue
for root in sys.path:
    for m in want["modules"]:
        if root and os.path.isdir(root) and not root.startswith("/testbed"):
            for entry in (m, m + ".py"):
                if os.path.exists(os.path.join(root, entry)):
                    found.append(f"installed copy {os.path.join(root, entry)}")
git = lambda *a: subprocess.run(["git", "-C", "/testbed", *a], capture_output=True, text=True).stdout.strip()
commits = git("rev-list", "--all", "--count")
if commits != "1":
    found.append(f"git holds {commits} commits")
for blob, path in want["blobs"].items():
    if subprocess.run(["git", "-C", "/testbed", "cat-file", "-e", blob], capture_output=True).returncode == 0:
        found.append(f"git object {blob} (original {path})")
unreachable = git("fsck", "--unreachable", "--no-reflogs", "--no-progress")
if unreachable:
    found.append(f"unreachable git objects: {unreachable[:200]}")
print(json.dumps(found))
"""


def leak_check(client: Any, image: str, originals: dict[str, bytes], modules: list[str]) -> list[str]:
    """What of the unmutated files `originals` (path -> bytes, relative to the import root) the image still holds
    anywhere: [] when nothing. `modules` are the package's top-level import names."""
    import json
    from pathlib import PurePosixPath

    want = {"sha256": {hashlib.sha256(b).hexdigest(): p for p, b in originals.items()},
            "sizes": sorted({len(b) for b in originals.values()}),
            "blobs": {hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest(): p for p, b in originals.items()},
            "modules": modules, "pyc": []}
    for rel in originals:  # `pkg/mod.py` compiles to `pkg/__pycache__/mod.cpython-311.pyc`
        path = PurePosixPath(rel)
        prefix = f"{path.parent}/__pycache__/" if str(path.parent) != "." else "__pycache__/"
        want["pyc"].append(f"/{prefix}{path.stem}.")
    from rollout_worker.environment.grading.container_common import container_labels

    out = client.containers.run(image, ["python3", "-c", _LEAK_SCRIPT, json.dumps(want)], network_mode="none",
                                remove=True, labels=container_labels("synth-leak"),
                                environment={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
                                             "GIT_CONFIG_VALUE_0": "*"})
    return json.loads(out.decode().strip().splitlines()[-1])
