"""Harbor task directories (the format seed 1 trains through; rLLM and SkyRL read it too), without the `harbor` package.

A task dir holds `task.toml` (`[agent]`/`[verifier]` `timeout_sec`, `[environment]` resources, free `[metadata]`),
`instruction.md` (what the agent is told), `environment/Dockerfile` (+ its build context: the agent's starting state),
`tests/test.sh` (the verifier; it writes the reward to `/logs/verifier/reward.txt`, a number, or
`/logs/verifier/reward.json`) and optionally `solution/solve.sh` (the reference solution). The `harbor` package
(PyPI 0.25.0) is not used: it has no release for this project's Python 3.11, so its task models are not installable
here; the few fields needed are read with `tomllib`.

`load_harbor_tasks(path)` turns one task dir, or a dir of task dirs, into `Task`s whose `image` is the locally built
environment (`build_harbor_image`, tag derived from the environment's content, built once and cached) and whose
`extra` carries what `grading.harbor_container.HarborContainerGrader` needs: the task dir, the working directory, the
verifier timeout. The reward is Harbor's: whatever the verifier writes, read after `test.sh` ran in a fresh container
of the image that holds the agent's final working directory. No reward file means the verifier failed: unscorable.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from intercept_common.errors import UserError
from rollout_worker.types import Task

IMAGE_PREFIX = "intercept-rl-harbor/"
DEFAULT_WORKDIR = "/app"
_NAME = re.compile(r"[^a-z0-9_.-]+")


class HarborTaskError(ValueError, UserError):
    """A directory is not a usable Harbor task (the message says which file or field)."""


def is_harbor_task(path: Path) -> bool:
    return (path / "task.toml").is_file() and (path / "instruction.md").is_file()


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _workdir(dockerfile: Path) -> str:
    workdir = DEFAULT_WORKDIR
    for line in dockerfile.read_text("utf-8").splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0].upper() == "WORKDIR":
            value = words[1].strip().strip('"')
            workdir = value if value.startswith("/") else f"{workdir.rstrip('/')}/{value}"
    return workdir


def harbor_task(task_dir: str | Path) -> Task:
    """One Harbor task dir as a `Task` (its image is named, not built: see `build_harbor_image`)."""
    root = Path(task_dir).resolve()
    if not is_harbor_task(root):
        raise HarborTaskError(f"{root}: not a Harbor task (needs task.toml and instruction.md)")
    try:
        config: dict[str, Any] = tomllib.loads((root / "task.toml").read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HarborTaskError(f"{root / 'task.toml'}: {exc}") from exc
    dockerfile = root / "environment" / "Dockerfile"
    if not dockerfile.is_file():
        raise HarborTaskError(f"{root}: environment/Dockerfile is missing (docker-compose tasks are not supported)")
    if not (root / "tests" / "test.sh").is_file():
        raise HarborTaskError(f"{root}: tests/test.sh is missing")
    name = str((config.get("task") or {}).get("name") or root.name)
    tag = _NAME.sub("-", name.lower()).strip("-") or "task"
    solution = root / "solution" / "solve.sh"
    verifier, agent, env = (config.get(k) or {} for k in ("verifier", "agent", "environment"))
    return Task(
        instance_id=f"harbor__{tag}",
        repo=f"harbor/{tag}",
        base_commit="",
        problem_statement=(root / "instruction.md").read_text("utf-8"),
        image=f"{IMAGE_PREFIX}{tag.replace('/', '-')}:{_digest(root / 'environment')}",
        FAIL_TO_PASS=[],
        extra={
            "harbor_dir": str(root),
            "workdir": _workdir(dockerfile),
            "verifier_timeout_s": float(verifier.get("timeout_sec", 600.0)),
            "agent_timeout_s": float(agent.get("timeout_sec", 600.0)),
            "environment": {k: v for k, v in env.items() if isinstance(v, (str, int, float, bool))},
            "metadata": config.get("metadata") or {},
            "solution": solution.read_text("utf-8") if solution.is_file() else None,
        },
    )


def load_harbor_tasks(path: str | Path) -> list[Task]:
    """A Harbor task dir, or a dir whose sub-dirs are task dirs (sorted by name)."""
    root = Path(path)
    if is_harbor_task(root):
        return [harbor_task(root)]
    tasks = [harbor_task(p) for p in sorted(root.iterdir()) if p.is_dir() and is_harbor_task(p)]
    if not tasks:
        raise HarborTaskError(f"{root}: no Harbor task dirs (task.toml + instruction.md) found")
    return tasks


def build_harbor_image(client: Any, task: Task, network_mode: str = "none", timeout_s: float = 1800.0) -> str:
    """Build the task's environment image once (cached by its content-derived tag); returns the tag. Builds use the
    legacy builder; `network_mode="host"` when a build step needs the package repositories."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(task.image)
        return task.image
    except ImageNotFound:
        pass
    context = Path(task.extra["harbor_dir"]) / "environment"
    client.images.build(path=str(context), tag=task.image, network_mode=network_mode, rm=True, forcerm=True,
                        timeout=int(timeout_s))
    return task.image


def read_reward(files: dict[str, bytes]) -> float:
    """Harbor's reward from the verifier's files: `reward.txt` (a number) or `reward.json` (`{"reward": x}`, or a
    single named reward). Raises ValueError when there is none or it is not a number."""
    if "reward.txt" in files:
        return float(files["reward.txt"].decode("utf-8", "replace").strip())
    if "reward.json" in files:
        import json

        data = json.loads(files["reward.json"])
        if isinstance(data, (int, float)):
            return float(data)
        if isinstance(data, dict):
            if "reward" in data:
                return float(data["reward"])
            values = [v for v in data.values() if isinstance(v, (int, float))]
            if len(values) == 1:
                return float(values[0])
        raise ValueError(f"reward.json holds no single reward: {data!r}")
    raise ValueError("the verifier wrote no reward (/logs/verifier/reward.txt or reward.json)")
