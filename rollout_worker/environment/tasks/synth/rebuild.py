"""Task images from committed rows (issue #24: "the rows committed, the images built on demand and cached"): for each
row whose image is missing, the package's sdist at the row's version, the row's gold patch applied in reverse (the
mutated state), the task image built as the synthesis builds it; its commit must equal the row's `base_commit`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from rollout_worker.environment.tasks.synth import images, sdist
from rollout_worker.environment.tasks.synth.manifest import Manifest, SynthInputError


def build_missing_images(client: Any, manifest: Manifest, rows: list[dict[str, Any]], work: Path) -> dict[str, int]:
    """Build the images `rows` name that are missing; counts of `present`, `built`, `failed` (with a line each)."""
    counts = {"present": 0, "built": 0, "failed": 0}
    specs = {p.name: p for p in manifest.packages}
    trees: dict[str, tuple[Path, str]] = {}
    for row in rows:
        if images.image_exists(client, row["image"]):
            counts["present"] += 1
            continue
        name = row.get("synth", {}).get("package")
        spec = specs.get(name)
        if spec is None or spec.version != row["version"]:
            raise SynthInputError(f"{row['instance_id']}: package {name}=={row['version']} is not in the manifest")
        if name not in trees:
            tree = sdist.fetch_sdist(spec, work / spec.slug)
            requirements = [manifest.settings.pytest, *spec.test_deps]
            env = images.build_env_image(client, spec, requirements,
                                         sdist.fetch_wheels(requirements, work / spec.slug / "wheels"), work / spec.slug)
            trees[name] = (tree, env)
        tree, env = trees[name]
        copy = work / "mutated"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(tree, copy)
        (work / "gold.patch").write_text(row["patch"])
        done = subprocess.run(["git", "apply", "-R", "--whitespace=nowarn", str(work / "gold.patch")], cwd=copy,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            counts["failed"] += 1
            print(f"{row['instance_id']}: the patch does not reverse onto the sdist: {done.stderr.strip()[:200]}")
            continue
        tag, commit = images.build_task_image(client, env, copy, spec, row["instance_id"], work)
        if tag != row["image"] or commit != row["base_commit"]:
            counts["failed"] += 1
            print(f"{row['instance_id']}: rebuilt as {tag} at {commit}, the row says {row['image']} at "
                  f"{row['base_commit']}")
            continue
        counts["built"] += 1
    return counts
